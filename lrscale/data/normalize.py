"""On-device normalisation of uint8 image batches.

The input pipeline ships uint8 pixels (4x fewer bytes to the device than
float32); the train and eval steps normalise inside the jitted program:
``x = (pixels - mean) / std`` per channel, in pixel units.
"""

from __future__ import annotations

import jax.numpy as jnp

# ImageNet training-set channel statistics (RGB) in uint8 pixel units: the
# constants of torchvision and the flax ImageNet example (0.485, 0.456, 0.406)
# and (0.229, 0.224, 0.225) times 255.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def normalize(
  images: jnp.ndarray,
  mean: tuple[float, ...] = IMAGENET_MEAN,
  std: tuple[float, ...] = IMAGENET_STD,
  dtype: jnp.dtype = jnp.float32,
) -> jnp.ndarray:
  """Returns ``(images - mean) / std`` over the last (channel) axis, as ``dtype``.

  Args:
    images: uint8 ``[..., C]`` pixels.
    mean: Per-channel mean, ``C`` values in pixel units.
    std: Per-channel standard deviation, ``C`` values in pixel units.
    dtype: Output dtype (e.g. ``jnp.bfloat16`` for a bf16 model).
  """
  mean_arr = jnp.asarray(mean, jnp.float32)
  inv_std = 1.0 / jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) - mean_arr) * inv_std).astype(dtype)
