"""A fake study with known truth, in the exact on-disk format of the study runner.

Ground truth (McCandlish et al. 2018 steps curve, a saturating lr law):

* best steps to result ``S(B) = s_min (1 + b_crit / B)``;
* optimal lr ``lr*(B) = min(lr_coef B^lr_exponent, max_lr)``;
* a trial at lr needs ``S(B) exp(lr_width ln(lr / lr*)^2) exp(noise_sigma z)``
  steps (z standard normal per trial, so the median over seeds is unbiased);
* lr above ``diverge_factor lr*(B)`` diverges (NaN loss, target never reached);
* trials whose need exceeds the budget ``budget_factor S(B)`` finish unreached.

Eval accuracy rises as ``target (step / need)^0.5``, so the first eval step at
or after ``need`` is the true steps-to-result under Shallue's policy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

from lrscale.analysis.store_reader import (
  STATUS_COMPLETE,
  STATUS_DIVERGED,
  StudySpec,
  TrialRecord,
  parse_study_spec,
  split_rows,
)

TARGET = {"metric": "eval_accuracy", "value": 0.95, "mode": "max"}
DEFAULT_BATCHES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclasses.dataclass(frozen=True)
class Truth:
  """Known parameters of a synthetic study."""

  s_min: float
  b_crit: float
  lr_coef: float
  lr_exponent: float
  max_lr: float

  def steps(self, batch_size: float) -> float:
    return self.s_min * (1.0 + self.b_crit / batch_size)

  def best_lr(self, batch_size: float) -> float:
    return min(self.lr_coef * batch_size**self.lr_exponent, self.max_lr)


@dataclasses.dataclass
class FakeTrial:
  trial: dict[str, Any]
  summary: dict[str, Any] | None
  rows: list[dict[str, Any]]
  need: float  # true (unquantised) steps the trial needs; inf if it cannot reach


@dataclasses.dataclass
class SyntheticStudy:
  study: dict[str, Any]
  trials: list[FakeTrial]
  truth: Truth

  def spec(self) -> StudySpec:
    return parse_study_spec(self.study)

  def records(self) -> list[TrialRecord]:
    """The trials as the store reader would return them, without touching disk."""
    out = []
    for t in self.trials:
      train, evals = split_rows(t.rows)
      status = "missing" if t.summary is None else t.summary["status"]
      out.append(
        TrialRecord(
          id=t.trial["id"],
          batch_size=t.trial["batch_size"],
          lr=t.trial["lr"],
          seed=t.trial["seed"],
          params=dict(t.trial["params"]),
          status=status,
          summary=t.summary,
          train_rows=train,
          eval_rows=evals,
        )
      )
    return out

  def write(self, workdir: str, *, with_broken: bool = True) -> str:
    """Write the study in the runner's layout; optionally add broken trials.

    The broken extras (never started, no trial.json, running with a torn
    last line, failed) sit at the smallest batch size and must change
    nothing in the analysis.
    """
    trials_dir = os.path.join(workdir, "trials")
    os.makedirs(trials_dir, exist_ok=True)
    _dump(os.path.join(workdir, "study.json"), self.study)
    for t in self.trials:
      _write_trial(trials_dir, t.trial, t.summary, t.rows)
    if with_broken:
      _write_broken(trials_dir, self)
    return workdir


def _dump(path: str, obj: dict[str, Any]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f)


def _write_trial(
  trials_dir: str,
  trial: dict[str, Any],
  summary: dict[str, Any] | None,
  rows: list[dict[str, Any]],
  *,
  torn_tail: bool = False,
) -> None:
  d = os.path.join(trials_dir, trial["id"])
  os.makedirs(d, exist_ok=True)
  _dump(os.path.join(d, "trial.json"), trial)
  if summary is not None:
    _dump(os.path.join(d, "summary.json"), summary)
  if rows or torn_tail:
    with open(os.path.join(d, "metrics.jsonl"), "w", encoding="utf-8") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
      if torn_tail:
        f.write('{"step": 99, "eval_accur')


def _write_broken(trials_dir: str, s: SyntheticStudy) -> None:
  b = min(s.study["batch_sizes"])
  lr = s.truth.best_lr(b)
  base = {"batch_size": b, "lr": lr, "seed": 99, "params": {"momentum": 0.9}}
  _write_trial(trials_dir, {"id": "zz_never_started", **base}, None, [])
  os.makedirs(os.path.join(trials_dir, "zz_no_trial_json"), exist_ok=True)
  running_rows = [{"step": 1, "examples_seen": b, "eval_loss": 2.0, "eval_accuracy": 0.2}]
  running = {
    "status": "running",
    "steps": 1,
    "examples_seen": b,
    "final": {},
    "target": {**TARGET, "reached": False, "step": None, "examples": None},
    "wall_time_s": 1.0,
    "noise_scale": {},
  }
  _write_trial(trials_dir, {"id": "zz_running", **base}, running, running_rows, torn_tail=True)
  failed = {**running, "status": "failed"}
  _write_trial(trials_dir, {"id": "zz_failed", **base}, failed, [])


def _curve_rows(
  batch_size: int,
  need: float,
  end: int,
  eval_every: int,
  *,
  b_simple: float,
  diverge_at: int | None,
) -> list[dict[str, Any]]:
  rows: list[dict[str, Any]] = []
  for step in range(eval_every, end + 1, eval_every):
    bad = diverge_at is not None and step >= diverge_at
    progress = step / need if math.isfinite(need) else step / (4.0 * end)
    acc = 0.1 if bad else min(0.999, TARGET["value"] * math.sqrt(progress))
    loss = math.nan if bad else 2.3 * (1.0 - acc) + 0.01
    grad_sq = 1.0 / (1.0 + progress)
    train = {"step": step, "examples_seen": step * batch_size, "lr": 0.0, "train_loss": loss}
    if not bad:
      # B_simple grows during training, as McCandlish et al. observe.
      bs = b_simple * (0.5 + 0.5 * min(progress, 1.0))
      train.update(gns_grad_sq_norm=grad_sq, gns_trace_sigma=bs * grad_sq, gns_b_simple=bs)
    rows.append(train)
    rows.append(
      {
        "step": step,
        "examples_seen": step * batch_size,
        "eval_loss": math.inf if bad else loss,
        "eval_accuracy": acc,
      }
    )
  return rows


def make_study(
  *,
  seed: int = 0,
  name: str = "synthetic",
  s_min: float = 100.0,
  b_crit: float = 256.0,
  batch_sizes: tuple[int, ...] = DEFAULT_BATCHES,
  lr_coef: float = 1e-3,
  lr_exponent: float = 0.8,
  max_lr: float = 0.3,
  n_lrs: int = 9,
  lr_factor: float = math.sqrt(2.0),
  n_seeds: int = 3,
  noise_sigma: float = 0.05,
  lr_width: float = 0.3,
  diverge_factor: float = 2.5,
  budget_factor: float = 3.0,
  evals_per_curve: int = 100,
  unreachable_batches: tuple[int, ...] = (),
  b_simple: float | None = None,
) -> SyntheticStudy:
  """Build a synthetic study (see module docstring for the generative model).

  Per batch size the lr grid is ``lr*(B) * lr_factor^k``, k centred on 0, with
  a random per-B offset of up to a quarter grid step so the optimum is not
  exactly on the grid. ``evals_per_curve`` sets the eval interval to
  ``ceil(S(B) / evals_per_curve)`` steps.
  """
  rng = np.random.default_rng(seed)
  truth = Truth(s_min, b_crit, lr_coef, lr_exponent, max_lr)
  b_simple = b_crit if b_simple is None else b_simple
  study = {
    "name": name,
    "target": dict(TARGET),
    "batch_sizes": list(batch_sizes),
    "reference_batch": 256,
    "base_lr": truth.best_lr(256),
    "scaling_rule": "linear",
    "optimizer": "sgd",
    "num_train_examples": 60000,
  }
  trials = []
  for b in batch_sizes:
    s_b, lr_star = truth.steps(b), truth.best_lr(b)
    eval_every = max(1, math.ceil(s_b / evals_per_curve))
    budget = int(s_b * (0.5 if b in unreachable_batches else budget_factor))
    offset = lr_factor ** rng.uniform(-0.25, 0.25)
    for k in range(n_lrs):
      lr = float(lr_star * offset * lr_factor ** (k - (n_lrs - 1) / 2))
      for sd in range(n_seeds):
        diverged = lr > diverge_factor * lr_star
        need = s_b * math.exp(lr_width * math.log(lr / lr_star) ** 2 + noise_sigma * rng.normal())
        reached_step = eval_every * math.ceil(need / eval_every)
        reached = not diverged and reached_step <= budget
        diverge_at = eval_every * max(1, budget // (10 * eval_every)) if diverged else None
        end = reached_step if reached else (diverge_at if diverged else budget)
        rows = _curve_rows(
          b,
          need if not diverged else math.inf,
          end,
          eval_every,
          b_simple=b_simple,
          diverge_at=diverge_at,
        )
        last_eval = rows[-1]
        final_bs = rows[-2].get("gns_b_simple")
        summary = {
          "status": STATUS_DIVERGED if diverged else STATUS_COMPLETE,
          "steps": end,
          "examples_seen": end * b,
          "final": {
            "train_loss": rows[-2]["train_loss"],
            "eval_loss": last_eval["eval_loss"],
            "eval_accuracy": last_eval["eval_accuracy"],
          },
          "target": {
            **TARGET,
            "reached": reached,
            "step": reached_step if reached else None,
            "examples": reached_step * b if reached else None,
          },
          "wall_time_s": 0.01 * end,
          "noise_scale": {
            "b_simple": final_bs,
            "grad_sq_norm": rows[-2].get("gns_grad_sq_norm"),
            "trace_sigma": rows[-2].get("gns_trace_sigma"),
          },
        }
        trial = {
          "id": f"b{b:05d}_lr{k}_s{sd}",
          "batch_size": b,
          "lr": lr,
          "seed": sd,
          "params": {"momentum": 0.9},
        }
        trials.append(FakeTrial(trial, summary, rows, need if reached else math.inf))
  return SyntheticStudy(study, trials, truth)
