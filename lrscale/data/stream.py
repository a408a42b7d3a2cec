"""Deterministic, resumable, shardable batch streams over prepared TFDS splits.

For splits too big for memory (imagenet2012). Built on grain's `MapDataset`
over global steps: step `t -> example ids -> shard -> read + map -> stack`.
The ids are `lrscale.data.order`'s, so a streamed run reads, step for step,
exactly the examples an in-memory run reads (one definition of an epoch: the
data is an endless stream of per-epoch permutations and a batch may straddle
two epochs, so no example is dropped and "E epochs" is exactly E * N examples,
as `lrscale.units` counts them). Hence:

* Order is a pure function of `(seed, epoch)`: nothing depends on how
  iteration got there.
* Resuming at `start_step` jumps straight to that batch (random access), and
  yields exactly what an uninterrupted stream yields from that step.
* Sharding: `batch_size` is the global batch. Host `shard_index` of
  `shard_count` gets `batch_size // shard_count` examples per step: the
  elements `shard_index::shard_count` of the global batch. Hosts are disjoint,
  and together they see exactly the single-host global batch of that step, so
  results do not depend on the number of hosts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np

from lrscale.data import order, tfds_source

Batch = tuple[np.ndarray, np.ndarray]
Preprocess = Callable[[np.ndarray], np.ndarray]


def _example_to_pair(
  *, image_key: str, label_key: str, preprocess: Preprocess | None
) -> Callable[[dict[str, Any]], Batch]:
  """Returns the per-example map: TFDS dict -> (image, int32 label)."""

  def to_pair(example: dict[str, Any]) -> Batch:
    image = example[image_key]
    image = preprocess(image) if preprocess else tfds_source.to_float_images(image)
    return image, np.asarray(example[label_key], dtype=np.int32)

  return to_pair


def host_positions(
  batch_size: int, shard_index: int, shard_count: int, blocks: int = 1
) -> np.ndarray:
  """Positions in a global batch that host `shard_index` reads, in order.

  The batch is `[blocks, shard_count, rows]` with `rows = batch_size //
  (blocks * shard_count)`; the host takes `[:, shard_index, :]`, so a host's
  share of every microbatch is one contiguous block of it, and the devices of
  host h hold the same rows as the same devices of a one-host mesh.
  """
  rows = batch_size // (blocks * shard_count)
  starts = np.arange(blocks) * (batch_size // blocks) + shard_index * rows
  return (starts[:, None] + np.arange(rows)).ravel()


class _StepIndices:
  """Random access to one host's example ids at each global step (``lrscale.data.order``).

  Step ``k`` holds stream positions ``k*B .. k*B + B - 1`` of the endless
  sequence of ``(seed, epoch)`` permutations, as in-memory training reads them;
  host ``h`` of ``n`` takes the positions ``host_positions(B, h, n, blocks)``.
  """

  def __init__(self, *, seed: int, num_examples: int, batch_size: int, shard: np.ndarray):
    self.seed, self.num_examples, self.batch_size, self.shard = (
      seed,
      num_examples,
      batch_size,
      shard,
    )

  def __len__(self) -> int:
    return 2**31 - 1  # endless: int32 steps

  def __getitem__(self, step: int) -> np.ndarray:
    ids = order.batch_indices(
      seed=self.seed,
      start_step=int(step),
      num_steps=1,
      batch_size=self.batch_size,
      num_examples=self.num_examples,
    )[0]
    return ids[self.shard]


def _validate(
  *,
  num_examples: int,
  seed: int,
  batch_size: int,
  start_step: int,
  shard_index: int,
  shard_count: int,
  blocks: int = 1,
) -> None:
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  if shard_count <= 0 or not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
  if batch_size % (shard_count * blocks):
    raise ValueError(
      f"batch_size={batch_size} must be divisible by shard_count x blocks = {shard_count} x {blocks}"
    )
  if batch_size > num_examples:
    raise ValueError(f"batch_size={batch_size} exceeds the split's {num_examples} examples")


def batches_from_source(
  source: Sequence[Any],
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  shard_index: int = 0,
  shard_count: int = 1,
  preprocess: Preprocess | None = None,
  image_key: str = "image",
  label_key: str = "label",
  num_threads: int = 0,
  blocks: int = 1,
) -> Iterator[Batch]:
  """Endless batch stream over an opened data source; see `stream_batches`.

  Arguments are validated here, eagerly, not on the first `next()`.
  """
  _validate(
    num_examples=len(source),
    seed=seed,
    batch_size=batch_size,
    start_step=start_step,
    shard_index=shard_index,
    shard_count=shard_count,
    blocks=blocks,
  )
  to_pair = _example_to_pair(image_key=image_key, label_key=label_key, preprocess=preprocess)

  def read(ids: np.ndarray) -> Batch:
    pairs = [to_pair(source[int(i)]) for i in ids]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

  steps = _StepIndices(
    seed=seed,
    num_examples=len(source),
    batch_size=batch_size,
    shard=host_positions(batch_size, shard_index, shard_count, blocks),
  )
  ds = grain.MapDataset.source(steps)[start_step:].map(read)
  if num_threads > 0:
    # Threads read and decode batches ahead; grain keeps the order.
    return iter(
      ds.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
      )
    )
  return (ds[k] for k in itertools.count())


def stream_batches(
  name: str,
  split: str,
  *,
  data_dir: str | None,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  shard_index: int = 0,
  shard_count: int = 1,
  preprocess: Preprocess | None = None,
  image_key: str = "image",
  label_key: str = "label",
  num_threads: int = 0,
  blocks: int = 1,
) -> Iterator[Batch]:
  """Streams shuffled batches of a prepared TFDS split, endlessly.

  Step `t` reads the examples that in-memory training reads at step `t`
  (`lrscale.data.order`: epoch `e` is a permutation fixed by `(seed, e)`, and a
  batch may straddle two epochs). The stream never ends: take what the
  training loop needs (e.g. `itertools.islice`).

  Args:
      name: TFDS name (must be prepared as array_record under `data_dir`).
      split: Split name, TFDS slicing allowed.
      data_dir: TFDS data directory root (`None`: TFDS default).
      batch_size: Global batch size; each host gets
          `batch_size // shard_count` examples per step.
      seed: Run seed.
      start_step: First global step to yield (resume point); the stream
          equals the uninterrupted one with its first `start_step` batches
          removed.
      shard_index: This host's index (e.g. `jax.process_index()`).
      shard_count: Number of hosts (e.g. `jax.process_count()`); must divide
          `batch_size`. Hosts read disjoint examples.
      preprocess: Per-example image transform returning a fixed shape;
          required for variable-size images. Default: uint8 / 255 -> float32.
      image_key: Feature holding the image.
      label_key: Feature holding the label.
      num_threads: Threads reading and decoding ahead (0: read inline).
      blocks: Microbatches per global batch; each host reads its rows of
          each (`host_positions`).

  Yields:
      `(images, labels)`: `(batch_size // shard_count, ...)` arrays, labels
      int32.

  Raises:
      DatasetNotFoundError: if the dataset is not prepared; raised by the
          call itself, before anything is read.
      ValueError: inconsistent batch/shard arguments.
  """
  source = tfds_source.open_split(name, split, data_dir=data_dir)
  return batches_from_source(
    source,
    batch_size=batch_size,
    seed=seed,
    start_step=start_step,
    shard_index=shard_index,
    shard_count=shard_count,
    preprocess=preprocess,
    image_key=image_key,
    label_key=label_key,
    num_threads=num_threads,
    blocks=blocks,
  )
