"""The streamed image input pipeline: TFDS array_record -> grain workers -> uint8 batches.

Per host, a grain ``MapDataset`` over *global step numbers*; element ``t`` is
this host's part of global batch ``t``, built by ``StepBatch``: look up the
record indices of the step, read the encoded images, decode (PIL) and augment
each one with ``lrscale.data.augment`` seeded by ``(seed, epoch, index)``,
stack. ``mp_prefetch`` hands steps round-robin to ``workers`` processes and
returns them in step order. Hence:

* Epochs are the one definition of ``lrscale.data.order`` (as in memory and in
  ``lrscale.data.stream``): step ``t`` takes positions ``t*B .. t*B + B - 1``
  of the endless sequence of per-epoch permutations, so a batch may straddle
  two epochs and no example is dropped; each example is augmented with the
  epoch of its own position.
* Host ``shard_index`` of ``shard_count`` takes its rows of each microbatch
  of a global batch (``stream.host_positions``), so hosts are disjoint
  and together see exactly the one-host batch.
* Every batch is a pure function of ``(seed, step)`` and the host's shard:
  resuming at ``start_step`` yields exactly the uninterrupted stream from
  there, and the pixels do not depend on the number of workers.

Evaluation (``eval_batches``) reads the whole split once, unshuffled, in
global batches of ``batch_size * shard_count``; the last one is padded with
zero images of weight 0, so weighted sums over all hosts count each example
exactly once whatever the device count.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np

from lrscale.data import augment, order, stream
from lrscale.data import workers as workers_lib
from lrscale.data.workers import resolve_workers  # noqa: F401  (config validates with it)

TrainBatch = tuple[np.ndarray, np.ndarray]  # uint8 [b, H, W, C], int32 [b]
EvalBatch = tuple[np.ndarray, np.ndarray, np.ndarray]  # + float32 weights [b]


def train_indices(
  step: int,
  *,
  seed: int,
  batch_size: int,
  num_examples: int,
  shard_index: int = 0,
  shard_count: int = 1,
  blocks: int = 1,
) -> tuple[int, np.ndarray]:
  """This host's record indices in the batch of global step ``step``, and their epochs.

  Args:
    step: Global step (0-based, counting across epochs).
    seed: Run seed.
    batch_size: Global batch size; ``shard_count`` must divide it.
    num_examples: Examples in the split.
    shard_index: This host's index.
    shard_count: Number of hosts.
    blocks: Microbatches per global batch: the host reads its rows of each
      (``stream.host_positions``, the engine's device layout).

  Returns:
    ``(epochs, indices)``, both int64 of shape ``[batch_size // shard_count]``
    (a batch may straddle two epochs).
  """
  ids = order.stream_indices(
    seed=seed, start=step * batch_size, count=batch_size, num_examples=num_examples
  )
  positions = step * batch_size + np.arange(batch_size, dtype=np.int64)
  shard = stream.host_positions(batch_size, shard_index, shard_count, blocks)
  return positions[shard] // num_examples, ids[shard].astype(np.int64)


def _read(source: Sequence[dict[str, Any]], indices: Sequence[int]) -> list[dict[str, Any]]:
  keys = [int(i) for i in indices]
  getitems = getattr(source, "__getitems__", None)
  return list(getitems(keys)) if getitems else [source[i] for i in keys]


class StepBatch:
  """Global step -> this host's (uint8 images, int32 labels); picklable for workers."""

  def __init__(
    self,
    source: Sequence[dict[str, Any]],
    transform: augment.Transform,
    *,
    seed: int,
    batch_size: int,
    shard_index: int,
    shard_count: int,
    image_key: str = "image",
    label_key: str = "label",
    blocks: int = 1,
  ):
    self.blocks = blocks
    self.source, self.transform = source, transform
    self.seed, self.batch_size = seed, batch_size
    self.shard_index, self.shard_count = shard_index, shard_count
    self.image_key, self.label_key = image_key, label_key
    self.num_examples = len(source)

  def __call__(self, step: int) -> TrainBatch:
    epochs, indices = train_indices(
      int(step),
      seed=self.seed,
      batch_size=self.batch_size,
      num_examples=self.num_examples,
      shard_index=self.shard_index,
      shard_count=self.shard_count,
      blocks=self.blocks,
    )
    examples = _read(self.source, indices)
    images = np.stack(
      [
        self.transform(ex[self.image_key], self.seed, int(e), int(i))
        for ex, e, i in zip(examples, epochs, indices)
      ]
    )
    labels = np.asarray([ex[self.label_key] for ex in examples], np.int32)
    return images, labels


class EvalStep:
  """Eval step -> this host's padded (images, labels, weights); picklable."""

  def __init__(
    self,
    source: Sequence[dict[str, Any]],
    transform: Callable[[Any], np.ndarray],
    *,
    num_examples: int,
    batch_size: int,
    shard_index: int,
    shard_count: int,
    image_shape: tuple[int, ...],
    image_key: str = "image",
    label_key: str = "label",
    image_dtype: Any = np.uint8,
  ):
    self.image_dtype = image_dtype
    self.source, self.transform, self.num_examples = source, transform, num_examples
    self.batch_size, self.shard_index, self.shard_count = batch_size, shard_index, shard_count
    self.image_shape = tuple(image_shape)
    self.image_key, self.label_key = image_key, label_key

  def __call__(self, step: int) -> EvalBatch:
    global_batch = self.batch_size * self.shard_count
    start = int(step) * global_batch + self.shard_index
    positions = np.arange(start, start + global_batch, self.shard_count)[: self.batch_size]
    valid = positions < self.num_examples
    images = np.zeros((self.batch_size, *self.image_shape), self.image_dtype)
    labels = np.zeros((self.batch_size,), np.int32)
    for slot, ex in zip(np.flatnonzero(valid), _read(self.source, positions[valid])):
      images[slot] = self.transform(ex[self.image_key])
      labels[slot] = ex[self.label_key]
    return images, labels, valid.astype(np.float32)


def num_eval_steps(num_examples: int, batch_size: int, shard_count: int = 1) -> int:
  """Eval steps covering ``num_examples`` with per-host ``batch_size``: ``ceil(N / (b S))``."""
  return -(-num_examples // (batch_size * shard_count))


def train_batches_from_source(
  source: Sequence[dict[str, Any]],
  transform: augment.Transform,
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  num_steps: int | None = None,
  shard_index: int = 0,
  shard_count: int = 1,
  workers: int = 0,
  image_key: str = "image",
  label_key: str = "label",
  blocks: int = 1,
) -> Iterator[TrainBatch]:
  """Training batches of global steps ``start_step, start_step + 1, ...`` for one host.

  Args:
    source: Random-access records (``tfds`` data source with undecoded images).
    transform: ``augment.train_transform(...)``.
    batch_size: Global batch size; ``shard_count`` must divide it.
    seed: Run seed (order and augmentation).
    start_step: First global step (resume point).
    num_steps: Steps to yield; ``None``: endless.
    shard_index: This host (``jax.process_index()``).
    shard_count: Hosts (``jax.process_count()``).
    workers: Worker processes (``-1``: one per core, ``0``: in this process).
    image_key: Feature holding the encoded image.
    label_key: Feature holding the label.

  Yields:
    ``(images, labels)``: uint8 ``[batch_size // shard_count, H, W, C]``, int32.
  """
  stream._validate(  # pylint: disable=protected-access
    num_examples=len(source),
    seed=seed,
    batch_size=batch_size,
    start_step=start_step,
    shard_index=shard_index,
    shard_count=shard_count,
  )
  stop = sys.maxsize if num_steps is None else start_step + num_steps
  step_fn = StepBatch(
    source,
    transform,
    seed=seed,
    batch_size=batch_size,
    shard_index=shard_index,
    shard_count=shard_count,
    image_key=image_key,
    label_key=label_key,
    blocks=blocks,
  )
  ds = grain.MapDataset.range(start_step, stop).map(step_fn)
  return workers_lib.iterate(ds, workers_lib.resolve_workers(workers))


def eval_batches_from_source(
  source: Sequence[dict[str, Any]],
  transform: Callable[[Any], np.ndarray],
  *,
  batch_size: int,
  image_shape: tuple[int, ...],
  num_examples: int | None = None,
  shard_index: int = 0,
  shard_count: int = 1,
  workers: int = 0,
  image_key: str = "image",
  label_key: str = "label",
  image_dtype: Any = np.uint8,
) -> Iterator[EvalBatch]:
  """One pass over the first ``num_examples`` records, padded, for one host.

  Args:
    source: Random-access records.
    transform: ``augment.eval_transform(...)``.
    batch_size: Per-host batch size.
    image_shape: Shape of a transformed image (the pads' shape).
    num_examples: Records to evaluate (default: all).
    shard_index: This host.
    shard_count: Hosts.
    workers: Worker processes (``-1``: one per core).
    image_key: Feature holding the encoded image.
    label_key: Feature holding the label.
    image_dtype: dtype of a transformed image (uint8; float32 for float features).

  Yields:
    ``num_eval_steps(num_examples, batch_size, shard_count)`` batches
    ``(images uint8 [b, *image_shape], labels int32 [b], weights float32 [b])``;
    weight 1 for a real example, 0 for a pad. Global batch ``k`` (all hosts)
    holds records ``k*b*S .. (k+1)*b*S - 1``; host ``h`` the ``h::S`` of them.
  """
  n = len(source) if num_examples is None else min(num_examples, len(source))
  if batch_size <= 0 or n <= 0:
    raise ValueError(f"need batch_size > 0 and examples > 0, got {batch_size}, {n}")
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
  step_fn = EvalStep(
    source,
    transform,
    num_examples=n,
    batch_size=batch_size,
    shard_index=shard_index,
    shard_count=shard_count,
    image_shape=image_shape,
    image_key=image_key,
    label_key=label_key,
    image_dtype=image_dtype,
  )
  ds = grain.MapDataset.range(num_eval_steps(n, batch_size, shard_count)).map(step_fn)
  return workers_lib.iterate(ds, workers_lib.resolve_workers(workers))


# --------------------------------------------------------------------------
# Entry points from a config (``config.dataset``).
# --------------------------------------------------------------------------


def _open(dataset_cfg: Any, split: str) -> tuple[Sequence[dict[str, Any]], tuple]:
  from lrscale.data import tfds_source  # pylint: disable=g-import-not-at-top

  return tfds_source.open_split_encoded(
    dataset_cfg.name, split, data_dir=dataset_cfg.data_dir or None
  )


def _as_stream_reads(dataset_cfg: Any) -> tuple[Sequence[dict[str, Any]], Callable, Any]:
  """(decoded eval source, transform, image dtype) of a run without augmentation."""
  from lrscale.data import registry, tfds_source  # pylint: disable=g-import-not-at-top

  source = tfds_source.open_split(
    dataset_cfg.name, dataset_cfg.eval_split, data_dir=dataset_cfg.data_dir or None
  )
  transform = registry.preprocess_for(dataset_cfg, scale=False)
  return source, transform, transform(source[0]["image"]).dtype


def train_stream(
  dataset_cfg: Any,
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  shard_index: int = 0,
  shard_count: int = 1,
  blocks: int = 1,
) -> Iterator[TrainBatch]:
  """Endless augmented training batches of ``config.dataset`` for one host.

  Uses ``train_split``, ``augment``, ``image_size`` and ``workers`` of
  ``dataset_cfg``; see ``train_batches_from_source`` for the rest.
  """
  source, shape = _open(dataset_cfg, dataset_cfg.train_split)
  transform = augment.train_transform(dataset_cfg.augment, dataset_cfg.image_size, shape[-1])
  return train_batches_from_source(
    source,
    transform,
    batch_size=batch_size,
    seed=seed,
    start_step=start_step,
    shard_index=shard_index,
    shard_count=shard_count,
    workers=dataset_cfg.workers,
    blocks=blocks,
  )


# Eval splits with fewer examples per host than this are read without worker processes.
EVAL_INLINE_BELOW = 4096


def eval_stream(
  dataset_cfg: Any, *, batch_size: int, shard_index: int = 0, shard_count: int = 1
) -> tuple[int, Iterator[EvalBatch]]:
  """The whole ``eval_split`` (or its first ``eval_examples``), padded, for one host.

  Images get ``augment.eval_transform``; with ``augment='none'`` they are read
  as the un-augmented training stream reads them (TFDS-decoded, in their own
  dtype, center-cropped and resized when ``image_size`` is set).

  Args:
    dataset_cfg: ``config.dataset``.
    batch_size: Per-host batch size (global eval batch / ``shard_count``).
    shard_index: This host.
    shard_count: Hosts.

  Returns:
    ``(num_steps, batches)``; see ``eval_batches_from_source``.
  """
  source, shape = _open(dataset_cfg, dataset_cfg.eval_split)
  size = dataset_cfg.image_size
  if size > 0:
    shape = (size, size, shape[-1])
  if any(d is None for d in shape):
    raise ValueError(
      f"config.dataset.image_size: {dataset_cfg.name!r} has variable-size images; set it (e.g. 224)."
    )
  transform, dtype = augment.eval_transform(dataset_cfg.augment, size, shape[-1]), np.uint8
  if dataset_cfg.augment == "none":
    # Evaluated as training reads it without augmentation (lrscale.data.stream): decoded
    # by TFDS (any dtype), center-cropped and resized to image_size when set.
    source, transform, dtype = _as_stream_reads(dataset_cfg)
  n = len(source) if dataset_cfg.eval_examples <= 0 else min(len(source), dataset_cfg.eval_examples)
  batches = eval_batches_from_source(
    source,
    transform,
    image_dtype=dtype,
    batch_size=batch_size,
    image_shape=shape,
    num_examples=n,
    shard_index=shard_index,
    shard_count=shard_count,
    # Worker processes start afresh at every evaluation (seconds each: they import
    # JAX); a small split is read faster inline. The pixels are the same either way.
    workers=dataset_cfg.workers if n // shard_count >= EVAL_INLINE_BELOW else 0,
  )
  return num_eval_steps(n, batch_size, shard_count), batches
