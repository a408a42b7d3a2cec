"""Softmax classification: cross-entropy loss, top-1 and top-5 accuracy."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from lrscale.tasks.base import Task


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy, computed in float32 whatever the model's dtype."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where ``labels`` is among the ``k`` largest logits (ties broken by index)."""
  k = min(k, logits.shape[-1])
  if k == 1:
    return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  _, top = jax.lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


CLASSIFICATION = Task(
  name="classification",
  loss=cross_entropy,
  metrics={
    "eval_loss": cross_entropy,
    "eval_accuracy": lambda logits, y: top_k_correct(logits, y, 1),
    "eval_top5_accuracy": lambda logits, y: top_k_correct(logits, y, 5),
  },
  modes={"eval_loss": "min", "eval_accuracy": "max", "eval_top5_accuracy": "max"},
  # At least 4 ln C: a run that starts far below chance level must not be
  # called diverged for climbing back to it.
  loss_floor=lambda num_classes: math.log(max(num_classes, 2)),
)
