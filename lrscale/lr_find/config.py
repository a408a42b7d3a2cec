"""``config.lr_find``: its checks, and the run plan of one sweep at one batch size."""

from __future__ import annotations

import ml_collections

from lrscale import config as config_lib
from lrscale import errors
from lrscale.lr_find import suggest as suggest_lib
from lrscale.optim import schedule_config

VARY = ("both", "init", "data")
VMAP = ("auto", "on", "off")


@errors.as_user_errors
def validate(lf: ml_collections.ConfigDict) -> None:
  """Checks ``config.lr_find``; raises ValueError naming the field and the fix."""
  suggest_lib.lr_ramp(lf.min_lr, lf.max_lr, lf.num_steps, mode=lf.ramp)  # range, N, ramp

  def bad(field: str, why: str) -> ValueError:
    return ValueError(f"config.lr_find.{field}={lf[field]!r}: {why}")

  if not 0.0 <= lf.beta < 1.0:
    raise bad("beta", "the EMA decay must be in [0, 1) (default 0.9, run both ways).")
  if not (isinstance(lf.spike_window, int) and lf.spike_window >= 1 and lf.spike_window % 2):
    raise bad("spike_window", "use an odd number of steps >= 1 (1 = no running median).")
  if not lf.diverge_factor > 1.0:
    raise bad("diverge_factor", "must be > 1 (fastai: 4).")
  for field in ("skip_start", "skip_end"):
    if not 0.0 <= lf[field] < 0.5:
      raise bad(field, "a fraction of the sweep in [0, 0.5).")
  seeds = tuple(lf.seeds)
  if (
    not seeds
    or not all(isinstance(s, int) and s >= 0 for s in seeds)
    or len(set(seeds)) != len(seeds)
  ):
    raise bad("seeds", "give distinct non-negative integers, e.g. (0, 1, 2).")
  if lf.vary not in VARY:
    raise bad("vary", f"use one of {VARY}.")
  if not lf.max_spread >= 1.0:
    raise bad("max_spread", "a factor >= 1 (max/min of a suggestion over seeds).")
  sizes = tuple(lf.batch_sizes)
  if not all(isinstance(b, int) and b > 0 for b in sizes) or len(set(sizes)) != len(sizes):
    raise bad(
      "batch_sizes",
      "give distinct positive integers, e.g. (64, 256, 1024), or () for config.batch_size.",
    )
  if not (isinstance(lf.check_every, int) and lf.check_every >= 0):
    raise bad("check_every", "a number of steps >= 0 (0 = the whole sweep in one call).")
  if lf.vmap not in VMAP:
    raise bad("vmap", f"use one of {VMAP}.")
  from lrscale.lr_find import predict  # pylint: disable=g-import-not-at-top  (engine imports)

  predict.validate(lf)


@errors.as_user_errors
def sweep_plan(
  cfg: ml_collections.ConfigDict, batch_size: int, *, num_devices: int | None = None
) -> config_lib.RunPlan:
  """The run plan of a sweep at ``batch_size``: budget N steps, one segment per check."""
  lf = cfg.lr_find
  n = lf.num_steps
  segment = min(lf.check_every or n, n)
  c = ml_collections.ConfigDict(cfg.to_dict())
  c.batch_size = batch_size
  c.budget = f"{n} steps"
  c.log_every = c.sync_every = c.checkpoint_every = f"{segment} steps"
  c.eval_every = f"{n + 1} steps"  # never: the sweep needs train losses only
  c.batch_ramp.milestones = ()  # one batch size per sweep
  # The ramp replaces the schedule: the run's milestones need not fit N steps.
  c.schedule = schedule_config.default_config()
  c.warmup = schedule_config.default_warmup_config()
  return config_lib.resolve(c, num_devices=num_devices)


def batch_sizes(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The batch sizes to sweep: ``config.lr_find.batch_sizes``, or ``(config.batch_size,)``."""
  return tuple(cfg.lr_find.batch_sizes) or (cfg.batch_size,)
