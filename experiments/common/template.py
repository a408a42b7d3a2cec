"""The one shape of every experiment: run, analyse, write report.md and results.json.

An experiment module supplies ``execute(outdir) -> Outcome`` (train its runs or
study, read them back, draw its figures) and calls :func:`run_experiment`,
which times it, writes the report and ``results.json`` the same way for all,
and returns what ``run()`` returns; :func:`launch` is its absl main.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments.common.configs import MODES
from experiments.common.report import write_report, write_results


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What an experiment's ``execute`` produced.

  Attributes:
    sections: the report's sections, given the whole runtime in seconds.
    results: the body of results.json (``experiment``, ``mode``, ``smoke`` and
      ``runtime_s`` are added).
    figures: the figure paths written.
    returned: further entries of ``run()``'s return value (findings, analyses).
  """

  sections: Callable[[float], Sequence[str]]
  results: Mapping[str, Any]
  figures: Sequence[str] = ()
  returned: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def run_experiment(
  name: str,
  title: str,
  execute: Callable[[str], Outcome],
  *,
  mode: str,
  workdir: str,
  outdir: str | None,
  smoke: bool,
) -> dict[str, Any]:
  """Runs ``execute(outdir)`` and writes its report and results.json into ``outdir``.

  Args:
    name: the experiment's name (results.json ``experiment``).
    title: the report's title.
    execute: trains and analyses; returns the ``Outcome``.
    mode: ``analogue`` or ``full``.
    workdir: where the runs go.
    outdir: where report.md, results.json and the figures go (default ``workdir``).
    smoke: the seconds-long test variant.

  Returns:
    ``report`` (its path), ``runtime_s``, ``figures``, ``results`` and the
    outcome's ``returned`` entries.
  """
  from lrscale.engine import parallel  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  outdir = outdir or workdir
  # On several hosts every process runs the experiment (its runs need them all),
  # but only the lead writes the shared report and figures; the others write
  # theirs into a private directory that is removed at the end.
  private = None if parallel.is_lead() else tempfile.mkdtemp(prefix="lrscale_report_")
  try:
    outcome = execute(private or outdir)
    runtime = time.perf_counter() - t0
    report = write_report(private or outdir, title, outcome.sections(runtime))
    write_results(
      private or outdir,
      dict(experiment=name, mode=mode, smoke=smoke, runtime_s=runtime, **outcome.results),
    )
  finally:
    if private:
      shutil.rmtree(private, ignore_errors=True)
  out = dict(report=report, results=outcome.results, runtime_s=runtime)
  out.update(figures=list(outcome.figures), **outcome.returned)
  return out


def experiment(
  name: str, title: str, execute: Callable[..., Outcome]
) -> Callable[..., dict[str, Any]]:
  """An experiment module's ``run(*, mode, workdir, outdir, smoke)`` from its ``execute``.

  ``execute(outdir, *, mode, workdir, smoke) -> Outcome``; ``run`` passes it to
  :func:`run_experiment`.
  """

  def run(
    *, mode: str = "analogue", workdir: str, outdir: str | None = None, smoke: bool = False
  ) -> dict[str, Any]:
    """Runs the experiment; writes report.md, results.json and the figures to ``outdir``."""
    return run_experiment(
      name,
      title,
      functools.partial(execute, mode=mode, workdir=workdir, smoke=smoke),
      mode=mode,
      workdir=workdir,
      outdir=outdir,
      smoke=smoke,
    )

  return run


def launch(run_fn: Callable[..., Mapping[str, Any]]) -> None:
  """The absl main of an experiment module; call it under ``if __name__ == "__main__":``.

  Flags (defined here, so importing an experiment defines none): ``--mode``
  (analogue | full), ``--workdir`` (runs), ``--outdir`` (report and figures;
  default the workdir), ``--smoke`` (the seconds-long test variant). Calls
  ``run_fn(mode=, workdir=, outdir=, smoke=)``.
  """
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

  flags.DEFINE_enum(
    "mode",
    "analogue",
    MODES,
    "analogue: the small offline analogue; "
    "full: the paper's setting (needs its dataset and accelerators).",
  )
  flags.DEFINE_string("workdir", None, "Directory for the runs (resumed if it exists).")
  flags.DEFINE_string(
    "outdir", "", "Directory for report.md, results.json and figures ('' = the workdir)."
  )
  flags.DEFINE_bool("smoke", False, "A tiny variant (seconds of training), for tests.")
  flags.mark_flag_as_required("workdir")

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    result = run_fn(mode=f.mode, workdir=f.workdir, outdir=f.outdir or None, smoke=f.smoke)
    logging.info("Report: %s", result.get("report"))
    print(f"Report written to {result.get('report')}")

  from lrscale.engine import launch  # pylint: disable=g-import-not-at-top

  launch.run(main)
