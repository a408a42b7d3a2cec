"""Residual networks (He et al. 2016) with ghost batch norm and zero-initialised last BN.

CIFAR-style ResNet-(6n+2) (He et al. 2016, "Deep Residual Learning for Image Recognition",
Sec. 4.2: 3x3 stem, three stages of n basic blocks with 16/32/64 channels, parameter-free
zero-padding shortcuts, option A) covers ResNet-8 (Shallue et al. 2018's CIFAR-10 model)
and ResNet-20. ImageNet-style ResNet-18/34 (basic blocks) and ResNet-50/101/152
(bottleneck blocks, 64..512 x 4 channels, 7x7 stride-2 stem and max-pool, projection
shortcuts, option B) cover Goyal et al. 2017's ResNet-50. Stride 2 sits on the bottleneck's
3x3 convolution (the torchvision "v1.5" placement; parameter count unchanged).

Every BN is a ``GhostBatchNorm`` sharing one ``bn_group_size`` in examples. With
``zero_init_last_bn`` the last BN gamma of each residual block starts at 0 (Goyal et al.
2017, Sec. 5.1), so every block starts as its shortcut.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import initializers
from jax import lax

from lrscale.models.conv import ConvFn, conv_general_dilated_fn
from lrscale.models.norm import GhostBatchNorm

__all__ = [
  "BasicBlock",
  "BottleneckBlock",
  "IMAGENET_DEPTHS",
  "ResNet",
  "Shortcut",
  "cifar_resnet",
  "imagenet_resnet",
]

BlockKind = Literal["basic", "bottleneck"]
StemKind = Literal["cifar", "imagenet"]
ShortcutKind = Literal["pad", "projection"]
NormFactory = Callable[..., GhostBatchNorm]  # (num_features, *, scale_init=...) -> BN

# He et al. 2016 initialise convolutions with variance 2 / fan (torchvision: fan_out).
_conv_init = initializers.variance_scaling(2.0, "fan_out", "normal")

# Table 1 of He et al. 2016: blocks per stage and block type by depth.
IMAGENET_DEPTHS: dict[int, tuple[tuple[int, ...], BlockKind]] = {
  18: ((2, 2, 2, 2), "basic"),
  34: ((3, 4, 6, 3), "basic"),
  50: ((3, 4, 6, 3), "bottleneck"),
  101: ((3, 4, 23, 3), "bottleneck"),
  152: ((3, 8, 36, 3), "bottleneck"),
}


def _centred_padding(size: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """Symmetric ``size // 2`` padding (PyTorch-style) for an odd window.

  Output size equals padding="SAME"'s, ceil(H / stride), for every H >= 1, so tiny inputs
  work; unlike SAME, whose padding is lopsided for even H at stride 2, output pixel i is
  centred on input pixel stride * i, which is exactly what the "pad" shortcut and the 1x1
  projection sample, so the residual and shortcut paths stay spatially aligned.
  """
  return ((size // 2, size // 2), (size // 2, size // 2))


def _conv(
  in_ch: int,
  out_ch: int,
  size: int,
  stride: int,
  rngs: nnx.Rngs,
  conv_fn: ConvFn = lax.conv_general_dilated,
) -> nnx.Conv:
  """Bias-free centred convolution (a BN follows, whose beta plays the bias).

  ``conv_fn`` computes it (``lrscale.models.conv``); parameters do not depend on it.
  """
  return nnx.Conv(
    in_ch,
    out_ch,
    (size, size),
    strides=stride,
    padding=_centred_padding(size),
    use_bias=False,
    kernel_init=_conv_init,
    conv_general_dilated=conv_fn,
    rngs=rngs,
  )


class Shortcut(nnx.Module):
  """Identity path of a residual block, matching the residual branch's shape.

  ``"pad"`` (He et al. 2016 option A): subsample spatially by ``stride`` and zero-pad the
  extra channels; no parameters. ``"projection"`` (option B): 1x1 strided conv + BN,
  used only where the shape changes.
  """

  def __init__(
    self,
    in_ch: int,
    out_ch: int,
    *,
    stride: int,
    kind: ShortcutKind,
    norm: NormFactory,
    rngs: nnx.Rngs,
    conv_fn: ConvFn = lax.conv_general_dilated,
  ) -> None:
    """Creates the shortcut from ``[.., in_ch]`` to ``[.., out_ch]`` at ``stride``."""
    if kind not in ("pad", "projection"):
      raise ValueError(f"shortcut must be 'pad' or 'projection', got {kind!r}.")
    if kind == "pad" and out_ch < in_ch:
      raise ValueError(f"a 'pad' shortcut cannot shrink channels {in_ch} -> {out_ch}.")
    self.stride = stride
    self.extra_channels = out_ch - in_ch
    self.project = kind == "projection" and (stride != 1 or in_ch != out_ch)
    self.proj_conv = _conv(in_ch, out_ch, 1, stride, rngs, conv_fn) if self.project else None
    self.proj_norm = norm(out_ch) if self.project else None

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps the block input to the block output's shape."""
    if self.proj_conv is not None:
      return self.proj_norm(self.proj_conv(x), train=train)
    # Pixels stride * i: the centres of the residual branch's centred strided conv.
    x = x[:, :: self.stride, :: self.stride, :]
    if self.extra_channels:
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.extra_channels)))
    return x


class BasicBlock(nnx.Module):
  """Two 3x3 conv-BN layers plus shortcut, then ReLU (He et al. 2016, Fig. 5 left)."""

  expansion = 1

  def __init__(
    self,
    in_ch: int,
    width: int,
    *,
    stride: int,
    shortcut: ShortcutKind,
    norm: NormFactory,
    zero_init_last_bn: bool,
    rngs: nnx.Rngs,
    conv_fn: ConvFn = lax.conv_general_dilated,
  ) -> None:
    """Creates a block from ``in_ch`` to ``width`` channels, first conv at ``stride``."""
    last_init = initializers.zeros_init() if zero_init_last_bn else initializers.ones_init()
    self.conv1 = _conv(in_ch, width, 3, stride, rngs, conv_fn)
    self.norm1 = norm(width)
    self.conv2 = _conv(width, width, 3, 1, rngs, conv_fn)
    self.norm2 = norm(width, scale_init=last_init)
    self.shortcut = Shortcut(
      in_ch, width, stride=stride, kind=shortcut, norm=norm, rngs=rngs, conv_fn=conv_fn
    )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Applies the block to ``x`` ``[B, H, W, in_ch]``."""
    y = nnx.relu(self.norm1(self.conv1(x), train=train))
    y = self.norm2(self.conv2(y), train=train)
    return nnx.relu(y + self.shortcut(x, train=train))


class BottleneckBlock(nnx.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand x4, plus shortcut (He et al. 2016, Fig. 5 right)."""

  expansion = 4

  def __init__(
    self,
    in_ch: int,
    width: int,
    *,
    stride: int,
    shortcut: ShortcutKind,
    norm: NormFactory,
    zero_init_last_bn: bool,
    rngs: nnx.Rngs,
    conv_fn: ConvFn = lax.conv_general_dilated,
  ) -> None:
    """Creates a block from ``in_ch`` to ``4 * width`` channels, downsampling by ``stride``."""
    out_ch = width * self.expansion
    last_init = initializers.zeros_init() if zero_init_last_bn else initializers.ones_init()
    self.conv1 = _conv(in_ch, width, 1, 1, rngs, conv_fn)
    self.norm1 = norm(width)
    self.conv2 = _conv(width, width, 3, stride, rngs, conv_fn)
    self.norm2 = norm(width)
    self.conv3 = _conv(width, out_ch, 1, 1, rngs, conv_fn)
    self.norm3 = norm(out_ch, scale_init=last_init)
    self.shortcut = Shortcut(
      in_ch, out_ch, stride=stride, kind=shortcut, norm=norm, rngs=rngs, conv_fn=conv_fn
    )

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Applies the block to ``x`` ``[B, H, W, in_ch]``."""
    y = nnx.relu(self.norm1(self.conv1(x), train=train))
    y = nnx.relu(self.norm2(self.conv2(y), train=train))
    y = self.norm3(self.conv3(y), train=train)
    return nnx.relu(y + self.shortcut(x, train=train))


_BLOCKS: dict[str, type[BasicBlock] | type[BottleneckBlock]] = {
  "basic": BasicBlock,
  "bottleneck": BottleneckBlock,
}


class ResNet(nnx.Module):
  """Stem, stages of residual blocks (stride 2 entering every stage after the first),
  global average pooling and a linear classifier (He et al. 2016).

  Use ``cifar_resnet`` / ``imagenet_resnet`` for the published configurations.
  """

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    stage_sizes: Sequence[int],
    widths: Sequence[int],
    block: BlockKind,
    stem: StemKind,
    shortcut: ShortcutKind,
    bn_group_size: int,
    zero_init_last_bn: bool = True,
    bn_momentum: float = 0.9,
    conv_impl: str = "auto",
    rngs: nnx.Rngs,
  ) -> None:
    """Creates the network.

    Args:
      input_shape: ``(H, W, C)`` of one example; any size >= 1 works (every layer maps
        H to ceil(H / stride), like SAME padding).
      num_classes: Number of output logits.
      stage_sizes: Residual blocks per stage.
      widths: Base channels per stage (bottleneck outputs are 4x); ``widths[0]`` is
        also the stem's width.
      block: ``"basic"`` or ``"bottleneck"``.
      stem: ``"cifar"`` (3x3 conv) or ``"imagenet"`` (7x7 stride-2 conv + 3x3 max-pool).
      shortcut: ``"pad"`` (option A) or ``"projection"`` (option B).
      bn_group_size: Examples per ghost batch of every BN; ``<= 0`` means whole batch.
      zero_init_last_bn: Start each block's last BN gamma at 0 (Goyal et al. 2017).
      bn_momentum: Running-statistics decay of every BN.
      conv_impl: Convolution implementation, see ``lrscale.models.conv`` (same
        parameters and results for every choice; only speed differs).
      rngs: Key source for the initialisers.

    Raises:
      ValueError: On an unknown kind, mismatched lengths or a non-image input shape.
    """
    if len(input_shape) != 3:
      raise ValueError(f"ResNet needs (H, W, C) inputs, got input_shape={input_shape}.")
    if len(stage_sizes) != len(widths):
      raise ValueError(f"stage_sizes {stage_sizes} and widths {widths} differ in length.")
    if block not in _BLOCKS:
      raise ValueError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}.")
    if stem not in ("cifar", "imagenet"):
      raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}.")
    norm = functools.partial(
      GhostBatchNorm, group_size=bn_group_size, momentum=bn_momentum, rngs=rngs
    )
    block_cls = _BLOCKS[block]
    conv_fn = conv_general_dilated_fn(conv_impl)
    self.stem_kind = stem
    kernel, stride = (7, 2) if stem == "imagenet" else (3, 1)
    self.stem_conv = _conv(input_shape[-1], widths[0], kernel, stride, rngs, conv_fn)
    self.stem_norm = norm(widths[0])
    blocks = []
    in_ch = widths[0]
    for stage, (size, width) in enumerate(zip(stage_sizes, widths)):
      for index in range(size):
        stride = 2 if stage > 0 and index == 0 else 1
        blocks.append(
          block_cls(
            in_ch,
            width,
            stride=stride,
            shortcut=shortcut,
            norm=norm,
            zero_init_last_bn=zero_init_last_bn,
            rngs=rngs,
            conv_fn=conv_fn,
          )
        )
        in_ch = width * block_cls.expansion
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(in_ch, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Returns float32 logits ``[B, num_classes]`` for ``x`` ``[B, H, W, C]``."""
    x = nnx.relu(self.stem_norm(self.stem_conv(x), train=train))
    if self.stem_kind == "imagenet":
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=_centred_padding(3))
    for block in self.blocks:
      x = block(x, train=train)
    return self.head(x.mean(axis=(1, 2))).astype(jnp.float32)


def cifar_resnet(
  depth: int, input_shape: Sequence[int], num_classes: int, **resnet_kwargs: Any
) -> ResNet:
  """CIFAR ResNet-(6n+2) of He et al. 2016 Sec. 4.2 (ResNet-20: 0.27M params at 10 classes).

  ``resnet_kwargs`` are :class:`ResNet`'s other keywords (``bn_group_size``,
  ``rngs``, ``zero_init_last_bn``, ``bn_momentum``, ``conv_impl``).

  Raises:
    ValueError: If ``depth`` is not of the form 6n + 2 with n >= 1.
  """
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n+2, n >= 1 (8, 14, 20, ...), got {depth}.")
  n = (depth - 2) // 6
  return ResNet(
    input_shape,
    num_classes,
    stage_sizes=(n, n, n),
    widths=(16, 32, 64),
    block="basic",
    stem="cifar",
    shortcut="pad",
    **resnet_kwargs,
  )


def imagenet_resnet(
  depth: int, input_shape: Sequence[int], num_classes: int, **resnet_kwargs: Any
) -> ResNet:
  """ImageNet ResNet of He et al. 2016 Table 1 (ResNet-50: 25.6M params at 1000 classes).

  ``resnet_kwargs`` are :class:`ResNet`'s other keywords (``bn_group_size``,
  ``rngs``, ``zero_init_last_bn``, ``bn_momentum``, ``conv_impl``).

  Raises:
    ValueError: If ``depth`` is not a key of ``IMAGENET_DEPTHS``.
  """
  if depth not in IMAGENET_DEPTHS:
    raise ValueError(
      f"ImageNet ResNet depth must be one of {sorted(IMAGENET_DEPTHS)}, got {depth}."
    )
  stage_sizes, block = IMAGENET_DEPTHS[depth]
  return ResNet(
    input_shape,
    num_classes,
    stage_sizes=stage_sizes,
    widths=(64, 128, 256, 512),
    block=block,
    stem="imagenet",
    shortcut="projection",
    **resnet_kwargs,
  )
