"""Read a finished (or half-finished) study directory into plain records.

The analysis layer only ever reads files: a copied results folder must be
analysable with no model, optimizer or JAX in memory. Layout read here::

    DIR/study.json
    DIR/trials/<trial_id>/trial.json
    DIR/trials/<trial_id>/summary.json     (absent until the trial starts)
    DIR/trials/<trial_id>/metrics.jsonl    (train and eval rows, may be partial)

Every reader is defensive: a trial that never started, crashed mid-write or
diverged into NaN/Infinity must become a record with a status, never an
exception, because one broken trial must not hide the other hundred.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from lrscale import errors, jsonio

STATUS_COMPLETE = "complete"
STATUS_DIVERGED = "diverged"
STATUS_RUNNING = "running"
STATUS_FAILED = "failed"
STATUS_MISSING = "missing"
# Stopped by config.early_stopping: as final as complete (it ran as configured).
STATUS_STOPPED_EARLY = "stopped_early"
STATUS_ENDED = (STATUS_COMPLETE, STATUS_STOPPED_EARLY)
# Left behind by successive halving: its point lost a rung, i.e. it is not among
# the best. Settled as not reached (so a point's surviving seeds alone cannot
# make it look better than it is), never counted as diverged or stable.
STATUS_PRUNED = "pruned"


@dataclasses.dataclass(frozen=True)
class Target:
  """The result a trial must reach: ``metric`` compared with ``value``.

  Attributes:
    metric: Name of an eval-row key, e.g. ``"eval_accuracy"``.
    value: Threshold.
    mode: ``"max"`` (reached when metric >= value) or ``"min"`` (<=).
  """

  metric: str
  value: float
  mode: str = "max"

  def is_reached(self, measured: float | None) -> bool:
    """Whether a measured metric value meets the target (NaN never does)."""
    if measured is None or not math.isfinite(measured):
      return False
    # Compared at float32, the precision the training loop computes and checks
    # metrics in: 342/360 is logged as 0.949999988, and the run that stopped
    # there because it met a 0.95 target must count as having met it.
    value, measured = np.float32(self.value), np.float32(measured)
    if self.mode == "min":
      return bool(measured <= value)
    return bool(measured >= value)

  def to_dict(self) -> dict[str, Any]:
    return {"metric": self.metric, "value": self.value, "mode": self.mode}


@dataclasses.dataclass(frozen=True)
class StudySpec:
  """Contents of ``study.json``; ``raw`` keeps any keys this reader ignores."""

  name: str
  target: Target
  batch_sizes: tuple[int, ...]
  reference_batch: int | None
  base_lr: float | None
  scaling_rule: str | None
  optimizer: str | None
  num_train_examples: int | None
  raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrialRecord:
  """One trial as found on disk.

  Attributes:
    id: Trial directory name (or ``trial.json`` id).
    batch_size: Global batch size B.
    lr: Learning rate of the trial.
    seed: Random seed.
    params: Other swept hyperparameters, e.g. ``{"momentum": 0.9}``.
    status: ``complete | stopped_early | diverged | running | failed | missing``; ``missing``
      means no readable ``summary.json`` (the trial never started).
    summary: Parsed ``summary.json`` or ``None``.
    train_rows: Metric rows with a ``train_loss`` key, sorted by step.
    eval_rows: Metric rows with an eval key, sorted by step.
    path: Trial directory.
  """

  id: str
  batch_size: int
  lr: float
  seed: int
  params: dict[str, Any]
  status: str
  summary: dict[str, Any] | None
  train_rows: list[dict[str, Any]]
  eval_rows: list[dict[str, Any]]
  path: str = ""

  @property
  def diverged(self) -> bool:
    """Diverged by status, or by a non-finite final training loss."""
    if self.status == STATUS_DIVERGED:
      return True
    final = (self.summary or {}).get("final") or {}
    loss = as_float(final.get("train_loss"))
    return self.status in STATUS_ENDED and loss is not None and not math.isfinite(loss)

  @property
  def config_key(self) -> tuple[Any, ...]:
    """Everything that defines a hyperparameter point except the seed."""
    return (self.batch_size, self.lr, tuple(sorted((k, repr(v)) for k, v in self.params.items())))

  def final_metrics(self) -> dict[str, float | None]:
    """``summary.final`` as floats (``None`` where absent or unparsable)."""
    final = (self.summary or {}).get("final") or {}
    return {str(k): as_float(v) for k, v in final.items()}


@dataclasses.dataclass(frozen=True)
class Study:
  """A study spec plus all its trials, in trial-id order."""

  spec: StudySpec
  trials: list[TrialRecord]
  workdir: str = ""


def as_float(value: Any) -> float | None:
  """Float conversion that maps junk to ``None`` but keeps NaN/Infinity."""
  if value is None or isinstance(value, bool):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


read_json = jsonio.read_json


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The rows of a metrics.jsonl that carry a step (``jsonio.read_jsonl`` skips torn lines)."""
  return [r for r in jsonio.read_jsonl(path) if as_float(r.get("step")) is not None]


def split_rows(
  rows: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """Split metric rows into (train rows, eval rows), each sorted by step."""
  train = [dict(r) for r in rows if "train_loss" in r]
  # The two common keys short-circuit the generic prefix scan (hot on big studies).
  evals = [
    dict(r)
    for r in rows
    if "eval_loss" in r or "eval_accuracy" in r or any(str(k).startswith("eval_") for k in r)
  ]
  key = lambda r: float(r["step"])  # noqa: E731 - tiny sort key
  return sorted(train, key=key), sorted(evals, key=key)


def parse_study_spec(data: Mapping[str, Any], *, default_name: str = "study") -> StudySpec:
  """Build a :class:`StudySpec` from a ``study.json`` mapping."""
  target = data.get("target") or {}
  opt_int = lambda v: None if as_float(v) is None else int(float(v))  # noqa: E731
  return StudySpec(
    name=str(data.get("name") or default_name),
    target=Target(
      metric=str(target.get("metric", "eval_accuracy")),
      value=float(as_float(target.get("value")) or 0.0),
      mode=str(target.get("mode", "max")),
    ),
    batch_sizes=tuple(int(b) for b in data.get("batch_sizes") or ()),
    reference_batch=opt_int(data.get("reference_batch")),
    base_lr=as_float(data.get("base_lr")),
    scaling_rule=None if data.get("scaling_rule") is None else str(data["scaling_rule"]),
    optimizer=None if data.get("optimizer") is None else str(data["optimizer"]),
    num_train_examples=opt_int(data.get("num_train_examples")),
    raw=dict(data),
  )


_TRIAL_ID = re.compile(r"^b(\d+)_lr([0-9.eE+-]+)_s(\d+)(?:_p[0-9a-f]+)?$")


def _swept_keys(study_config: Mapping[str, Any] | None) -> list[str]:
  """The run-config fields a study sweeps besides lr/batch/seed (its ``params`` spec)."""
  spec = str((study_config or {}).get("params") or "")
  return [p.split("=", 1)[0].strip() for p in spec.split(";") if "=" in p]


def recover_trial_meta(
  trial_dir: str, study_config: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
  """A trial's record rebuilt when ``trial.json`` is unusable (torn, edited, lost).

  The trial's own ``config.json`` (written before its first checkpoint) holds
  the batch size, lr, seed and every swept field; failing that, the trial id
  (``b<B>_lr<lr>_s<seed>``) holds the first three.
  """
  cfg = (read_json(os.path.join(trial_dir, "config.json")) or {}).get("config")
  if isinstance(cfg, dict) and as_float(cfg.get("batch_size")) and as_float(cfg.get("lr")):
    params = {}
    for key in _swept_keys(study_config):
      node: Any = cfg
      for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
      params[key] = node
    meta = dict(batch_size=cfg["batch_size"], lr=cfg["lr"], seed=cfg.get("seed", 0), params=params)
  else:
    match = _TRIAL_ID.match(os.path.basename(os.path.normpath(trial_dir)))
    if match is None:
      return None
    meta = dict(batch_size=int(match[1]), lr=float(match[2]), seed=int(match[3]), params={})
  return dict(meta, id=os.path.basename(os.path.normpath(trial_dir)))


def load_trial(trial_dir: str, study_config: Mapping[str, Any] | None = None) -> TrialRecord | None:
  """Read one trial directory; ``None`` only when nothing says what the trial is.

  An unusable ``trial.json`` is reported and the record rebuilt
  (``recover_trial_meta``), so a torn file never makes a trial vanish from the
  analysis.
  """
  meta = read_json(os.path.join(trial_dir, "trial.json"))
  if meta is None or as_float(meta.get("batch_size")) is None or as_float(meta.get("lr")) is None:
    recovered = recover_trial_meta(trial_dir, study_config)
    if recovered is None:
      if os.path.isdir(trial_dir) and os.listdir(trial_dir):
        logging.warning("Trial %s has no usable trial.json or config.json; skipped.", trial_dir)
      return None
    logging.warning(
      "Trial %s: trial.json is unreadable; rebuilt its record from its config.json / id "
      "(rerun the study to rewrite it).",
      trial_dir,
    )
    meta = recovered
  batch_size, lr = as_float(meta.get("batch_size")), as_float(meta.get("lr"))
  summary = read_json(os.path.join(trial_dir, "summary.json"))
  status = STATUS_MISSING if summary is None else str(summary.get("status", STATUS_FAILED))
  train_rows, eval_rows = split_rows(read_jsonl(os.path.join(trial_dir, "metrics.jsonl")))
  return TrialRecord(
    id=str(meta.get("id") or os.path.basename(os.path.normpath(trial_dir))),
    batch_size=int(batch_size),
    lr=lr,
    seed=int(as_float(meta.get("seed")) or 0),
    params=dict(meta.get("params") or {}),
    status=status,
    summary=summary,
    train_rows=train_rows,
    eval_rows=eval_rows,
    path=trial_dir,
  )


def load_study(workdir: str) -> Study:
  """Load ``study.json`` and every readable trial under ``workdir/trials``.

  Args:
    workdir: Study directory.

  Returns:
    A :class:`Study`; trials sorted by (batch size, lr, seed, id).

  Raises:
    FileNotFoundError: if ``study.json`` is missing or unreadable, since
      without the target nothing can be analysed.
  """
  data = read_json(os.path.join(workdir, "study.json"))
  if data is None:
    raise errors.MissingInput(
      f"--workdir={workdir} has no readable study.json: give a study directory "
      "(one that python -m lrscale.study wrote)."
    )
  spec = parse_study_spec(data, default_name=os.path.basename(os.path.normpath(workdir)))
  trials_dir = os.path.join(workdir, "trials")
  names = sorted(os.listdir(trials_dir)) if os.path.isdir(trials_dir) else []
  study_config = data.get("config") if isinstance(data.get("config"), dict) else None
  trials = [
    t for n in names if (t := load_trial(os.path.join(trials_dir, n), study_config)) is not None
  ]
  trials.sort(key=lambda t: (t.batch_size, t.lr, t.seed, t.id))
  return Study(spec=spec, trials=trials, workdir=workdir)


def noise_scale_series(trial: TrialRecord) -> tuple[list[int], list[float]]:
  """B_simple against step from a trial's train rows (finite values only).

  Uses ``gns_b_simple`` when logged, else ``gns_trace_sigma / gns_grad_sq_norm``
  (only where the |G|^2 estimate is positive: the ratio is undefined otherwise).
  """
  steps: list[int] = []
  values: list[float] = []
  for row in trial.train_rows:
    value = as_float(row.get("gns_b_simple"))
    if value is None:
      trace, grad_sq = as_float(row.get("gns_trace_sigma")), as_float(row.get("gns_grad_sq_norm"))
      if trace is not None and grad_sq is not None and grad_sq > 0:
        value = trace / grad_sq
    if value is not None and math.isfinite(value):
      steps.append(int(float(row["step"])))
      values.append(value)
  return steps, values


def final_b_simple(trial: TrialRecord) -> float | None:
  """Last B_simple of a trial: ``summary.noise_scale.b_simple``, else the last logged value."""
  value = as_float(((trial.summary or {}).get("noise_scale") or {}).get("b_simple"))
  if value is not None and math.isfinite(value):
    return value
  _, values = noise_scale_series(trial)
  return values[-1] if values else None
