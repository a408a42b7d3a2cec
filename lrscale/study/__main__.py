"""``python -m lrscale.study --config=configs/studies/default.py --workdir=DIR``.

Runs every trial of the study (skipping finished ones, resuming interrupted
ones), then analyses the study directory. ``--worker=i/n`` lets n processes or
hosts share one study on a shared filesystem; the analysis runs in worker 0
once every trial is finished.
"""

from absl import flags, logging
from ml_collections import config_flags

from lrscale import errors
from lrscale.engine import launch, parallel
from lrscale.study import runner, space, store

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Study config (configs/studies/*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Study directory (shared by workers).")
_WORKER = flags.DEFINE_string("worker", "0/1", "This worker as i/n.")
_ANALYZE = flags.DEFINE_bool("analyze", True, "Analyse the study when all trials are done.")


def parse_worker(text: str) -> tuple[int, int]:
  try:
    i, n = (int(x) for x in text.split("/"))
  except ValueError:
    raise errors.UserError(f"--worker={text!r} must look like i/n, e.g. 0/4.") from None
  if not 0 <= i < n:
    raise errors.UserError(f"--worker={text!r}: need 0 <= i < n.")
  return i, n


def main(argv):
  del argv
  worker, num_workers = parse_worker(_WORKER.value)
  counts = runner.run_study(_CONFIG.value, _WORKDIR.value, worker=worker, num_workers=num_workers)
  logging.info("This worker: %s", counts)
  trials = space.enumerate_trials(_CONFIG.value)
  if _ANALYZE.value and worker == 0 and parallel.is_lead():
    if all(store.is_finished(_WORKDIR.value, t.id) for t in trials):
      from lrscale.analysis.run import analyze  # pylint: disable=g-import-not-at-top

      result = analyze(_WORKDIR.value)
      logging.info(
        "Analysis written to %s (B_crit %s)", _WORKDIR.value, result.get("fit", {}).get("b_crit")
      )
    else:
      logging.info(
        "Some trials are still running elsewhere; run `python -m lrscale.analyze "
        "--workdir=%s` when they finish.",
        _WORKDIR.value,
      )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  launch.run(main)
