"""Successive halving over a study's learning rates (Jamieson & Talwalkar 2016; Li et al. 2017).

Per batch size, every candidate point of the grid (an lr, all its seeds) is
trained to the smallest budget ``b_0``; the best ``ceil(n / eta)`` points go on
to ``b_1 = eta * b_0``, and so on, until the full budget. Nothing is
recomputed: a trial always has the study's full budget in its config, and a
rung only *pauses* it at ``b_r`` (``lrscale.engine.loop.train(pause_at_step=)``
checkpoints at exactly that step); the next rung resumes it from that
checkpoint. Since the config never changes, the schedule's horizon is the full
budget from the first step, so a resumed survivor is bitwise the run the grid
would have made, for any schedule. (What a decaying schedule does change is the
*ranking*: at a partial budget a cosine run is still at a high lr, so early
rungs judge un-annealed models; with the default study's constant lr this
bias does not arise.)

Ranking of a point at a rung, best first (its seeds aggregated as the analysis
does, ``lrscale.analysis.steps_to_result``):

1. points whose median steps-to-target is known (all needed seeds reached),
   by that median;
2. points still running, by the mean of the target metric at their last eval
   (better direction first), then by the mean eval loss;
3. points with a diverged seed.

With steps-to-target as the result the search can stop early and exactly:
once a resolved point's median is below every unresolved survivor's lower
bound (unreached seeds count as ``b_r + 1`` steps), no survivor can beat it.
Pruned trials keep their partial metrics and are marked ``pruned`` (the
analysis leaves them out, as it does running trials), so ``results.csv`` and
the report are read from the survivors.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging

from lrscale import config as config_lib
from lrscale.analysis import store_reader
from lrscale.analysis.steps_to_result import first_step_reaching
from lrscale.engine import loop as train_lib
from lrscale.engine.outputs import atomic_write_json, atomic_write_text
from lrscale.engine.programs import program_key
from lrscale.study import space, store

PRUNED = "pruned"


def rung_budgets(full: int, min_budget: int, eta: int) -> list[int]:
  """``[b_0, eta b_0, eta^2 b_0, ..., full]`` in steps (the last one is always ``full``)."""
  budgets, b = [], max(1, min_budget)
  while b < full:
    budgets.append(b)
    b *= eta
  return budgets + [full]


def validate(study: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad ``config.search`` field of a halving study."""
  eta = study.search.eta
  if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
    raise ValueError(f"config.search.eta must be an integer >= 2, got {eta!r}.")
  if isinstance(study.search.min_steps, bool) or not isinstance(study.search.min_steps, int):
    raise ValueError(f"config.search.min_steps must be an integer, got {study.search.min_steps!r}.")
  if len(study.lr.grid) < 2:
    raise ValueError("config.search.type='halving' needs at least 2 lrs in config.lr.grid.")


def _min_budget(study: ml_collections.ConfigDict, plan: config_lib.RunPlan) -> int:
  """The first rung in steps at this batch size: ``config.search.min_budget``
  ('' = budget / eta^2), at least ``config.search.min_steps`` (the first steps of
  a run rank learning rates mostly by noise)."""
  floor = min(plan.total_steps, int(study.search.min_steps))
  if not study.search.min_budget:
    return max(floor, plan.total_steps // study.search.eta**2)
  steps = max(floor, plan.to_steps(study.search.min_budget, field="search.min_budget"))
  if not 0 < steps <= plan.total_steps:
    raise ValueError(
      f"config.search.min_budget={study.search.min_budget!r} is {steps} steps at batch "
      f"{plan.batch_size}; it must be between 1 step and the budget ({plan.total_steps})."
    )
  return steps


class _Point:
  """One candidate: an lr (and params) with all its seeds' trials."""

  def __init__(self, trials: list[tuple[space.Trial, config_lib.RunPlan]]):
    self.trials = trials
    self.lr = trials[0][0].lr

  def records(self, workdir: str) -> list[store_reader.TrialRecord]:
    return [store_reader.load_trial(store.trial_dir(workdir, t.id)) for t, _ in self.trials]

  def rank_key(self, workdir: str, target: store_reader.Target, budget: int) -> tuple:
    """(tier, ...) ordered best first; and the lower bound of its median steps."""
    recs = self.records(workdir)
    sign = 1.0 if target.mode == "max" else -1.0
    if any(r is not None and r.diverged for r in recs):
      return (2, 0.0, 0.0), math.inf
    steps, bounds, metric, loss = [], [], [], []
    for r in recs:
      s = None if r is None else first_step_reaching(r.eval_rows, target)
      done = r is not None and r.status in store.FINISHED
      steps.append(s if s is not None else (math.inf if done else None))
      bounds.append(s if s is not None else (math.inf if done else budget + 1))
      last = [row for row in (r.eval_rows if r else []) if target.metric in row]
      metric.append(last[-1][target.metric] if last else -math.inf * sign)
      loss.append(last[-1].get("eval_loss", math.inf) if last else math.inf)
    lower = float(np.median(bounds))
    if all(s is not None for s in steps) and math.isfinite(float(np.median(steps))):
      return (0, float(np.median(steps)), 0.0), lower
    return (1, -sign * float(np.mean(metric)), float(np.mean(loss))), lower

  def resolved(self, workdir: str) -> bool:
    return all(r is not None and r.status in store.FINISHED for r in self.records(workdir))


def _train_to(point: _Point, budget: int, workdir: str, setup, data) -> int:
  """Trains the point's unfinished trials to ``budget``; returns steps trained now."""
  ran = 0
  for trial, plan in point.trials:
    tdir = store.trial_dir(workdir, trial.id)
    summary = store.read_json(os.path.join(tdir, "summary.json")) or {}
    if summary.get("status") in store.FINISHED:
      continue
    before = int(summary.get("steps", 0))
    os.makedirs(tdir, exist_ok=True)
    store.write_trial_json(workdir, trial.to_json())
    pause = budget if budget < plan.total_steps else None
    out = train_lib.train(plan.config, tdir, plan=plan, setup=setup, data=data, pause_at_step=pause)
    ran += int(out["steps"]) - before
  return ran


def _mark_pruned(point: _Point, workdir: str) -> None:
  for trial, _ in point.trials:
    path = os.path.join(store.trial_dir(workdir, trial.id), "summary.json")
    summary = store.read_json(path)
    if summary and summary.get("status") == "paused":
      summary["status"] = PRUNED
      atomic_write_json(path, summary)


def run_batch_size(
  study: ml_collections.ConfigDict,
  workdir: str,
  resolved: Sequence[tuple[space.Trial, config_lib.RunPlan]],
  setup,
  data,
) -> list[dict[str, Any]]:
  """Successive halving over the points of one batch size; returns its rung rows."""
  target = store_reader.Target(
    metric=study.target.metric, value=float(study.target.value), mode=study.target.mode
  )
  groups: dict[tuple, list] = defaultdict(list)
  for trial, plan in resolved:
    groups[(trial.lr, trial.params)].append((trial, plan))
  points = [_Point(members) for members in groups.values()]
  plan0 = resolved[0][1]
  budgets = rung_budgets(plan0.total_steps, _min_budget(study, plan0), study.search.eta)
  alive, rows = points, []
  for rung, budget in enumerate(budgets):
    ran = sum(_train_to(p, budget, workdir, setup, data) for p in alive)
    ranked = sorted(alive, key=lambda p: p.rank_key(workdir, target, budget)[0])
    keep = max(1, math.ceil(len(alive) / study.search.eta))
    best_known = [p.rank_key(workdir, target, budget)[0] for p in ranked if p.resolved(workdir)]
    best_known = [k[1] for k in best_known if k[0] == 0]
    survivors = [p for p in ranked[:keep] if not p.resolved(workdir)]
    if best_known:  # a survivor that cannot beat a resolved point need not go on
      survivors = [
        p for p in survivors if p.rank_key(workdir, target, budget)[1] <= min(best_known)
      ]
    last = rung == len(budgets) - 1 or not survivors
    rows.append(
      dict(
        batch_size=plan0.batch_size,
        rung=rung,
        budget_steps=budget,
        points=len(alive),
        trained_steps=ran,
        survivors=[] if last else [p.lr for p in survivors],
        best_lr=ranked[0].lr,
      )
    )
    logging.info(
      "Halving B=%d rung %d (%d steps): %d points, %d go on.",
      plan0.batch_size,
      rung,
      budget,
      len(alive),
      0 if last else len(survivors),
    )
    for p in alive:
      if last or p not in survivors:
        _mark_pruned(p, workdir)
    if last:
      break
    alive = survivors
  return rows


def run_halving(
  study: ml_collections.ConfigDict,
  workdir: str,
  resolved: Sequence[tuple[space.Trial, config_lib.RunPlan]],
) -> dict[str, Any]:
  """Successive halving for every batch size of ``study``; writes halving.json / halving.md.

  Returns:
    ``dict(rungs=[...], steps_used=..., grid_max_steps=...)``: the rung table,
    the optimizer steps all trials ran, and what the full grid would run at
    most (every trial to its budget; a grid with stop-at-target runs less, see
    ``compare_with_grid``).
  """
  validate(study)
  from lrscale.data import registry  # pylint: disable=g-import-not-at-top

  by_program: dict[str, list] = defaultdict(list)
  for trial, plan in resolved:
    by_program[program_key(plan)].append((trial, plan))
  data, rows = None, []
  for members in by_program.values():
    plans = [p for _, p in members]
    data = data or registry.load_in_memory(plans[0].config.dataset)
    setup = train_lib.RunSetup(plans[0], data)
    rows += run_batch_size(study, workdir, members, setup, data)
  result = dict(
    eta=int(study.search.eta),
    min_budget=(study.search.min_budget or "budget / eta^2")
    + f" (at least {study.search.min_steps} steps)",
    rungs=rows,
    steps_used=steps_used(workdir, [t for t, _ in resolved]),
    grid_max_steps=int(sum(p.total_steps for _, p in resolved)),
  )
  atomic_write_json(os.path.join(workdir, "halving.json"), result)
  atomic_write_text(os.path.join(workdir, "halving.md"), render(result))
  return result


def steps_used(workdir: str, trials: Sequence[space.Trial]) -> int:
  """Optimizer steps the trials ran (their summaries' ``steps``; 0 if never run)."""
  total = 0
  for t in trials:
    summary = store.read_json(os.path.join(store.trial_dir(workdir, t.id), "summary.json"))
    total += int((summary or {}).get("steps", 0))
  return total


def compare_with_grid(halving_dir: str, grid_dir: str) -> dict[str, Any]:
  """Optimizer steps and best lr per batch size: a halving study vs the same study as a grid.

  Both directories must hold the same study (same trial ids); the grid's
  best lr and 10%-of-best range come from its own analysis.
  """
  from lrscale.analysis.run import build_analysis  # pylint: disable=g-import-not-at-top

  grid = build_analysis(store_reader.load_study(grid_dir))
  halv = build_analysis(store_reader.load_study(halving_dir))
  grid_trials = [
    store_reader.load_trial(os.path.join(grid_dir, "trials", d))
    for d in os.listdir(os.path.join(grid_dir, "trials"))
  ]
  grid_steps = sum(int((t.summary or {}).get("steps", 0)) for t in grid_trials if t)
  with open(os.path.join(halving_dir, "halving.json")) as f:
    used = __import__("json").load(f)["steps_used"]
  rows = []
  for g, h in zip(grid["per_batch"], halv["per_batch"]):
    lo, hi = g["lr_within"] or (None, None)
    rows.append(
      dict(
        batch_size=g["batch_size"],
        grid_best_lr=g["best_lr"],
        grid_within_10pct=[lo, hi],
        halving_best_lr=h["best_lr"],
        agrees=h["best_lr"] is not None and lo is not None and lo <= h["best_lr"] <= hi,
      )
    )
  return dict(per_batch=rows, halving_steps=used, grid_steps=grid_steps, ratio=used / grid_steps)


def render(result: dict[str, Any]) -> str:
  """halving.md: one row per (batch size, rung)."""
  lines = [
    f"# Successive halving (eta = {result['eta']}, smallest budget {result['min_budget']})",
    "",
    "| B | rung | budget (steps) | points | steps trained | go on (lr) | best lr |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in result["rungs"]:
    on = ", ".join(f"{lr:.4g}" for lr in r["survivors"]) or "-"
    lines.append(
      f"| {r['batch_size']} | {r['rung']} | {r['budget_steps']} | {r['points']} | "
      f"{r['trained_steps']} | {on} | {r['best_lr']:.4g} |"
    )
  frac = result["steps_used"] / max(1, result["grid_max_steps"])
  lines += [
    "",
    f"Optimizer steps: {result['steps_used']} = {100 * frac:.1f}% of the "
    f"{result['grid_max_steps']} a grid runs at most (every trial to its budget; with "
    "stop-at-target a grid runs fewer: `lrscale.study.halving.compare_with_grid`).",
    "",
  ]
  return "\n".join(lines)
