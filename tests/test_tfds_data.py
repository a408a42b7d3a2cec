"""Tests of the TFDS read path: digits builder, in-memory loader, stream."""

from __future__ import annotations

import collections
import itertools
import json
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from etils import epath
from sklearn.datasets import load_digits

from lrscale.data import digits_builder, order, stream, tfds_source

DIGITS = digits_builder.NAME
CATALOGUE_NAMES = ["mnist", "fashion_mnist", "cifar10", "imagenette", "imagenet2012", DIGITS]
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# Fixtures and test-only builders.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  """Prepares lrscale_digits through the documented command line."""
  data_dir = tmp_path_factory.mktemp("tfds")
  proc = subprocess.run(
    [sys.executable, "-m", "lrscale.data.digits_builder", f"--data_dir={data_dir}"],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(data_dir)


def _sklearn_split(split: str) -> tuple[np.ndarray, np.ndarray]:
  """sklearn's digits under the shared split, computed independently."""
  digits = load_digits()
  train_idx, test_idx = digits_builder.digits_split_indices()
  idx = train_idx if split == "train" else test_idx
  images = (digits.images[idx] / 16.0).astype(np.float32)[..., None]
  return images, digits.target[idx].astype(np.int32)


class _TestBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the test-only builders: array_record, TF-free code path."""

  VERSION = tfds.core.Version("1.0.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def prepare(self) -> None:
    self.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def _uint8_images(shapes: list[tuple[int, int]]) -> list[np.ndarray]:
  rng = np.random.default_rng(1)
  return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in shapes]


FIXED_UINT8 = _uint8_images([(5, 4)] * 12)
VARIABLE_UINT8 = _uint8_images([(5 + i % 3, 4 + i % 2) for i in range(12)])


class LrscaleTestFixedPng(_TestBuilder):
  """mnist-like: PNG-encoded uint8 `Image` feature of a fixed shape."""

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(5, 4, 1)),
          "label": tfds.features.ClassLabel(num_classes=3),
        }
      ),
      disable_shuffling=True,
    )

  def _generate_examples(self) -> Iterator:
    # PIL images: encoding numpy arrays as `Image` would need TensorFlow.
    for i, image in enumerate(FIXED_UINT8):
      yield i, {"image": PIL.Image.fromarray(image), "label": i % 3}


class LrscaleTestVariablePng(_TestBuilder):
  """imagenet-like: uint8 `Image` feature of variable height and width."""

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 1)),
          "label": tfds.features.ClassLabel(num_classes=3),
        }
      ),
      disable_shuffling=True,
    )

  def _generate_examples(self) -> Iterator:
    for i, image in enumerate(VARIABLE_UINT8):
      yield i, {"image": PIL.Image.fromarray(image), "label": i % 3}


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  data_dir = str(tmp_path_factory.mktemp("png"))
  for cls in (LrscaleTestFixedPng, LrscaleTestVariablePng):
    cls(data_dir=data_dir, file_format="array_record").prepare()
  return data_dir


def _png_name(cls: type) -> str:
  # Not registered (skip_registration), so TFDS reads these from files.
  return cls.name


@pytest.fixture
def no_reads(monkeypatch: pytest.MonkeyPatch) -> None:
  """Makes any attempt to open a split for reading fail the test."""

  def forbidden(*args, **kwargs):
    raise AssertionError("a split was opened for reading")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "as_data_source", forbidden)
  monkeypatch.setattr(tfds, "data_source", forbidden)


# --------------------------------------------------------------------------
# digits_builder
# --------------------------------------------------------------------------


def test_digits_split_indices_partition_the_dataset() -> None:
  train_idx, test_idx = digits_builder.digits_split_indices()
  assert (len(train_idx), len(test_idx)) == (1437, 360)
  np.testing.assert_array_equal(
    np.concatenate([train_idx, test_idx]), np.random.default_rng(0).permutation(1797)
  )
  assert len(np.union1d(train_idx, test_idx)) == 1797


def test_digits_builder_is_registered_and_prepared(digits_dir: str) -> None:
  builder = tfds.builder(DIGITS, data_dir=digits_dir)
  assert isinstance(builder, digits_builder.LrscaleDigits)
  assert builder.is_prepared()
  assert builder.info.file_format.value == "array_record"
  assert builder.info.module_name == "lrscale.data.digits_builder"
  source = tfds.data_source(DIGITS, split="test", data_dir=digits_dir, download=False)
  assert len(source) == 360


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_split_digits_equals_sklearn(digits_dir: str, split: str) -> None:
  images, labels = tfds_source.load_split(DIGITS, split, data_dir=digits_dir)
  want_images, want_labels = _sklearn_split(split)
  assert images.dtype == np.float32 and labels.dtype == np.int32
  np.testing.assert_array_equal(images, want_images)
  np.testing.assert_array_equal(labels, want_labels)
  assert "tensorflow" not in sys.modules


def test_load_split_accepts_tfds_slicing(digits_dir: str) -> None:
  images, labels = tfds_source.load_split(DIGITS, "test[:100]", data_dir=digits_dir)
  want_images, want_labels = _sklearn_split("test")
  np.testing.assert_array_equal(images, want_images[:100])
  np.testing.assert_array_equal(labels, want_labels[:100])


def test_dataset_info_digits(digits_dir: str) -> None:
  meta = tfds_source.dataset_info(DIGITS, data_dir=digits_dir)
  assert meta == tfds_source.DatasetMeta(
    num_classes=10, image_shape=(8, 8, 1), split_sizes={"train": 1437, "test": 360}
  )


def test_unknown_split_names_valid_ones(digits_dir: str) -> None:
  with pytest.raises(ValueError, match="train"):
    tfds_source.load_split(DIGITS, "validation", data_dir=digits_dir)


# --------------------------------------------------------------------------
# tfds_source: uint8 images and variable shapes
# --------------------------------------------------------------------------


def test_load_split_scales_uint8_images(png_dir: str) -> None:
  images, labels = tfds_source.load_split(_png_name(LrscaleTestFixedPng), "train", data_dir=png_dir)
  want = np.stack(FIXED_UINT8)[..., None].astype(np.float32) / 255.0
  assert images.dtype == np.float32
  np.testing.assert_array_equal(images, want)
  np.testing.assert_array_equal(labels, np.arange(12) % 3)


def test_load_split_rejects_variable_shapes_before_reading(png_dir: str, no_reads: None) -> None:
  with pytest.raises(ValueError, match="stream_batches"):
    tfds_source.load_split(_png_name(LrscaleTestVariablePng), "train", data_dir=png_dir)


def test_stream_variable_shapes_with_preprocess(png_dir: str) -> None:
  def crop(image: np.ndarray) -> np.ndarray:
    return image[:5, :4].astype(np.float32) / 255.0

  batches = stream.stream_batches(
    _png_name(LrscaleTestVariablePng),
    "train",
    data_dir=png_dir,
    batch_size=4,
    seed=0,
    preprocess=crop,
  )
  seen = [next(batches) for _ in range(3)]  # One whole epoch.
  crops = {crop(c[..., None]).tobytes() for c in VARIABLE_UINT8}
  got = {img.tobytes() for images, _ in seen for img in images}
  assert seen[0][0].shape == (4, 5, 4, 1)
  assert got == crops


# --------------------------------------------------------------------------
# tfds_source: missing datasets
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CATALOGUE_NAMES)
def test_missing_dataset_error_names_fields_and_fix(
  tmp_path: pathlib.Path, name: str, no_reads: None
) -> None:
  empty = tmp_path / "empty"
  fix = (
    "python -m lrscale.data.digits_builder --data_dir="
    if name == DIGITS
    else f"tfds build {name} --data_dir="
  )
  calls = [
    lambda: tfds_source.check_prepared(name, data_dir=str(empty)),
    lambda: tfds_source.dataset_info(name, data_dir=str(empty)),
    lambda: tfds_source.load_split(name, "train", data_dir=str(empty)),
    lambda: stream.stream_batches(name, "train", data_dir=str(empty), batch_size=8, seed=0),
  ]
  for call in calls:
    with pytest.raises(tfds_source.DatasetNotFoundError) as info:
      call()
    message = str(info.value)
    assert "config.dataset.name" in message and repr(name) in message
    assert "config.dataset.data_dir" in message and str(empty) in message
    assert fix in message
  assert not empty.exists()  # Checking wrote nothing either.


def test_missing_imagenet_explains_manual_download(tmp_path: pathlib.Path) -> None:
  with pytest.raises(tfds_source.DatasetNotFoundError, match="downloads/manual"):
    tfds_source.check_prepared("imagenet2012", data_dir=str(tmp_path))


def test_missing_config_is_named_in_fix(tmp_path: pathlib.Path) -> None:
  with pytest.raises(tfds_source.DatasetNotFoundError, match="tfds build imagenette/160px-v2"):
    tfds_source.check_prepared("imagenette/160px-v2", data_dir=str(tmp_path))


def test_unknown_name_lists_catalogue(tmp_path: pathlib.Path, no_reads: None) -> None:
  with pytest.raises(tfds_source.DatasetNotFoundError, match="no dataset of that name") as info:
    tfds_source.check_prepared("mnsit", data_dir=str(tmp_path))
  assert all(name in str(info.value) for name in CATALOGUE_NAMES)


def test_non_random_access_copy_is_rejected(digits_dir: str, tmp_path: pathlib.Path) -> None:
  shutil.copytree(digits_dir, tmp_path, dirs_exist_ok=True)
  info_path = tmp_path / DIGITS / "1.0.0" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(tfds_source.DatasetNotFoundError, match="tfrecord.*array_record"):
    tfds_source.check_prepared(DIGITS, data_dir=str(tmp_path))


def test_check_prepared_passes_when_prepared(digits_dir: str) -> None:
  tfds_source.check_prepared(DIGITS, data_dir=digits_dir)


# --------------------------------------------------------------------------
# stream
# --------------------------------------------------------------------------


def _take(n: int, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
  return list(itertools.islice(stream.stream_batches(DIGITS, "train", **kwargs), n))


def _rows(images: np.ndarray) -> collections.Counter:
  return collections.Counter(img.tobytes() for img in images)


def _assert_same_batches(a: list, b: list) -> None:
  assert len(a) == len(b)
  for (xa, ya), (xb, yb) in zip(a, b):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


def test_stream_is_a_pure_function_of_seed(digits_dir: str) -> None:
  first = _take(12, data_dir=digits_dir, batch_size=128, seed=5)
  again = _take(12, data_dir=digits_dir, batch_size=128, seed=5)
  other = _take(12, data_dir=digits_dir, batch_size=128, seed=6)
  _assert_same_batches(first, again)
  assert not np.array_equal(first[0][0], other[0][0])
  assert first[0][0].shape == (128, 8, 8, 1) and first[0][1].dtype == np.int32


def test_stream_reads_what_in_memory_training_reads(digits_dir: str) -> None:
  """One epoch definition: step t of the stream = order.batch_indices at step t."""
  train_images, train_labels = _sklearn_split("train")
  batches = _take(30, data_dir=digits_dir, batch_size=100, seed=4)
  idx = order.batch_indices(seed=4, start_step=0, num_steps=30, batch_size=100, num_examples=1437)
  for (x, y), ids in zip(batches, idx):
    np.testing.assert_array_equal(x, train_images[ids])
    np.testing.assert_array_equal(y, train_labels[ids])


def test_stream_epochs_are_permutations_and_batches_straddle(digits_dir: str) -> None:
  train_images, train_labels = _sklearn_split("train")
  n = 1437
  batches = _take(29, data_dir=digits_dir, batch_size=100, seed=0)  # 2900 >= 2 epochs
  assert all(x.shape[0] == 100 for x, _ in batches)  # no partial batch: step 14 straddles
  images = np.concatenate([x for x, _ in batches])
  labels = np.concatenate([y for _, y in batches])
  for epoch in range(2):
    part = slice(epoch * n, (epoch + 1) * n)
    assert _rows(images[part]) == _rows(train_images)
    assert collections.Counter(labels[part].tolist()) == collections.Counter(train_labels.tolist())
  assert not np.array_equal(images[:n], images[n : 2 * n])


@pytest.mark.parametrize("num_threads", [0, 2])
def test_stream_resume_equals_uninterrupted(digits_dir: str, num_threads: int) -> None:
  # A 500-example slice at batch 64: 16 steps cross two epoch boundaries.
  common = dict(data_dir=digits_dir, batch_size=64, seed=3)
  full = list(itertools.islice(stream.stream_batches(DIGITS, "train[:500]", **common), 16))
  for start in (5, 7, 10, 15):
    resumed = stream.stream_batches(
      DIGITS, "train[:500]", start_step=start, num_threads=num_threads, **common
    )
    _assert_same_batches(list(itertools.islice(resumed, 16 - start)), full[start:])


@pytest.mark.parametrize("shard_count", [2, 3])
def test_stream_shards_are_disjoint_and_tile_global_batches(
  digits_dir: str, shard_count: int
) -> None:
  batch_size = 96
  steps = 1437 // batch_size  # whole steps inside epoch 0
  n = steps + 2  # and across the boundary into epoch 1
  common = dict(data_dir=digits_dir, batch_size=batch_size, seed=9)
  global_batches = _take(n, **common)
  hosts = [_take(n, shard_index=h, shard_count=shard_count, **common) for h in range(shard_count)]
  epoch = collections.Counter()
  for step in range(n):
    parts = [hosts[h][step][0] for h in range(shard_count)]
    assert all(p.shape == (batch_size // shard_count, 8, 8, 1) for p in parts)
    union = sum((_rows(p) for p in parts), collections.Counter())
    assert union == _rows(global_batches[step][0])
    if step < steps:
      epoch += union
  # Train images are distinct, so disjoint hosts mean no row seen twice.
  assert len(epoch) == steps * batch_size and max(epoch.values()) == 1
  assert set(epoch) <= set(_rows(_sklearn_split("train")[0]))


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(batch_size=10, shard_count=3), "divisible"),
    (dict(batch_size=10, shard_index=2, shard_count=2), "shard_index"),
    (dict(batch_size=2000), "exceeds"),
    (dict(batch_size=10, start_step=-1), "start_step"),
  ],
)
def test_stream_rejects_bad_arguments(digits_dir: str, kwargs: dict, match: str) -> None:
  with pytest.raises(ValueError, match=match):
    stream.stream_batches(DIGITS, "train", data_dir=digits_dir, seed=0, **kwargs)
