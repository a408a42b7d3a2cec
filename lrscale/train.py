"""One training run: ``python -m lrscale.train --config=configs/default.py --workdir=DIR``.

A thin absl main over ``lrscale.engine.loop.train`` (also ``lrscale.train_run``
in the public API). Outputs in ``workdir``: config.json, metrics.jsonl,
tensorboard/, summary.json, checkpoints/.
"""

import json

from absl import flags
from ml_collections import config_flags

from lrscale.engine import launch
from lrscale.engine.loop import train


def main(argv):
  del argv
  summary = train(flags.FLAGS.config, flags.FLAGS.workdir)
  final = {k: v for k, v in summary.get("final", {}).items()}
  print(f"run {summary['status']} after {summary['steps']} steps: {json.dumps(final)}")


if __name__ == "__main__":
  # Flags are defined only when this module is the program, so that the study
  # runner and lr_find can import train() and define their own --config.
  config_flags.DEFINE_config_file(
    "config", None, "Run config file (configs/*.py).", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "workdir"])
  launch.run(main)
