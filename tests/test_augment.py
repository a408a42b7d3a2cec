"""Tests of lrscale.data.augment: crop laws, flips, eval view, determinism."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from scipy import stats

from lrscale.data import augment
from lrscale.data.synthetic_imagenet import encode_jpeg


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def pil_bytes(pil) -> bytes:
  buf = io.BytesIO()
  pil.save(buf, format="JPEG")
  return buf.getvalue()


def test_example_rng_is_a_function_of_the_triple() -> None:
  a = augment.example_rng(3, 1, 17).random(4)
  np.testing.assert_array_equal(a, augment.example_rng(3, 1, 17).random(4))
  for other in ((4, 1, 17), (3, 2, 17), (3, 1, 18)):
    assert not np.array_equal(a, augment.example_rng(*other).random(4))


def test_inception_box_area_and_aspect_laws() -> None:
  """On a square image, draws with area <= 1/2 are never rejected, so their
  area is U[0.08, 0.5] and log-aspect U[log 3/4, log 4/3] (up to rounding)."""
  side = 2000
  areas, log_aspects = [], []
  for i in range(3000):
    top, left, h, w = augment.sample_inception_box(augment.example_rng(0, 0, i), side, side)
    assert 0 <= top and top + h <= side and 0 <= left and left + w <= side
    frac = h * w / side**2
    # Rounding w and h moves the area by < (h + w + 1) / side^2.
    slack = (h + w + 1) / side**2
    assert 0.08 - slack <= frac <= 1.0 + slack
    assert 0.75 * (1 - 2 / h) <= w / h <= 4 / 3 * (1 + 2 / h)
    if frac < 0.49:
      areas.append(frac)
      log_aspects.append(math.log(w / h))
  assert stats.kstest(areas, stats.uniform(0.08, 0.49 - 0.08).cdf).pvalue > 1e-3
  lo, hi = math.log(3 / 4), math.log(4 / 3)
  assert stats.kstest(log_aspects, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


def test_inception_box_falls_back_to_center_crop() -> None:
  # 10 x 1000: a box of area >= 0.08 * 10^4 with aspect <= 4/3 is >= 24 high.
  box = augment.sample_inception_box(augment.example_rng(0, 0, 0), 10, 1000)
  assert box == (0, (1000 - 9) // 2, 9, 9)  # side round(0.875 * 10) = 9
  box = augment.sample_inception_box(augment.example_rng(0, 0, 0), 300, 400, max_attempts=0)
  assert box == (19, 69, 262, 262)  # round(0.875 * 300) = 262, centred


def test_inception_crop_flip_output_and_flip_rate() -> None:
  image = _image(60, 90)
  fn = augment.train_transform("inception_crop_flip", 32)
  out = fn(image, 0, 0, 0)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, fn(image, 0, 0, 0))
  assert not np.array_equal(out, fn(image, 0, 1, 0))  # a new epoch, a new crop
  # Flip rate: 'flip' leaves the eval view or mirrors it.
  flip = augment.train_transform("flip", 32)
  view = augment.eval_view(image, 32)
  n, flipped = 2000, 0
  for i in range(n):
    out = flip(image, 5, 0, i)
    is_flipped = np.array_equal(out, view[:, ::-1])
    assert is_flipped or np.array_equal(out, view)
    flipped += is_flipped
  assert abs(flipped - n / 2) <= 4 * math.sqrt(n / 4)  # 4 binomial standard deviations


def test_eval_view_is_the_central_crop_when_no_resize_is_needed() -> None:
  image = _image(256, 300)  # shorter side already 224 / 0.875 = 256
  out = augment.eval_view(image, 224)
  np.testing.assert_array_equal(out, image[16:240, 38:262])
  # The JPEG path decodes first, then the same geometry.
  jpeg = encode_jpeg(image)
  decoded = augment.to_array(augment.to_pil(jpeg))
  np.testing.assert_array_equal(augment.eval_view(jpeg, 224), decoded[16:240, 38:262])


def test_eval_view_resizes_the_shorter_side_then_crops() -> None:
  assert augment.eval_resize_shape(375, 500, 224, 0.875) == (256, 341)
  assert augment.eval_resize_shape(500, 375, 224, 0.875) == (341, 256)
  # 512 x 600, left half red, right half blue -> 256 x 300, the colour edge at
  # column 150, i.e. column 150 - 38 = 112 of the 224 crop. Bilinear
  # downscaling by 2 blurs it over +-2 columns only.
  image = np.zeros((512, 600, 3), np.uint8)
  image[:, :300, 0] = 255
  image[:, 300:, 2] = 255
  out = augment.eval_view(image, 224)
  assert out.shape == (224, 224, 3)
  np.testing.assert_array_equal(out[:, :109], np.broadcast_to([255, 0, 0], (224, 109, 3)))
  np.testing.assert_array_equal(out[:, 115:], np.broadcast_to([0, 0, 255], (224, 109, 3)))
  assert (out[:, 109:115, 0] > 0).any() and (out[:, 109:115, 2] > 0).any()


def test_cifar_crop_is_a_translation_by_a_uniform_offset() -> None:
  image = _image(32, 32, seed=1)
  padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
  seen = set()
  for i in range(1500):
    out = augment.cifar_crop(image, augment.example_rng(0, 0, i))
    assert out.shape == (32, 32, 3)
    matches = [
      (dy, dx)
      for dy in range(9)
      for dx in range(9)
      if np.array_equal(out, padded[dy : dy + 32, dx : dx + 32])
    ]
    assert len(matches) == 1
    seen.add(matches[0])
  assert len(seen) == 81  # every offset in [0, 8]^2 occurs


def test_none_is_deterministic_and_cifar_eval_is_the_image() -> None:
  image = _image(32, 32)
  np.testing.assert_array_equal(augment.train_transform("none", 0)(image, 0, 0, 0), image)
  np.testing.assert_array_equal(augment.eval_transform("cifar_crop_flip", 32)(image), image)
  out = augment.train_transform("cifar_crop_flip", 0)(image, 0, 0, 3)
  assert out.shape == (32, 32, 3)


def test_grayscale_and_cmyk_become_rgb() -> None:
  from PIL import Image

  gray = Image.fromarray(_image(40, 50)[..., 0])
  cmyk = Image.fromarray(_image(40, 50)).convert("CMYK")
  for pil in (gray, cmyk):
    assert augment.eval_view(pil_bytes(pil), 16).shape == (16, 16, 3)
  assert augment.eval_view(_image(40, 50)[..., :1], 16, channels=1).shape == (16, 16, 1)


def test_validate_names_the_field() -> None:
  with pytest.raises(ValueError, match=r"config.dataset.augment='mixup' is not a known"):
    augment.validate("mixup", 224)
  with pytest.raises(ValueError, match=r"config.dataset.image_size"):
    augment.train_transform("inception_crop_flip", 0)


def test_normalize_matches_numpy() -> None:
  import jax.numpy as jnp

  from lrscale.data import normalize

  images = _image(4, 5)[None]
  want = (images.astype(np.float64) - np.asarray(normalize.IMAGENET_MEAN)) / np.asarray(
    normalize.IMAGENET_STD
  )
  got = normalize.normalize(jnp.asarray(images))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(normalize.IMAGENET_MEAN) / 255, [0.485, 0.456, 0.406])
