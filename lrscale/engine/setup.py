"""What a run builds before its first step: data on the devices, the model, compiled functions.

``RunSetup`` is shared by every run that compiles to the same program
(``lrscale.engine.programs.program_key``): the trials of one batch size in a
study, the seeds of a range test. Per-run state comes from ``initial_state``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from lrscale import config as config_lib
from lrscale import noise_scale
from lrscale.data import order, registry
from lrscale.engine import evaluate as evaluate_lib
from lrscale.engine import init_from, parallel
from lrscale.engine.step import SegmentControl, StepFns, TrainState, make_step_fns
from lrscale.models import build_model
from lrscale.models.registry import model_kwargs
from lrscale.optim import optimizers, precision, ultralytics_warmup


class RunSetup:
  """What a run builds before its first step: data on device, model, compiled fns."""

  def __init__(self, plan: config_lib.RunPlan, data: registry.InMemoryData):
    cfg = plan.config
    self.plan, self.data = plan, data
    self.mesh = parallel.make_mesh(plan.num_devices)
    self.graphdef, params, _ = self._init_model(cfg.seed)
    self.tx = init_from.with_frozen(
      optimizers.build_optimizer(
        plan.optimizer, params=params, warmup=ultralytics_warmup.from_schedule(plan.schedule)
      ),
      params,
      cfg.init.freeze,
    )
    if cfg.model.dtype == "float16":  # too little range without it (precision.py)
      self.tx = precision.dynamic_loss_scale(self.tx, init_scale=cfg.model.loss_scale_init)
    self.segment_len = plan.sync_every
    # Generated data (linreg): drawn on the device from example ids, scored exactly.
    self.source = registry.generated_source(cfg.dataset)
    self.streamed = registry.is_streamed(cfg.dataset)
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
      sample=self.source.sample if self.source else None,
      exact_metrics=self.source.exact_metrics if self.source else None,
      compute_dtype=cfg.model.dtype,
      device_eval=not self.streamed,
    )
    self.evaluator = None
    if self.streamed:
      from lrscale.engine.feed import StreamFeeder  # pylint: disable=g-import-not-at-top

      self.feeder = StreamFeeder(self.mesh, self.segment_len)
      # The whole eval split, read through the pipeline at each evaluation.
      self.evaluator = evaluate_lib.StreamedEvaluator(plan, self.mesh, self.fns.eval_sums)
      self.fns = self.fns._replace(
        train_segment=self.evaluator.wrap_segment(self.fns.train_segment)
      )
    else:
      # The training set lives on every device; batches are gathered by index
      # (generated data: empty arrays, the step never reads them).
      self.train_x = parallel.put_replicated(data.train_x, self.mesh)
      self.train_y = parallel.put_replicated(data.train_y, self.mesh)
    in_memory_eval = self.source is None and not self.streamed
    self.eval_batches = self._eval_batches() if in_memory_eval else ()
    micro = plan.batch_size // plan.microbatches
    rows = parallel.local_rows(self.mesh, micro)
    logging.info(
      "Global batch [%d, %d] + %s per step over %d devices; process %d of %d feeds rows "
      "[%d, %d) of each microbatch; eval set %s.",
      plan.microbatches,
      micro,
      tuple(data.input_shape),
      self.mesh.devices.size,
      jax.process_index(),
      jax.process_count(),
      rows.start,
      rows.stop,
      self._eval_layout(),
    )

  def _eval_layout(self) -> str:
    """(batches, global batch) of the eval set, for the log."""
    if self.evaluator is not None:
      ev = self.evaluator
      return f"({ev.num_steps}, {ev.batch_size}) streamed, {ev.num_examples} examples"
    return str(tuple(self.eval_batches[0].shape)) if self.eval_batches else "exact"

  def _model(self, seed) -> nnx.Module:
    cfg, data = self.plan.config, self.data
    return build_model(
      cfg.model.name,
      input_shape=data.input_shape,
      num_classes=data.num_classes,
      bn_group_size=self.plan.bn_group_size,
      rngs=nnx.Rngs(seed),
      **model_kwargs(cfg.model),
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
    n = self.data.num_eval
    eb = evaluate_lib.eval_batch_size(self.plan.config.eval_batch_size, n, self.plan.num_devices)
    nb = -(-n // eb)
    pad = nb * eb - n
    ex, ey = self.data.eval_x, self.data.eval_y  # padding keeps their dtypes (int tokens)
    xs = np.concatenate([ex, np.zeros((pad,) + ex.shape[1:], ex.dtype)])
    ys = np.concatenate([ey, np.zeros((pad,) + ey.shape[1:], ey.dtype)])
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
    this segment's own batches ``[segment_len, K, b, ...]``, sharded on ``b``
    and prefetched (``lrscale.engine.feed``), with ``idx=None``.
    """
    if not self.streamed:
      return (self.train_x, self.train_y) + self.indices(plan, start, n)
    from lrscale.engine.loop import _next_boundary  # pylint: disable=g-import-not-at-top

    xs, ys = self.feeder.segment(
      plan, start, n, next_end=lambda step: _next_boundary(step, plan, self.segment_len)
    )
    return xs, ys, None, None

  def indices(
    self, plan: config_lib.RunPlan, start: int, n: int
  ) -> tuple[jax.Array, jax.Array | None]:
    """Batch indices for steps [start, start+n), padded to the segment length.

    Returns idx [L, K, b] (K microbatches of b examples; with a batch ramp K is
    the largest phase's count and unused rows are 0) and, with a ramp, the
    microbatches of each step [L] (else None).
    """
    micro = plan.batch_size // plan.microbatches
    seed = plan.config.seed
    if len(plan.ramp) == 1:  # fixed batch: one vectorised lookup for the whole segment
      ids = self._example_ids(seed, start * plan.batch_size, n * plan.batch_size)
      idx = np.zeros((self.segment_len * plan.batch_size,) + ids.shape[1:], ids.dtype)
      idx[: len(ids)] = ids
      idx = idx.reshape((self.segment_len, plan.microbatches, micro) + ids.shape[1:])
      return parallel.put_batch(idx, self.mesh, axis=2), None
    probe = self._example_ids(seed, 0, 0)
    shape = (self.segment_len, plan.max_microbatches, micro) + probe.shape[1:]
    idx = np.zeros(shape, probe.dtype)
    ks = np.zeros((self.segment_len,), np.int32)
    for i in range(n):  # one slice per step: the batch of step s depends on its phase
      k = plan.microbatches_at(start + i)
      ids = self._example_ids(seed, plan.examples_at(start + i), k * micro)
      idx[i, :k] = ids.reshape((k, micro) + ids.shape[1:])
      ks[i] = k
    return parallel.put_batch(idx, self.mesh, axis=2), parallel.put_replicated(ks, self.mesh)

  def _example_ids(self, seed: int, start: int, count: int) -> np.ndarray:
    """Ids of stream positions [start, start + count): rows of the shuffled
    training set (``lrscale.data.order``), or a generated source's ids."""
    if self.source is not None:
      return self.source.example_ids(seed, start, count)
    return order.stream_indices(
      seed=seed, start=start, count=count, num_examples=self.data.num_train
    )

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

  def close(self) -> None:
    """Stops a streamed run's input workers (the setup stays usable: they restart)."""
    if self.streamed:
      self.feeder.release()

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """The task's eval metrics of ``state`` (exact for a generated source)."""
    if self.evaluator is not None:
      return self.evaluator(state)
    return {k: float(v) for k, v in self.fns.evaluate(state, *self.eval_batches).items()}
