"""The order in which training examples are visited: a pure function of (seed, epoch).

Training reads the data as an endless stream of epochs, each a fresh
permutation drawn from ``numpy.random.default_rng([seed, epoch])``. Step ``s``
of a run with global batch ``B`` takes stream positions ``s*B .. s*B + B - 1``,
so a batch may straddle two epochs and no example is dropped: after ``E``
epochs' worth of steps the run has seen every example exactly ``E`` times, which
keeps lengths in epochs (``lrscale.units``) exact. Because the batch at a step
depends only on (seed, step, B), a resumed run reads exactly what an
uninterrupted one would, and any number of devices sees the same global batch.

This is the one definition of an epoch: the streamed TFDS path
(``lrscale.data.stream``) reads these same ids step for step, so a run reads
the same examples in memory or streamed. (Dropping each epoch's partial last
batch instead would make "1 epoch" fewer than N examples, so lengths in
epochs or examples would no longer be what ``lrscale.units`` counts.)
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The example order of one epoch (cached: consecutive steps share epochs)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples).astype(np.int32)


def batch_indices(
  *, seed: int, start_step: int, num_steps: int, batch_size: int, num_examples: int
) -> np.ndarray:
  """Example indices for ``num_steps`` steps from ``start_step``: [num_steps, batch_size]."""
  return stream_indices(
    seed=seed,
    start=start_step * batch_size,
    count=num_steps * batch_size,
    num_examples=num_examples,
  ).reshape(num_steps, batch_size)


def stream_indices(*, seed: int, start: int, count: int, num_examples: int) -> np.ndarray:
  """Example indices of stream positions [start, start + count)."""
  positions = start + np.arange(count, dtype=np.int64)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty_like(positions, dtype=np.int32)
  for epoch in np.unique(epochs):
    mask = epochs == epoch
    out[mask] = epoch_permutation(seed, int(epoch), num_examples)[offsets[mask]]
  return out
