"""One training run: ``python -m lrscale.train --config=configs/default.py --workdir=DIR``.

``train(config, workdir)`` is the testable function; ``main`` is a thin absl
wrapper. The loop alternates device-side segments of steps (``lrscale.step``)
with host-side bookkeeping at segment boundaries: logging, evaluation, target
and divergence checks, reduce-on-plateau, checkpoints. Boundaries fall on
multiples of ``log_every``, ``eval_every`` and ``checkpoint_every`` only, so a
resumed run passes through the very same boundaries as an uninterrupted one.

Outputs in ``workdir``: config.json, metrics.jsonl, tensorboard/, summary.json,
checkpoints/.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from lrscale import config as config_lib
from lrscale import metrics as metrics_lib
from lrscale import noise_scale, optimizers, parallel
from lrscale import plateau as plateau_lib
from lrscale.data import order, registry
from lrscale.models import build_model
from lrscale.step import SegmentControl, StepFns, TrainState, make_step_fns


class RunSetup:
  """What a run builds before its first step: data on device, model, compiled fns."""

  def __init__(self, plan: config_lib.RunPlan, data: registry.InMemoryData):
    cfg = plan.config
    self.plan, self.data = plan, data
    self.mesh = parallel.make_mesh(plan.num_devices)
    self.graphdef, params, _ = self._init_model(cfg.seed)
    self.tx = optimizers.build_optimizer(plan.optimizer, params=params)
    self.segment_len = plan.sync_every
    self.fns: StepFns = make_step_fns(
      graphdef=self.graphdef,
      tx=self.tx,
      optimizer_cfg=plan.optimizer,
      lr_fn=plan.lr_fn(),
      mesh=self.mesh,
      segment_len=self.segment_len,
      noise_splits=cfg.noise_scale.splits if cfg.noise_scale.enabled else 0,
      noise_decay=cfg.noise_scale.decay,
    )
    self.streamed = registry.is_streamed(cfg.dataset)
    # (seed, next step, iterator) of the stream being read; trials sharing this
    # setup differ in seed, so the seed is part of the key.
    self._stream: tuple[int, int, Any] | None = None
    if not self.streamed:
      # The training set lives on every device; batches are gathered by index.
      self.train_x = parallel.put_replicated(data.train_x, self.mesh)
      self.train_y = parallel.put_replicated(data.train_y, self.mesh)
    self.eval_batches = self._eval_batches()

  def _model(self, seed) -> nnx.Module:
    cfg, data = self.plan.config, self.data
    return build_model(
      cfg.model.name,
      input_shape=data.input_shape,
      num_classes=data.num_classes,
      bn_group_size=self.plan.bn_group_size,
      rngs=nnx.Rngs(seed),
      **_model_kwargs(cfg.model),
    )

  def _init_model(self, seed: int):
    """(graphdef, params, batch_stats) for ``seed``; init is jitted (eager init is slow)."""
    if not hasattr(self, "_init_jit"):
      abstract = nnx.eval_shape(lambda: self._model(0))
      self._graphdef = nnx.split(abstract, nnx.Param, nnx.BatchStat)[0]
      # An 'rbg' key: XLA compiles its generator 3-5x faster than threefry's
      # (MLP init 4.8 s -> 1.4 s, ResNet-20 21 s -> 5 s on 2 CPU cores), and
      # init is compiled in every fresh process.
      self._init_jit = jax.jit(
        lambda s: nnx.split(self._model(jax.random.key(s, impl="rbg")), nnx.Param, nnx.BatchStat)[
          1:
        ]
      )
    params, batch_stats = self._init_jit(jnp.asarray(seed, jnp.uint32))
    return self._graphdef, params, batch_stats

  def initial_state(self, plan: config_lib.RunPlan) -> TrainState:
    """The state at step 0 for ``plan``'s seed and lr (the compiled fns are shared)."""
    _, params, batch_stats = self._init_model(plan.config.seed)
    state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats,
      # A copy: some optimizers' state starts as the params' own
      # arrays (schedule-free's z), and the segment donates the
      # state, which may not donate one buffer twice.
      opt_state=jax.tree.map(jnp.copy, self.tx.init(params)),
      base_lr=jnp.asarray(plan.lr, jnp.float32),
      lr_scale=jnp.ones((), jnp.float32),
      noise=noise_scale.init_noise_scale(),
    )
    return parallel.put_replicated(state, self.mesh)

  def _eval_batches(self):
    eb = self.plan.config.eval_batch_size
    n = self.data.num_eval
    eb = min(eb, n)
    eb += -eb % self.plan.num_devices  # every device gets an equal share
    nb = -(-n // eb)
    pad = nb * eb - n
    xs = np.concatenate(
      [self.data.eval_x, np.zeros((pad,) + self.data.eval_x.shape[1:], np.float32)]
    )
    ys = np.concatenate([self.data.eval_y, np.zeros((pad,), np.int32)])
    ws = np.concatenate([np.ones((n,), np.float32), np.zeros((pad,), np.float32)])
    shape = (nb, eb)
    return tuple(
      parallel.put_batch(a.reshape(shape + a.shape[1:]), self.mesh, axis=1) for a in (xs, ys, ws)
    )

  def inputs(
    self, plan: config_lib.RunPlan, start: int, n: int
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """(data_x, data_y, idx, ks) for steps [start, start+n) of ``plan``.

    In memory: the device-resident training set and indices into it. Streamed:
    this segment's batches, read from grain on the host, become the segment's
    "dataset" and idx simply walks through it, so the compiled segment is the
    same program either way.
    """
    if not self.streamed:
      return (self.train_x, self.train_y) + self.indices(plan, start, n)
    xs, ys = self._stream_batches(plan, start, n)
    pad = (self.segment_len - n) * plan.batch_size
    xs = np.concatenate([xs, np.zeros((pad,) + xs.shape[1:], xs.dtype)])
    ys = np.concatenate([ys, np.zeros((pad,), ys.dtype)])
    idx = np.arange(self.segment_len * plan.batch_size, dtype=np.int32).reshape(
      self.segment_len, plan.microbatches, -1
    )
    return (
      parallel.put_replicated(xs, self.mesh),
      parallel.put_replicated(ys, self.mesh),
      parallel.put_batch(idx, self.mesh, axis=2),
      None,
    )

  def _stream_batches(
    self, plan: config_lib.RunPlan, start: int, n: int
  ) -> tuple[np.ndarray, np.ndarray]:
    from lrscale.data import stream  # pylint: disable=g-import-not-at-top

    seed = plan.config.seed
    if self._stream is None or self._stream[:2] != (seed, start):  # new run or resumed
      ds = plan.config.dataset
      self._stream = (
        seed,
        start,
        stream.stream_batches(
          ds.name,
          ds.train_split,
          data_dir=ds.data_dir or None,
          batch_size=plan.batch_size,
          seed=seed,
          start_step=start,
          shard_index=jax.process_index(),
          shard_count=jax.process_count(),
          preprocess=registry.preprocess_for(ds),
        ),
      )
    it = self._stream[2]
    batches = [next(it) for _ in range(n)]
    self._stream = (seed, start + n, it)
    return (
      np.concatenate([b[0] for b in batches]).astype(np.float32),
      np.concatenate([b[1] for b in batches]).astype(np.int32),
    )

  def indices(
    self, plan: config_lib.RunPlan, start: int, n: int
  ) -> tuple[jax.Array, jax.Array | None]:
    """Batch indices for steps [start, start+n), padded to the segment length.

    Returns idx [L, K, b] (K microbatches of b examples; with a batch ramp K is
    the largest phase's count and unused rows are 0) and, with a ramp, the
    microbatches of each step [L] (else None).
    """
    micro = plan.batch_size // plan.microbatches
    if len(plan.ramp) == 1:  # fixed batch: one vectorised lookup for the whole segment
      idx = np.zeros((self.segment_len, plan.batch_size), np.int32)
      idx[:n] = order.batch_indices(
        seed=plan.config.seed,
        start_step=start,
        num_steps=n,
        batch_size=plan.batch_size,
        num_examples=self.data.num_train,
      )
      idx = idx.reshape(self.segment_len, plan.microbatches, micro)
      return parallel.put_batch(idx, self.mesh, axis=2), None
    idx = np.zeros((self.segment_len, plan.max_microbatches, micro), np.int32)
    ks = np.zeros((self.segment_len,), np.int32)
    for i in range(n):  # one slice per step: the batch of step s depends on its phase
      k = plan.microbatches_at(start + i)
      idx[i, :k] = order.stream_indices(
        seed=plan.config.seed,
        start=plan.examples_at(start + i),
        count=k * micro,
        num_examples=self.data.num_train,
      ).reshape(k, micro)
      ks[i] = k
    return parallel.put_batch(idx, self.mesh, axis=2), parallel.put_replicated(ks, self.mesh)

  def control(
    self, plan: config_lib.RunPlan, *, max_loss: float, target_done: bool
  ) -> SegmentControl:
    """The on-device loop's eval cadence, divergence bound and target for ``plan``."""
    t = plan.config.target
    value = t.value if plan.has_target and not target_done else float("nan")
    return SegmentControl(
      eval_every=jnp.int32(plan.eval_every),
      eval_offset=jnp.int32(0),
      max_loss=jnp.float32(max_loss),
      target_value=jnp.float32(value),
      target_sign=jnp.float32(1 if t.mode == "max" else -1),
      target_is_loss=jnp.bool_(t.metric == "eval_loss"),
      stop_at_target=jnp.bool_(bool(t.stop)),
    )

  def evaluate(self, state: TrainState) -> dict[str, float]:
    return {k: float(v) for k, v in self.fns.evaluate(state, *self.eval_batches).items()}


def _model_kwargs(model_cfg) -> dict[str, Any]:
  name = model_cfg.name
  if name == "mlp":
    return dict(hidden=tuple(model_cfg.hidden))
  if name == "cnn":
    return dict(channels=tuple(model_cfg.channels), dense=model_cfg.dense)
  if name.startswith("resnet"):
    return dict(zero_init_last_bn=model_cfg.zero_init_last_bn)
  return {}


def _next_boundary(step: int, plan: config_lib.RunPlan, segment_len: int) -> int:
  """The next step at which the host must act: sync, checkpoint, plateau eval or the end."""
  intervals = [segment_len, plan.checkpoint_every]
  if plan.config.plateau.enabled:  # the plateau controller runs on the host after each eval
    intervals.append(plan.eval_every)
  # A batch-ramp phase starts a segment of its own: its eval cadence differs.
  phase_starts = [p.start_step for p in plan.ramp if p.start_step > step]
  return min(
    [plan.total_steps] + phase_starts + [(step // every + 1) * every for every in intervals]
  )


def _check_workdir(workdir: str, config_json: dict[str, Any]) -> None:
  """Refuses to mix two different runs in one workdir (nothing is overwritten)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f).get("config")
  if old is not None and old != config_json["config"]:
    changed = sorted(
      k for k in set(old) | set(config_json["config"]) if old.get(k) != config_json["config"].get(k)
    )
    raise ValueError(
      f"--workdir={workdir} already holds a run with a different config (fields "
      f"{changed} differ). Use a new --workdir, or delete that directory to start over."
    )


class RunLoop:
  """The host side of one run: outputs, logging, evaluation records, stopping, checkpoints.

  The device side (one run's ``train_segment``, or a vmapped group of runs) is
  driven by the caller; after each segment it hands this run's slice of the
  per-step buffer to ``absorb``. Keeping this in one class lets a single run
  and a vmapped group of trials share every line of bookkeeping.
  """

  def __init__(self, plan: config_lib.RunPlan, workdir: str, setup: RunSetup):
    self.plan, self.workdir, self.setup = plan, workdir, setup
    self.t_start = time.perf_counter()
    _check_workdir(workdir, json.loads(config_lib.to_json(plan)))
    os.makedirs(workdir, exist_ok=True)
    self.is_lead = jax.process_index() == 0
    if self.is_lead:
      metrics_lib.atomic_write_text(os.path.join(workdir, "config.json"), config_lib.to_json(plan))
    logging.info("Run plan: %s", json.dumps(plan.summary(), default=str))
    logging.info("Scaling rule: %s", plan.scaled.description)
    self.state = setup.initial_state(plan)
    # Imported here: orbax costs ~0.5 s of start-up that lr_find does not need.
    from lrscale.checkpoint import Checkpointer, abstract_like  # pylint: disable=g-import-not-at-top

    self.ckpt = Checkpointer(workdir, keep=plan.config.checkpoint_keep)
    self.plateau = plateau_lib.init_plateau(plan.config.plateau)
    # Host-side state that a resumed run needs to continue exactly.
    self.host: dict[str, Any] = dict(
      target_step=None,
      wall_time_s=0.0,
      loss_sum=0.0,
      loss_n=0,
      max_loss=plan.max_loss,
      last_eval={},
      plateau=self.plateau.to_dict(),
    )
    self.step = 0
    restored = self.ckpt.restore_latest(abstract_like(self.state))
    if restored is not None:
      self.step, self.state, self.host = restored
      self.plateau = plateau_lib.PlateauState.from_dict(self.host["plateau"])
      logging.info("Resumed %s from the checkpoint at step %d.", workdir, self.step)
    self.writer = metrics_lib.MetricsWriter(
      workdir, resume_step=self.step, tensorboard=plan.config.tensorboard and self.is_lead
    )
    self.progress = metrics_lib.Progress(total_steps=plan.total_steps, start_step=self.step)
    self.status, self.diverged_step, self.last_loss = "running", None, float("nan")
    self.wall_before = float(self.host["wall_time_s"])
    self.t_loop = time.perf_counter()
    if self.step == 0:
      self.host["last_eval"] = setup.evaluate(self.state)
      if self.host["max_loss"] == 0.0:  # automatic bound: 4 x the initial loss, >= 4 ln C
        self.host["max_loss"] = max(
          4.0 * self.host["last_eval"]["eval_loss"], 4.0 * math.log(setup.data.num_classes)
        )
      self.writer.write(dict(step=0, examples_seen=0, **self.host["last_eval"]))
    self.control = setup.control(
      plan, max_loss=self.host["max_loss"], target_done=self.host["target_step"] is not None
    )

  @property
  def finished(self) -> bool:
    return self.status != "running"

  def next_boundary(self) -> int:
    """The end of the next segment; also sets the segment's eval cadence."""
    offset, every = self.plan.eval_cadence_at(self.step)
    self.control = self.control._replace(eval_every=jnp.int32(every), eval_offset=jnp.int32(offset))
    return _next_boundary(self.step, self.plan, self.setup.segment_len)

  def absorb(
    self, buf: dict[str, np.ndarray], done: int, get_state: Callable[[], TrainState]
  ) -> None:
    """Records ``done`` steps of a segment; checkpoints and decides whether to stop.

    Args:
      buf: this run's per-step buffer (host numpy arrays).
      done: how many steps the device ran.
      get_state: returns this run's state after the segment (called only when
        it is needed: checkpoints, plateau, the end).
    """
    plan, host, cfg_t = self.plan, self.host, self.plan.config.target
    for i in range(done):
      s = self.step + i + 1
      loss = float(buf["train_loss"][i])
      if buf["diverged"][i]:
        self.status, self.diverged_step = "diverged", s
        self.writer.write(
          dict(step=s, examples_seen=plan.examples_at(s), lr=float(buf["lr"][i]), train_loss=loss)
        )
        logging.warning(
          "Diverged at step %d: train loss %s is non-finite or above %.3g.",
          s,
          loss,
          host["max_loss"],
        )
        self.state = get_state()
        return
      host["loss_sum"] += loss
      host["loss_n"] += 1
      self.last_loss = loss
      if s % plan.log_every == 0 or s == plan.total_steps:
        row = dict(
          step=s,
          examples_seen=plan.examples_at(s),
          lr=float(buf["lr"][i]),
          train_loss=host["loss_sum"] / host["loss_n"],
          grad_norm=float(buf["grad_norm"][i]),
        )
        row.update({k: float(buf[k][i]) for k in buf if k.startswith("gns_")})
        self.writer.write(row)
        host["loss_sum"], host["loss_n"] = 0.0, 0
      if not math.isnan(buf["eval_loss"][i]):
        host["last_eval"] = {k: float(buf[k][i]) for k in ("eval_loss", "eval_accuracy")}
        self.writer.write(dict(step=s, examples_seen=plan.examples_at(s), **host["last_eval"]))
        if plan.config.plateau.enabled:
          self.plateau = plateau_lib.update_plateau(
            self.plateau,
            host["last_eval"][plan.config.plateau.metric],
            cfg=plan.config.plateau,
            peak_lr=plan.lr,
          )
      if buf["reached"][i] and host["target_step"] is None:
        host["target_step"] = s
        self.control = self.control._replace(target_value=jnp.float32(jnp.nan))
        logging.info(
          "Target %s %s %s reached at step %d.",
          cfg_t.metric,
          ">=" if cfg_t.mode == "max" else "<=",
          cfg_t.value,
          s,
        )
    self.step += done
    self.progress.update(
      self.step, force=self.step == plan.total_steps, loss=self.last_loss, **host["last_eval"]
    )
    stop_now = plan.has_target and cfg_t.stop and host["target_step"] is not None
    at_end = self.step >= plan.total_steps or stop_now
    if plan.config.plateau.enabled or at_end or self.step % plan.checkpoint_every == 0:
      self.state = get_state()
    if plan.config.plateau.enabled:
      self.state = self.state._replace(
        lr_scale=parallel.put_replicated(
          jnp.asarray(self.plateau.scale, jnp.float32), self.setup.mesh
        )
      )
    if self.step % plan.checkpoint_every == 0 or at_end:
      host["plateau"] = self.plateau.to_dict()
      host["wall_time_s"] = self.wall_before + time.perf_counter() - self.t_loop
      self.ckpt.save(self.step, self.state, host)
    if at_end:
      self.status = "complete"

  def close(self) -> None:
    self.writer.close()
    self.ckpt.close()

  def summary(self) -> dict[str, Any]:
    """Writes and returns summary.json (call once the run is finished)."""
    summary = _summary(
      self.plan,
      status=self.status,
      step=self.diverged_step or self.step,
      last_eval=self.host["last_eval"],
      last_loss=self.last_loss,
      host=self.host,
      state=self.state,
      wall=self.wall_before + time.perf_counter() - self.t_loop,
      total_wall=time.perf_counter() - self.t_start,
    )
    if self.is_lead:
      metrics_lib.atomic_write_json(os.path.join(self.workdir, "summary.json"), summary)
    logging.info(
      "Run %s after %d steps: %s",
      self.status,
      summary["steps"],
      json.dumps(summary["final"], default=str),
    )
    return summary


def prepare(cfg, *, plan: config_lib.RunPlan | None = None) -> config_lib.RunPlan:
  """Process-level set-up before a run: distributed init, config check, caches, logs."""
  parallel.maybe_initialize_distributed(cfg.parallel)
  plan = plan or config_lib.resolve(cfg)
  metrics_lib.quiet_library_logs()
  parallel.enable_compilation_cache(os.path.expanduser(plan.config.compilation_cache))
  return plan


def train(
  cfg,
  workdir: str,
  *,
  plan: config_lib.RunPlan | None = None,
  setup: RunSetup | None = None,
  data: registry.InMemoryData | None = None,
  stop_after_steps: int | None = None,
) -> dict[str, Any]:
  """Trains one run to its budget or target and returns its summary.

  Args:
    cfg: the run config (``lrscale.config.base_config()`` plus changes).
    workdir: output directory; an existing one with checkpoints is resumed.
    plan: an already resolved plan (the study runner resolves once).
    setup: a ``RunSetup`` to reuse (its compiled functions serve every lr).
    data: in-memory data to reuse.
    stop_after_steps: stop (as if killed) at the first host boundary at or after
      this step; for tests.

  Returns:
    The summary dict also written to ``workdir/summary.json``.
  """
  plan = prepare(cfg, plan=plan)
  _check_workdir(workdir, json.loads(config_lib.to_json(plan)))  # before loading any data
  data = data or (setup.data if setup else registry.load_in_memory(plan.config.dataset))
  setup = setup or RunSetup(plan, data)
  loop = RunLoop(plan, workdir, setup)
  try:
    while not loop.finished:
      end = loop.next_boundary()
      data_x, data_y, idx, ks = setup.inputs(plan, loop.step, end - loop.step)
      state, buf, done, _ = setup.fns.train_segment(
        loop.state,
        data_x,
        data_y,
        idx,
        jnp.int32(end - loop.step),
        setup.eval_batches,
        loop.control,
        ks,
      )
      loop.absorb(jax.device_get(buf), int(done), lambda: state)  # one transfer
      loop.state = state
      if not loop.finished and stop_after_steps is not None and loop.step >= stop_after_steps:
        return dict(status="interrupted", steps=loop.step)
  finally:
    loop.close()
  return loop.summary()


def _summary(plan, *, status, step, last_eval, last_loss, host, state, wall, total_wall):
  cfg_t = plan.config.target
  target_step = host.get("target_step")
  noise = None
  if plan.config.noise_scale.enabled and status != "diverged":
    noise = dict(
      b_simple=float(noise_scale.b_simple(state.noise)),
      grad_sq_norm=float(state.noise.ema_grad_sq),
      trace_sigma=float(state.noise.ema_trace),
    )
  return dict(
    status=status,
    steps=int(step),
    examples_seen=plan.examples_at(int(step)),
    batch_size=plan.batch_size,
    lr=plan.lr,
    final=dict(train_loss=last_loss, **last_eval),
    target=dict(
      metric=cfg_t.metric,
      value=cfg_t.value,
      mode=cfg_t.mode,
      reached=target_step is not None,
      step=target_step,
      examples=None if target_step is None else plan.examples_at(target_step),
    ),
    wall_time_s=wall,
    process_time_s=total_wall,
    noise_scale=noise or dict(b_simple=None, grad_sq_norm=None, trace_sigma=None),
  )


def main(argv):
  del argv
  train(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  # Flags are defined only when this module is the program, so that the study
  # runner and lr_find can import train() and define their own --config.
  config_flags.DEFINE_config_file(
    "config", None, "Run config file (configs/*.py).", lock_config=True
  )
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
