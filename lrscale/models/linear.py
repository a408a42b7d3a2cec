"""A linear model without bias, started at zero: the student of ``lrscale.data.linreg``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Linear"]


class Linear(nnx.Module):
  """``f(x) = W^T flatten(x)`` with ``W = 0`` at init and no bias.

  Zero init and no bias make SGD on the squared loss exactly the linear
  recursion of the SGD-on-least-squares analyses (e.g. Bach & Moulines 2013),
  whose expected risk ``lrscale.analysis.theory`` computes in closed form.
  """

  def __init__(self, input_shape: Sequence[int], num_classes: int, *, rngs: nnx.Rngs) -> None:
    """Creates the zero-initialised weights.

    Args:
      input_shape: Shape of one example (without the batch axis); it is flattened.
      num_classes: Number of outputs (1 for scalar regression).
      rngs: Unused (the init is deterministic); kept for the common builder signature.
    """
    del rngs
    self.kernel = nnx.Param(jnp.zeros((math.prod(input_shape), num_classes), jnp.float32))

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns float32 outputs ``[B, num_classes]``; ``train`` is unused."""
    del train
    return x.reshape(x.shape[0], -1).astype(jnp.float32) @ self.kernel[...]
