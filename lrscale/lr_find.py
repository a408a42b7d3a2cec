"""The LR range test: ``python -m lrscale.lr_find --config=CONFIG --workdir=DIR``.

A range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks"; fastai's ``lr_find``) trains the config's model, data, optimizer and
batch size for ``N = config.lr_find.num_steps`` steps while the lr grows from
``min_lr`` to ``max_lr``, and reads suggestions off the loss curve
(``lrscale.lr_find_suggest``: smoothing, divergence, suggestions and the
recommendation). Here the ramp is just another schedule: the train step of
``lrscale.engine.step`` is built with ``lr_fn(t) = ramp[t]``; one device call
(``train_segment``) runs ``check_every`` steps and returns their losses, and
the host stops the sweep between calls once it has diverged.

What it adds to fastai's, torch-lr-finder's and Lightning's finders:

* pure: each sweep starts from a fresh initial state, or a *copy* of the state
  passed in; nothing of the caller (params, optimizer state, BatchNorm
  statistics, RNG) changes, so there is nothing to restore;
* several seeds per call (``seeds``; ``vary`` picks init, data order or both):
  each suggestion comes with its spread across seeds and is flagged unreliable
  past ``max_spread``. Seeds run one after another on CPU (vmap measured no
  faster there, shared/REFERENCE.md) and in one vmapped call on accelerators;
* several batch sizes (``batch_sizes``): the fitted exponent of lr(B) beside
  the linear and square-root rules' predictions. Batch sizes that are
  multiples of the smallest share one compiled program: a batch of B runs as
  B/b microbatches of b (the step's traced microbatch count), so a
  (64, 256, 1024) ladder compiles once;
* spikes and lag: a running median before the EMA, so one or two bad batches
  neither stop the sweep nor move the suggestions, and an EMA run both ways,
  so the curve is not shifted to higher lrs.

Outputs in ``DIR``: lr_find.csv (seed, batch_size, step, lr, loss,
smoothed_loss), lr_find.json (suggestions, spreads, recommendation, exponent),
lr_find.png, and printed ``--config.lr=VALUE`` lines for ``lrscale.train``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags, logging

from lrscale import config as config_lib
from lrscale import errors
from lrscale import lr_find_suggest as suggest_lib
from lrscale.data import order, registry
from lrscale.engine import outputs, parallel
from lrscale.engine import workdir as workdir_lib
from lrscale.engine.programs import program_key
from lrscale.engine.setup import RunSetup
from lrscale.engine.step import StepFns, TrainState, make_step_fns
from lrscale.optim import scaling

VARY = ("both", "init", "data")
VMAP = ("auto", "on", "off")
CSV_FIELDS = ("seed", "batch_size", "step", "lr", "loss", "smoothed_loss")


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
  return config_lib.resolve(c, num_devices=num_devices)


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


class Sweep(NamedTuple):
  """One seed's range test at one batch size.

  Attributes:
    seed: the seed (init, data order or both, per ``vary``).
    curve: the recorded losses, smoothed, and where they diverged.
    suggestions: ``{name: lr}`` for every name in ``lr_find_suggest.SUGGESTIONS``.
    steps_run: steps computed (< N when the sweep stopped at divergence).
  """

  seed: int
  curve: suggest_lib.Curve
  suggestions: dict[str, float]
  steps_run: int


class BatchResult(NamedTuple):
  """All seeds at one batch size; ``seconds`` of sweeping (compilation excluded)."""

  batch_size: int
  sweeps: tuple[Sweep, ...]
  spreads: dict[str, suggest_lib.Spread]
  recommendation: suggest_lib.Recommendation
  seconds: float


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
      jax.vmap(self.fns.train_segment, in_axes=(0, None, None, 0, None, None, None, None)),
      donate_argnums=0,
      out_shardings=parallel.replicated(setup.mesh),  # every process reads the losses
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


class LrFindResult(NamedTuple):
  """A whole ``lr_find`` call: every batch size, the lr(B) fit and the paste line."""

  results: tuple[BatchResult, ...]
  batch_scaling: dict[str, Any] | None
  paste: str
  rule: str


def _batch_sizes(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  return tuple(cfg.lr_find.batch_sizes) or (cfg.batch_size,)


def batch_scaling(results: Sequence[BatchResult]) -> dict[str, Any] | None:
  """lr(B) = c B^alpha fitted to each suggestion's median lr, beside the linear and sqrt rules.

  The fit is ``lrscale.analysis.fits.fit_lr_scaling`` (least squares in
  log-log, a saturating hinge only when BIC prefers it); the rules are anchored
  at the smallest batch size (``rule_predictions``): linear lr ~ B (Goyal et al.
  2017), square root lr ~ sqrt(B) (Malladi et al. 2022).

  Returns:
    None for fewer than two batch sizes, else ``{name: {...}}`` for
    ``recommended`` and each suggestion.
  """
  if len(results) < 2:
    return None
  from lrscale.analysis import fits  # pylint: disable=g-import-not-at-top  (scipy: only here)

  b = [r.batch_size for r in results]
  series = {"recommended": [r.recommendation.lr for r in results]}
  series.update({n: [r.spreads[n].lr for r in results] for n in suggest_lib.SUGGESTIONS})
  out = {}
  for name, lrs in series.items():
    fit = fits.fit_lr_scaling(b, lrs)
    out[name] = dict(
      batch_sizes=b,
      lrs=lrs,
      exponent=fit.exponent,
      coef=fit.coef,
      model=fit.model,
      max_lr=fit.max_lr,
      rms_log_residual=fit.rms_log_residual,
      linear_rule=fits.rule_predictions(b, lrs, 1.0),
      sqrt_rule=fits.rule_predictions(b, lrs, 0.5),
    )
  return out


def base_lr_for(cfg: ml_collections.ConfigDict, lr: float, batch_size: int) -> tuple[str, float]:
  """The ``--config`` flags that give a run at ``batch_size`` the lr ``lr``.

  ``config.lr`` is the base lr *before* the config's scaling rule, so the
  value to paste is ``lr`` divided by the rule's factor at ``batch_size``
  (``lrscale.optim.scaling``); a ``fitted`` rule ignores ``config.lr`` and is
  switched off in the printed line.
  """
  if cfg.scaling.rule == "fitted":
    return "--config.scaling.rule=none ", lr
  factor = scaling.apply_scaling(
    cfg.scaling, base_lr=1.0, batch_size=batch_size, optimizer_cfg=cfg.optimizer
  ).lr
  return "", lr / factor


def paste_line(
  cfg: ml_collections.ConfigDict, results: Sequence[BatchResult], fit: dict[str, Any] | None
) -> str:
  """The flags to paste into ``python -m lrscale.train``: one line per batch size."""
  lines = []
  for r in results:
    prefix, value = base_lr_for(cfg, r.recommendation.lr, r.batch_size)
    batch = f"--config.batch_size={r.batch_size} " if len(results) > 1 else ""
    lines.append(f"{batch}{prefix}--config.lr={value:.3g}")
  if fit is not None:
    rec = fit["recommended"]
    lines.append(
      f"--config.scaling.rule=fitted --config.scaling.coef={rec['coef']:.4g} "
      f"--config.scaling.exponent={rec['exponent']:.3f}"
    )
  return "\n".join(lines)


def lr_find(
  cfg: ml_collections.ConfigDict,
  workdir: str | None = None,
  *,
  data: registry.InMemoryData | None = None,
  state: TrainState | None = None,
  num_devices: int | None = None,
) -> LrFindResult:
  """Runs the range test of ``cfg`` at each batch size and seed; writes outputs to ``workdir``.

  Args:
    cfg: a run config with its ``lr_find`` section.
    workdir: where lr_find.csv/json/png go (None: write nothing).
    data: in-memory data to reuse.
    state: start every sweep from a copy of this state (it is not changed) instead
      of a fresh init; it must fit the config's model and optimizer.
    num_devices: override ``config.parallel.num_devices``.

  Returns:
    The ``LrFindResult``.

  Raises:
    ValueError: naming the config field, before any compute (or after a sweep
      that diverged within its first 3 steps: lower ``min_lr``).
  """
  outputs.quiet_library_logs()
  config_lib.check_run_config(cfg)
  if workdir is not None:  # before the sweep, not after it
    workdir_lib.check_writable(workdir)
  lf = cfg.lr_find
  validate(lf)
  plans = [sweep_plan(cfg, b, num_devices=num_devices) for b in _batch_sizes(cfg)]
  if plans[0].dataset.streamed:
    raise errors.UserError(
      f"config.dataset.name={plans[0].dataset.name!r} is streamed; the range "
      "test needs an in-memory dataset."
    )
  lead = workdir is not None and jax.process_index() == 0
  with workdir_lib.hold(workdir or "", what="lrscale.lr_find", enabled=lead):
    return _sweep(cfg, workdir if lead else None, plans, data, state)


def _sweep(cfg, workdir, plans, data, state) -> LrFindResult:
  lf = cfg.lr_find
  parallel.enable_compilation_cache(os.path.expanduser(plans[0].config.compilation_cache))
  data = data or registry.load_in_memory(plans[0].config.dataset)
  seeds = tuple(lf.seeds)
  results = {}
  for group in program_groups(plans):
    test = RangeTest(RunSetup(group[0], data), group, lf)
    logging.info(
      "Compiled the sweep of B=%s in %.2f s.",
      [p.batch_size for p in group],
      test.compile(len(seeds), state),
    )
    for plan in group:
      results[plan.batch_size] = result = test.run(plan.batch_size, seeds, state=state)
      logging.info("B=%d: %s (%.2f s)", plan.batch_size, _describe(result), result.seconds)
  results = [results[p.batch_size] for p in plans]
  fit = batch_scaling(results)
  out = LrFindResult(
    tuple(results), fit, paste_line(cfg, results, fit), suggest_lib.RECOMMENDATION_RULE
  )
  if workdir is not None:
    write_outputs(out, cfg, workdir)
  return out


def _describe(result: BatchResult) -> str:
  parts = [
    f"{n} {s.lr:.3g} (x{s.spread:.2f}{'' if s.reliable else ', UNRELIABLE'})"
    for n, s in result.spreads.items()
  ]
  rec = result.recommendation
  return "; ".join(parts) + (
    f" -> recommended {rec.lr:.3g}{'' if rec.reliable else ' (UNRELIABLE: seeds disagree)'}"
  )


def to_json(result: LrFindResult, cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """lr_find.json: per batch size, each seed's suggestions, their spreads and the recommendation."""
  per_batch = []
  for r in result.results:
    rec = r.recommendation
    per_batch.append(
      dict(
        batch_size=r.batch_size,
        seconds=r.seconds,
        suggestions={
          n: dict(lr=s.lr, per_seed=list(s.per_seed), spread=s.spread, reliable=s.reliable)
          for n, s in r.spreads.items()
        },
        recommendation=dict(lr=rec.lr, capped=rec.capped, reliable=rec.reliable),
        seeds=[
          dict(
            seed=s.seed,
            steps_run=s.steps_run,
            diverged=s.curve.diverged,
            diverged_at_step=s.curve.end if s.curve.diverged else None,
            diverged_at_lr=float(s.curve.lrs[s.curve.end]) if s.curve.diverged else None,
            suggestions=s.suggestions,
          )
          for s in r.sweeps
        ],
      )
    )
  return dict(
    rule=result.rule,
    lr_find=cfg.lr_find.to_dict(),
    per_batch=per_batch,
    batch_scaling=result.batch_scaling,
    paste=result.paste,
  )


def to_csv(result: LrFindResult) -> str:
  """lr_find.csv: every recorded step up to and including the one that diverged."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(CSV_FIELDS)
  for r in result.results:
    for sweep in r.sweeps:
      c = sweep.curve
      for t in range(min(c.end + 1, c.lrs.size)):
        writer.writerow(
          (
            sweep.seed,
            r.batch_size,
            t,
            f"{c.lrs[t]:.6g}",
            f"{c.losses[t]:.6g}",
            f"{c.smoothed[t]:.6g}",
          )
        )
  return buf.getvalue()


def write_outputs(result: LrFindResult, cfg: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes lr_find.csv, lr_find.json and lr_find.png into ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  outputs.atomic_write_text(os.path.join(workdir, "lr_find.csv"), to_csv(result))
  outputs.atomic_write_json(os.path.join(workdir, "lr_find.json"), to_json(result, cfg))
  plot(result, os.path.join(workdir, "lr_find.png"))


MARKERS = dict(steepest="v", valley="o", minimum="s", stable="X", recommended="*")
LABELS = dict(
  steepest="steepest",
  valley="valley",
  minimum="minimum / 10",
  stable="largest stable",
  recommended="recommended",
)


def plot(result: LrFindResult, path: str) -> str:
  """lr_find.png: smoothed loss vs lr (log axis), one colour per batch size.

  The line is the median over seeds, the band their min..max (each seed until
  it diverged); markers sit at each suggestion's median lr on that line.
  """
  # Imported here: matplotlib costs start-up, and only the outputs need it.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(7.2, 4.8), layout="tight")
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  lo, hi = math.inf, -math.inf
  for i, r in enumerate(result.results):
    color = f"C{i}"
    n = max(s.curve.lrs.size for s in r.sweeps)
    lrs = next(s.curve.lrs for s in r.sweeps if s.curve.lrs.size == n)
    curves = np.full((len(r.sweeps), n), np.nan)
    for j, s in enumerate(r.sweeps):
      curves[j, : s.curve.end] = s.curve.smoothed[: s.curve.end]
    seen = np.isfinite(curves).any(axis=0)
    lrs, curves = lrs[seen], curves[:, seen]
    mid = np.nanmedian(curves, axis=0)
    ax.fill_between(
      lrs, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=color, alpha=0.2, linewidth=0
    )
    ax.plot(lrs, mid, color=color, label=f"B={r.batch_size} ({len(r.sweeps)} seeds)")
    lo, hi = min(lo, np.nanmin(curves)), max(hi, mid[0])
    points = {n: s.lr for n, s in r.spreads.items()}
    points["recommended"] = r.recommendation.lr
    for name, lr in points.items():
      y = np.interp(math.log(lr), np.log(lrs), mid)
      unreliable = not (
        r.spreads[name].reliable if name in r.spreads else r.recommendation.reliable
      )
      ax.plot(
        [lr],
        [y],
        MARKERS[name],
        color=color,
        markersize=12 if name == "recommended" else 8,
        markerfacecolor="none" if unreliable else color,
        markeredgecolor="k",
      )
  ax.set_xscale("log")
  ax.set_xlabel("learning rate")
  ax.set_ylabel("smoothed training loss")
  span = max(hi - lo, 1e-3 * max(abs(hi), 1.0))  # the range's start up to the lowest loss
  ax.set_ylim(lo - 0.05 * span, hi + 0.5 * span)
  ax.set_title("LR range test (hollow marker: unreliable across seeds)")
  handles, _ = ax.get_legend_handles_labels()
  handles += [
    Line2D([], [], marker=m, linestyle="none", color="grey", markeredgecolor="k", label=LABELS[n])
    for n, m in MARKERS.items()
  ]
  ax.legend(handles=handles, fontsize=8)
  fig.savefig(path, dpi=110)
  return path


def main(argv):
  del argv
  result = lr_find(flags.FLAGS.config, flags.FLAGS.workdir)
  for r in result.results:
    print(f"B={r.batch_size}: {_describe(r)}")
  if result.batch_scaling is not None:
    rec = result.batch_scaling["recommended"]
    print(f"lr ~ B^{rec['exponent']:.2f} (linear rule: 1, square-root rule: 0.5)")
  print(f"Rule: {result.rule}.")
  print("Paste into python -m lrscale.train:")
  print(result.paste)


if __name__ == "__main__":
  # Flags are defined only when this module is the program (as lrscale.train).
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file(
    "config", None, "Run config file (configs/*.py).", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Output directory for lr_find.csv/json/png.")
  flags.mark_flags_as_required(["config", "workdir"])
  from lrscale.engine import launch  # pylint: disable=g-import-not-at-top

  launch.run(main)
