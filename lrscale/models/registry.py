"""Model names used by ``config.model.name`` and the one function that builds them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flax import nnx

from lrscale.models.cnn import SmallCNN
from lrscale.models.linear import Linear
from lrscale.models.mlp import MLP
from lrscale.models.resnet import cifar_resnet, imagenet_resnet
from lrscale.models.transformer import Transformer

__all__ = ["MODEL_NAMES", "build_model", "model_kwargs"]


def _without_bn(cls: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
  """Adapts a BN-free model to the common builder signature (drops ``bn_group_size``)."""

  def build(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    bn_group_size: int,
    rngs: nnx.Rngs,
    **kwargs: Any,
  ) -> nnx.Module:
    del bn_group_size  # no batch norm: nothing to group
    return cls(input_shape, num_classes, rngs=rngs, **kwargs)

  return build


_BUILDERS: dict[str, Callable[..., nnx.Module]] = {
  "linear": _without_bn(Linear),
  "mlp": _without_bn(MLP),
  "cnn": _without_bn(SmallCNN),
  "resnet8": functools.partial(cifar_resnet, 8),
  "resnet20": functools.partial(cifar_resnet, 20),
  "resnet18": functools.partial(imagenet_resnet, 18),
  "resnet50": functools.partial(imagenet_resnet, 50),
  "transformer": _without_bn(Transformer),
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def model_kwargs(model_cfg: Any) -> dict[str, Any]:
  """``build_model``'s model-specific keyword arguments from the ``config.model`` section.

  Args:
    model_cfg: ``config.model`` (an ml-collections ConfigDict or any object with its
      fields as attributes): ``name`` and the fields the named model reads.

  Returns:
    ``hidden`` (mlp); ``channels``, ``dense``, ``conv_impl`` (cnn);
    ``zero_init_last_bn``, ``conv_impl`` (resnets); ``{}`` for an unknown name, which
    ``build_model`` rejects.
  """
  name = model_cfg.name
  if name == "mlp":
    return dict(hidden=tuple(model_cfg.hidden))
  if name == "cnn":
    return dict(
      channels=tuple(model_cfg.channels), dense=model_cfg.dense, conv_impl=model_cfg.conv_impl
    )
  if name.startswith("resnet"):
    return dict(zero_init_last_bn=model_cfg.zero_init_last_bn, conv_impl=model_cfg.conv_impl)
  if name == "transformer":
    return {k: model_cfg[k] for k in ("depth", "width", "heads", "mlp_ratio", "positions")}
  return {}


def build_model(
  name: str,
  *,
  input_shape: tuple[int, ...],
  num_classes: int,
  bn_group_size: int,
  rngs: nnx.Rngs,
  **kwargs: Any,
) -> nnx.Module:
  """Builds the model ``name`` for examples of ``input_shape`` and ``num_classes`` logits.

  Args:
    name: One of ``MODEL_NAMES``: "linear" (no bias, zero init), "mlp" (Shallue et al. 2018 MLP), "cnn" (Shallue et al.
      2018 simple CNN, stride-2 variant), "resnet8" / "resnet20" (He et al. 2016 CIFAR),
      "resnet18" / "resnet50" (He et al. 2016 ImageNet; Goyal et al. 2017 used ResNet-50),
      "transformer" (decoder-only pre-LN LM over token sequences).
    input_shape: Shape of one example, without the batch axis.
    num_classes: Number of output logits.
    bn_group_size: Examples per ghost batch of every BN layer (``<= 0``: whole batch);
      ignored by models without BN.
    rngs: Key source for the initialisers.
    **kwargs: Model-specific options, e.g. ``hidden``/``activation`` (mlp),
      ``channels``/``dense`` (cnn), ``zero_init_last_bn``/``bn_momentum`` (resnets).

  Returns:
    A module called as ``model(x, train=...) -> float32 logits [B, num_classes]``.

  Raises:
    ValueError: If ``name`` is unknown.
  """
  if name not in _BUILDERS:
    raise ValueError(
      f"config.model.name={name!r} is not a known model; choose one of {MODEL_NAMES}."
    )
  return _BUILDERS[name](
    tuple(input_shape), num_classes, bn_group_size=bn_group_size, rngs=rngs, **kwargs
  )
