"""Heavy-ball momentum with the lr inside the velocity (Goyal et al. 2017)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class GoyalMomentumState(NamedTuple):
  """State of :func:`goyal_momentum`: velocity and the lr it was built with."""

  velocity: optax.Updates
  prev_lr: jax.Array


def goyal_momentum(
  learning_rate: jax.typing.ArrayLike,
  momentum: jax.typing.ArrayLike,
  *,
  nesterov: bool = False,
  correction: bool = True,
) -> optax.GradientTransformation:
  r"""Heavy-ball momentum with the lr inside the velocity (Goyal et al. form).

  .. math::
    v_t = m \, c_t \, v_{t-1} + \eta_t g_t, \qquad
    w_t = w_{t-1} - v_t \quad (\text{Nesterov: } - \eta_t g_t - m v_t),

  with momentum correction :math:`c_t = \eta_t / \eta_{t-1}` (1 without
  correction). Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 2.1:
  without :math:`c_t`, a change of lr only reaches the velocity gradually,
  so at warmup ends and step decays the effective step differs from the
  ``optax.sgd`` form :math:`u_t = m u_{t-1} + g_t,\ w_t = w_{t-1}-\eta_t u_t`.
  With the correction the two are identical (:math:`v_t = \eta_t u_t`).

  Args:
    learning_rate: current lr (may be a tracer, e.g. from inject_hyperparams).
    momentum: momentum coefficient m.
    nesterov: use the Nesterov look-ahead update.
    correction: rescale v by lr_t / lr_{t-1} (1 where lr_{t-1} == 0: the
      velocity is then empty or its scale unrecoverable).

  Returns:
    A GradientTransformation producing the (negative) parameter update.
  """

  def init_fn(params):
    return GoyalMomentumState(
      velocity=jax.tree.map(jnp.zeros_like, params),
      prev_lr=jnp.asarray(learning_rate, dtype=jnp.float32),
    )

  def update_fn(updates, state, params=None):
    del params
    lr = jnp.asarray(learning_rate, dtype=jnp.float32)
    if correction:
      ratio = jnp.where(
        state.prev_lr == 0, 1.0, lr / jnp.where(state.prev_lr == 0, 1.0, state.prev_lr)
      )
    else:
      ratio = jnp.ones([], jnp.float32)
    step = jax.tree.map(lambda g: -lr.astype(g.dtype) * g, updates)
    velocity = jax.tree.map(
      lambda v, s: (momentum * ratio * v + s).astype(v.dtype), state.velocity, step
    )
    if nesterov:
      out = jax.tree.map(lambda s, v: (s + momentum * v).astype(v.dtype), step, velocity)
    else:
      out = velocity
    return out, GoyalMomentumState(velocity=velocity, prev_lr=lr)

  return optax.GradientTransformation(init_fn, update_fn)
