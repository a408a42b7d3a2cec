"""Running a grain dataset in worker processes, and handing its results over cleanly.

``iterate`` computes the elements of a ``MapDataset`` in order, in
``workers`` processes (grain's ``mp_prefetch``) or inline, and yields plain
numpy copies: each worker result's shared-memory segment is unlinked as soon
as it is copied, and the workers stop when the iterator is closed (or
exhausted), so nothing is left in ``/dev/shm`` when the process exits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np


def resolve_workers(workers: int) -> int:
  """``config.dataset.workers``: -1 = one per CPU core this process may use."""
  if isinstance(workers, bool) or not isinstance(workers, int):
    raise ValueError(f"config.dataset.workers={workers!r} must be an integer: -1, 0 or N > 0.")
  if workers == -1:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  if workers < 0:
    raise ValueError(f"config.dataset.workers={workers}: use -1 (all cores), 0 (inline) or N > 0.")
  return workers


def iterate(ds: grain.MapDataset, workers: int) -> Iterator[Any]:
  """Iterates ``ds`` in order, computing elements in ``workers`` processes (0: inline)."""
  # One reader thread per process: parallelism is the worker count, and a
  # thread still overlaps reading with the consumer when workers == 0.
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  if workers > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS.is_parsed():
      # grain's worker pool reads its absl flags; outside an absl main (tests,
      # notebooks) nobody parsed them, so take their defaults.
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  it = iter(it_ds)
  try:
    for element in it:
      yield tuple(_owned_copy(x) for x in element)
  finally:
    close = getattr(it, "close", None)
    if close:
      close()  # Stops worker processes now rather than at garbage collection.


def _owned_copy(x: Any) -> np.ndarray:
  """A plain copy of one array of a worker's result, its shared memory unlinked now.

  Worker results arrive in grain's shared-memory arrays, which grain unlinks
  when they are garbage-collected, on a background thread: the last batches of
  a process that exits soon after are left behind (the resource tracker's
  "There appear to be N leaked shared_memory objects" at exit). Copying
  (cheap next to decoding) and unlinking here frees each segment at once.
  """
  out = np.array(x)
  shm = getattr(x, "shm", None)
  if shm is not None and getattr(x, "_unlink_on_del", False):
    x._unlink_on_del = False  # pylint: disable=protected-access  # its __del__ only closes
    shm.unlink()
  return out
