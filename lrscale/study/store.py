"""The study directory and atomic trial claims on a shared filesystem.

Layout: ``DIR/study.json``, ``DIR/trials/<id>/{trial.json, claim, config.json,
metrics.jsonl, summary.json, checkpoints/}``. A trial is finished when its
summary.json says complete, diverged or stopped_early.

Claims make several workers (processes or hosts) share one study: a worker
owns a trial while it holds ``claim``, created with ``O_CREAT | O_EXCL`` (atomic
on POSIX filesystems and NFSv3+). A background thread refreshes the claim's
heartbeat; a claim whose heartbeat is older than ``stale_s``, or whose owner
process on this host is gone, is taken over by renaming it away first (only one
renamer can win), so a dead worker's trial is neither lost nor run twice.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from lrscale.engine.outputs import atomic_write_json

# "pruned": left behind by successive halving (lrscale.study.halving), not to be resumed.
FINISHED = ("complete", "diverged", "stopped_early", "pruned")


def trial_dir(workdir: str, trial_id: str) -> str:
  return os.path.join(workdir, "trials", trial_id)


def read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def is_finished(workdir: str, trial_id: str) -> bool:
  summary = read_json(os.path.join(trial_dir(workdir, trial_id), "summary.json"))
  return bool(summary) and summary.get("status") in FINISHED


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class Claim:
  """A held claim on one trial; keeps its heartbeat fresh until released."""

  def __init__(self, path: str, token: str, heartbeat_s: float):
    self.path, self.token = path, token
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
    self._stop.set()
    self._thread.join()
    try:
      with open(self.path) as f:
        if json.load(f).get("token") == self.token:
          os.remove(self.path)
    except (FileNotFoundError, json.JSONDecodeError):
      pass


def try_claim(workdir: str, trial_id: str, *, worker: str, stale_s: float) -> Claim | None:
  """Claims a trial for this worker, or returns None if someone live holds it."""
  directory = trial_dir(workdir, trial_id)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "claim")
  token = uuid.uuid4().hex
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      if not _is_stale(path, stale_s):
        return None
      try:  # only one of several workers racing for a stale claim gets to rename it
        os.rename(path, f"{path}.stale.{token}")
      except FileNotFoundError:
        return None
      continue
    with os.fdopen(fd, "w") as f:
      json.dump(
        dict(
          worker=worker, host=socket.gethostname(), pid=os.getpid(), token=token, time=time.time()
        ),
        f,
      )
    if is_finished(workdir, trial_id):  # finished between our check and our claim
      os.remove(path)
      return None
    return Claim(path, token, heartbeat_s=max(1.0, stale_s / 4))
  return None


def _is_stale(path: str, stale_s: float) -> bool:
  try:
    age = time.time() - os.stat(path).st_mtime
  except FileNotFoundError:
    return True
  info = read_json(path) or {}
  if info.get("host") == socket.gethostname() and "pid" in info and not _pid_alive(info["pid"]):
    return True
  return age > stale_s


def write_study_json(workdir: str, info: dict[str, Any]) -> None:
  os.makedirs(workdir, exist_ok=True)
  atomic_write_json(os.path.join(workdir, "study.json"), info)


def write_trial_json(workdir: str, trial_info: dict[str, Any]) -> None:
  path = os.path.join(trial_dir(workdir, trial_info["id"]), "trial.json")
  if not os.path.exists(path):
    atomic_write_json(path, trial_info)


def record_attempt(workdir: str, trial_id: str, *, worker: str) -> None:
  """Appends who started (or resumed) a trial and when: provenance, and proof in
  tests that no trial ran twice."""
  path = os.path.join(trial_dir(workdir, trial_id), "attempts.jsonl")
  with open(path, "a") as f:
    f.write(
      json.dumps(dict(worker=worker, host=socket.gethostname(), pid=os.getpid(), time=time.time()))
      + "\n"
    )


def read_attempts(workdir: str, trial_id: str) -> list[dict[str, Any]]:
  path = os.path.join(trial_dir(workdir, trial_id), "attempts.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
