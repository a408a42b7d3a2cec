"""Gradient noise scale B_simple from two batch sizes (McCandlish et al. 2018).

McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch
Training", Appendix A.1. With per-example gradient covariance Sigma and true
gradient G, a batch-mean gradient of size B satisfies

    E |G_B|^2 = |G|^2 + tr(Sigma) / B.

Measuring squared norms at a small size b and a big size B (e.g. per-device
and global gradients of the same step) gives unbiased estimates

    |G|^2     ~ (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(Sigma) ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

and the simple noise scale ``B_simple = tr(Sigma) / |G|^2``. Each estimate is
very noisy, so numerator and denominator are averaged separately with an EMA
and only then divided (the ratio of averages, not the average of ratios,
which would be biased and can blow up when ``|G|^2`` estimates cross zero).

Everything here is pure ``jax.numpy``: jit-safe inside a train step, and it
accepts numpy/Python floats too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

ArrayLike = Any


class NoiseScaleState(NamedTuple):
  """Bias-corrected EMAs of the two estimates.

  Attributes:
    ema_grad_sq: Bias-corrected EMA of the ``|G|^2`` estimates.
    ema_trace: Bias-corrected EMA of the ``tr(Sigma)`` estimates.
    count: Number of (finite) updates folded in.
  """

  ema_grad_sq: jax.Array
  ema_trace: jax.Array
  count: jax.Array


def tree_sq_norm(tree: Any) -> jax.Array:
  """Squared L2 norm of a pytree of arrays, ``sum_leaves sum(x^2)``, in float32."""
  leaves = jax.tree_util.tree_leaves(tree)
  return sum((jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves), jnp.float32(0.0))


def estimate(
  small_sq_norm: ArrayLike, big_sq_norm: ArrayLike, *, b_small: float, b_big: float
) -> tuple[jax.Array, jax.Array]:
  """Unbiased two-batch estimates of ``|G|^2`` and ``tr(Sigma)`` (McCandlish A.1).

  Args:
    small_sq_norm: ``|G_b|^2``: the MEAN over the small batches of their
      gradients' squared norms (averaging the norms, not the gradients).
    big_sq_norm: ``|G_B|^2``: squared norm of the big-batch mean gradient.
    b_small: Small batch size b (examples per small gradient).
    b_big: Big batch size B > b.

  Returns:
    ``(grad_sq, trace_sigma)`` with
    ``grad_sq = (B |G_B|^2 - b |G_b|^2) / (B - b)`` and
    ``trace_sigma = (|G_b|^2 - |G_B|^2) / (1/b - 1/B)``. Either can be
    negative for a single step; only their averages are meaningful.

  Raises:
    ValueError: if ``b_big <= b_small`` (static check; the sizes are Python numbers).
  """
  if not b_big > b_small > 0:
    raise ValueError(f"need 0 < b_small < b_big, got b_small={b_small}, b_big={b_big}")
  small = jnp.asarray(small_sq_norm, dtype=jnp.float32)
  big = jnp.asarray(big_sq_norm, dtype=jnp.float32)
  grad_sq = (b_big * big - b_small * small) / (b_big - b_small)
  trace_sigma = (small - big) / (1.0 / b_small - 1.0 / b_big)
  return grad_sq, trace_sigma


def init_noise_scale() -> NoiseScaleState:
  """Empty state: both EMAs 0, no updates yet."""
  return NoiseScaleState(jnp.float32(0.0), jnp.float32(0.0), jnp.int32(0))


def update_noise_scale(
  state: NoiseScaleState, grad_sq: ArrayLike, trace: ArrayLike, *, decay: float
) -> NoiseScaleState:
  """Fold one pair of estimates into the bias-corrected EMAs.

  The EMA ``m_t = decay m_{t-1} + (1 - decay) x_t`` divided by its weight
  ``1 - decay^t`` (Adam-style correction) is kept directly, via the
  equivalent recursion ``c_t = c_{t-1} + (1 - decay)/(1 - decay^t) (x_t - c_{t-1})``,
  so the first update returns ``x_1`` exactly and no zero-start bias remains.
  Non-finite inputs (a diverging step) are skipped rather than poisoning the
  averages forever.

  Args:
    state: Current state.
    grad_sq: ``|G|^2`` estimate from :func:`estimate`.
    trace: ``tr(Sigma)`` estimate from :func:`estimate`.
    decay: EMA decay in [0, 1), e.g. 0.99.

  Returns:
    The new state.
  """
  g = jnp.asarray(grad_sq, dtype=jnp.float32)
  t = jnp.asarray(trace, dtype=jnp.float32)
  ok = jnp.isfinite(g) & jnp.isfinite(t)
  count = state.count + ok.astype(state.count.dtype)
  weight = (1.0 - decay) / (
    1.0 - jnp.power(jnp.float32(decay), jnp.maximum(count, 1).astype(jnp.float32))
  )
  new_g = state.ema_grad_sq + weight * (jnp.where(ok, g, 0.0) - state.ema_grad_sq)
  new_t = state.ema_trace + weight * (jnp.where(ok, t, 0.0) - state.ema_trace)
  return NoiseScaleState(
    ema_grad_sq=jnp.where(ok, new_g, state.ema_grad_sq),
    ema_trace=jnp.where(ok, new_t, state.ema_trace),
    count=count,
  )


def b_simple(state: NoiseScaleState) -> jax.Array:
  """``B_simple = tr(Sigma) / |G|^2`` from the averaged estimates.

  NaN before the first update or while the averaged ``|G|^2`` is not
  positive (the noise scale is then undefined, not infinite).
  """
  valid = (state.count > 0) & (state.ema_grad_sq > 0)
  return jnp.where(valid, state.ema_trace / jnp.where(valid, state.ema_grad_sq, 1.0), jnp.nan)
