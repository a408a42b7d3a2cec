"""One command on every host: process identity from flags or the cluster, before any JAX call.

Every main (``lrscale.train``, ``lrscale.study``, ``lrscale.lr_find``,
``experiments.*``) starts through ``run(main)`` instead of ``absl.app.run``. It
defines three absl flags, the same on every entry point::

  --coordinator_address=HOST:PORT --num_processes=N --process_id=I

and calls ``jax.distributed.initialize`` before anything asks JAX for devices.
Without the flags, the identity comes from the environment JAX detects itself:
SLURM (``srun``), Open MPI (``mpirun``), or a Kubernetes JobSet. A single
process (no flags, no multi-task cluster environment) initialises nothing.

The identity is not part of a run: it lives in flags, never in the config, so a
workdir's ``config.json`` is the same whichever process wrote it and however
many hosts a resumed run uses.

A process that dies must not leave the others waiting: the coordination
service declares a process dead after ``--heartbeat_timeout_s`` without a
heartbeat and then stops every other process with an error naming the lost
task, and a process that exits waits at most ``--shutdown_timeout_s`` for the
others at the final barrier.
"""

from __future__ import annotations

import os
from typing import Callable

from absl import flags, logging

_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  None,
  "Multi-host: HOST:PORT of process 0's coordination service (same on every host). "
  "Unset: taken from SLURM/Open MPI/Kubernetes when present, else a single process.",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process, 0..N-1.")
_HEARTBEAT = flags.DEFINE_integer(
  "heartbeat_timeout_s",
  20,
  "Multi-host: a process silent this long is declared dead and every other process "
  "stops with an error (JAX's default, 100 s, leaves survivors waiting minutes).",
)
_SHUTDOWN = flags.DEFINE_integer(
  "shutdown_timeout_s", 30, "Multi-host: how long an exiting process waits for the others."
)
_INIT_TIMEOUT = flags.DEFINE_integer(
  "init_timeout_s", 300, "Multi-host: how long to wait for every process to connect at start."
)


def _in_cluster_job() -> bool:
  """Whether the environment describes a job of several processes JAX can join itself.

  A SLURM step's task count and Open MPI's world size are read directly (a
  single-task ``sbatch`` job initialises nothing); a Kubernetes pod is asked of
  JAX's own detector (``jax._src.clusters``), which needs the ``kubernetes``
  package.
  """
  for var in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if var in os.environ:
      return int(os.environ[var]) > 1
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  if "KUBERNETES_SERVICE_HOST" in os.environ:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top

    return clusters.K8sCluster.is_env_present()
  return False


def identity_flags() -> dict[str, int | str | None]:
  """The flags' values as ``jax.distributed.initialize`` keyword arguments."""
  return dict(
    coordinator_address=_COORDINATOR.value,
    num_processes=_NUM_PROCESSES.value,
    process_id=_PROCESS_ID.value,
  )


def validate_flags() -> None:
  """All three identity flags or none, and a consistent id: one line naming the flag."""
  ident = identity_flags()
  given = [k for k, v in ident.items() if v is not None]
  if given and len(given) != 3:
    missing = sorted(set(ident) - set(given))
    raise ValueError(
      f"--{' --'.join(given)} given without --{' --'.join(missing)}: pass all three "
      "(the same --coordinator_address and --num_processes on every host), or none."
    )
  if given and not 0 <= ident["process_id"] < ident["num_processes"]:  # type: ignore[operator]
    raise ValueError(
      f"--process_id={ident['process_id']} must be in [0, --num_processes="
      f"{ident['num_processes']})."
    )


def initialize() -> None:
  """``jax.distributed.initialize`` from the flags or the cluster; a no-op for one process.

  Must run before any other JAX call (the backend is created on the first one,
  and a backend created without the other processes never sees them). Safe to
  call twice.
  """
  import jax  # pylint: disable=g-import-not-at-top

  if getattr(initialize, "_done", False):
    return
  validate_flags()
  ident = identity_flags()
  explicit = ident["coordinator_address"] is not None
  if not explicit and not _in_cluster_job():
    initialize._done = True  # type: ignore[attr-defined]
    return
  kwargs = ident if explicit else {}
  jax.distributed.initialize(
    **kwargs,
    initialization_timeout=_INIT_TIMEOUT.value,
    heartbeat_timeout_seconds=_HEARTBEAT.value,
    shutdown_timeout_seconds=_SHUTDOWN.value,
  )
  initialize._done = True  # type: ignore[attr-defined]
  logging.info(
    "Process %d of %d (%d local devices of %d).",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  if jax.process_index() != 0:
    # One console per run: process 0 reports progress; the others only warn.
    logging.set_verbosity(logging.WARNING)


def run(main: Callable[[list[str]], None]) -> None:
  """The entry point of every main: ``initialize()`` first, then ``main``, under the
  one error path of ``lrscale.errors.run_main`` (bad input: one line, exit 2)."""
  from lrscale import errors  # pylint: disable=g-import-not-at-top

  def wrapped(argv: list[str]) -> None:
    initialize()
    main(argv)

  errors.run_main(wrapped)
