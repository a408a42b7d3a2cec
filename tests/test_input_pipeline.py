"""Tests of the synthetic ImageNet builder and the grain input pipeline."""

from __future__ import annotations

import collections
import itertools
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lrscale import config
from lrscale.data import augment, pipeline, registry, stream, synthetic_imagenet, tfds_source

NAME = synthetic_imagenet.NAME
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES, TRAIN_PER_CLASS, EVAL_PER_CLASS = 7, 4, 3  # 28 train, 21 validation
SIZE = 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  """Builds a tiny copy through the documented command line."""
  path = tmp_path_factory.mktemp("synthetic")
  args = [
    f"--data_dir={path}",
    f"--num_classes={NUM_CLASSES}",
    f"--train_per_class={TRAIN_PER_CLASS}",
    f"--eval_per_class={EVAL_PER_CLASS}",
    "--min_side=20",
    "--max_side=40",
  ]
  proc = subprocess.run(
    [sys.executable, "-m", "lrscale.data.synthetic_imagenet", *args],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(path)


def _dataset_cfg(data_dir: str, **changes):
  cfg = config.base_config()
  cfg.dataset.update(
    dict(
      name=NAME,
      data_dir=data_dir,
      eval_split="validation",
      image_size=SIZE,
      augment="inception_crop_flip",
      workers=0,
    )
  )
  cfg.dataset.update(changes)
  cfg.model.name = "resnet18"
  cfg.model.bn_group_size = -1
  cfg.batch_size = 8
  return cfg


def test_builder_splits_and_features(data_dir: str) -> None:
  builder = tfds.builder(NAME, data_dir=data_dir)
  assert builder.info.file_format.value == "array_record"
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
    "train": NUM_CLASSES * TRAIN_PER_CLASS,
    "validation": NUM_CLASSES * EVAL_PER_CLASS,
  }
  features = builder.info.features
  assert isinstance(features["image"], tfds.features.Image)
  assert features["image"].shape == (None, None, 3)
  assert features["image"].encoding_format == "jpeg"
  assert features["label"].num_classes == NUM_CLASSES
  assert isinstance(features["file_name"], tfds.features.Text)
  source, shape = tfds_source.open_split_encoded(NAME, "validation", data_dir=data_dir)
  assert shape == (None, None, 3)
  sizes = set()
  for key in range(len(source)):
    ex = source[key]
    assert ex["image"][:2] == b"\xff\xd8"  # JPEG bytes, left encoded
    assert ex["label"] == key % NUM_CLASSES
    assert ex["file_name"].decode().endswith(f"_{key:07d}.JPEG")
    image = augment.to_array(augment.to_pil(ex["image"]))
    assert 20 <= image.shape[0] <= 40 and 20 <= image.shape[1] <= 40
    sizes.add(image.shape)
  assert len(sizes) > 5  # varied sizes and aspect ratios
  assert "tensorflow" not in sys.modules


def test_images_encode_their_class() -> None:
  """Nearest class-mean colour on fresh draws recovers the class (learnable data)."""
  rng = np.random.default_rng(0)
  means = np.stack([synthetic_imagenet.class_pattern(c)[0] for c in range(10)])
  hits = 0
  for c in range(10):
    image = synthetic_imagenet.render(c, 40, 50, rng).reshape(-1, 3).mean(0)
    direction = image / np.linalg.norm(image)
    hits += int(np.argmax(means @ direction / np.linalg.norm(means, axis=1)) == c)
  assert hits >= 9


def test_config_resolves_the_dataset(data_dir: str) -> None:
  plan = config.resolve(_dataset_cfg(data_dir), num_devices=1)
  assert plan.dataset.streamed and plan.dataset.num_train == NUM_CLASSES * TRAIN_PER_CLASS
  assert plan.dataset.input_shape == (SIZE, SIZE, 3)
  with pytest.raises(ValueError, match="python -m lrscale.data.synthetic_imagenet"):
    registry.check_dataset(_dataset_cfg(data_dir + "/nowhere").dataset)
  with pytest.raises(ValueError, match="config.dataset.augment='crop'"):
    config.resolve(_dataset_cfg(data_dir, augment="crop"), num_devices=1)
  with pytest.raises(ValueError, match="config.dataset.workers=-2"):
    config.resolve(_dataset_cfg(data_dir, workers=-2), num_devices=1)


@pytest.mark.parametrize("shard_count", [1, 2])
def test_train_order_equals_the_stream_epochs(shard_count: int) -> None:
  """Step -> indices agrees with the stream (one epoch definition: lrscale.data.order)."""
  n, batch = 23, 6  # batches straddle epochs: step 3 holds positions 18..23
  source = [{"image": np.zeros((1,), np.float32), "label": i} for i in range(n)]
  for shard in range(shard_count):
    want = stream.batches_from_source(
      source, batch_size=batch, seed=4, shard_index=shard, shard_count=shard_count
    )
    for step, (_, labels) in enumerate(itertools.islice(want, 8)):
      epochs, got = pipeline.train_indices(
        step, seed=4, batch_size=batch, num_examples=n, shard_index=shard, shard_count=shard_count
      )
      positions = step * batch + stream.host_positions(batch, shard, shard_count)
      np.testing.assert_array_equal(epochs, positions // n)
      np.testing.assert_array_equal(got, labels)


def _train(source, transform, **kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
  it = pipeline.train_batches_from_source(source, transform, seed=1, **kwargs)
  return list(it)


def test_batches_do_not_depend_on_workers_shards_or_resume(data_dir: str) -> None:
  source, _ = tfds_source.open_split_encoded(NAME, "train", data_dir=data_dir)
  transform = augment.train_transform("inception_crop_flip", SIZE)
  steps = 5  # 3 steps per epoch: crosses an epoch boundary
  ref = _train(source, transform, batch_size=8, num_steps=steps)
  assert all(x.shape == (8, SIZE, SIZE, 3) and x.dtype == np.uint8 for x, _ in ref)
  assert all(y.dtype == np.int32 for _, y in ref)
  # Each example's pixels are its transform at (seed, epoch, index).
  epochs, idx = pipeline.train_indices(4, seed=1, batch_size=8, num_examples=len(source))
  want = transform(source[int(idx[2])]["image"], 1, int(epochs[2]), idx[2])
  np.testing.assert_array_equal(ref[4][0][2], want)
  for workers in (1, 2):
    got = _train(source, transform, batch_size=8, num_steps=steps, workers=workers)
    for (x, y), (gx, gy) in zip(ref, got, strict=True):
      np.testing.assert_array_equal(gx, x)
      np.testing.assert_array_equal(gy, y)
  shards = [
    _train(source, transform, batch_size=8, num_steps=steps, shard_index=s, shard_count=2)
    for s in range(2)
  ]
  for step, (x, y) in enumerate(ref):
    for s in range(2):  # host s holds its contiguous rows of the global batch
      rows = stream.host_positions(8, s, 2)
      np.testing.assert_array_equal(shards[s][step][0], x[rows])
      np.testing.assert_array_equal(shards[s][step][1], y[rows])
  resumed = _train(source, transform, batch_size=8, start_step=3, num_steps=2)
  for (x, _), (rx, _) in zip(ref[3:], resumed, strict=True):
    np.testing.assert_array_equal(rx, x)


@pytest.mark.parametrize(("batch", "shard_count"), [(5, 1), (4, 2), (3, 4)])
def test_full_eval_covers_each_example_once(data_dir: str, batch: int, shard_count: int) -> None:
  cfg = _dataset_cfg(data_dir).dataset
  source, _ = tfds_source.open_split_encoded(NAME, "validation", data_dir=data_dir)
  view = augment.eval_transform(cfg.augment, SIZE)
  n = len(source)  # 21: not a multiple of any global batch here
  count = collections.Counter()
  for shard in range(shard_count):
    steps, batches = pipeline.eval_stream(
      cfg, batch_size=batch, shard_index=shard, shard_count=shard_count
    )
    batches = list(batches)
    assert steps == len(batches) == -(-n // (batch * shard_count))
    for k, (images, labels, weights) in enumerate(batches):
      assert images.shape == (batch, SIZE, SIZE, 3) and weights.dtype == np.float32
      for m in range(batch):
        record = k * batch * shard_count + shard + m * shard_count
        if record < n:
          assert weights[m] == 1.0 and labels[m] == record % NUM_CLASSES
          np.testing.assert_array_equal(images[m], view(source[record]["image"]))
          count[record] += 1
        else:
          assert weights[m] == 0.0 and not images[m].any()
  assert count == collections.Counter(range(n))


def test_eval_examples_caps_the_pass(data_dir: str) -> None:
  steps, batches = pipeline.eval_stream(
    _dataset_cfg(data_dir, eval_examples=10, workers=1).dataset, batch_size=4
  )
  weights = np.concatenate([w for _, _, w in batches])
  assert steps == 3 and weights.sum() == 10 and weights.tolist() == [1.0] * 10 + [0.0] * 2
