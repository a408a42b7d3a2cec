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
import time
from typing import Any

from absl import logging

from lrscale import errors, jsonio, lockfile
from lrscale.engine import workdir as workdir_lib
from lrscale.engine.outputs import atomic_write_json

# "pruned": left behind by successive halving (lrscale.study.halving), not to be resumed.
FINISHED = ("complete", "diverged", "stopped_early", "pruned")
# Study fields that change how trials are run, not what they compute.
# Fields that change how trials are scheduled or read, never what they compute: a study
# directory may be resumed with them changed (``analysis`` is read from study.json as written).
OPERATIONAL_FIELDS = ("vmap", "vmap_size", "stale_claim_s", "analysis")


def trial_dir(workdir: str, trial_id: str) -> str:
  return os.path.join(workdir, "trials", trial_id)


read_json = jsonio.read_json


def is_finished(workdir: str, trial_id: str) -> bool:
  summary = read_json(os.path.join(trial_dir(workdir, trial_id), "summary.json"))
  return bool(summary) and summary.get("status") in FINISHED


Claim = lockfile.Lock  # a held claim on one trial


def try_claim(workdir: str, trial_id: str, *, worker: str, stale_s: float) -> Claim | None:
  """Claims a trial for this worker, or returns None if someone live holds it."""
  directory = trial_dir(workdir, trial_id)
  os.makedirs(directory, exist_ok=True)
  claim = lockfile.try_acquire(
    os.path.join(directory, "claim"), stale_s=stale_s, info=dict(worker=worker)
  )
  if claim is not None and is_finished(workdir, trial_id):  # finished since our check
    claim.release()
    return None
  return claim


def check_study_json(workdir: str, info: dict[str, Any], *, write: bool) -> None:
  """Compares ``study.json`` with this study, as a run compares its config.json.

  A directory holding a different study is refused (nothing is overwritten);
  an unreadable study.json is named. ``write``: create it if absent (worker 0).
  """
  path = os.path.join(workdir, "study.json")
  fix = f"use another --workdir, or delete {workdir} to start over."
  old = workdir_lib.read_record(path, "the study's identity", fix)
  new = json.loads(json.dumps(info, default=str))
  if old is not None:
    skip = set(OPERATIONAL_FIELDS) | _new_at_default(old.get("config"), new["config"])
    changed = [
      c
      for c in workdir_lib.changed_fields(old.get("config"), new["config"])
      if c.split(".")[0] not in skip
    ]
    if changed:
      raise errors.UserError(
        f"--workdir={workdir} holds a different study (fields "
        f"{['config.' + c for c in changed]} differ from its study.json): {fix}"
      )
  elif write:
    os.makedirs(workdir, exist_ok=True)
    atomic_write_json(path, info)


def _new_at_default(old: Any, new: dict[str, Any]) -> set[str]:
  """Top-level study fields a study.json written before they existed lacks, at their default.

  A field added to ``default_study_config`` later (``transfer``) changes nothing an
  older study computed while it keeps its default, so such a study resumes.
  """
  from lrscale.study import space  # pylint: disable=g-import-not-at-top

  defaults = json.loads(json.dumps(space.default_study_config().to_dict(), default=str))
  old = old if isinstance(old, dict) else {}
  return {k for k, v in new.items() if k not in old and k in defaults and v == defaults[k]}


def write_trial_json(workdir: str, trial_info: dict[str, Any]) -> None:
  """Writes trials/<id>/trial.json; an unreadable or wrong one is reported and rewritten."""
  path = os.path.join(trial_dir(workdir, trial_info["id"]), "trial.json")
  if not os.path.exists(path):
    if os.path.isdir(os.path.dirname(path)):
      atomic_write_json(path, trial_info)
    return
  old = read_json(path)
  if old != json.loads(json.dumps(trial_info, default=str)):
    logging.warning(
      "Trial record %s is unreadable or does not match the trial (%s); rewriting it.",
      path,
      "unparsable" if old is None else "different content",
    )
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
  return jsonio.read_jsonl(os.path.join(trial_dir(workdir, trial_id), "attempts.jsonl"))
