"""2-D convolutions with a choice of implementation, chosen per backend and per layer.

XLA's CPU convolutions are slow where lrscale trains: inside the ``lax.scan`` of a train
segment. Autodiff leaves non-canonical convs (the input and weight gradients) in the
loop body, which XLA's CPU backend runs as naive loop nests: six 3x3 convs of 32x32x16 at
B=64 took 96 ms per gradient step jitted alone and 3.0 s per step in a scan on this
team's 2-core machine (docs/benchmarks.md, "Convolutions on CPU"). The implementations:

* ``xla``: ``lax.conv_general_dilated`` and autodiff's gradients (GPU/TPU: the native
  conv; CPU: slow in loops).
* ``canonical`` (``lrscale.models.canonical_conv``): XLA's conv with a custom vjp whose
  gradients are canonical convs, the weight gradient summed over chunks of the batch.
  Fastest on CPU for stride-1 convs of large maps (ResNet stages).
* ``patches`` (``lrscale.models.patches_conv``): im2col + one matmul. Fastest on CPU for
  small output maps, strided and 1x1 convs.
* ``auto`` (default): on CPU one of the two above per conv (``cpu_auto_conv_general_dilated``),
  elsewhere ``xla``.

Every implementation is used through ``nnx.Conv``'s own ``conv_general_dilated`` hook, so
parameter names, shapes and initialisation are ``nnx.Conv``'s whatever the choice:
checkpoints and seeds carry across implementations, and results agree to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax

from lrscale.models.canonical_conv import canonical_conv_general_dilated
from lrscale.models.patches_conv import patches_conv_general_dilated, supports_patches

__all__ = [
  "CONV_IMPLS",
  "ConvFn",
  "conv_general_dilated_fn",
  "cpu_auto_conv_general_dilated",
  "patches_conv_general_dilated",
]

# "auto": chosen per conv on CPU, XLA's native conv on GPU/TPU (decided at model build).
CONV_IMPLS: tuple[str, ...] = ("auto", "xla", "patches", "canonical")

ConvFn = Callable[..., jax.Array]


# Stride-1 convs of maps of at least 16x16 pixels: canonical XLA convs beat im2col there
# (B=32 and 256, gradient step of one layer in a scan: 32x32x16 3x3, 1.7-2.3x; 16x16x32,
# 1.3-1.5x); on 8x8 maps they tie; for strided, 1x1 and the small CNNs' convs im2col wins
# (docs/benchmarks.md).
_CANONICAL_MIN_PIXELS = 256


def cpu_auto_conv_general_dilated(
  lhs: jax.Array, rhs: jax.Array, window_strides, padding, **kwargs: Any
) -> jax.Array:
  """Per conv on CPU: canonical XLA convs for stride-1 convs of large maps, im2col for the
  rest, XLA's own conv for what neither covers (dilation, groups, other layouts)."""
  if not supports_patches(lhs, rhs, **kwargs):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
  kh, kw = rhs.shape[:2]
  pixels = lhs.shape[1] * lhs.shape[2]
  if tuple(window_strides) == (1, 1) and kh * kw > 1 and pixels >= _CANONICAL_MIN_PIXELS:
    return canonical_conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
  return patches_conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


_IMPLS: dict[str, ConvFn] = {
  "xla": lax.conv_general_dilated,
  "patches": patches_conv_general_dilated,
  "canonical": canonical_conv_general_dilated,
}


def conv_general_dilated_fn(impl: str, backend: str | None = None) -> ConvFn:
  """The ``conv_general_dilated`` to hand to ``nnx.Conv`` for ``config.model.conv_impl``.

  Args:
    impl: ``"xla"`` (``lax.conv_general_dilated``), ``"patches"`` (im2col + matmul),
      ``"canonical"`` (XLA's conv with canonical-form gradients) or ``"auto"`` (on CPU
      chosen per conv by ``cpu_auto_conv_general_dilated``, elsewhere ``"xla"``).
    backend: Platform ``auto`` decides for; default ``jax.default_backend()`` (at model
      build time, not per call: the model is built where it runs).

  Raises:
    ValueError: If ``impl`` is not one of ``CONV_IMPLS``.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"config.model.conv_impl={impl!r}: choose one of {CONV_IMPLS}.")
  if impl == "auto":
    on_cpu = (backend or jax.default_backend()) == "cpu"
    return cpu_auto_conv_general_dilated if on_cpu else lax.conv_general_dilated
  return _IMPLS[impl]
