"""What a run builds before its first step: data on the devices, the model, compiled functions.

``RunSetup`` is shared by every run that compiles to the same program
(``lrscale.engine.programs.program_key``): the trials of one batch size in a
study, the seeds of a range test. Per-run state comes from ``initial_state``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrscale import config as config_lib
from lrscale import noise_scale
from lrscale.data import order, registry
from lrscale.engine import init_from, parallel
from lrscale.engine.step import SegmentControl, StepFns, TrainState, make_step_fns
from lrscale.models import build_model
from lrscale.optim import optimizers, precision


class RunSetup:
  """What a run builds before its first step: data on device, model, compiled fns."""

  def __init__(self, plan: config_lib.RunPlan, data: registry.InMemoryData):
    cfg = plan.config
    self.plan, self.data = plan, data
    self.mesh = parallel.make_mesh(plan.num_devices)
    self.graphdef, params, _ = self._init_model(cfg.seed)
    self.tx = init_from.with_frozen(
      optimizers.build_optimizer(plan.optimizer, params=params), params, cfg.init.freeze
    )
    if cfg.model.dtype == "float16":  # too little range without it (precision.py)
      self.tx = precision.dynamic_loss_scale(self.tx, init_scale=cfg.model.loss_scale_init)
    self.segment_len = plan.sync_every
    self.fns: StepFns = make_step_fns(
      graphdef=self.graphdef,
      task=plan.task,
      tx=self.tx,
      optimizer_cfg=plan.optimizer,
      lr_fn=plan.lr_fn(),
      mesh=self.mesh,
      segment_len=self.segment_len,
      noise_splits=cfg.noise_scale.splits if cfg.noise_scale.enabled else 0,
      noise_decay=cfg.noise_scale.decay,
      compute_dtype=cfg.model.dtype,
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
    if plan.config.init.checkpoint:  # fine-tuning: another run's parameters
      params, batch_stats = init_from.load_initial(plan.config.init, params, batch_stats)
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
      target_index=jnp.int32(plan.task.metric_index(t.metric)),
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
