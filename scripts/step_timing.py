"""Timing helpers shared by scripts/bench_train_step.py and its PyTorch comparison.

lrscale is imported inside the functions: ``bench_train_step.py --baseline_run``
(a minimal script's start-up) must load only jax, optax and numpy.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
  import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Contender(NamedTuple):
  """One way of training: ``run()`` does ``steps`` steps and blocks until they are done."""

  name: str
  run: Callable[[], None]


def load_default_config(
  batch_size: int, steps: int, segment_steps: int | None
) -> tuple[ml_collections.ConfigDict, Any]:
  """``configs/default.py`` for one device at ``batch_size``, as a run would resolve it."""
  from lrscale import config as config_lib  # pylint: disable=g-import-not-at-top

  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "default.py"))
  cfg.parallel.num_devices = 1
  cfg.batch_size = batch_size
  cfg.budget = f"{steps} steps"  # shapes the cosine only; a step costs the same at any lr
  cfg.compilation_cache = ""
  cfg.tensorboard = False
  # Train steps only: the baseline evaluates nothing, so no in-loop evaluation here.
  cfg.eval_every = f"{10**9} steps"
  if segment_steps:
    cfg.sync_every = f"{segment_steps} steps"  # the segment length is sync_every
  return cfg, config_lib.resolve(cfg)


def segment_runner(setup: Any, plan: Any, steps: int) -> Callable[[], None]:
  """``steps`` steps of lrscale's on-device segment loop, indices precomputed."""
  seg = setup.segment_len
  idx = [setup.indices(plan, s, seg) for s in range(0, steps, seg)]  # (idx, ks or None)
  n_seg = jnp.int32(seg)
  # No target and no divergence bound: the checks still run every step, as in a real run.
  control = setup.control(plan, max_loss=math.inf, target_done=True)
  box: dict[str, Any] = {"state": setup.initial_state(plan)}

  def run() -> None:
    state = box["state"]
    for i, ks in idx:
      state, *_ = setup.fns.train_segment(
        state, setup.train_x, setup.train_y, i, n_seg, setup.eval_batches, control, ks
      )
    box["state"] = jax.block_until_ready(state)

  return run


def time_once(fn: Callable[[], None]) -> float:
  """Wall seconds of one call."""
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def time_wall_cpu(fn: Callable[[], None]) -> tuple[float, float]:
  """Wall seconds and this process's CPU seconds (all threads) of one call.

  CPU time is a cross-check that other people's jobs on the shared cores
  disturb less: a descheduled thread accrues wall time but no CPU time.
  """
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
  """Median over repetitions of time(b) / time(a): throughput of a relative to b."""
  return statistics.median(tb / ta for ta, tb in zip(a, b))


# (lrscale side, baseline side) pairs whose throughput ratio the table shows.
