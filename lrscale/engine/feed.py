"""Streamed training batches, staged on the devices one segment ahead.

A segment of ``L`` steps of ``K`` microbatches of ``b`` examples is staged as
``x [L, K, b, ...]`` sharded over the ``data`` mesh axis on ``b``: each device
holds only its own rows of every step (``L * K * b / devices`` examples), and
each process reads from grain and transfers only the rows its devices hold
(``lrscale.data.stream.host_positions``). Images travel in the dataset's own
dtype (uint8: a quarter of float32's bytes) and are scaled to [0, 1] on the
device (``lrscale.engine.step.as_float_images``).

While the device runs one segment, a background thread reads the next one
from grain and places it on the devices, so the step never waits for the
host when reading keeps up. The next segment's length is known in advance
(the loop's boundaries are a pure function of the step), and a request that
does not match what was prefetched (a new trial's seed, a resume) is simply
read afresh: the stream is random-access, so the batches are the same.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from lrscale import config as config_lib
from lrscale.data import registry
from lrscale.engine import parallel

Key = tuple[int, int, int]  # (seed, first step, steps)


class StreamFeeder:
  """This process's rows of a streamed training set, one segment ahead on the devices."""

  def __init__(self, mesh: Mesh, segment_len: int):
    self.mesh, self.segment_len = mesh, segment_len
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lrscale-feed")
    self._pending: tuple[Key, concurrent.futures.Future] | None = None
    # (seed, next step, iterator) of the grain stream; touched by the pool's thread only.
    self._stream: tuple[int, int, Any] | None = None

  def segment(
    self,
    plan: config_lib.RunPlan,
    start: int,
    n: int,
    *,
    next_end: Callable[[int], int],
  ) -> tuple[jax.Array, jax.Array]:
    """(x, y) of steps [start, start + n), padded to the segment length, on the devices.

    Also starts reading the following segment, [start + n, next_end(start + n)).
    """
    key = (plan.config.seed, start, n)
    if self._pending is not None and self._pending[0] == key:
      future = self._pending[1]
    else:
      if self._pending is not None:
        self._pending[1].result()  # let it finish: the stream is read by one thread at a time
      future = self._pool.submit(self._stage, plan, key)
    self._pending = None
    out = future.result()
    after = start + n
    if after < plan.total_steps:
      following = (plan.config.seed, after, next_end(after) - after)
      self._pending = (following, self._pool.submit(self._stage, plan, following))
    return out

  def _stage(self, plan: config_lib.RunPlan, key: Key) -> tuple[jax.Array, jax.Array]:
    """Reads this process's rows of the segment ``key`` and places them on its devices."""
    seed, start, n = key
    k = plan.microbatches
    micro = plan.batch_size // k
    rows = parallel.local_rows(self.mesh, micro)
    b = rows.stop - rows.start
    steps = [self._next_batch(plan, seed, start + i) for i in range(n)]
    x0 = steps[0][0]
    xs = np.zeros((self.segment_len, k, b) + x0.shape[1:], x0.dtype)
    ys = np.zeros((self.segment_len, k, b), np.int32)
    for i, (x, y) in enumerate(steps):
      xs[i] = x.reshape((k, b) + x.shape[1:])
      ys[i] = y.reshape(k, b)
    glob = (self.segment_len, k, micro)
    return (
      parallel.put_local(xs, self.mesh, axis=2, global_shape=glob + x0.shape[1:]),
      parallel.put_local(ys, self.mesh, axis=2, global_shape=glob),
    )

  def _next_batch(self, plan: config_lib.RunPlan, seed: int, step: int):
    from lrscale.data import stream  # pylint: disable=g-import-not-at-top

    if self._stream is None or self._stream[:2] != (seed, step):  # new run, or a jump
      self._close_stream()
      ds = plan.config.dataset
      where = dict(
        seed=seed,
        start_step=step,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        blocks=plan.microbatches,
      )
      if ds.augment != "none":  # decode + augment in grain workers (lrscale.data.pipeline)
        from lrscale.data import pipeline  # pylint: disable=g-import-not-at-top

        batches = pipeline.train_stream(ds, batch_size=plan.batch_size, **where)
      else:
        batches = stream.stream_batches(
          ds.name,
          ds.train_split,
          data_dir=ds.data_dir or None,
          batch_size=plan.batch_size,
          preprocess=registry.preprocess_for(ds, scale=False),
          **where,
        )
      self._stream = (seed, step, batches)
    batch = next(self._stream[2])
    self._stream = (seed, step + 1, self._stream[2])
    return batch

  def release(self) -> None:
    """Stops the grain stream and its worker processes; a later segment reopens it.

    Called at the end of each run: a stream left open at interpreter exit
    leaves its in-flight batches in shared memory (the resource tracker's
    "leaked shared_memory objects" warning).
    """
    if self._pending is not None:
      self._pending[1].result()  # the stream is read by the pool's thread only
      self._pending = None
    self._pool.submit(self._close_stream).result()

  def _close_stream(self) -> None:
    if self._stream is not None and hasattr(self._stream[2], "close"):
      self._stream[2].close()  # stops the grain workers (lrscale.data.workers.iterate)
    self._stream = None

  def close(self) -> None:
    self.release()
    self._pool.shutdown(wait=True, cancel_futures=True)
