"""Image augmentation as pure functions of (seed, epoch, example index).

Every random choice for example ``index`` in epoch ``epoch`` of run ``seed``
comes from its own generator, ``example_rng(seed, epoch, index)`` (numpy's
``SeedSequence`` hashing of the triple). Nothing depends on which worker,
host or thread processes the example, or in what order: the same triple gives
the same pixels under any parallelism.

Named configurations (``config.dataset.augment``):

* ``none``: no randomness. Train images get the eval view.
* ``flip``: the eval view, flipped horizontally with probability 1/2.
* ``inception_crop_flip``: Inception-style random-resized crop (Szegedy et
  al. 2015, "Going deeper with convolutions", sec. 6; the ImageNet recipe of
  Goyal et al. 2017 and the flax ImageNet example): a box of area
  ``a ~ U[0.08, 1] * H * W`` and aspect ratio ``r = w / h`` log-uniform in
  ``[3/4, 4/3]``, so ``w = round(sqrt(a r))``, ``h = round(sqrt(a / r))``, at
  a uniform position; up to 10 draws until the box fits in the image, else
  the central square of side ``crop_fraction * min(H, W)`` (the eval crop,
  as in the flax example). The box is resized to ``image_size`` square
  (bilinear), then flipped with probability 1/2.
* ``cifar_crop_flip``: zero-pad 4 pixels on each side, take a random crop
  of the original size at a uniform offset, flip with probability 1/2
  (He et al. 2016, "Deep residual learning", sec. 4.2).

The eval view (``eval_view``): resize the shorter side to
``round(image_size / crop_fraction)`` (256 for 224 at the standard 0.875),
then take the central ``image_size`` square. With ``image_size <= 0`` (fixed
size datasets such as CIFAR) it is the image itself; ``cifar_crop_flip``
evaluates on the image itself.

All outputs are uint8 ``[H, W, C]``; normalisation happens on the device
(``lrscale.data.normalize``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

AUGMENT_NAMES = ("none", "flip", "inception_crop_flip", "cifar_crop_flip")
# Augmentations that resize, so need config.dataset.image_size > 0.
NEEDS_IMAGE_SIZE = ("inception_crop_flip",)
CROP_FRACTION = 0.875  # eval crop / resized shorter side: 224 / 256
AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10
CIFAR_PAD = 4

Box = tuple[int, int, int, int]  # (top, left, height, width)
# (encoded image bytes or uint8 array, seed, epoch, index) -> uint8 [H, W, C].
Transform = Callable[[Any, int, int, int], np.ndarray]


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The generator of one example's random choices, a pure function of its triple."""
  return np.random.default_rng(np.random.SeedSequence((seed, epoch, index)))


def to_pil(image: Any, channels: int = 3) -> Image.Image:
  """Decodes JPEG/PNG bytes (PIL) or wraps a uint8 array, as RGB (3) or L (1) channels.

  ImageNet holds a few CMYK and grayscale JPEGs; like TFDS's own decoder
  (``channels=3``) they become RGB, so every batch stacks.
  """
  if isinstance(image, (bytes, bytearray)):
    pil = Image.open(io.BytesIO(image))
  else:
    array = np.asarray(image)
    if array.dtype != np.uint8:
      raise ValueError(f"images must be encoded bytes or uint8 arrays, got {array.dtype}")
    pil = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
  mode = "RGB" if channels == 3 else "L"
  return pil if pil.mode == mode else pil.convert(mode)


def to_array(pil: Image.Image) -> np.ndarray:
  """A PIL image as uint8 [H, W, C] (C = 1 for grayscale)."""
  out = np.asarray(pil, dtype=np.uint8)
  return out[..., None] if out.ndim == 2 else out


def center_box(height: int, width: int, fraction: float) -> Box:
  """The central square of side ``round(fraction * min(height, width))``."""
  side = max(1, int(round(fraction * min(height, width))))
  return (height - side) // 2, (width - side) // 2, side, side


def sample_inception_box(
  rng: np.random.Generator,
  height: int,
  width: int,
  *,
  area_range: tuple[float, float] = AREA_RANGE,
  aspect_range: tuple[float, float] = ASPECT_RANGE,
  max_attempts: int = MAX_ATTEMPTS,
  fallback_fraction: float = CROP_FRACTION,
) -> Box:
  """Draws a random-resized-crop box (see the module docstring for the law).

  Args:
    rng: The example's generator.
    height: Image height.
    width: Image width.
    area_range: Box area as a fraction of the image area, sampled uniformly.
    aspect_range: Box width / height, sampled log-uniformly.
    max_attempts: Draws before falling back to the central crop.
    fallback_fraction: Side of the fallback square over the shorter side.

  Returns:
    ``(top, left, box_height, box_width)`` inside the image.
  """
  area = height * width
  log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
  for _ in range(max_attempts):
    target = area * rng.uniform(*area_range)
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  return center_box(height, width, fallback_fraction)


def resize_box(pil: Image.Image, box: Box, size: int) -> Image.Image:
  """Crops ``box`` and resizes it to ``size x size`` in one bilinear PIL pass."""
  top, left, h, w = box
  return pil.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))


def eval_resize_shape(
  height: int, width: int, image_size: int, crop_fraction: float
) -> tuple[int, int]:
  """Size ``(h, w)`` after resizing the shorter side to ``round(image_size / crop_fraction)``."""
  short = int(round(image_size / crop_fraction))
  if height <= width:
    return short, max(short, int(round(width * short / height)))
  return max(short, int(round(height * short / width))), short


def eval_view(
  image: Any, image_size: int, crop_fraction: float = CROP_FRACTION, channels: int = 3
) -> np.ndarray:
  """Resize shorter side to ``image_size / crop_fraction``, then central ``image_size`` crop.

  With ``image_size <= 0`` the (decoded) image is returned unchanged.
  """
  pil = to_pil(image, channels)
  if image_size <= 0:
    return to_array(pil)
  h, w = eval_resize_shape(pil.height, pil.width, image_size, crop_fraction)
  if (h, w) != (pil.height, pil.width):
    pil = pil.resize((w, h), Image.BILINEAR)
  top, left = (h - image_size) // 2, (w - image_size) // 2
  return to_array(pil.crop((left, top, left + image_size, top + image_size)))


def maybe_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors left-right with probability 1/2 (one uniform draw)."""
  return np.ascontiguousarray(image[:, ::-1]) if rng.random() < 0.5 else image


def inception_crop(
  image: Any, rng: np.random.Generator, image_size: int, channels: int = 3
) -> np.ndarray:
  """Random-resized crop of a decoded-or-encoded image to ``image_size`` square."""
  pil = to_pil(image, channels)
  box = sample_inception_box(rng, pil.height, pil.width)
  return to_array(resize_box(pil, box, image_size))


def cifar_crop(
  image: Any, rng: np.random.Generator, pad: int = CIFAR_PAD, channels: int = 3
) -> np.ndarray:
  """Zero-pads ``pad`` pixels per side, then a random crop of the original size."""
  array = to_array(to_pil(image, channels))
  h, w = array.shape[:2]
  dy, dx = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
  padded = np.pad(array, ((pad, pad), (pad, pad), (0, 0)))
  return padded[dy : dy + h, dx : dx + w]


def train_transform(name: str, image_size: int, channels: int = 3) -> Transform:
  """The training transform of augmentation ``name`` (see the module docstring).

  Args:
    name: One of ``AUGMENT_NAMES``.
    image_size: Output side; ``<= 0`` keeps the stored size (not for
      ``inception_crop_flip``).
    channels: 3 (RGB) or 1 (grayscale) output channels.

  Returns:
    ``fn(image, seed, epoch, index) -> uint8 [H, W, C]``, picklable (grain
    workers receive it).
  """
  validate(name, image_size)
  return _Train(name, image_size, channels)


def eval_transform(name: str, image_size: int, channels: int = 3) -> Callable[[Any], np.ndarray]:
  """The deterministic evaluation transform that goes with augmentation ``name``.

  ``cifar_crop_flip`` evaluates on the whole image (resized only if its size
  differs from ``image_size > 0``); the others on ``eval_view``.
  """
  validate(name, image_size)
  return _Eval(image_size, channels, center_crop=name != "cifar_crop_flip")


def validate(name: str, image_size: int) -> None:
  """Raises ValueError (config convention) for an unknown name or a missing image size."""
  if name not in AUGMENT_NAMES:
    raise ValueError(
      f"config.dataset.augment={name!r} is not a known augmentation; choose one of {AUGMENT_NAMES}."
    )
  if name in NEEDS_IMAGE_SIZE and image_size <= 0:
    raise ValueError(
      f"config.dataset.augment={name!r} resizes crops: set config.dataset.image_size (e.g. 224)."
    )


class _Train:
  """Picklable training transform (a closure would not survive spawn workers)."""

  def __init__(self, name: str, image_size: int, channels: int):
    self.name, self.image_size, self.channels = name, image_size, channels

  def __call__(self, image: Any, seed: int, epoch: int, index: int) -> np.ndarray:
    size, channels = self.image_size, self.channels
    if self.name == "none":
      return eval_view(image, size, channels=channels)
    rng = example_rng(seed, epoch, index)
    if self.name == "flip":
      out = eval_view(image, size, channels=channels)
    elif self.name == "inception_crop_flip":
      out = inception_crop(image, rng, size, channels)
    else:
      out = _resized(cifar_crop(image, rng, channels=channels), size, channels)
    return maybe_flip(out, rng)


class _Eval:
  """Picklable evaluation transform."""

  def __init__(self, image_size: int, channels: int, center_crop: bool):
    self.image_size, self.channels, self.center_crop = image_size, channels, center_crop

  def __call__(self, image: Any) -> np.ndarray:
    if self.center_crop:
      return eval_view(image, self.image_size, channels=self.channels)
    return _resized(to_array(to_pil(image, self.channels)), self.image_size, self.channels)


def _resized(image: np.ndarray, size: int, channels: int) -> np.ndarray:
  """``image`` resized (bilinear) to ``size`` square unless it is already or ``size <= 0``."""
  if size <= 0 or image.shape[:2] == (size, size):
    return image
  return to_array(to_pil(image, channels).resize((size, size), Image.BILINEAR))
