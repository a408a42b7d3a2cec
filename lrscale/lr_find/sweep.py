"""The compiled sweep (``RangeTest``) and which batch sizes share one program.

The ramp is just another schedule: the train step of ``lrscale.engine.step`` is
built with ``lr_fn(t) = ramp[t]``; one device call (``train_segment``) runs
``check_every`` steps and returns their losses, and the host stops the sweep
between calls once it has diverged.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lrscale import config as config_lib
from lrscale.data import order
from lrscale.engine import parallel
from lrscale.engine.compiler_options import program_compiler_options
from lrscale.engine.programs import program_key
from lrscale.engine.setup import RunSetup
from lrscale.engine.step import StepFns, TrainState, make_step_fns
from lrscale.lr_find import suggest as suggest_lib
from lrscale.lr_find.results import BatchResult, Sweep


def shares_setup(a: config_lib.RunPlan, b: config_lib.RunPlan) -> bool:
  """Whether one compiled sweep serves plans ``a`` and ``b`` (any batch sizes).

  The sweep's lr is its own ramp, so the schedule and the batch size do not
  enter the program (``lrscale.engine.programs.program_key``).
  """
  return program_key(a, across_batch_sizes=True) == program_key(b, across_batch_sizes=True)


def program_groups(plans: Sequence[config_lib.RunPlan]) -> list[list[config_lib.RunPlan]]:
  """Splits the batch sizes' plans into groups that one compiled program serves.

  A group shares a set-up (``shares_setup``) and its batch sizes are multiples of
  the group's microbatch ``b`` (its smallest ``batch_size / microbatches``): a
  batch of B then runs as B/b microbatches of b, the traced microbatch count of
  the train step. The common ladder (64, 256, 1024) is one group, one compile.
  """
  groups: list[list[config_lib.RunPlan]] = []
  for plan in sorted(plans, key=lambda p: p.batch_size):
    for group in groups:
      micro = min(p.batch_size // p.microbatches for p in group + [plan])
      if shares_setup(group[0], plan) and all(p.batch_size % micro == 0 for p in group + [plan]):
        group.append(plan)
        break
    else:
      groups.append([plan])
  return groups


def _with_seed(plan: config_lib.RunPlan, seed: int) -> config_lib.RunPlan:
  cfg = plan.config.as_configdict()
  cfg.seed = seed
  return dataclasses.replace(plan, config=ml_collections.FrozenConfigDict(cfg))


def _copy(tree: Any) -> Any:
  """New buffers with the same values and shardings (the segment donates its input)."""
  return jax.tree.map(jnp.copy, tree)


class RangeTest:
  """The compiled sweep of a group of batch sizes (``program_groups``); ``run`` any seeds.

  The train step of ``lrscale.engine.step`` is built with the ramp as its schedule,
  ``lr(t) = ramp[t]``, and runs a batch of B as ``k = B / b`` microbatches of
  ``b`` examples (mean gradient over all B, as one batch; BatchNorm groups
  likewise), so every batch size of the group and every seed share one program.

  Args:
    setup: the run set-up (data, model, optimizer, mesh) of the group's plans.
    plans: ``sweep_plan(config, B)`` for each batch size B of the group.
    lf: ``config.lr_find``.
    vmap: run the seeds in one vmapped call (default: ``lf.vmap``).
  """

  def __init__(
    self,
    setup: RunSetup,
    plans: Sequence[config_lib.RunPlan],
    lf: ml_collections.ConfigDict,
    *,
    vmap: bool | None = None,
  ):
    if len(program_groups(list(plans) + [setup.plan])) != 1:
      raise ValueError(
        "RangeTest: these batch sizes need separate programs (lr_find.program_groups)."
      )
    self.setup, self.lf = setup, lf
    self.plans = {p.batch_size: p for p in plans}
    self.micro = min(p.batch_size // p.microbatches for p in plans)
    self.max_k = max(self.plans) // self.micro
    self.lrs = suggest_lib.lr_ramp(lf.min_lr, lf.max_lr, lf.num_steps, mode=lf.ramp)
    self.segment = setup.segment_len
    table = jnp.asarray(self.lrs, jnp.float32)
    last = lf.num_steps - 1

    def ramp(step, peak_lr):
      del peak_lr  # the ramp replaces the schedule and the scaled lr
      return table[jnp.minimum(step, last)]

    self.fns: StepFns = make_step_fns(
      graphdef=setup.graphdef,
      task=setup.plan.task,
      tx=setup.tx,
      optimizer_cfg=setup.plan.optimizer,
      lr_fn=ramp,
      mesh=setup.mesh,
      segment_len=self.segment,
    )
    # No evaluation, no target; the loop itself stops only at a non-finite loss
    # (the smoothed divergence rule runs on the host, between calls).
    self.control = setup.control(setup.plan, max_loss=math.inf, target_done=True)
    if vmap is None:
      vmap = lf.vmap == "on" or (lf.vmap == "auto" and jax.default_backend() != "cpu")
    self.vmap = vmap
    self._vsegment = jax.jit(
      jax.vmap(self.fns.segment, in_axes=(0, None, None, 0, None, None, None, None)),
      donate_argnums=0,
      out_shardings=parallel.replicated(setup.mesh),  # every process reads the losses
      compiler_options=program_compiler_options(setup.mesh.devices.flat[0].platform),
    )

  def _indices(
    self, plan: config_lib.RunPlan, start: int, n: int
  ) -> tuple[jax.Array, jax.Array | None]:
    """Examples [segment, max_k, b] of steps [start, start + n) and microbatches per step.

    The batch of each step is ``lrscale.data.order``'s, as in training; rows
    past ``k`` are unused padding.
    """
    k = plan.batch_size // self.micro
    idx = np.zeros((self.segment, self.max_k, self.micro), np.int32)
    idx[:n, :k] = order.batch_indices(
      seed=plan.config.seed,
      start_step=start,
      num_steps=n,
      batch_size=plan.batch_size,
      num_examples=self.setup.data.num_train,
    ).reshape(n, k, self.micro)
    mesh = self.setup.mesh
    if self.max_k == 1:  # one batch size, one microbatch: the plain step, no k loop
      return parallel.put_batch(idx, mesh, axis=2), None
    ks = np.full((self.segment,), k, np.int32)
    return parallel.put_batch(idx, mesh, axis=2), parallel.put_replicated(ks, mesh)

  def _segment(self, state: TrainState, idx: jax.Array, ks: jax.Array, n: int):
    """One device call: (state, per-step losses [..., segment], NaN where not run)."""
    fn = self._vsegment if self.vmap else self.fns.train_segment
    state, buf, done, _ = fn(
      state,
      self.setup.train_x,
      self.setup.train_y,
      idx,
      jnp.int32(n),
      self.setup.eval_batches,
      self.control,
      ks,
    )
    losses, done = jax.device_get((buf["train_loss"], done))
    # The loop stops at a non-finite loss: later entries were not run.
    return state, np.where(np.arange(losses.shape[-1]) < np.expand_dims(done, -1), losses, np.nan)

  def compile(self, num_seeds: int, state: TrainState | None = None) -> float:
    """Compiles the group's program ahead of the sweeps; returns the seconds it took."""
    t0 = time.perf_counter()
    plan = next(iter(self.plans.values()))
    state = self.initial_state(plan, plan.config.seed, state)
    idx, ks = self._indices(plan, 0, self.segment)
    fn = self.fns.train_segment
    if self.vmap:
      state = jax.tree.map(lambda x: jnp.stack([x] * num_seeds), state)
      idx, fn = jnp.stack([idx] * num_seeds), self._vsegment
    fn.lower(
      state,
      self.setup.train_x,
      self.setup.train_y,
      idx,
      jnp.int32(self.segment),
      self.setup.eval_batches,
      self.control,
      ks,
    ).compile()
    return time.perf_counter() - t0

  def _plans(
    self, plan: config_lib.RunPlan, seed: int
  ) -> tuple[config_lib.RunPlan, config_lib.RunPlan]:
    """(plan whose seed inits the model, plan whose seed orders the data)."""
    vary = self.lf.vary
    seeded = _with_seed(plan, seed)
    return (
      seeded if vary in ("both", "init") else plan,
      seeded if vary in ("both", "data") else plan,
    )

  def initial_state(
    self, plan: config_lib.RunPlan, seed: int, state: TrainState | None = None
  ) -> TrainState:
    """A fresh state for ``seed``, or a copy of ``state`` restarted at step 0."""
    if state is None:
      return self.setup.initial_state(self._plans(plan, seed)[0])
    state = _copy(state)
    return state._replace(step=jnp.zeros_like(state.step), lr_scale=jnp.ones_like(state.lr_scale))

  def run(
    self, batch_size: int, seeds: Sequence[int], *, state: TrainState | None = None
  ) -> BatchResult:
    """Sweeps every seed at ``batch_size``; with ``state``, each starts from a copy of it.

    Raises:
      ValueError: ``state`` given with ``vary='init'`` (the state fixes the init).
    """
    if state is not None and self.lf.vary == "init":
      raise ValueError(
        "config.lr_find.vary='init' cannot vary the init of a given state: use vary='data'."
      )
    t0 = time.perf_counter()
    plan = self.plans[batch_size]
    states = [self.initial_state(plan, s, state) for s in seeds]
    data_plans = [self._plans(plan, s)[1] for s in seeds]
    if self.vmap:
      losses = self._sweep_vmapped(states, data_plans)
    else:
      losses = [self._sweep(st, dp) for st, dp in zip(states, data_plans)]
    sweeps = []
    for seed, loss in zip(seeds, losses):
      curve = self._analyse(loss)
      sweeps.append(
        Sweep(
          seed,
          curve,
          suggest_lib.suggest(curve, skip_start=self.lf.skip_start, skip_end=self.lf.skip_end),
          loss.size,
        )
      )
    spreads = suggest_lib.across_seeds(
      [s.suggestions for s in sweeps], max_spread=self.lf.max_spread
    )
    return BatchResult(
      batch_size, tuple(sweeps), spreads, suggest_lib.recommend(spreads), time.perf_counter() - t0
    )

  def _analyse(self, losses: np.ndarray) -> suggest_lib.Curve:
    return suggest_lib.analyse(
      self.lrs[: losses.size],
      losses,
      beta=self.lf.beta,
      spike_window=self.lf.spike_window,
      factor=self.lf.diverge_factor,
    )

  def _settled(self, losses: np.ndarray) -> bool:
    """Whether the sweep has diverged for good: no later loss can undo the verdict.

    The running median looks ``spike_window // 2`` steps ahead, so a verdict
    within that distance of the last recorded step waits for the next call.
    """
    curve = self._analyse(losses)
    if not curve.diverged:
      return False
    return (not np.all(np.isfinite(losses))) or curve.end < losses.size - self.lf.spike_window // 2

  def _calls(self) -> list[tuple[int, int]]:
    """(start, n) of each device call of a sweep."""
    total = self.lf.num_steps
    return [(s, min(self.segment, total - s)) for s in range(0, total, self.segment)]

  def _sweep(self, state: TrainState, data_plan: config_lib.RunPlan) -> np.ndarray:
    """One seed, one device call per segment; stops once divergence is settled."""
    recorded: list[np.ndarray] = []
    for start, n in self._calls():
      state, losses = self._segment(state, *self._indices(data_plan, start, n), n)
      recorded.append(losses[:n])
      if self._settled(np.concatenate(recorded)):
        break
    return np.concatenate(recorded)

  def _sweep_vmapped(
    self, states: Sequence[TrainState], data_plans: Sequence[config_lib.RunPlan]
  ) -> list[np.ndarray]:
    """All seeds in one vmapped call per segment; stops once every seed has diverged."""
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    recorded: list[np.ndarray] = []
    for start, n in self._calls():
      idx, ks = zip(*(self._indices(p, start, n) for p in data_plans))
      state, losses = self._segment(state, jnp.stack(idx), ks[0], n)
      recorded.append(losses[:, :n])
      if all(self._settled(row) for row in np.concatenate(recorded, axis=1)):
        break
    return [self._trim(row) for row in np.concatenate(recorded, axis=1)]

  def _trim(self, losses: np.ndarray) -> np.ndarray:
    """A vmapped seed's losses cut where it alone would have stopped (as sequentially)."""
    for start, n in self._calls():
      if self._settled(losses[: start + n]):
        return losses[: start + n]
    return losses
