"""Im2col convolution: every receptive field as one row of a matrix, then one matmul.

Im2col (Chellapilla et al. 2006, "High Performance Convolutional Neural Networks for
Document Processing") writes

  P[n, (i, j, c)] = x_pad[b, s_h * h + i, s_w * w + j, c],   n = (b, h, w),
  y = P @ K.reshape(kh * kw * C_in, C_out),

so forward, input gradient (``dy @ K^T`` scattered back by the slices' transposes, pads)
and weight gradient (``P^T @ dy``) are each one matmul plus data movement. The patches are
``kh * kw / (s_h * s_w)`` times the input: cheap on small maps (few output pixels, where
XLA's CPU conv is slow), memory traffic on large ones. ``lrscale.models.conv`` decides
where it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["im2col", "patches_conv_general_dilated", "supports_patches"]

# NHWC activations, HWIO kernels: what nnx.Conv passes for 2-D convs.
_NHWC_HWIO = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _check_supported(
  lhs: jax.Array,
  rhs: jax.Array,
  lhs_dilation: Sequence[int] | None,
  rhs_dilation: Sequence[int] | None,
  dimension_numbers: Any,
  feature_group_count: int,
  batch_group_count: int,
) -> None:
  """Raises unless this is a plain 2-D NHWC/HWIO convolution (all that im2col handles)."""
  dense = all(d == 1 for d in (*(lhs_dilation or (1,)), *(rhs_dilation or (1,))))
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if lhs.ndim != 4 or numbers != _NHWC_HWIO or not dense or feature_group_count != 1:
    raise ValueError(
      "config.model.conv_impl='patches' supports 2-D NHWC/HWIO convolutions without "
      f"dilation or feature groups (got input {lhs.shape}, kernel {rhs.shape}, "
      f"dimension numbers {dimension_numbers}); use conv_impl='xla' for this model."
    )
  if batch_group_count != 1:
    raise ValueError("patches convolution does not support batch_group_count != 1.")


def im2col(
  x: jax.Array,
  window: Sequence[int],
  strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
) -> tuple[jax.Array, tuple[int, int, int]]:
  """The patch matrix ``P`` of the module doc and the output's (batch, height, width).

  Args:
    x: NHWC input.
    window: (kh, kw).
    strides: (s_h, s_w).
    padding: ``lax`` padding: a string or (lo, hi) per spatial axis; negative crops.

  Returns:
    ``P`` of shape [batch * out_h * out_w, kh * kw * C] (features in HWIO order), and
    (batch, out_h, out_w).
  """
  (kh, kw), (sh, sw), c_in = window, strides, x.shape[-1]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], (kh, kw), (sh, sw), padding)
  (top, bottom), (left, right) = padding
  # lax.pad, not jnp.pad: conv padding may be negative (cropping).
  zero = jnp.zeros((), x.dtype)
  x = lax.pad(x, zero, ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
  batch, height, width, _ = x.shape
  out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
  taps = [
    lax.slice(
      x,
      (0, i, j, 0),
      (batch, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, c_in),
      (1, sh, sw, 1),
    )
    for i in range(kh)
    for j in range(kw)
  ]
  # Feature order (i, j, c) is the row-major order of the HWIO kernel's first three axes.
  patches = jnp.concatenate(taps, axis=-1).reshape(batch * out_h * out_w, kh * kw * c_in)
  return patches, (batch, out_h, out_w)


def patches_conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
  out_sharding: Any = None,
) -> jax.Array:
  """``lax.conv_general_dilated`` for 2-D NHWC/HWIO convs, as im2col + one matmul.

  Same signature and result as ``lax.conv_general_dilated`` (to float32 rounding) for
  the convolutions it supports; gradients come from autodiff of slices and one
  ``dot_general``, so the weight gradient is the matmul ``P^T @ dy``.

  Raises:
    ValueError: For dilation, feature groups or any layout other than NHWC/HWIO.
  """
  del out_sharding  # the batch axis of the patches keeps the input's sharding
  _check_supported(
    lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, batch_group_count
  )
  kh, kw, c_in, c_out = rhs.shape
  patches, (batch, out_h, out_w) = im2col(lhs, (kh, kw), window_strides, padding)
  y = lax.dot_general(
    patches,
    rhs.reshape(kh * kw * c_in, c_out),
    (((1,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  return y.reshape(batch, out_h, out_w, c_out)


def supports_patches(lhs: jax.Array, rhs: jax.Array, **kwargs: Any) -> bool:
  """Whether ``patches_conv_general_dilated`` computes this convolution."""
  try:
    _check_supported(
      lhs,
      rhs,
      kwargs.get("lhs_dilation"),
      kwargs.get("rhs_dilation"),
      kwargs.get("dimension_numbers"),
      kwargs.get("feature_group_count", 1),
      kwargs.get("batch_group_count", 1),
    )
  except ValueError:
    return False
  return True
