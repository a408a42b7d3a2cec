"""``python -m lrscale.analyze --workdir=DIR``: analyse a study directory.

Reads only the files in DIR (works on a copied results folder) and writes
results.csv, analysis.json, the plots and report.md next to them.
"""

import math

from absl import flags, logging

from lrscale import errors

_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")
_WITHIN = flags.DEFINE_float("within_pct", 10.0, "Report lrs within this % of the best steps.")
_BOOTSTRAP = flags.DEFINE_integer("n_bootstrap", 200, "Bootstrap resamples for intervals.")


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
  from lrscale.analysis.run import analyze  # pylint: disable=g-import-not-at-top

  result = analyze(_WORKDIR.value, within_pct=_WITHIN.value, n_bootstrap=_BOOTSTRAP.value)
  logging.info("Wrote analysis to %s: fit %s", _WORKDIR.value, result.get("fit"))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  errors.run_main(main)
