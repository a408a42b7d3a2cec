"""Deterministic, resumable, shardable batch streams over prepared TFDS splits.

For splits too big for memory (imagenet2012). Built on grain's `MapDataset`:
each epoch is `source -> shuffle -> truncate -> shard -> map -> batch`, and
every batch is addressed by (epoch, step in epoch). Hence:

* Order is a pure function of `(seed, epoch)`: the epoch's permutation uses a
  seed derived from both; nothing depends on how iteration got there.
* Resuming at `start_step` jumps straight to that batch (random access), and
  yields exactly what an uninterrupted stream yields from that step.
* Sharding: `batch_size` is the global batch. Host `shard_index` of
  `shard_count` gets `batch_size // shard_count` examples per step: viewing
  the global batch as `[blocks, shard_count, rows]` (`blocks` microbatches),
  the rows `[:, shard_index]` (`host_positions`), which are exactly the rows
  its devices hold of a `[blocks, per_microbatch]` batch sharded over the
  hosts' devices in order. Hosts are disjoint, and together they see exactly
  the single-host global batch of that step, in the same order, so results do
  not depend on the number of hosts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np

from lrscale.data import tfds_source

Batch = tuple[np.ndarray, np.ndarray]
Preprocess = Callable[[np.ndarray], np.ndarray]


def epoch_seed(seed: int, epoch: int) -> int:
  """Returns the shuffle seed of `epoch`, a pure function of `(seed, epoch)`.

  Grain's own per-epoch reshuffle uses `seed + epoch`, which makes run `seed`
  at epoch 1 replay run `seed + 1` at epoch 0; hashing the pair through
  `SeedSequence` keeps different seeds' epochs unrelated.
  """
  return int(np.random.SeedSequence((seed, epoch)).generate_state(1)[0])


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
  """Returns the number of global batches in one epoch."""
  if drop_remainder:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def host_positions(
  batch_size: int, shard_index: int, shard_count: int, blocks: int = 1
) -> np.ndarray:
  """Positions in a global batch that host `shard_index` reads, in order.

  The batch is `[blocks, shard_count, rows]` with `rows = batch_size //
  (blocks * shard_count)`; the host takes `[:, shard_index, :]`, so a host's
  share of every microbatch is one contiguous block of it.
  """
  rows = batch_size // (blocks * shard_count)
  starts = np.arange(blocks) * (batch_size // blocks) + shard_index * rows
  return (starts[:, None] + np.arange(rows)).ravel()


def _example_to_pair(
  *, image_key: str, label_key: str, preprocess: Preprocess | None
) -> Callable[[dict[str, Any]], Batch]:
  """Returns the per-example map: TFDS dict -> (image, int32 label)."""

  def to_pair(example: dict[str, Any]) -> Batch:
    image = example[image_key]
    image = preprocess(image) if preprocess else tfds_source.to_float_images(image)
    return image, np.asarray(example[label_key], dtype=np.int32)

  return to_pair


def epoch_batches(
  source: Sequence[Any],
  *,
  batch_size: int,
  seed: int,
  epoch: int,
  shard_index: int = 0,
  shard_count: int = 1,
  drop_remainder: bool = True,
  preprocess: Preprocess | None = None,
  image_key: str = "image",
  label_key: str = "label",
  blocks: int = 1,
) -> grain.MapDataset:
  """Returns one host's batches of one epoch as a random-access dataset.

  Args:
      source: Random-access data source of example dicts.
      batch_size: Global batch size (all hosts together).
      seed: Run seed.
      epoch: Epoch number; with `seed` it fixes the permutation.
      shard_index: This host's index in `[0, shard_count)`.
      shard_count: Number of hosts; must divide `batch_size`.
      drop_remainder: Drop the last partial global batch of the epoch.
      preprocess: Per-example image transform (e.g. crop/resize to a fixed
          shape, then scaling); must be deterministic. Default:
          `tfds_source.to_float_images`.
      image_key: Feature holding the image.
      label_key: Feature holding the label.
      blocks: Microbatches per global batch; each host reads its rows of
          each (`host_positions`).

  Returns:
      A `grain.MapDataset` whose element `k` is the host's part of global
      batch `k` of the epoch: `(images, int32 labels)`.
  """
  num_steps = steps_per_epoch(len(source), batch_size, drop_remainder=drop_remainder)
  ds = grain.MapDataset.source(source).shuffle(seed=epoch_seed(seed, epoch))
  # Cut the epoch to whole global batches *before* sharding, so every host
  # has the same number of steps and the strided shards tile each batch.
  ds = ds[: min(len(source), num_steps * batch_size)]
  if shard_count > 1 or blocks > 1:
    local = host_positions(batch_size, shard_index, shard_count, blocks)
    shuffled, b = ds, len(local)
    # Local element j is element `local[j % b]` of global batch `j // b`.
    ds = grain.MapDataset.range(len(ds) // batch_size * b).map(
      lambda j: shuffled[int(j // b * batch_size + local[j % b])]
    )
  ds = ds.map(_example_to_pair(image_key=image_key, label_key=label_key, preprocess=preprocess))
  return ds.batch(batch_size // shard_count, drop_remainder=False)


def _validate(
  *,
  num_examples: int,
  seed: int,
  batch_size: int,
  start_step: int,
  shard_index: int,
  shard_count: int,
  drop_remainder: bool,
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
  if batch_size % shard_count:
    raise ValueError(f"batch_size={batch_size} must be divisible by shard_count={shard_count}")
  if blocks <= 0 or batch_size % (blocks * shard_count):
    raise ValueError(
      f"batch_size={batch_size} must be divisible by blocks={blocks} x shard_count={shard_count}"
    )
  if not drop_remainder and shard_count > 1:
    # A partial last batch would give hosts different (possibly empty)
    # batch shapes and desynchronise collective steps.
    raise ValueError("drop_remainder=False requires shard_count == 1")
  if steps_per_epoch(num_examples, batch_size, drop_remainder=drop_remainder) == 0:
    raise ValueError(f"batch_size={batch_size} exceeds the split's {num_examples} examples")


def batches_from_source(
  source: Sequence[Any],
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  shard_index: int = 0,
  shard_count: int = 1,
  drop_remainder: bool = True,
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
    drop_remainder=drop_remainder,
    blocks=blocks,
  )
  epoch_kwargs = dict(
    batch_size=batch_size,
    seed=seed,
    shard_index=shard_index,
    shard_count=shard_count,
    drop_remainder=drop_remainder,
    preprocess=preprocess,
    image_key=image_key,
    label_key=label_key,
    blocks=blocks,
  )
  num_steps = steps_per_epoch(len(source), batch_size, drop_remainder=drop_remainder)
  return _generate(
    source,
    start=divmod(start_step, num_steps),
    num_threads=num_threads,
    epoch_kwargs=epoch_kwargs,
  )


def _generate(
  source: Sequence[Any],
  *,
  start: tuple[int, int],
  num_threads: int,
  epoch_kwargs: dict[str, Any],
) -> Iterator[Batch]:
  """Yields batches from `start = (epoch, step in epoch)` on, forever."""
  first_epoch, first_step = start
  for epoch in itertools.count(first_epoch):
    ds = epoch_batches(source, epoch=epoch, **epoch_kwargs)
    if epoch == first_epoch:
      ds = ds[first_step:]
    if num_threads > 0:
      # Threads read and decode batches ahead; grain keeps the order.
      yield from ds.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)
      )
    else:
      for k in range(len(ds)):
        yield ds[k]


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
  drop_remainder: bool = True,
  preprocess: Preprocess | None = None,
  image_key: str = "image",
  label_key: str = "label",
  num_threads: int = 0,
  blocks: int = 1,
) -> Iterator[Batch]:
  """Streams shuffled batches of a prepared TFDS split, endlessly.

  Epoch `e` is a permutation of the split fixed by `(seed, e)`; step `t`
  belongs to epoch `t // steps_per_epoch`. The stream never ends: take what
  the training loop needs (e.g. `itertools.islice`).

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
      drop_remainder: Drop each epoch's last partial batch (required when
          `shard_count > 1`).
      preprocess: Per-example image transform returning a fixed shape;
          required for variable-size images. Default: uint8 / 255 -> float32.
      image_key: Feature holding the image.
      label_key: Feature holding the label.
      num_threads: Threads reading and decoding ahead (0: read inline).
      blocks: Microbatches per global batch (see `host_positions`).

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
    drop_remainder=drop_remainder,
    preprocess=preprocess,
    image_key=image_key,
    label_key=label_key,
    num_threads=num_threads,
    blocks=blocks,
  )
