r"""Plots a run's learning-rate schedule: lr vs step, epochs on a second axis.

Usage:
  python scripts/plot_schedule.py --config=configs/default.py \
      --out=schedule.png [--config.schedule.name=cosine ...]

The run's length, steps per epoch and peak lr (after the batch-size scaling
rule) come from ``lrscale.config.resolve(config)``, so the plot shows what a
run with the same flags would use.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import matplotlib
from absl import app, flags

matplotlib.use("Agg")  # Files only; never needs a display.
import numpy as np
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

# Run from a checkout without installing the package: the config file imports
# lrscale while the flags are parsed, before main().
_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)


def _define_flags() -> None:
  # Defined only when run as a program: tests import this file beside other
  # mains, and absl refuses a flag name defined twice in one process.
  config_flags.DEFINE_config_file("config", None, "Run config file.")
  flags.DEFINE_string("out", "schedule.png", "Output image path.")


def plot_schedule(
  schedule_fn: Callable[[jax.Array], jax.Array],
  *,
  total_steps: int,
  steps_per_epoch: Optional[float],
  out_path: str,
  title: str = "",
) -> np.ndarray:
  """Plots ``schedule_fn`` over the run's steps and saves it.

  Args:
    schedule_fn: maps the 0-based step count to the lr (an optax.Schedule).
    total_steps: run length; steps 0..total_steps-1 (the lrs actually used).
    steps_per_epoch: adds an epoch axis on top when positive.
    out_path: image path; the format follows the extension.
    title: figure title.

  Returns:
    The plotted lrs, one per step.
  """
  steps = np.arange(total_steps)
  lrs = np.asarray(jax.jit(jax.vmap(schedule_fn))(jnp.asarray(steps, jnp.int32)))
  fig, ax = plt.subplots(figsize=(8, 4))
  ax.plot(steps, lrs, lw=1.5)
  ax.set_xlabel("step")
  ax.set_ylabel("learning rate")
  ax.set_xlim(0, max(total_steps - 1, 1))
  ax.grid(alpha=0.3)
  if steps_per_epoch:
    top = ax.secondary_xaxis(
      "top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch)
    )
    top.set_xlabel("epoch")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(out_path, dpi=120)
  plt.close(fig)
  return lrs


def main(argv: Sequence[str]) -> None:
  del argv
  from lrscale import config as config_lib  # pylint: disable=g-import-not-at-top

  config = flags.FLAGS.config
  if config is None:
    raise app.UsageError("--config is required")
  plan = config_lib.resolve(config)  # Validates, incl. the schedule sections.
  fn = plan.schedule.bind(plan.lr)
  title = f"{config.schedule.name}, peak lr {plan.lr:.3g}, batch {plan.batch_size}"
  if plan.schedule.warmup_steps > 0:
    title += f", warmup {config.warmup.length} ({config.warmup.shape})"
  plot_schedule(
    fn,
    total_steps=plan.total_steps,
    steps_per_epoch=plan.steps_per_epoch,
    out_path=flags.FLAGS.out,
    title=title,
  )
  print(f"wrote {flags.FLAGS.out}")


if __name__ == "__main__":
  _define_flags()
  from lrscale import errors  # pylint: disable=g-import-not-at-top

  errors.run_main(main)
