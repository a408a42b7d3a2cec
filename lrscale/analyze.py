"""``python -m lrscale.analyze --workdir=DIR``: analyse a study directory.

Reads only the files in DIR (works on a copied results folder) and writes
results.csv, analysis.json, the plots and report.md next to them.

``python -m lrscale.analyze --from_table=FILE.csv --workdir=DIR`` fits a
published steps-to-target table instead (one fit per ``--group_column``),
writing analysis.json, fits.csv, report.md and the plots into DIR.
"""

import math

from absl import flags, logging

from lrscale import errors

_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Study directory (or output dir with --from_table)."
)
_WITHIN = flags.DEFINE_float("within_pct", 10.0, "Report lrs within this % of the best steps.")
_BOOTSTRAP = flags.DEFINE_integer("n_bootstrap", 200, "Bootstrap resamples for intervals.")
_FROM_TABLE = flags.DEFINE_string(
  "from_table", None, "CSV of published steps to target (group, batch size, steps_to_target)."
)
_GROUP = flags.DEFINE_string("group_column", "model", "--from_table: column naming each curve.")
_BATCH = flags.DEFINE_string(
  "batch_column", None, "--from_table: batch column (default: batch_size or batch_size_<unit>)."
)


def check_flags(within_pct: float, n_bootstrap: int) -> None:
  """Rejects impossible analysis settings before anything is read."""
  if not math.isfinite(within_pct) or within_pct < 0:
    raise errors.UserError(
      f"--within_pct={within_pct} must be a percentage >= 0 (e.g. 10: lrs within 10% of the "
      "best steps)."
    )
  if n_bootstrap < 1:
    raise errors.UserError(
      f"--n_bootstrap={n_bootstrap} must be a positive number of resamples (e.g. 200)."
    )


def main(argv):
  del argv
  check_flags(_WITHIN.value, _BOOTSTRAP.value)
  # Imported here: a bad flag is reported before the analysis stack loads.
  from lrscale.analysis.run import analyze  # pylint: disable=g-import-not-at-top
  from lrscale.analysis.table import analyze_table  # pylint: disable=g-import-not-at-top

  if _FROM_TABLE.value:
    # A bad table (file, column) is a ValueError naming it and the fix: one line, exit 2.
    result = errors.as_user_errors(analyze_table)(
      _FROM_TABLE.value, _WORKDIR.value, group_column=_GROUP.value, batch_column=_BATCH.value
    )
    for name, g in result["groups"].items():
      logging.info("%s: B_crit %s, S_min %s", name, g.get("b_crit"), g.get("s_min"))
    return
  result = analyze(_WORKDIR.value, within_pct=_WITHIN.value, n_bootstrap=_BOOTSTRAP.value)
  logging.info("Wrote analysis to %s: fit %s", _WORKDIR.value, result.get("fit"))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  errors.run_main(main)
