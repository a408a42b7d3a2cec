"""Exclusive lock files with a heartbeat, safe on a shared filesystem.

One mechanism serves both the study's per-trial claims (``lrscale.study.store``)
and the workdir lock of ``train`` and ``lr_find`` (``lrscale.engine.workdir``).
A lock is a small JSON file (owner host, pid, token, what it is for) created
with ``O_CREAT | O_EXCL``, atomic on POSIX filesystems and NFSv3+. A background
thread refreshes its mtime (the heartbeat) while it is held. A lock is stale
when its owner process on this host is gone (a ``kill -9``), or when its
heartbeat is older than ``stale_s`` (an owner on another host that died); a
stale lock is taken over by renaming it away first, so of several processes
racing for it exactly one wins.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any


def pid_alive(pid: int) -> bool:
  """Whether process ``pid`` exists on this host."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def read_holder(path: str) -> dict[str, Any]:
  """The lock's owner record ({} if missing or unreadable)."""
  try:
    with open(path) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return {}
  return info if isinstance(info, dict) else {}


def is_stale(path: str, stale_s: float) -> bool:
  """Whether the lock at ``path`` may be taken over (see the module docstring)."""
  try:
    age = time.time() - os.stat(path).st_mtime
  except FileNotFoundError:
    return True
  info = read_holder(path)
  if info.get("host") == socket.gethostname() and "pid" in info and not pid_alive(info["pid"]):
    return True
  return age > stale_s


class Lock:
  """A held lock; keeps its heartbeat fresh until released."""

  def __init__(self, path: str, token: str, heartbeat_s: float, took_over: dict[str, Any] | None):
    self.path, self.token = path, token
    self.took_over = took_over  # the stale holder's record, if this lock replaced one
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
    self._thread.start()

  def _beat(self, every: float) -> None:
    while not self._stop.wait(every):
      try:
        os.utime(self.path)
      except FileNotFoundError:
        return

  def release(self) -> None:
    """Stops the heartbeat and removes the lock file if it is still this lock's."""
    self._stop.set()
    self._thread.join()
    if read_holder(self.path).get("token") == self.token:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self) -> Lock:
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def try_acquire(path: str, *, stale_s: float, info: dict[str, Any] | None = None) -> Lock | None:
  """Takes the lock at ``path`` (taking over a stale one), or None if it is live.

  Args:
    path: the lock file; its directory must exist.
    stale_s: a heartbeat older than this means the holder is gone.
    info: extra fields for the owner record (who, what for).
  """
  token = uuid.uuid4().hex
  took_over = None
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      if not is_stale(path, stale_s):
        return None
      took_over = read_holder(path)
      try:  # only one of several processes racing for a stale lock gets to rename it
        os.rename(path, f"{path}.stale.{token}")
      except FileNotFoundError:
        return None
      os.remove(f"{path}.stale.{token}")
      continue
    record = dict(info or {}, host=socket.gethostname(), pid=os.getpid(), token=token)
    with os.fdopen(fd, "w") as f:
      json.dump(dict(record, time=time.time()), f)
    return Lock(path, token, heartbeat_s=max(0.05, stale_s / 4), took_over=took_over)
  return None
