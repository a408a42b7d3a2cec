"""``python -m lrscale.analyze --workdir=DIR``: analyse a study directory.

Reads only the files in DIR (works on a copied results folder) and writes
results.csv, analysis.json, the plots and report.md next to them.

``python -m lrscale.analyze --from_table=FILE.csv --workdir=DIR`` fits a
published steps-to-target table instead (one fit per ``--group_column``),
writing analysis.json, fits.csv, report.md and the plots into DIR.
"""

import sys

from absl import app, flags, logging

from lrscale.analysis.run import analyze
from lrscale.analysis.table import analyze_table

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


def main(argv):
  del argv
  if _FROM_TABLE.value:
    try:
      result = analyze_table(
        _FROM_TABLE.value, _WORKDIR.value, group_column=_GROUP.value, batch_column=_BATCH.value
      )
    except ValueError as e:  # bad input: one line naming the file/column and the fix
      print(f"lrscale.analyze: {e}", file=sys.stderr)
      sys.exit(2)
    for name, g in result["groups"].items():
      logging.info("%s: B_crit %s, S_min %s", name, g.get("b_crit"), g.get("s_min"))
    return
  result = analyze(_WORKDIR.value, within_pct=_WITHIN.value, n_bootstrap=_BOOTSTRAP.value)
  logging.info("Wrote analysis to %s: fit %s", _WORKDIR.value, result.get("fit"))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
