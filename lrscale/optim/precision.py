"""Mixed precision: compute in bfloat16 / float16, keep float32 master weights.

The policy of the flax ImageNet example and big_vision: parameters, optimizer
state, the loss and BatchNorm statistics stay float32; activations and the
matmuls / convolutions run in ``config.model.dtype``. The train step casts a
copy of the parameters (and the inputs) to the compute dtype at use, so the
gradient flows back through the cast and arrives in float32.

float16 has too little range for small gradients, so it comes with dynamic
loss scaling (Micikevicius et al. 2018, "Mixed Precision Training"): the loss
is multiplied by a scale S before differentiation and the gradients divided by
S after; a step whose gradients overflow (inf / NaN) is skipped and S halves;
after ``growth_interval`` finite steps in a row S doubles.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype(name: str) -> jnp.dtype:
  """The jnp dtype of ``config.model.dtype``."""
  if name not in DTYPES:
    raise ValueError(
      f"config.model.dtype={name!r} is not a compute dtype; choose one of {list(DTYPES)}."
    )
  return jnp.dtype(name)


def cast_to_compute(tree: Any, dtype: jnp.dtype) -> Any:
  """Casts the floating-point leaves of ``tree`` to ``dtype`` (integers untouched)."""

  def cast(x):
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
      return x.astype(dtype)
    return x

  return jax.tree.map(cast, tree)


class DynamicLossScaleState(NamedTuple):
  """State of :func:`dynamic_loss_scale`."""

  scale: jax.Array  # float32 S: the loss is multiplied by it before differentiation
  good_steps: jax.Array  # int32: finite steps since the scale last changed
  skipped: jax.Array  # int32: steps skipped so far (overflowing gradients)
  inner: optax.OptState


def dynamic_loss_scale(
  inner: optax.GradientTransformation,
  *,
  init_scale: float = 2.0**15,
  growth_interval: int = 2000,
  factor: float = 2.0,
  min_scale: float = 1.0,
) -> optax.GradientTransformation:
  """Wraps ``inner``: skips steps with non-finite gradients and adapts the loss scale.

  The caller multiplies the loss by ``loss_scale(state)`` and divides the
  gradients by it before ``update`` (so ``update`` sees true gradients).

  Args:
    inner: the optimizer.
    init_scale: S at step 0.
    growth_interval: finite steps in a row after which S is multiplied by ``factor``.
    factor: growth and back-off factor.
    min_scale: S never falls below this.

  Returns:
    A ``GradientTransformation`` with ``DynamicLossScaleState``.
  """

  def init(params):
    return DynamicLossScaleState(
      scale=jnp.float32(init_scale),
      good_steps=jnp.int32(0),
      skipped=jnp.int32(0),
      inner=inner.init(params),
    )

  def update(grads, state, params=None):
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    safe = jax.tree.map(lambda g: jnp.where(finite, g, jnp.zeros_like(g)), grads)
    updates, new_inner = inner.update(safe, state.inner, params)
    updates = jax.tree.map(lambda u: jnp.where(finite, u, jnp.zeros_like(u)), updates)
    new_inner = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_inner, state.inner)
    grow = finite & (state.good_steps + 1 >= growth_interval)
    scale = jnp.where(
      finite,
      jnp.where(grow, state.scale * factor, state.scale),
      jnp.maximum(state.scale / factor, min_scale),
    )
    good = jnp.where(finite & ~grow, state.good_steps + 1, 0)
    return updates, DynamicLossScaleState(
      scale=scale.astype(jnp.float32),
      good_steps=good.astype(jnp.int32),
      skipped=state.skipped + (~finite).astype(jnp.int32),
      inner=new_inner,
    )

  return optax.GradientTransformation(init, update)


def _is_scale_state(x: Any) -> bool:
  return isinstance(x, DynamicLossScaleState)


def loss_scale_state(opt_state: Any) -> DynamicLossScaleState | None:
  """The loss-scale state inside ``opt_state``, or None without loss scaling."""
  leaves = jax.tree_util.tree_leaves(opt_state, is_leaf=_is_scale_state)
  found = [s for s in leaves if _is_scale_state(s)]
  return found[0] if found else None
