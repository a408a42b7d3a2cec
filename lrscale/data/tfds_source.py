"""Reads prepared TFDS datasets into memory, without TensorFlow.

Everything here goes through `tfds.data_source` / `as_data_source` (random
access over array_record files), never `tfds.load`, which needs TensorFlow.
Nothing is ever downloaded: datasets must already be prepared under
`config.dataset.data_dir`. `check_prepared` verifies that cheaply (it reads only
the dataset's metadata json) so a run fails before any compute is spent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow_datasets as tfds

# Imported for its side effect: defining `LrscaleDigits` registers the name
# `lrscale_digits` with TFDS so `tfds.builder` / `tfds.data_source` find it.
from lrscale.data import digits_builder

# Examples deserialized per batched read: bounds the transient list of Python
# dicts while keeping the per-call overhead negligible.
_READ_CHUNK = 4096
_BUILD_TEMPLATE = (
  "run `tfds build {name} --data_dir=DIR --file_format=array_record` on a"
  " machine with network (building needs TensorFlow there; reading here does"
  " not) and copy DIR over, or point config.dataset.data_dir at a prepared"
  " array_record copy"
)
# Fix-hint templates by base dataset name, formatted with the full name (so a
# config such as `imagenette/160px-v2` is named in the command). Any other TFDS
# name is accepted as well and gets the generic `tfds build` hint.
CATALOGUE: Mapping[str, str] = {
  "mnist": _BUILD_TEMPLATE,
  "fashion_mnist": _BUILD_TEMPLATE,
  "cifar10": _BUILD_TEMPLATE,
  "imagenette": _BUILD_TEMPLATE,
  "imagenet2012": (
    "imagenet2012 needs a manual download: put ILSVRC2012_img_train.tar and"
    " ILSVRC2012_img_val.tar in DIR/downloads/manual, then " + _BUILD_TEMPLATE
  ),
  "lrscale_synthetic_imagenet": (
    "run `python -m lrscale.data.synthetic_imagenet --data_dir=DIR` (works"
    " offline) and set config.dataset.data_dir=DIR"
  ),
  digits_builder.NAME: (
    "run `python -m lrscale.data.digits_builder --data_dir=DIR` (works"
    " offline) and set config.dataset.data_dir=DIR"
  ),
}


class DatasetNotFoundError(ValueError):
  """A configured dataset has no usable prepared copy under its data_dir."""


class DatasetMeta(NamedTuple):
  """Static facts about a prepared dataset, read from its metadata only.

  Attributes:
      num_classes: Number of label classes.
      image_shape: Per-example image shape; `None` entries mark variable
          dimensions (e.g. imagenet2012).
      split_sizes: Number of examples per split name.
  """

  num_classes: int
  image_shape: tuple[int | None, ...]
  split_sizes: dict[str, int]


def base_name(name: str) -> str:
  """Strips config and version: `'imagenette/160px-v2:1.0.0'` -> `'imagenette'`."""
  return name.split("/", 1)[0].split(":", 1)[0]


def fix_hint(name: str) -> str:
  """Returns the instruction that makes `name` available under a data_dir."""
  template = CATALOGUE.get(base_name(name), _BUILD_TEMPLATE)
  return template.format(name=name)


def _not_found(name: str, data_dir: str | None, problem: str) -> DatasetNotFoundError:
  return DatasetNotFoundError(
    f"config.dataset.name={name!r} with config.dataset.data_dir={data_dir!r}:"
    f" {problem}. Fix: {fix_hint(name)}."
  )


def _builder(name: str, *, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """Returns the builder of a prepared, randomly accessible dataset.

  Reads only metadata (dataset_info.json / features.json), never examples.

  Raises:
      DatasetNotFoundError: unknown name, not prepared, or prepared in a
          format without random access (e.g. TFRecord).
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    known = ", ".join(sorted(CATALOGUE))
    raise _not_found(
      name,
      data_dir,
      f"TFDS knows no dataset of that name and none is prepared there"
      f" (catalogue: {known}; TFDS said: {str(e).splitlines()[0]})",
    ) from e
  if not builder.is_prepared():
    raise _not_found(name, data_dir, f"it is not prepared (looked in {builder.data_dir})")
  formats = builder.info.available_file_formats()
  if not formats & set(tfds.core.file_adapters.FileFormat.with_random_access()):
    found = ", ".join(sorted(f.value for f in formats)) or "unknown"
    raise _not_found(
      name,
      data_dir,
      f"the copy in {builder.data_dir} is stored as {found}, which has no"
      " random access; it must be rebuilt as array_record",
    )
  return builder


def check_prepared(name: str, *, data_dir: str | None) -> None:
  """Fails fast if `name` cannot be read from `data_dir`.

  Cheap: reads only the dataset's metadata files, never examples, so call it
  before any compilation or training.

  Args:
      name: TFDS name, optionally with config/version (`'imagenette/160px-v2'`).
      data_dir: TFDS data directory root; `None` means the TFDS default
          (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).

  Raises:
      DatasetNotFoundError: with the config fields involved and the fix.
  """
  _builder(name, data_dir=data_dir)


def dataset_info(
  name: str,
  *,
  data_dir: str | None,
  image_key: str = "image",
  label_key: str = "label",
) -> DatasetMeta:
  """Returns class count, image shape and split sizes of a prepared dataset.

  Args:
      name: TFDS name.
      data_dir: TFDS data directory root (`None`: TFDS default).
      image_key: Feature holding the image.
      label_key: Feature holding the `ClassLabel`.

  Raises:
      DatasetNotFoundError: if the dataset is not prepared there.
  """
  info = _builder(name, data_dir=data_dir).info
  return DatasetMeta(
    num_classes=int(info.features[label_key].num_classes),
    image_shape=tuple(info.features[image_key].shape),
    split_sizes={k: int(v.num_examples) for k, v in info.splits.items()},
  )


def open_split(name: str, split: str, *, data_dir: str | None) -> Sequence[dict[str, Any]]:
  """Opens a random-access TFDS data source over one split (reads nothing yet).

  Args:
      name: TFDS name.
      split: Split name, TFDS slicing allowed (`'train[:90%]'`).
      data_dir: TFDS data directory root (`None`: TFDS default).

  Returns:
      A sequence of decoded example dicts supporting `len`, `[i]` and
      batched `__getitems__`.

  Raises:
      DatasetNotFoundError: if the dataset is not prepared there.
      ValueError: if the split does not exist.
  """
  return _open(_builder(name, data_dir=data_dir), split)


def _open(
  builder: tfds.core.DatasetBuilder, split: str, decoders: dict[str, Any] | None = None
) -> Sequence[dict[str, Any]]:
  builder.info.splits[split]  # Raises ValueError naming the valid splits.
  return builder.as_data_source(split=split, decoders=decoders)


def open_split_encoded(
  name: str, split: str, *, data_dir: str | None, image_key: str = "image"
) -> tuple[Sequence[dict[str, Any]], tuple[int | None, ...]]:
  """Opens a split whose ``tfds.features.Image`` images stay encoded (JPEG/PNG bytes).

  The input pipeline decodes in its own worker processes (and may crop before
  resizing), so TFDS must not decode on read.

  Returns:
      The data source and the stored image shape (``None`` = variable).

  Raises:
      DatasetNotFoundError: if the dataset is not prepared there.
      ValueError: if the split does not exist.
  """
  builder = _builder(name, data_dir=data_dir)
  feature = builder.info.features[image_key]
  decoders = None
  if isinstance(feature, tfds.features.Image):
    decoders = {image_key: tfds.decode.SkipDecoding()}
  return _open(builder, split, decoders), tuple(feature.shape)


def to_float_images(images: np.ndarray) -> np.ndarray:
  """Converts images to float32 in [0, 1]: uint8 / 255, floats unchanged."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255.0)
  if np.issubdtype(images.dtype, np.floating):
    return images.astype(np.float32, copy=False)
  raise ValueError(f"unsupported image dtype {images.dtype}; expected uint8 or float")


def _read_all(
  source: Sequence[dict[str, Any]], *, image_key: str, label_key: str
) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole data source with batched reads into stacked arrays."""
  n = len(source)
  images: np.ndarray | None = None
  labels = np.empty((n,), dtype=np.int32)
  for start in range(0, n, _READ_CHUNK):
    keys = list(range(start, min(start + _READ_CHUNK, n)))
    examples = source.__getitems__(keys)
    chunk = np.stack([ex[image_key] for ex in examples])
    if images is None:  # Allocate once the decoded dtype/shape is known.
      images = np.empty((n, *chunk.shape[1:]), dtype=np.float32)
    images[keys[0] : keys[-1] + 1] = to_float_images(chunk)
    labels[keys[0] : keys[-1] + 1] = [ex[label_key] for ex in examples]
  if images is None:
    raise ValueError("split is empty")
  return images, labels


def load_split(
  name: str,
  split: str,
  *,
  data_dir: str | None,
  image_key: str = "image",
  label_key: str = "label",
) -> tuple[np.ndarray, np.ndarray]:
  """Loads a whole split into memory.

  Meant for splits that fit in memory (mnist, cifar10, lrscale_digits, ...);
  stream the others with `lrscale.data.stream.stream_batches`.

  Args:
      name: TFDS name.
      split: Split name, TFDS slicing allowed.
      data_dir: TFDS data directory root (`None`: TFDS default).
      image_key: Feature holding the image.
      label_key: Feature holding the label.

  Returns:
      `(images, labels)`: float32 `(N, *image_shape)` in [0, 1] (uint8 images
      divided by 255) and int32 `(N,)`, in the split's stored order.

  Raises:
      DatasetNotFoundError: if the dataset is not prepared; raised before any
          example is read.
      ValueError: unknown split, or images of variable shape.
  """
  builder = _builder(name, data_dir=data_dir)
  shape = tuple(builder.info.features[image_key].shape)
  if any(d is None for d in shape):
    raise ValueError(
      f"{name!r} has images of variable shape {shape}; they cannot be"
      " stacked in memory. Use lrscale.data.stream.stream_batches with a"
      " resizing `preprocess` instead."
    )
  return _read_all(_open(builder, split), image_key=image_key, label_key=label_key)
