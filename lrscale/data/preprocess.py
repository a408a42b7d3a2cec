"""Fixed-size inputs from variable-size images (imagenette, imagenet2012).

``center_crop_resize`` takes the central square of an image (the shorter side)
and resizes it to ``size x size`` with bilinear filtering (PIL), returning
float32 values in [0, 1]. It is deterministic, for training and evaluation
alike. The random-resized-crop and flip augmentation of Goyal et al. 2017, and
the standard 256 -> 224 eval view, live in ``lrscale.data.augment`` and run in
the worker pipeline ``lrscale.data.pipeline``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def center_crop_resize(size: int) -> Callable[[np.ndarray], np.ndarray]:
  """A per-example transform: [H, W, C] uint8 (or float in [0, 1]) -> [size, size, C] float32."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def fn(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side]
    if crop.dtype != np.uint8:
      crop = np.clip(np.round(crop * 255.0), 0, 255).astype(np.uint8)
    channels = crop.shape[2] if crop.ndim == 3 else 1
    pil = Image.fromarray(crop.reshape(side, side) if channels == 1 else crop)
    out = np.asarray(pil.resize((size, size), Image.BILINEAR), np.float32) / np.float32(255)
    return out.reshape(size, size, channels)

  return fn
