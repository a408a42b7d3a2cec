"""What a workdir is and who uses it: writability, run identity, finished runs, the lock.

Checked in this order before any compute (``lrscale.engine.loop.train``,
``lrscale.lr_find``):

1. ``check_writable``: the workdir is (or can become) a writable directory.
2. ``check_identity``: a workdir with outputs belongs to exactly one run. Its
   ``config.json`` (written atomically before the first checkpoint) must match
   this run's config; checkpoints or metrics without a readable config.json are
   never resumed, since nothing says which run they belong to.
3. ``finished_summary``: a finished run is not trained again.
4. ``hold``: one live process per workdir (``lrscale.lockfile``); a second one
   gets one line and exit 2, a dead one's lock is taken over with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from typing import Any, Iterator

from absl import logging

from lrscale import errors, lockfile

LOCK_NAME = "lock"
LOCK_STALE_S = 120.0  # heartbeat every 30 s; older than this = the holder is gone
FINISHED = ("complete", "diverged", "stopped_early")
_RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "summary.json")


def check_writable(workdir: str, flag: str = "--workdir") -> None:
  """Raises ``UserError`` unless ``workdir`` is, or can be created as, a writable directory.

  Probes by creating (and removing) a temporary file in the nearest existing
  directory, which also catches read-only mounts where ``os.access`` says yes.
  """
  if not workdir:
    raise errors.UserError(f"{flag} is empty: give an output directory.")
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.UserError(f"{flag}={workdir} is a file, not a directory: use another path.")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise errors.UserError(f"{flag}={workdir}: {existing} is a file, not a directory.")
  try:
    fd, probe = tempfile.mkstemp(prefix=".lrscale-probe-", dir=existing)
    os.close(fd)
    os.remove(probe)
  except OSError as err:
    raise errors.UserError(
      f"{flag}={workdir} is not writable ({existing}: {err.strerror}): use a directory you "
      "can write to."
    ) from None


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
  """Dotted paths where two JSON trees differ (``["lr", "model.name"]``)."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      out += changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")
    return out
  return [] if old == new else [prefix.rstrip(".")]


def read_record(path: str, what: str, fix: str) -> dict[str, Any] | None:
  """A JSON object file; None if absent; ``UserError`` naming the file if unreadable."""
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as err:
    raise errors.UserError(f"{path} ({what}) is unreadable ({err}): {fix}") from None
  if not isinstance(data, dict):
    raise errors.UserError(f"{path} ({what}) is not a JSON object: {fix}")
  return data


def check_identity(workdir: str, config_json: dict[str, Any]) -> None:
  """Refuses to mix two runs in one workdir, or to resume outputs of an unknown run."""
  fix = f"delete {workdir} to start over, or use a new --workdir."
  old = read_record(os.path.join(workdir, "config.json"), "this run's identity", fix)
  if old is None:
    present = [n for n in _RUN_OUTPUTS if os.path.exists(os.path.join(workdir, n))]
    if present:
      raise errors.UserError(
        f"--workdir={workdir} holds {present} but no config.json, so nothing says which run "
        f"they belong to: restore its config.json, or {fix}"
      )
    return
  changed = changed_fields(old.get("config"), config_json["config"])
  if changed:
    raise errors.UserError(
      f"--workdir={workdir} already holds a run with a different config (fields "
      f"{['config.' + c for c in changed]} differ). Use a new --workdir, or delete that "
      "directory to start over."
    )


def finished_summary(workdir: str) -> dict[str, Any] | None:
  """summary.json of a finished run in ``workdir``, else None."""
  try:
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None  # absent or torn: the run finishes (again) from its checkpoint
  return summary if isinstance(summary, dict) and summary.get("status") in FINISHED else None


@contextlib.contextmanager
def hold(workdir: str, *, what: str, enabled: bool = True) -> Iterator[None]:
  """Holds ``workdir/lock`` for this process (``enabled=False``: a no-op, e.g. not host 0)."""
  if not enabled:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  lock = lockfile.try_acquire(path, stale_s=LOCK_STALE_S, info=dict(what=what))
  if lock is None:
    holder = lockfile.read_holder(path)
    try:
      age = f"{time.time() - os.stat(path).st_mtime:.0f} s ago"
    except OSError:
      age = "just now"
    raise errors.UserError(
      f"--workdir={workdir} is in use by {holder.get('what', 'another process')} (pid "
      f"{holder.get('pid', '?')} on {holder.get('host', '?')}, heartbeat {age}): wait for it to "
      f"finish or stop it; a killed process's lock is taken over (or delete {path})."
    )
  if lock.took_over:
    logging.warning(
      "Took over the lock of %s from a process that is gone (pid %s on %s).",
      workdir,
      lock.took_over.get("pid"),
      lock.took_over.get("host"),
    )
  try:
    yield
  finally:
    lock.release()
