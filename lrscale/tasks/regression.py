"""Least-squares regression: loss (prediction - y)^2 / 2 per example."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lrscale.tasks.base import Task


def half_squared_error(pred: jax.Array, y: jax.Array) -> jax.Array:
  """(f(x) - y)^2 / 2, summed over output dimensions; float32."""
  err = pred.astype(jnp.float32).reshape(y.shape[0], -1) - y.astype(jnp.float32).reshape(
    y.shape[0], -1
  )
  return 0.5 * jnp.sum(jnp.square(err), axis=-1)


REGRESSION = Task(
  name="regression",
  loss=half_squared_error,
  metrics={"eval_loss": half_squared_error},
  modes={"eval_loss": "min"},
  # SGD near its stability limit overshoots before it settles; only a loss
  # two orders of magnitude above the start is a divergence.
  divergence_factor=100.0,
)
