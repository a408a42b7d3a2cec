"""XLA's 2-D convolution with both gradients written as canonical NHWC/HWIO convolutions.

Autodiff of ``lax.conv_general_dilated`` gives the input gradient as a conv with an
``OI``-ordered kernel and the weight gradient as a conv that contracts over the batch
(dimension labels ``b01f_01oi->b01f`` and ``f01b_i01o->01bf``). XLA's CPU compiler hands
only the canonical form ``b01f_01io->b01f`` to its fast conv kernels (Eigen); it turns
the other two into canonical convs plus transposes in a jitted step, but not inside a
``while`` loop, where they run as naive loop nests. lrscale trains in an on-device
``lax.scan``, so there a ResNet gradient was 30x slower than the same step jitted alone
(6 convs of 32x32x16 at B=64: 3.0 s per step in a 5-step scan, 96 ms unrolled;
docs/benchmarks.md, "Convolutions on CPU").

``canonical_conv_general_dilated`` is the same convolution with a ``custom_vjp`` that
spells the transposes out, so every conv XLA sees is canonical, in loops or not. With
``y = conv(x, K)`` (strides s, padding (lo, hi) per spatial axis):

  dx = conv(dilate_s(dy), flip_hw(K)^{I<->O}),  padding from ``lax``'s own vjp rule,
  dK = conv(x^{N<->C}, dy^{N<->I}, rhs_dilation = s)^{N<->I},

the transposed-convolution identities of Dumoulin & Visin 2016 ("A guide to convolution
arithmetic for deep learning"), which is also what ``lax``'s transpose rules compute:
results equal autodiff's to float32 rounding (``tests/test_conv.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lrscale.models.patches_conv import im2col, patches_conv_general_dilated, supports_patches

__all__ = ["canonical_conv_general_dilated"]

_DN = ("NHWC", "HWIO", "NHWC")

Pads = tuple[tuple[int, int], tuple[int, int]]


def _conv(x, k, strides, padding, precision, preferred, rhs_dilation=(1, 1), lhs_dilation=(1, 1)):
  return lax.conv_general_dilated(
    x,
    k,
    strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=_DN,
    precision=precision,
    preferred_element_type=preferred,
  )


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _canonical(x: jax.Array, k: jax.Array, strides, padding: Pads, precision, preferred):
  return _conv(x, k, strides, padding, precision, preferred)


def _canonical_fwd(x, k, strides, padding, precision, preferred):
  return _conv(x, k, strides, padding, precision, preferred), (x, k)


# Weight gradients contract over the whole batch; XLA's CPU conv does that faster in
# chunks of a few images (B=256, 3x3 convs of 32x32x16 ... 8x8x64, in a scan: chunks of 8
# 1.1-1.6x faster than 16, 1.3-2.5x faster than the whole batch; docs/benchmarks.md).
_DK_CHUNK = 8
# On maps of at most 16x16 pixels a chunk's weight gradient is faster as im2col's
# transpose (patches^T @ dy: 16x16x32 and 8x8x64, 1.4-1.7x) than as a conv; on 32x32
# maps the patches cost more to build than the conv (docs/benchmarks.md).
_DK_PATCHES_MAX_PIXELS = 256


def _input_grad(x, k, dy, strides, padding, precision, preferred):
  """dx: the transposed conv for stride 1; im2col's transpose for strided convs.

  A strided conv's transpose dilates dy (``lhs_dilation``), which XLA's CPU conv runs
  2.5-4x slower than the transpose of im2col's slices.
  """
  if tuple(strides) != (1, 1):

    def patches(x):
      return patches_conv_general_dilated(x, k, strides, padding, dimension_numbers=_DN)

    _, vjp = jax.vjp(patches, x)
    return vjp(dy.astype(x.dtype))[0]
  window = np.array(k.shape[:2])
  in_hw, out_hw = np.array(x.shape[1:3]), np.array(dy.shape[1:3])
  lo = np.array([p[0] for p in padding])
  # As lax's _conv_general_vjp_lhs_padding (stride 1).
  dx_lo = window - lo - 1
  dx_hi = in_hw + window - 1 - out_hw - dx_lo
  k_t = lax.rev(k, (0, 1)).transpose(0, 1, 3, 2).astype(dy.dtype)
  pads = tuple(zip(dx_lo.tolist(), dx_hi.tolist()))
  return _conv(dy, k_t, (1, 1), pads, precision, preferred)


def _weight_grad(x, k, dy, strides, padding, precision, preferred):
  """dK summed over chunks of the batch; per chunk im2col's transpose on small maps, else
  a conv with channels as the batch, the batch as features, dy as a kernel dilated by the
  stride."""
  window, s = np.array(k.shape[:2]), np.array(strides)
  in_hw, out_hw = np.array(x.shape[1:3]), np.array(dy.shape[1:3])
  lo = np.array([p[0] for p in padding])
  # As lax's _conv_general_vjp_rhs_padding.
  hi = ((out_hw - 1) * s + 1) - in_hw + window - lo - 1
  pads = tuple(zip(lo.tolist(), hi.tolist()))

  def dk_conv(x, dy):
    lhs, rhs = x.transpose(3, 1, 2, 0).astype(dy.dtype), dy.transpose(1, 2, 0, 3)
    out = _conv(lhs, rhs, (1, 1), pads, precision, preferred, rhs_dilation=strides)
    return out.transpose(1, 2, 0, 3).astype(jnp.float32)

  def dk_patches(x, dy):
    p, _ = im2col(x.astype(dy.dtype), k.shape[:2], strides, padding)
    out = lax.dot_general(
      p, dy.reshape(p.shape[0], -1), (((0,), (0,)), ((), ())), precision=precision
    )
    return out.reshape(k.shape).astype(jnp.float32)

  dk = dk_patches if x.shape[1] * x.shape[2] <= _DK_PATCHES_MAX_PIXELS else dk_conv
  batch = x.shape[0]
  chunks = batch // _DK_CHUNK
  if chunks < 4 or batch % _DK_CHUNK:
    return dk(x, dy).astype(k.dtype)

  # Image b = i * chunks + j goes to chunk j: the scanned axis is the minor one, so a
  # batch sharded over devices in contiguous blocks stays sharded in every chunk.
  def split(a):
    return jnp.moveaxis(a.reshape(batch // chunks, chunks, *a.shape[1:]), 1, 0)

  def body(total, xy):
    return total + dk(*xy), None

  total, _ = lax.scan(body, jnp.zeros(k.shape, jnp.float32), (split(x), split(dy)))
  return total.astype(k.dtype)


def _canonical_bwd(strides, padding, precision, preferred, residuals, dy):
  x, k = residuals
  dx = _input_grad(x, k, dy, strides, padding, precision, preferred)
  dk = _weight_grad(x, k, dy, strides, padding, precision, preferred)
  return dx.astype(x.dtype), dk


_canonical.defvjp(_canonical_fwd, _canonical_bwd)


def canonical_conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  *,
  precision: Any = None,
  preferred_element_type: Any = None,
  out_sharding: Any = None,
  **kwargs: Any,
) -> jax.Array:
  """``lax.conv_general_dilated`` whose gradients are canonical convs (see module doc).

  Same arguments (``kwargs``: ``lhs_dilation``, ``rhs_dilation``, ``dimension_numbers``,
  ``feature_group_count``, ``batch_group_count``) and forward result as
  ``lax.conv_general_dilated``; a conv the custom vjp does not cover (dilation, groups,
  another layout) is passed to ``lax.conv_general_dilated`` unchanged.
  """
  if not supports_patches(lhs, rhs, **kwargs):
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      precision=precision,
      preferred_element_type=preferred_element_type,
      out_sharding=out_sharding,
      **kwargs,
    )
  del out_sharding  # the output keeps the input's batch sharding
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  return _canonical(lhs, rhs, tuple(window_strides), pads, precision, preferred_element_type)
