"""Fully connected classifier, as in Shallue et al. 2018's model-size experiments on MNIST."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "relu": nnx.relu,
  "tanh": nnx.tanh,
  "gelu": nnx.gelu,
  "silu": nnx.silu,
}


class MLP(nnx.Module):
  """Flatten, then ``len(hidden)`` dense layers with an activation, then a linear readout.

  Follows the fully connected networks of Shallue et al. 2018 ("Measuring the Effects of
  Data Parallelism on Neural Network Training"), who varied their width and depth. It has
  no batch statistics, so ``nnx.state(model, nnx.BatchStat)`` is empty.
  """

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    hidden: Sequence[int] = (128, 128),
    activation: str = "relu",
    rngs: nnx.Rngs,
  ) -> None:
    """Creates the network.

    Args:
      input_shape: Shape of one example (without the batch axis); it is flattened.
      num_classes: Number of output logits.
      hidden: Width of each hidden layer; empty gives a linear (logistic) model.
      activation: One of ``ACTIVATIONS``.
      rngs: Key source for the initialisers.

    Raises:
      ValueError: If ``activation`` is unknown.
    """
    if activation not in ACTIVATIONS:
      raise ValueError(
        f"config.model.activation={activation!r} is not one of {sorted(ACTIVATIONS)}."
      )
    widths = (math.prod(input_shape), *hidden)
    self.hidden = nnx.List([nnx.Linear(i, o, rngs=rngs) for i, o in zip(widths[:-1], widths[1:])])
    self.head = nnx.Linear(widths[-1], num_classes, rngs=rngs)
    self.activation = activation

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns float32 logits ``[B, num_classes]``; ``train`` is unused (no BN, no dropout)."""
    del train
    act = ACTIVATIONS[self.activation]
    h = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      h = act(layer(h))
    return self.head(h).astype(jnp.float32)
