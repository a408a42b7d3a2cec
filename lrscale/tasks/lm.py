"""Next-token prediction (language modelling): cross-entropy per token.

An example is a sequence of T tokens; the model outputs logits [b, T, V] and
the targets are the inputs shifted by one, [b, T]. The loss of an example is the
mean over its T tokens of the softmax cross-entropy in nats, so the batch mean
(the engine's) is the mean over all b * T tokens when every sequence has the
same length (they do: fixed-length windows), and ``eval_loss`` is nats per
token (divide by ln 2 for bits per character on a byte-level corpus).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from lrscale.tasks.base import Task


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-sequence mean over tokens of -log softmax(logits)[target]; [b, T, V], [b, T] -> [b]."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return jnp.mean(ce, axis=-1)


def token_accuracy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-sequence fraction of tokens whose argmax logit is the target; [b]."""
  return jnp.mean((jnp.argmax(logits, -1) == targets).astype(jnp.float32), axis=-1)


LANGUAGE_MODELLING = Task(
  name="language_modelling",
  loss=token_cross_entropy,
  metrics={"eval_loss": token_cross_entropy, "eval_accuracy": token_accuracy},
  modes={"eval_loss": "min", "eval_accuracy": "max"},
  # ln V is the loss of a uniform prediction; a run is diverged at 4x that.
  loss_floor=lambda vocab_size: math.log(max(vocab_size, 2)),
)
