"""``python -m lrscale.analyze --workdir=DIR``: analyse a study directory.

Reads only the files in DIR (works on a copied results folder) and writes
results.csv, analysis.json, the plots and report.md next to them.
"""

from absl import app, flags, logging

from lrscale.analysis.run import analyze

_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")
_WITHIN = flags.DEFINE_float("within_pct", 10.0, "Report lrs within this % of the best steps.")
_BOOTSTRAP = flags.DEFINE_integer("n_bootstrap", 200, "Bootstrap resamples for intervals.")


def main(argv):
  del argv
  result = analyze(_WORKDIR.value, within_pct=_WITHIN.value, n_bootstrap=_BOOTSTRAP.value)
  logging.info("Wrote analysis to %s: fit %s", _WORKDIR.value, result.get("fit"))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
