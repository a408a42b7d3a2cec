"""Device mesh, shardings and multi-host start-up for data parallelism.

Data parallelism is ``jax.jit`` over a one-axis mesh named ``data``: the batch
dimension is sharded with ``NamedSharding(mesh, P(..., 'data'))`` and the
parameters are replicated. XLA then inserts the gradient all-reduce that
``pmap`` + ``lax.pmean`` used to spell by hand; the loss is a mean over the
*global* batch, so the numbers do not depend on the number of devices.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def num_devices_for(parallel_cfg: Any) -> int:
  """The number of devices the run will use (``config.parallel.num_devices``, -1 = all)."""
  available = jax.device_count()
  wanted = parallel_cfg.num_devices
  if wanted == -1:
    return available
  if wanted <= 0 or wanted > available:
    raise ValueError(
      f"config.parallel.num_devices={wanted} but {available} device(s) are visible; use -1 "
      "for all of them or a number between 1 and the device count."
    )
  return wanted


def make_mesh(num_devices: int) -> Mesh:
  """A 1-D ``data`` mesh over ``num_devices`` devices, each process's devices contiguous.

  Ordering by (process, device id) makes each process own one contiguous block
  of every batch dimension, which is what it feeds (``put_local``). On several
  processes the mesh spans every device: a process without a device in the mesh
  could not take part in its collectives.
  """
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  if jax.process_count() > 1 and num_devices != len(devices):
    raise ValueError(
      f"config.parallel.num_devices={num_devices} but a {jax.process_count()}-process run "
      f"has {len(devices)} devices: use -1 (all of them) on several processes."
    )
  return Mesh(np.asarray(devices[:num_devices]), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, *, ndim: int, axis: int) -> NamedSharding:
  """Shards dimension ``axis`` of an ``ndim``-dimensional array over the mesh."""
  spec = [None] * ndim
  spec[axis] = AXIS
  return NamedSharding(mesh, P(*spec))


def local_rows(mesh: Mesh, size: int) -> slice:
  """The rows ``[start, stop)`` of a dimension of ``size`` sharded over ``data`` that
  this process's devices hold (one contiguous block, see ``make_mesh``)."""
  sharding = batch_sharded(mesh, ndim=1, axis=0)
  spans = [
    idx[0].indices(size)[:2] for idx in sharding.addressable_devices_indices_map((size,)).values()
  ]
  start, stop = min(s for s, _ in spans), max(e for _, e in spans)
  if stop - start != sum(e - s for s, e in set(spans)):
    raise AssertionError(f"process {jax.process_index()} holds non-contiguous rows {spans}")
  return slice(start, stop)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places ``tree`` on every device of the mesh, each process from its own copy.

  Each process copies its leaves to its own devices and the global array is
  assembled from those single-device arrays, with no cross-host traffic and no
  cross-host equality check (``jax.device_put`` with a global sharding gathers
  every host's copy to compare them). The caller guarantees the copies agree:
  they come from the same seed, config and files.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, replicated(mesh))
  sharding = replicated(mesh)
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]

  def put(leaf):
    leaf = np.asarray(leaf)
    shards = [jax.device_put(leaf, d) for d in local]
    return jax.make_array_from_single_device_arrays(leaf.shape, sharding, shards)

  return jax.tree.map(put, tree)


def put_batch(array: np.ndarray, mesh: Mesh, *, axis: int) -> jax.Array:
  """Places a host array whose dimension ``axis`` is the batch, known on every process.

  Each device receives only its own rows (``make_array_from_callback``): a
  process transfers exactly its share, and nothing is replicated.
  """
  sharding = batch_sharded(mesh, ndim=array.ndim, axis=axis)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def put_local(
  local: np.ndarray, mesh: Mesh, *, axis: int, global_shape: tuple[int, ...]
) -> jax.Array:
  """Assembles a batch-sharded global array from this process's rows ``local``.

  ``local`` holds rows ``local_rows(mesh, global_shape[axis])`` of dimension
  ``axis`` (a streamed batch's share read by this host); every other dimension
  is whole.
  """
  rows = local_rows(mesh, global_shape[axis])
  want = global_shape[:axis] + (rows.stop - rows.start,) + global_shape[axis + 1 :]
  if local.shape != want:
    raise AssertionError(
      f"process {jax.process_index()} feeds {local.shape}, its share of {global_shape} is {want}"
    )
  sharding = batch_sharded(mesh, ndim=local.ndim, axis=axis)
  if jax.process_count() == 1:
    return jax.device_put(local, sharding)
  return jax.make_array_from_process_local_data(sharding, local, global_shape)


def barrier(name: str) -> None:
  """Waits until every process reaches ``name`` (a no-op on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)


def broadcast_from_lead(value: Any) -> Any:
  """Process 0's ``value`` (a numpy-compatible pytree) on every process."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(value))


def all_true(flag: bool) -> bool:
  """Whether ``flag`` holds on every process."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.all(multihost_utils.process_allgather(np.asarray(flag))))


def is_lead() -> bool:
  """Process 0: the one that writes outputs and makes shared decisions."""
  return jax.process_index() == 0


def enable_compilation_cache(cache_dir: str) -> None:
  """Turns on JAX's persistent compilation cache (start-up 3.1 s -> 1.4 s here)."""
  if not cache_dir:
    return
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  # Cache even small programs: on CPU most of ours compile in well under a second,
  # and those are exactly the ones a study recompiles in every fresh process.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
