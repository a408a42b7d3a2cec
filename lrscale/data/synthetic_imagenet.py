"""An offline stand-in for imagenet2012: ``lrscale_synthetic_imagenet``.

Same features as TFDS's ``imagenet2012`` -- ``image`` (JPEG-encoded, variable
height and width), ``label`` (``ClassLabel``), ``file_name`` (``Text``) -- and
the same splits (``train``, ``validation``), stored as array_record, so the
streamed ImageNet input pipeline (decode, random-resized crop, sharding,
padded evaluation) runs end to end on a machine without the real data.

Images are learnable: class ``c`` fixes a colour (hue ``c % 10``), the
orientation of a sinusoidal grating (``(c // 10) % 10`` of 10 angles) and its
frequency in cycles per shorter side (``c // 100``), so any crop of a
reasonable area keeps the class evident. Each image adds a random phase,
brightness and Gaussian pixel noise, and has its own height and width drawn
from ``[min_side, max_side]`` (aspect ratios vary as in ImageNet).

The JPEG bytes are made with PIL and handed to ``tfds.features.Image`` as
bytes, which TFDS stores as is: encoding a numpy array there would need
TensorFlow. The builder is not registered with TFDS (its parameters vary per
build); TFDS reads a prepared copy back from ``data_dir/<name>/<version>``,
rebuilding the features from the stored ``features.json``.

Prepare it with::

    python -m lrscale.data.synthetic_imagenet --data_dir=DIR \\
        [--num_classes=100 --train_per_class=20 --eval_per_class=5 \\
         --min_side=80 --max_side=160]
"""

from __future__ import annotations

import argparse
import colorsys
import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

NAME = "lrscale_synthetic_imagenet"
SPLITS = ("train", "validation")
JPEG_QUALITY = 90
NOISE_STD = 12.0  # pixel noise, in uint8 units


def class_pattern(label: int) -> tuple[tuple[float, float, float], float, float]:
  """The class's signature: RGB colour in [0, 1], grating angle (radians), cycles per side."""
  hue = (label % 10) / 10.0
  angle = np.pi * ((label // 10) % 10) / 10.0
  cycles = 2.0 + 1.5 * (label // 100)
  return colorsys.hsv_to_rgb(hue, 0.7, 0.9), float(angle), cycles


def render(label: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """Draws one uint8 [height, width, 3] image of class ``label``."""
  colour, angle, cycles = class_pattern(label)
  y, x = np.mgrid[0:height, 0:width].astype(np.float32) / min(height, width)
  phase = rng.uniform(0.0, 2.0 * np.pi)
  wave = np.sin(2.0 * np.pi * cycles * (x * np.cos(angle) + y * np.sin(angle)) + phase)
  brightness = rng.uniform(0.7, 1.0)
  base = 255.0 * brightness * np.asarray(colour, np.float32)
  image = base * (0.65 + 0.35 * wave[..., None])
  image += rng.normal(0.0, NOISE_STD, size=image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """PIL's baseline JPEG encoding of a uint8 RGB image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


class LrscaleSyntheticImagenet(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Class-patterned JPEGs with imagenet2012's features, stored as array_record."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  @tfds.core.utils.classproperty
  @classmethod
  def name(cls) -> str:  # pylint: disable=invalid-overridden-method
    return NAME

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # See digits_builder: TFDS's default lookup needs a backport not installed here.
    return epath.Path(__file__)

  def __init__(
    self,
    *,
    num_classes: int = 100,
    train_per_class: int = 20,
    eval_per_class: int = 5,
    min_side: int = 80,
    max_side: int = 160,
    seed: int = 0,
    **kwargs: Any,
  ):
    if num_classes < 1 or train_per_class < 1 or eval_per_class < 1:
      raise ValueError("num_classes, train_per_class and eval_per_class must be >= 1")
    if not 8 <= min_side <= max_side:
      raise ValueError(f"need 8 <= min_side <= max_side, got {min_side}, {max_side}")
    self._num_classes = num_classes
    self._per_class = {"train": train_per_class, "validation": eval_per_class}
    self._sides = (min_side, max_side)
    self._seed = seed
    super().__init__(file_format="array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "Synthetic ImageNet stand-in: JPEGs of variable size whose colour and grating"
        " orientation/frequency encode the class, plus noise."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=self._num_classes),
          "file_name": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
      # Records in generator order: example i of a split is class i % num_classes.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # Everything is drawn here.
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    split_id = SPLITS.index(split)
    lo, hi = self._sides
    for key in range(self._num_classes * self._per_class[split]):
      label = key % self._num_classes
      # One generator per example: the image does not depend on build order.
      rng = np.random.default_rng([self._seed, split_id, key])
      height, width = (int(s) for s in rng.integers(lo, hi + 1, size=2))
      image = render(label, height, width, rng)
      yield (
        key,
        {
          "image": encode_jpeg(image),
          "label": label,
          "file_name": f"synthetic_{split}_{label:04d}_{key:07d}.JPEG",
        },
      )


def prepare(data_dir: str, **params: Any) -> None:
  """Builds ``lrscale_synthetic_imagenet`` under ``data_dir`` (no network; no-op if built).

  Args:
    data_dir: TFDS data directory root.
    **params: ``LrscaleSyntheticImagenet`` size arguments (num_classes, ...).
  """
  builder = LrscaleSyntheticImagenet(data_dir=data_dir, **params)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def main(argv: Sequence[str] | None = None) -> None:
  """Command line entry point: ``python -m lrscale.data.synthetic_imagenet``."""
  parser = argparse.ArgumentParser(description=f"Prepare the {NAME} dataset.")
  parser.add_argument("--data_dir", required=True, help="TFDS data directory to build into.")
  parser.add_argument("--num_classes", type=int, default=100)
  parser.add_argument("--train_per_class", type=int, default=20)
  parser.add_argument("--eval_per_class", type=int, default=5)
  parser.add_argument("--min_side", type=int, default=80, help="smallest image height/width")
  parser.add_argument("--max_side", type=int, default=160, help="largest image height/width")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  params = vars(args)
  data_dir = params.pop("data_dir")
  prepare(data_dir, **params)
  print(f"Prepared {NAME} under {data_dir} ({params})")


if __name__ == "__main__":
  # pylint: disable-next=g-import-not-at-top
  from lrscale.data import synthetic_imagenet as _canonical

  _canonical.main()
