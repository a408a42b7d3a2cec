"""Shared machinery of the paper reproductions in ``experiments/``.

Every experiment module builds a list of run configs (or one study config),
hands it to this module to train, reads the results back, and writes a report
in the paper's form. What they share lives here, once:

* **configs**: the offline analogue's base run (:func:`digits_base`), the
  repository's full-scale config files (:func:`load_repo_config`), and the
  validation of full-scale configs before the missing-dataset error
  (:func:`check_full_runs`, :func:`check_full_study`);
* **running**: a named set of runs trained with one compiled step per group of
  runs that differ only in lr and seed (:func:`run_all`), and a study
  (:func:`run_study`); both skip what is already finished, so an interrupted
  experiment resumes where it stopped;
* **reading**: per-run curves against epochs (:func:`curve`), final error;
* **writing**: markdown tables, the report, ``results.json`` and figures kept
  small enough to commit (:func:`save_figure`);
* **the template**: ``run_experiment`` (time, report, results.json) and the
  absl flags every experiment takes (``launch``).

Modules: ``configs``, ``runs``, ``curves`` (reading), ``report`` (writing),
``figures``, ``template``; their names are all here, so an experiment writes
``common.run_all(...)``.
"""

from experiments.common.configs import (
  DIGITS_NUM_TRAIN,
  MODES,
  PAPER_DATASETS,
  REPO_ROOT,
  check_full_runs,
  check_full_study,
  digits_base,
  load_repo_config,
  set_fields,
  stand_in_meta,
)
from experiments.common.curves import (
  binned_mean,
  curve,
  curves_by_rule_and_batch,
  error_pct,
  mean_curve,
  mean_std,
  mismatch,
  read_rows,
)
from experiments.common.figures import (
  MAX_FIGURE_BYTES,
  batch_axis,
  batch_colors,
  figure,
  save_figure,
)
from experiments.common.report import (
  fmt,
  fmt_mean_std,
  format_duration,
  md_table,
  runtime_line,
  verdict,
  write_report,
  write_results,
)
from experiments.common.runs import Done, Run, Summaries, run_all, run_dir, run_study
from experiments.common.template import Outcome, experiment, launch, run_experiment

__all__ = [
  "DIGITS_NUM_TRAIN",
  "MAX_FIGURE_BYTES",
  "MODES",
  "PAPER_DATASETS",
  "REPO_ROOT",
  "Done",
  "Outcome",
  "Run",
  "Summaries",
  "batch_axis",
  "batch_colors",
  "binned_mean",
  "check_full_runs",
  "check_full_study",
  "curve",
  "digits_base",
  "error_pct",
  "experiment",
  "figure",
  "fmt",
  "fmt_mean_std",
  "format_duration",
  "launch",
  "load_repo_config",
  "md_table",
  "curves_by_rule_and_batch",
  "mean_curve",
  "mean_std",
  "mismatch",
  "read_rows",
  "run_all",
  "run_dir",
  "run_experiment",
  "run_study",
  "runtime_line",
  "save_figure",
  "set_fields",
  "stand_in_meta",
  "verdict",
  "write_report",
  "write_results",
]
