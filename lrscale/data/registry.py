"""Dataset registry: names in ``config.dataset.name`` -> arrays or a stream.

Two kinds of dataset:
- offline: shipped inside an installed package (``digits``: scikit-learn's 1797
  8x8 handwritten digits), so the default study needs no network, or made by
  one (``mnist1d``: Greydanus's 1-D digits, any train size, cached);
- TFDS catalogue names (``mnist``, ``fashion_mnist``, ``cifar10``, ``imagenette``,
  ``imagenet2012``, and ``lrscale_digits``, the offline digits prepared as a real
  TFDS array_record dataset) read through ``tfds.data_source`` from a prepared
  ``config.dataset.data_dir``; no TensorFlow is needed.

``linreg`` is generated, not read: its examples are drawn on the device inside
the compiled step (``GeneratedSource``) and it is evaluated exactly
(``lrscale.data.linreg``).

Datasets that fit in memory are read once into numpy arrays (``InMemoryData``);
the train loop then keeps them on the device and gathers batches by index, so no
per-example Python work happens during training. ``imagenet2012`` and its offline
stand-in ``lrscale_synthetic_imagenet`` (``lrscale.data.synthetic_imagenet``)
stream through grain instead (``lrscale.data.stream``; with augmentation,
``lrscale.data.pipeline``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from lrscale.data import linreg, mnist1d, offline, stdlib_chars

# Names read from TFDS and whether they are small enough to hold in memory.
TFDS_IN_MEMORY = ("mnist", "fashion_mnist", "cifar10", "imagenette", "lrscale_digits")
TFDS_STREAMED = ("imagenet2012", "lrscale_synthetic_imagenet")
# Token sequences for language modelling, read from the installed Python.
SEQUENCE = stdlib_chars.NAMES
OFFLINE = tuple(offline.OFFLINE_DATASETS) + (mnist1d.NAME,) + SEQUENCE  # no TFDS, no network
GENERATED = (linreg.NAME,)
DATASET_NAMES = OFFLINE + GENERATED + TFDS_IN_MEMORY + TFDS_STREAMED


@dataclasses.dataclass(frozen=True)
class InMemoryData:
  """A dataset held in host memory as float32 images in [0, 1] and int32 labels."""

  name: str
  train_x: np.ndarray
  train_y: np.ndarray
  eval_x: np.ndarray
  eval_y: np.ndarray
  num_classes: int

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.train_x.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.train_x.shape[0])

  @property
  def num_eval(self) -> int:
    return int(self.eval_x.shape[0])


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What config resolution needs to know before any data is read."""

  name: str
  num_train: int | None  # None: no finite training set (generated data has no epochs)
  num_eval: int
  num_classes: int
  input_shape: tuple[int, ...]
  streamed: bool
  task: str = "classification"  # lrscale.tasks: what the model's outputs are scored by
  model: str = ""  # the one model the dataset's exact evaluation assumes ('' = any)

  tokens_per_example: int = 0  # sequence data: target tokens per example (0 = not sequences)
  # Identifies the exact data (e.g. the sha256 of a corpus read from the
  # installed Python, which changes with the Python version); '' = fixed data.
  fingerprint: str = ""

  def summary(self) -> dict[str, Any]:
    """The dataset facts recorded in config.json's resolved section."""
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GeneratedSource:
  """A dataset drawn on the device inside the step instead of gathered from memory.

  ``RunSetup`` puts ``example_ids`` where an in-memory run puts row indices, so
  the compiled segment, the vmapped study groups and the sharding over devices
  are the same program either way; only the batch and the evaluation differ.

  Attributes:
    example_ids: ``(seed, start, count) -> ids [count, ...]`` (host numpy): the
      ids of stream positions [start, start + count) for ``seed``.
    sample: ``ids [..., id] -> (x [..., *input_shape], y [...])``, traced.
    exact_metrics: ``predict -> {metric: scalar}``, the task's eval metrics
      computed exactly from the model's ``predict(x)`` (traced).
  """

  example_ids: Callable[[int, int, int], np.ndarray]
  sample: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
  exact_metrics: Callable[[Callable[[jax.Array], jax.Array]], dict[str, jax.Array]]


def generated_source(dataset_cfg: Any) -> GeneratedSource | None:
  """The on-device generator of ``config.dataset`` (None for data read from memory)."""
  if dataset_cfg.name != linreg.NAME:
    return None
  spec = linreg.LinregSpec.from_config(dataset_cfg.linreg)
  return GeneratedSource(
    example_ids=linreg.example_ids,
    sample=linreg.make_sampler(spec),
    exact_metrics=linreg.make_exact_metrics(spec),
  )


def check_dataset(dataset_cfg: Any) -> DatasetMeta:
  """Validates ``config.dataset`` and returns its size, reading no examples.

  Raises:
    ValueError: unknown name, or a TFDS dataset not prepared in ``data_dir``
      (the message says how to prepare it).
  """
  name = dataset_cfg.name
  classes = tuple(dataset_cfg.get("classes", ()))
  if classes and name not in offline.OFFLINE_DATASETS:
    raise ValueError(
      f"config.dataset.classes={classes!r}: a class subset is supported for "
      f"{offline.OFFLINE_DATASETS} only, not {name!r}; set config.dataset.classes=()"
    )
  augment = dataset_cfg.get("augment", "none")
  if augment != "none" and not is_streamed(dataset_cfg):
    raise ValueError(
      f"config.dataset.augment={augment!r}: augmentation runs in the streamed input pipeline, "
      f"and {name!r} is held in memory; set config.dataset.stream=True (TFDS datasets) or "
      "config.dataset.augment='none'."
    )
  if name in SEQUENCE:
    return stdlib_chars.meta(dataset_cfg)
  if name in offline.OFFLINE_DATASETS:
    return offline.meta(name, classes)
  if name == linreg.NAME:
    return linreg.meta(dataset_cfg.linreg)
  if name == mnist1d.NAME:
    return mnist1d.meta(dataset_cfg.mnist1d)
  if name not in DATASET_NAMES:
    raise ValueError(
      f"config.dataset.name={name!r} is not a known dataset; choose one of {DATASET_NAMES}."
    )
  from lrscale.data import tfds_source  # pylint: disable=g-import-not-at-top

  data_dir = dataset_cfg.data_dir or None
  tfds_source.check_prepared(name, data_dir=data_dir)
  info = tfds_source.dataset_info(name, data_dir=data_dir)
  for field, split in (
    ("train_split", dataset_cfg.train_split),
    ("eval_split", dataset_cfg.eval_split),
  ):
    if split not in info.split_sizes:
      raise ValueError(
        f"config.dataset.{field}={split!r} is not a split of {name}; it has "
        f"{sorted(info.split_sizes)}."
      )
  return DatasetMeta(
    name=name,
    num_train=int(info.split_sizes[dataset_cfg.train_split]),
    num_eval=int(info.split_sizes[dataset_cfg.eval_split]),
    num_classes=int(info.num_classes),
    input_shape=tuple(info.image_shape),
    streamed=name in TFDS_STREAMED,
  )


def is_streamed(dataset_cfg: Any) -> bool:
  """Whether training batches stream from TFDS through grain instead of memory."""
  return dataset_cfg.name in TFDS_STREAMED or bool(dataset_cfg.stream)


def preprocess_for(dataset_cfg: Any, *, scale: bool = True):
  """The per-example transform of streamed images.

  Args:
    dataset_cfg: ``config.dataset``.
    scale: return float32 in [0, 1] (None: the stream's default scaling when
      images are fixed-size); False keeps the stored dtype (uint8) for the
      host->device transfer, to be scaled on the device.
  """
  if dataset_cfg.image_size <= 0:
    return None if scale else _unchanged
  from lrscale.data.preprocess import center_crop_resize  # pylint: disable=g-import-not-at-top

  return center_crop_resize(dataset_cfg.image_size, scale=scale)


def _unchanged(image: np.ndarray) -> np.ndarray:
  return image


def load_in_memory(dataset_cfg: Any) -> InMemoryData:
  """Reads a dataset that fits in memory; ``check_dataset`` must have passed.

  For a streamed dataset nothing is read: both splits have 0 rows but the
  right shape (the training batches and the full eval pass stream through
  grain), and images are not standardised: the stream cannot see the train
  split's statistics without a pass over it.
  """
  name = dataset_cfg.name
  if name in SEQUENCE:  # int32 token ids: nothing to standardise
    return stdlib_chars.load(dataset_cfg)
  streamed = is_streamed(dataset_cfg)
  if name in GENERATED:  # no arrays: examples are drawn in the step (generated_source)
    meta = check_dataset(dataset_cfg)
    empty = np.zeros((0,) + meta.input_shape, np.float32)
    return InMemoryData(name, empty, np.zeros((0,), np.float32), empty, empty[:, 0], 1)
  if name == mnist1d.NAME:
    (tx, ty), (ex, ey), num_classes = mnist1d.load(dataset_cfg.mnist1d)
  elif name in OFFLINE:
    (tx, ty), (ex, ey), num_classes = offline.load(name, tuple(dataset_cfg.get("classes", ())))
  else:
    from lrscale.data import tfds_source  # pylint: disable=g-import-not-at-top

    data_dir = dataset_cfg.data_dir or None
    info = tfds_source.dataset_info(name, data_dir=data_dir)
    num_classes = info.num_classes
    if streamed:  # both splits stream; eval through the pipeline (lrscale.engine.evaluate)
      shape = tuple(info.image_shape)
      if dataset_cfg.image_size > 0:
        shape = (dataset_cfg.image_size, dataset_cfg.image_size, shape[-1])
      tx = ex = np.zeros((0,) + shape, np.float32)
      ty = ey = np.zeros((0,), np.int32)
    else:
      tx, ty = tfds_source.load_split(name, dataset_cfg.train_split, data_dir=data_dir)
      ex, ey = tfds_source.load_split(name, dataset_cfg.eval_split, data_dir=data_dir)
  if dataset_cfg.eval_examples > 0:
    ex, ey = ex[: dataset_cfg.eval_examples], ey[: dataset_cfg.eval_examples]
  if dataset_cfg.standardize and not streamed:
    # Per-channel statistics of the training split only, so eval leaks nothing.
    axes = tuple(range(tx.ndim - 1))
    mean = tx.mean(axis=axes, keepdims=True)
    std = tx.std(axis=axes, keepdims=True) + 1e-6
    tx, ex = (tx - mean) / std, (ex - mean) / std
  return InMemoryData(
    name=name,
    train_x=np.asarray(tx, np.float32),
    train_y=np.asarray(ty, np.int32),
    eval_x=np.asarray(ex, np.float32),
    eval_y=np.asarray(ey, np.int32),
    num_classes=int(num_classes),
  )
