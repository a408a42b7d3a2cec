"""The CLI: ``python -m lrscale.lr_find --config=CONFIG --workdir=DIR``."""

from absl import flags

from lrscale.lr_find import predict
from lrscale.lr_find.results import describe
from lrscale.lr_find.run import lr_find


def main(argv):
  del argv
  result = lr_find(flags.FLAGS.config, flags.FLAGS.workdir)
  for r in result.results:
    print(f"B={r.batch_size}: {describe(r)}")
  for p in result.predictions:
    print(f"B={p.batch_size}: {predict.describe(p)}")
  if result.batch_scaling is not None:
    for key in ("recommended", "predicted"):
      if key in result.batch_scaling:
        e = result.batch_scaling[key]["exponent"]
        print(f"{key} lr ~ B^{e:.2f} (linear rule: 1, square-root rule: 0.5)")
  print(f"Rule: {result.rule}.")
  print("Paste into python -m lrscale.train:")
  print(result.paste)


if __name__ == "__main__":
  # Flags are defined only when this module is the program (as lrscale.train).
  from ml_collections import config_flags

  config_flags.DEFINE_config_file(
    "config", None, "Run config file (configs/*.py).", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Output directory for lr_find.csv/json/png.")
  flags.mark_flags_as_required(["config", "workdir"])
  from lrscale.engine import launch

  launch.run(main)
