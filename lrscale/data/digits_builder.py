"""TFDS builder for scikit-learn's offline digits dataset (`lrscale_digits`).

scikit-learn ships the 1797 8x8 UCI digits inside its wheel, so this dataset can
be prepared without network. It lets the TFDS read path (`tfds_source`,
`stream`) be exercised end to end on any machine.

Only `tfds.features.Tensor` features are used: `tfds.features.Image` needs
TensorFlow to encode, and TensorFlow must never be required here.

Prepare it with::

    python -m lrscale.data.digits_builder --data_dir=DIR
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from lrscale.data.offline import digits_split_indices, load_digits_arrays  # noqa: F401

NAME = "lrscale_digits"
NUM_EXAMPLES = 1797
NUM_TRAIN = 1437
NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)


# Under `python -m` this file also runs as `__main__`; only the canonical
# module registers the builder (TFDS rejects a second `lrscale_digits`), and the
# `__main__` block below delegates to it so dataset_info.json names the real
# module rather than `__main__`.
class LrscaleDigits(tfds.core.GeneratorBasedBuilder, skip_registration=__name__ == "__main__"):
  """scikit-learn's 8x8 digits as a TFDS dataset stored as array_record."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default looks builders in packages up through the
    # `importlib_resources` backport, which is not installed here (nor
    # needed on Python >= 3.9), and preparing then fails.
    return epath.Path(__file__)

  def __init__(self, *, file_format: str | None = None, **kwargs: Any):
    super().__init__(file_format=file_format, **kwargs)
    if file_format is None and not self.is_prepared():
      # array_record is the only format readable through tfds.data_source
      # (random access) without TensorFlow, so build it by default. A
      # prepared copy keeps the format recorded in its dataset_info.json.
      self.info.set_file_format("array_record", override=True)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "scikit-learn's copy of the UCI optical digits: 8x8 images with"
        " pixels scaled to [0, 1], 10 classes."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.float32),
          "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://scikit-learn.org/stable/modules/generated/"
      "sklearn.datasets.load_digits.html",
      # Keep records in generator order so split order equals
      # `digits_split_indices()` order.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
    del dl_manager  # Nothing to download: the data ships with sklearn.
    images, labels = load_digits_arrays()
    train_idx, test_idx = digits_split_indices()
    return {
      "train": self._generate_examples(images[train_idx], labels[train_idx]),
      "test": self._generate_examples(images[test_idx], labels[test_idx]),
    }

  def _generate_examples(
    self, images: np.ndarray, labels: np.ndarray
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    # Integer keys 0..n-1: with shuffling disabled records are written in
    # key order, i.e. in split order.
    for key, (image, label) in enumerate(zip(images, labels)):
      yield key, {"image": image, "label": int(label)}


def prepare_digits(data_dir: str) -> None:
  """Builds `lrscale_digits` under `data_dir` (no network; no-op if built).

  Args:
      data_dir: TFDS data directory root.
  """
  builder = LrscaleDigits(data_dir=data_dir)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      # No GCS probe: it would need network and never has this dataset.
      try_download_gcs=False,
    ),
  )


def main(argv: Sequence[str] | None = None) -> None:
  """Command line entry point: `python -m lrscale.data.digits_builder`."""
  parser = argparse.ArgumentParser(description=f"Prepare the {NAME} dataset.")
  parser.add_argument("--data_dir", required=True, help="TFDS data directory to build into.")
  args = parser.parse_args(argv)
  prepare_digits(args.data_dir)
  print(f"Prepared {NAME} under {args.data_dir}")


if __name__ == "__main__":
  # pylint: disable-next=g-import-not-at-top
  from lrscale.data import digits_builder as _canonical

  _canonical.main()
