"""Study analysis: reads a study directory only (numpy/scipy/matplotlib, no model code).

Entry point: :func:`analyze` (``lrscale.analysis.run``).
"""

from lrscale.analysis.run import analyze, build_analysis
from lrscale.analysis.store_reader import Study, TrialRecord, load_study

__all__ = ["Study", "TrialRecord", "analyze", "build_analysis", "load_study"]
