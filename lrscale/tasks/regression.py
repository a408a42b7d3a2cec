"""Least-squares regression: loss (prediction - y)^2 / 2 per example.

``REGRESSION`` is scored on an eval split; ``EXACT_REGRESSION`` on a problem
whose risk is known in closed form (``lrscale.data.linreg``), so its excess
risk is computed exactly rather than sampled.
"""

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


EXACT_REGRESSION = Task(
  name="exact_regression",
  loss=half_squared_error,
  metrics={"eval_loss": half_squared_error},
  # R(w) - R(w*) and that over R(0) - R(w*): only the data's exact evaluator knows w*.
  exact_metrics=("eval_excess_risk", "eval_relative_excess"),
  modes={"eval_loss": "min", "eval_excess_risk": "min", "eval_relative_excess": "min"},
  divergence_factor=100.0,
)
