"""Flax NNX classifiers for batch-size scaling studies: MLP, small CNN and ResNets.

Every model is called as ``model(x, *, train) -> float32 logits [B, num_classes]`` and keeps
its batch-norm running statistics (if any) as ``nnx.BatchStat`` variables, so a pure step can
``nnx.split(model, nnx.Param, nnx.BatchStat)`` and ``nnx.merge`` inside ``jax.jit``.
"""

from lrscale.models.conv import CONV_IMPLS
from lrscale.models.norm import GhostBatchNorm
from lrscale.models.registry import MODEL_NAMES, build_model, model_kwargs

__all__ = ["CONV_IMPLS", "MODEL_NAMES", "GhostBatchNorm", "build_model", "model_kwargs"]
