"""The pure, jitted train and eval steps.

The model lives as (graphdef, params, batch_stats) from ``nnx.split``; the step
merges it, takes gradients, applies the optimizer and splits it again, so the
jitted code holds no Python-side state and can be vmapped over trials or
sharded over devices unchanged. The learning rate is computed inside the step
from the schedule and a *traced* peak lr (``TrainState.base_lr``), so one
compiled program serves every learning rate of a sweep.

For speed on small models the loop itself runs on the device: ``make_train_segment``
runs up to ``segment_len`` steps in one ``lax.while_loop`` with a traced trip
count (one compilation for every segment length), gathering each batch from a
device-resident dataset by index. Per-step losses and learning rates come back
in a buffer, so logging and divergence checks still see every step.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lrscale import noise_scale
from lrscale.engine.compiler_options import program_compiler_options
from lrscale.engine.parallel import AXIS
from lrscale.optim import hyperparams, optimizers, precision
from lrscale.tasks import Task


def as_float_images(x: jax.Array) -> jax.Array:
  """uint8 images -> float32 in [0, 1] on the device (as ``tfds_source.to_float_images``
  does on the host); other inputs unchanged. Streamed batches cross to the device as
  uint8, a quarter of the bytes."""
  return x.astype(jnp.float32) / jnp.float32(255) if x.dtype == jnp.uint8 else x


class TrainState(NamedTuple):
  """Everything that changes during training, as one pytree of arrays."""

  step: jax.Array  # int32: optimizer updates applied so far
  params: Any  # nnx.State of nnx.Param
  batch_stats: Any  # nnx.State of nnx.BatchStat (empty without BN)
  opt_state: Any
  base_lr: jax.Array  # peak lr after the scaling rule (traced: sweeps share a compile)
  lr_scale: jax.Array  # reduce-on-plateau factor, set on the host between segments
  noise: noise_scale.NoiseScaleState


class SegmentControl(NamedTuple):
  """Per-call scalars of the on-device loop (traced: changing them never recompiles)."""

  eval_every: jax.Array  # int32 steps; evaluate when (step - eval_offset) % eval_every == 0
  eval_offset: jax.Array  # int32: first step of the current batch-ramp phase (else 0)
  max_loss: jax.Array  # float32; train loss above it (or non-finite) = diverged
  target_value: jax.Array  # float32; NaN = no target
  target_sign: jax.Array  # +1 when higher is better (accuracy), -1 when lower (loss)
  target_index: jax.Array  # int32: position of the target metric in task.metric_names
  stop_at_target: jax.Array  # bool


class StepFns(NamedTuple):
  """The pieces of a run (all pure): jitted, plus the raw step for vmap/lr_find."""

  step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]  # unjitted train_step
  segment: Callable[..., Any]  # unjitted train_segment (vmapped over trials by the study)
  train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  train_segment: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  evaluate: Callable[..., dict[str, jax.Array]]
  # (state, xs, ys, ws) -> ({metric: weighted sum}, sum of weights): one part of an
  # evaluation that the host streams batch by batch (lrscale.engine.evaluate).
  eval_sums: Callable[..., tuple[dict[str, jax.Array], jax.Array]]


def make_step_fns(
  *,
  graphdef: Any,
  task: Task,
  tx: optax.GradientTransformation,
  optimizer_cfg: Any,
  lr_fn: Callable[[Any, Any], Any],
  mesh: Mesh,
  noise_splits: int = 0,
  noise_decay: float = 0.95,
  segment_len: int = 1,
  sample: Callable[[jax.Array], tuple[jax.Array, jax.Array]] | None = None,
  exact_metrics: Callable[[Callable[[jax.Array], jax.Array]], dict[str, jax.Array]] | None = None,
  compute_dtype: str = "float32",
  device_eval: bool = True,
) -> StepFns:
  """Builds the train step, the on-device segment loop and the evaluation.

  Args:
    graphdef: the model's static graph from ``nnx.split``.
    task: what the outputs are scored by (loss, eval metrics; ``lrscale.tasks``).
    tx: the optax optimizer (lr injected, see ``lrscale.optimizers``).
    optimizer_cfg: the optimizer config (for schedule-free eval params).
    lr_fn: ``(step, peak_lr) -> lr``, traceable.
    mesh: the device mesh; batches are sharded over its ``data`` axis.
    noise_splits: if > 1 and the step has a single microbatch, split it into this
      many parts to estimate the gradient noise scale (same gradient, same update).
    noise_decay: EMA decay of the noise-scale estimates.
    segment_len: the largest number of steps ``train_segment`` runs per call.
    sample: ``ids -> (x, y)``: batches are generated on the device from the
      example ids in ``idx`` instead of gathered from ``data_x``/``data_y``
      (``lrscale.data.registry.GeneratedSource``).
    exact_metrics: ``predict -> metrics``: the eval metrics in closed form, in
      place of the weighted means over eval batches.
    compute_dtype: activations and matmuls in this dtype, parameters, optimizer
      state, loss and BatchNorm statistics in float32 (``lrscale.optim.precision``);
      float16 needs ``tx`` wrapped in ``precision.dynamic_loss_scale``.
    device_eval: evaluate inside ``train_segment`` (on the device-resident eval
      batches); False for streamed eval splits, which the host evaluates at
      segment boundaries with ``eval_sums`` (``lrscale.engine.evaluate``).

  Returns:
    ``StepFns`` of jitted functions.
  """
  batch_spec = NamedSharding(mesh, P(None, AXIS))  # [microbatches, per_micro, ...]

  def batch(data_x, data_y, ids):
    """The examples ``ids`` name: rows of the device-resident data, or generated."""
    if sample is not None:
      return sample(ids)
    return data_x[ids], data_y[ids]

  dtype = precision.compute_dtype(compute_dtype)

  def loss_fn(params, batch_stats, x, y, scale):
    """(loss x scale, (loss, new BN stats)); scale is None without loss scaling."""
    # copy=True: batch_stats is not differentiated, so grad hands its Variables
    # through from the outer trace, and BatchNorm may not mutate those in place.
    model = nnx.merge(graphdef, precision.cast_to_compute(params, dtype), batch_stats, copy=True)
    logits = model(precision.cast_to_compute(x, dtype), train=True)
    loss = jnp.mean(task.loss(logits, y))
    scaled = loss if scale is None else loss * scale
    return scaled, (loss, nnx.state(model, nnx.BatchStat))

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def gradients(params, batch_stats, x, y, k=None, scale=None):
    """Mean gradient over microbatches x: [K, b, ...]; K == 1 is one plain step.

    Each microbatch starts from the same BatchNorm running statistics and the
    new statistics are averaged, so k microbatches update them exactly as one
    batch of k*b examples would (the ghost-BN groups are the same). A traced
    ``k <= K`` uses only the first k microbatches: a batch-size ramp changes k
    between phases without recompiling.
    """
    if k is not None:
      return _dynamic_gradients(params, batch_stats, x, y, k, scale)
    k = x.shape[0]
    if k == 1:
      (_, (loss, stats)), grads = grad_fn(params, batch_stats, x[0], y[0], scale)
      return loss, stats, grads, None

    def body(g_sum, xy):
      (_, (loss, stats)), g = grad_fn(params, batch_stats, *xy, scale)
      return jax.tree.map(jnp.add, g_sum, g), (loss, stats, noise_scale.tree_sq_norm(g))

    zeros = jax.tree.map(jnp.zeros_like, params)
    g_sum, (losses, stats, sq_norms) = jax.lax.scan(body, zeros, (x, y), unroll=min(k, 8))
    grads = jax.tree.map(lambda g: g / k, g_sum)
    stats = jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)
    return jnp.mean(losses), stats, grads, jnp.mean(sq_norms)

  def _dynamic_gradients(params, batch_stats, x, y, k, scale):
    def body(j, carry):
      g_sum, s_sum, l_sum = carry
      (_, (loss, stats)), g = grad_fn(params, batch_stats, x[j], y[j], scale)
      return (jax.tree.map(jnp.add, g_sum, g), jax.tree.map(jnp.add, s_sum, stats), l_sum + loss)

    zeros = lambda t: jax.tree.map(jnp.zeros_like, t)  # noqa: E731
    g_sum, s_sum, l_sum = jax.lax.fori_loop(
      0, k, body, (zeros(params), zeros(batch_stats), jnp.float32(0))
    )
    kf = k.astype(jnp.float32)
    mean = lambda t: jax.tree.map(lambda a: a / kf, t)  # noqa: E731
    return l_sum / kf, mean(s_sum), mean(g_sum), None

  def train_step(state: TrainState, x: jax.Array, y: jax.Array, k: jax.Array | None = None):
    """One optimizer step on the global batch x: [K, b, ...] (K microbatches of b).

    ``k`` (traced int, optional) = how many of the K microbatches this step
    uses; given by a batch-size ramp.
    """
    if noise_splits > 1 and x.shape[0] == 1:
      # Same examples, same mean gradient: only the split into parts is new.
      x = x.reshape((noise_splits, -1) + x.shape[2:])
      y = y.reshape((noise_splits, -1) + y.shape[2:])
    x = jax.lax.with_sharding_constraint(x, batch_spec)
    y = jax.lax.with_sharding_constraint(y, batch_spec)
    scaling = precision.loss_scale_state(state.opt_state)
    scale = None if scaling is None else scaling.scale
    loss, batch_stats, grads, small_sq = gradients(state.params, state.batch_stats, x, y, k, scale)
    if scale is not None:  # true gradients for the optimizer, the norms and the noise scale
      grads = jax.tree.map(lambda g: g / scale, grads)
      small_sq = None if small_sq is None else small_sq / jnp.square(scale)
    lr = lr_fn(state.step, state.base_lr) * state.lr_scale
    opt_state = hyperparams.set_learning_rate(state.opt_state, lr)
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_sq = noise_scale.tree_sq_norm(grads)
    metrics = {
      "train_loss": loss,
      "lr": jnp.asarray(lr, jnp.float32),
      "grad_norm": jnp.sqrt(grad_sq),
    }
    if scaling is not None:  # the scale this step used; it halves when a step is skipped
      metrics["loss_scale"] = scale
    noise = state.noise
    if small_sq is not None:
      b_small = x.shape[1]
      g2, trace = noise_scale.estimate(
        small_sq, grad_sq, b_small=b_small, b_big=b_small * x.shape[0]
      )
      noise = noise_scale.update_noise_scale(noise, g2, trace, decay=noise_decay)
      metrics.update(
        gns_grad_sq_norm=g2, gns_trace_sigma=trace, gns_b_simple=noise_scale.b_simple(noise)
      )
    new_state = TrainState(
      step=state.step + 1,
      params=params,
      batch_stats=batch_stats,
      opt_state=opt_state,
      base_lr=state.base_lr,
      lr_scale=state.lr_scale,
      noise=noise,
    )
    return new_state, metrics

  def eval_model(state: TrainState):
    params = optimizers.eval_params(optimizer_cfg, state.opt_state, state.params)
    return nnx.merge(graphdef, precision.cast_to_compute(params, dtype), state.batch_stats)

  def eval_sums(state: TrainState, xs, ys, ws):
    """(weighted sums of the task's metrics, sum of the weights) over batches xs: [nb, eb, ...].

    ``ws`` is 1 for real examples and 0 for padding; uint8 images are scaled on
    the device as in training (``as_float_images``).
    """
    model = eval_model(state)

    def one(carry, xyw):
      x, y, w = xyw
      out = model(precision.cast_to_compute(as_float_images(x), dtype), train=False)
      sums = {k: jnp.sum(fn(out, y) * w) for k, fn in task.metrics.items()}
      return carry, (sums, jnp.sum(w))

    _, (sums, count) = jax.lax.scan(one, None, (xs, ys, ws))
    return {k: jnp.sum(v) for k, v in sums.items()}, jnp.sum(count)

  def evaluate(state: TrainState, xs=None, ys=None, ws=None):
    """Weighted means of the task's metrics over padded eval batches xs: [nb, eb, ...].

    ``ws`` is 1 for real examples and 0 for padding, so every example of the
    split counts exactly once whatever the batch and device counts. With
    ``exact_metrics`` there are no eval batches: the metrics are closed-form.
    """
    if exact_metrics is not None:
      model = eval_model(state)
      return exact_metrics(lambda x: model(precision.cast_to_compute(x, dtype), train=False))
    sums, count = eval_sums(state, xs, ys, ws)
    total = jnp.maximum(count, 1.0)
    return {k: v / total for k, v in sums.items()}

  def train_segment(
    state: TrainState, data_x, data_y, idx, n, eval_data, control: SegmentControl, ks=None
  ):
    """Runs up to ``n <= segment_len`` steps on the device; batch i is ``data[idx[i]]``
    (or the examples generated from the ids ``idx[i]``).

    With ``idx=None`` the data is the segment's own batches, ``[segment_len, K, b,
    ...]`` sharded on ``b`` (streamed input, ``lrscale.engine.feed``): batch i is
    ``data[i]``, each device reading only its own rows.

    Evaluation (every ``control.eval_every`` steps), the target check and the
    divergence check happen inside the loop, so a run that evaluates often
    still makes no host round trip per step; the loop stops early at
    divergence, or at the target when ``control.stop_at_target``.

    ``ks`` (int32 [segment_len], optional): microbatches used at each step, for a
    batch-size ramp; idx then holds the largest number of microbatches.

    Returns:
      (state, buffer of per-step metrics [segment_len] with NaN eval entries on
      steps without evaluation, number of steps run, stop flag).
    """

    def batch_at(i):
      x, y = (data_x[i], data_y[i]) if idx is None else batch(data_x, data_y, idx[i])
      return as_float_images(x), y

    probe = jax.eval_shape(train_step, state, *batch_at(0), None if ks is None else ks[0])[1]
    buf = {key: jnp.zeros((segment_len,), v.dtype) for key, v in probe.items()}
    nan = jnp.full((segment_len,), jnp.nan, jnp.float32)
    buf.update({k: nan for k in task.metric_names})
    buf.update(diverged=jnp.zeros((segment_len,), bool), reached=jnp.zeros((segment_len,), bool))
    no_eval = {k: jnp.float32(jnp.nan) for k in task.metric_names}

    def cond(carry):
      _, _, i, stop = carry
      return (i < n) & ~stop

    def body(carry):
      st, bf, i, _ = carry
      st, m = train_step(st, *batch_at(i), None if ks is None else ks[i])
      loss = m["train_loss"]
      diverged = ~jnp.isfinite(loss) | (loss > control.max_loss)
      do_eval = ((st.step - control.eval_offset) % control.eval_every == 0) & ~diverged
      if device_eval:
        ev = jax.lax.cond(do_eval, lambda: evaluate(st, *eval_data), lambda: no_eval)
      else:  # the host evaluates at the segment's end (lrscale.engine.evaluate)
        do_eval, ev = jnp.bool_(False), no_eval
      metric = jnp.stack([ev[k] for k in task.metric_names])[control.target_index]
      reached = do_eval & (control.target_sign * (metric - control.target_value) >= 0)
      m = dict(m, **ev, diverged=diverged, reached=reached)
      bf = {key: bf[key].at[i].set(m[key]) for key in bf}
      stop = diverged | (reached & control.stop_at_target)
      return st, bf, i + 1, stop

    state, buf, done, stop = jax.lax.while_loop(
      cond, body, (state, buf, jnp.int32(0), jnp.bool_(False))
    )
    return state, buf, done, stop

  # Outputs replicated: the state is, and every process reads the metrics.
  out = NamedSharding(mesh, P())
  opts = program_compiler_options(mesh.devices.flat[0].platform)
  return StepFns(
    step=train_step,
    segment=train_segment,
    train_step=jax.jit(train_step, donate_argnums=0, out_shardings=out, compiler_options=opts),
    train_segment=jax.jit(
      train_segment, donate_argnums=0, out_shardings=out, compiler_options=opts
    ),
    evaluate=jax.jit(evaluate, out_shardings=out, compiler_options=opts),
    eval_sums=jax.jit(eval_sums, out_shardings=out, compiler_options=opts),
  )
