"""python -m lrscale.cbs --config=configs/cbs/digits_mlp.py --workdir=runs/cbs_digits"""

from absl import flags
from ml_collections import config_flags

from lrscale.engine import launch

config_flags.DEFINE_config_file("config", None, "A CBS config (configs/cbs/*.py).")
flags.DEFINE_string("workdir", None, "Output directory (resumable).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from lrscale.cbs.run import run_cbs  # pylint: disable=g-import-not-at-top

  result = run_cbs(flags.FLAGS.config, flags.FLAGS.workdir)
  for p in result["points"]:
    print(
      f"step {p['step']:>6}: CBS {p['cbs']['median']:g} {p['cbs_per_seed']}, B_simple {p['b_simple']}"
    )


if __name__ == "__main__":
  launch.run(main)
