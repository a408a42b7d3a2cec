"""Runs a study: every trial once, resumably, shared among any number of workers.

Trials are grouped by batch size (and any other swept field that changes the
program); each group resolves and compiles once, and all its learning rates
and seeds reuse that compiled step because the lr is a traced value. A worker
walks the trial list from its own offset, claims a trial atomically
(``lrscale.study.store``), trains it into ``trials/<id>/`` (resuming from the
trial's checkpoints if a previous owner died), and releases the claim. A
diverged trial is recorded as such: it marks the edge of the stable lr range.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lrscale import config as config_lib
from lrscale import errors
from lrscale.data import registry
from lrscale.engine import loop as train_lib
from lrscale.engine import parallel
from lrscale.engine import workdir as workdir_lib
from lrscale.engine.outputs import format_seconds
from lrscale.engine.programs import program_key
from lrscale.study import space, store, vmap_group


def _study_info(study: ml_collections.ConfigDict, meta: registry.DatasetMeta) -> dict[str, Any]:
  return dict(
    name=study.name,
    target=study.target.to_dict(),
    batch_sizes=[int(b) for b in study.batch_sizes],
    reference_batch=int(study.lr.reference_batch),
    base_lr=float(study.lr.base_lr),
    scaling_rule=study.lr.rule,
    lr_mode=study.lr.mode,
    optimizer=study.base.optimizer.name,
    num_train_examples=meta.num_train,
    dataset=meta.name,
    model=study.base.model.name,
    budget=study.budget,
    config=study.to_dict(),
  )


def validate_study(
  study: ml_collections.ConfigDict, meta: registry.DatasetMeta | None = None
) -> list[space.Trial]:
  """Checks the study and every trial's run config before any compute."""
  return [trial for trial, _ in _resolved_trials(study, meta)]


@errors.as_user_errors
def _resolved_trials(
  study: ml_collections.ConfigDict, meta: registry.DatasetMeta | None = None
) -> list[tuple[space.Trial, config_lib.RunPlan]]:
  """Every trial with its resolved plan; raises on the first bad field."""
  check_study_config(study)
  config_lib.check_known_fields(study, space.default_study_config(), "config")
  meta = meta or registry.check_dataset(study.base.dataset)
  return [
    (trial, config_lib.resolve(space.trial_config(study, trial), dataset_meta=meta))
    for trial in space.enumerate_trials(study)
  ]


def check_study_config(study: Any) -> None:
  """Rejects what is not a study config (a dict, a run config) in one line."""
  if not isinstance(study, ml_collections.ConfigDict):
    raise errors.UserError(
      f"the study config is a {type(study).__name__}, not an ml_collections.ConfigDict: "
      "get_config() must return one; start from lrscale.study.space.default_study_config()."
    )
  if "base" not in study and "model" in study and "optimizer" in study:
    raise errors.UserError(
      "the config is a run config (it has config.model and config.optimizer, no config.base): "
      "train it with python -m lrscale.train --config=... --workdir=..."
    )


def run_study(
  study: ml_collections.ConfigDict,
  workdir: str,
  *,
  worker: int = 0,
  num_workers: int = 1,
  max_trials: int | None = None,
) -> dict[str, int]:
  """Runs (this worker's share of) a study; returns counts by status.

  Args:
    study: a study config (``space.default_study_config()`` plus changes).
    workdir: the study directory (shared among workers).
    worker: this worker's index in [0, num_workers).
    num_workers: how many workers share the study; they start at different
      offsets of the trial list and coordinate through claims.
    max_trials: stop after running this many trials (for tests).
  """
  check_study_config(study)
  workdir_lib.check_writable(workdir)
  meta = errors.as_user_errors(registry.check_dataset)(study.base.dataset)
  resolved = _resolved_trials(study, meta)
  trials = [trial for trial, _ in resolved]
  # Every worker: a different study in this directory is refused before any trial.
  store.check_study_json(
    workdir, _study_info(study, meta), write=worker == 0 and parallel.is_lead()
  )
  for trial in trials:  # a finished trial whose record is corrupt is repaired, not dropped
    if parallel.is_lead() and store.is_finished(workdir, trial.id):
      store.write_trial_json(workdir, trial.to_json())
  if study.search.type == "halving":  # one process: each rung's choice reads the last
    from lrscale.study import halving  # pylint: disable=g-import-not-at-top

    halving.run_halving(study, workdir, resolved)
    return _count_statuses(workdir, trials)
  groups: dict[str, list[space.Trial]] = {}
  for trial, plan in resolved:  # one compile per group, reused by its lrs and seeds
    groups.setdefault(program_key(plan), []).append(trial)
  keys = list(groups)
  keys = keys[worker * len(keys) // num_workers :] + keys[: worker * len(keys) // num_workers]
  worker_name = f"worker{worker}of{num_workers}"
  data = None
  counts = {"complete": 0, "diverged": 0, "skipped": 0, "busy": 0}
  ran, t0 = 0, time.perf_counter()
  logging.info(
    "Study %s: %d trials in %d groups -> %s", study.name, len(trials), len(keys), workdir
  )
  group_size = _vmap_size(study)
  for key in keys:
    setup = None
    pending = list(groups[key])
    while pending:
      batch, claims = [], []
      while pending and len(batch) < group_size:
        trial = pending.pop(0)
        status, claim = _claim(workdir, trial.id, worker=worker_name, stale_s=study.stale_claim_s)
        if status != "claimed":
          counts[status] += 1
          continue
        batch.append(trial)
        claims.append(claim)
      if not batch:
        continue
      try:
        plans = []
        for trial in batch:
          if parallel.is_lead():
            store.write_trial_json(workdir, trial.to_json())
            store.record_attempt(workdir, trial.id, worker=worker_name)
          cfg = space.trial_config(study, trial)
          plans.append(train_lib.prepare(cfg, plan=config_lib.resolve(cfg, dataset_meta=meta)))
        if data is None:
          data = registry.load_in_memory(plans[0].config.dataset)
        if setup is None:  # one compile per group, reused by all its lrs and seeds
          setup = train_lib.RunSetup(plans[0], data)
        summaries = _run_batch(plans, [store.trial_dir(workdir, t.id) for t in batch], setup, data)
      finally:
        for claim in claims:
          if claim is not None:
            claim.release()
      for summary in summaries:
        counts[summary["status"]] = counts.get(summary["status"], 0) + 1
      ran += len(batch)
      _log_progress(workdir, trials, ran, t0)
      if max_trials is not None and ran >= max_trials:
        return counts
  return counts


def _claim(
  workdir: str, trial_id: str, *, worker: str, stale_s: float
) -> tuple[str, store.Claim | None]:
  """("skipped" | "busy" | "claimed", the claim held by this process or None).

  A worker may be a multi-process program: process 0 alone reads the trial's
  state and claims it, and every process follows its decision, so all of them
  train the same trial (the claim is held, and released, by process 0).
  """
  status, claim = "skipped", None
  if parallel.is_lead() and not store.is_finished(workdir, trial_id):
    claim = store.try_claim(workdir, trial_id, worker=worker, stale_s=stale_s)
    status = "busy" if claim is None else "claimed"
  code = int(parallel.broadcast_from_lead(np.int32(_CLAIM_STATUS.index(status))))
  return _CLAIM_STATUS[code], claim


_CLAIM_STATUS = ("skipped", "busy", "claimed")


def _count_statuses(workdir: str, trials: list[space.Trial]) -> dict[str, int]:
  counts: dict[str, int] = {}
  for t in trials:
    summary = store.read_json(os.path.join(store.trial_dir(workdir, t.id), "summary.json")) or {}
    counts[summary.get("status", "missing")] = counts.get(summary.get("status", "missing"), 0) + 1
  return counts


def _vmap_size(study: ml_collections.ConfigDict) -> int:
  if study.vmap not in ("auto", "on", "off"):
    raise ValueError(f"config.vmap must be 'auto', 'on' or 'off', got {study.vmap!r}.")
  on = study.vmap == "on" or (study.vmap == "auto" and jax.default_backend() != "cpu")
  if on:
    logging.info(
      "Training up to %d trials per vmapped program (config.vmap=%s, backend %s).",
      study.vmap_size,
      study.vmap,
      jax.default_backend(),
    )
  return max(1, int(study.vmap_size)) if on else 1


def _run_batch(plans, workdirs, setup, data) -> list[dict[str, Any]]:
  """One trial: a plain run. Several: one vmapped group when they start at the
  same step (fresh trials), else one after another."""
  if (
    len(plans) > 1
    and not setup.streamed
    and not any(p.config.plateau.enabled for p in plans)
    and not any(os.path.isdir(os.path.join(wd, "checkpoints")) for wd in workdirs)
  ):
    return vmap_group.train_group(plans, workdirs, setup)
  return [
    train_lib.train(p.config, wd, plan=p, setup=setup, data=data) for p, wd in zip(plans, workdirs)
  ]


def _log_progress(workdir: str, trials: list[space.Trial], ran: int, t0: float) -> None:
  done = diverged = running = 0
  for t in trials:
    summary = store.read_json(os.path.join(store.trial_dir(workdir, t.id), "summary.json"))
    if summary and summary.get("status") in store.FINISHED:
      done += 1
      diverged += summary["status"] == "diverged"
    elif os.path.exists(os.path.join(store.trial_dir(workdir, t.id), "claim")):
      running += 1
  left = len(trials) - done
  rate = ran / max(time.perf_counter() - t0, 1e-9)
  logging.info(
    "Study progress: %d/%d done (%d diverged), %d running, %d left | ETA %s",
    done,
    len(trials),
    diverged,
    running,
    left,
    format_seconds(left / rate if rate else float("inf")),
  )
