"""Small convolutional classifier in the style of Shallue et al. 2018's "simple CNN"."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lrscale.models.conv import conv_general_dilated_fn

__all__ = ["SmallCNN"]


class SmallCNN(nnx.Module):
  """Conv-ReLU stack with stride-2 downsampling, then one dense hidden layer and a readout.

  Shallue et al. 2018 ("Measuring the Effects of Data Parallelism on Neural Network
  Training") used conv(5x5)-maxpool blocks then a dense layer on MNIST/Fashion-MNIST.
  Here each conv has stride 2 instead of a following 2x2 max-pool: same downsampling,
  but the gradient step measured ~4x faster on this team's CPU machine, where the conv
  weight gradient at full resolution dominated. No batch normalisation.
  """

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    channels: Sequence[int] = (32, 64),
    dense: int = 128,
    kernel_size: int = 5,
    conv_impl: str = "auto",
    rngs: nnx.Rngs,
  ) -> None:
    """Creates the network.

    Args:
      input_shape: ``(H, W, C)`` of one example.
      num_classes: Number of output logits.
      channels: Output channels of each stride-2 convolution.
      dense: Width of the hidden dense layer.
      kernel_size: Spatial size of every convolution kernel.
      conv_impl: Convolution implementation, see ``lrscale.models.conv`` (same
        parameters and results for every choice; only speed differs).
      rngs: Key source for the initialisers.

    Raises:
      ValueError: If ``input_shape`` is not ``(H, W, C)``.
    """
    if len(input_shape) != 3:
      raise ValueError(f"SmallCNN needs (H, W, C) inputs, got input_shape={input_shape}.")
    height, width, in_ch = input_shape
    ins = (in_ch, *channels)
    conv_fn = conv_general_dilated_fn(conv_impl)
    self.convs = nnx.List(
      [
        nnx.Conv(
          i,
          o,
          (kernel_size, kernel_size),
          strides=2,
          padding="SAME",
          conv_general_dilated=conv_fn,
          rngs=rngs,
        )
        for i, o in zip(ins[:-1], ins[1:])
      ]
    )
    for _ in channels:  # SAME padding with stride 2 gives ceil(size / 2)
      height, width = -(-height // 2), -(-width // 2)
    self.dense = nnx.Linear(height * width * ins[-1], dense, rngs=rngs)
    self.head = nnx.Linear(dense, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns float32 logits ``[B, num_classes]`` for ``x`` ``[B, H, W, C]``."""
    del train  # no BN or dropout
    for conv in self.convs:
      x = nnx.relu(conv(x))
    x = nnx.relu(self.dense(x.reshape(x.shape[0], -1)))
    return self.head(x).astype(jnp.float32)
