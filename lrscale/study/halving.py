"""Successive halving over a study's points, bounded by the incumbent's steps-to-target.

Successive halving (Jamieson & Talwalkar 2016; Li et al. 2017): per batch size
every candidate point (an lr and any other swept values, with all its seeds)
trains to a small budget ``b_0``; the best ``ceil(n / eta)`` (by the mean target
metric at their last eval, then the eval loss) go on to ``eta b_0``, and so on
up to the full budget.

Two things make it cheap when the result is steps-to-target:

* The incumbent. A point that has reached the target needs no more budget, and
  the best resolved point bounds every other exactly
  (``lrscale.study.incumbent``): a point is trained, at any rung, only up to the
  step that proves it cannot beat the incumbent (Hyperband's asynchronous
  pruning against the incumbent, made exact by the target). Points train
  best-ranked first, so the best of a rung caps those after it.
* Rungs in the problem's own units (``config.search.min_budget = ''``, the
  default). First the *probe*: the point nearest the scaling rule's lr, the one
  the study's grid is centred on, trains to its result ``S_ref`` (a probe that
  diverges hands over to the next lower lr). With ``R = floor(log_eta n)`` cuts
  for the ``n`` other points, the rungs are then ``S_ref / eta^R, ...,
  S_ref / eta`` (at least ``config.search.min_steps``) and the full budget,
  every one capped by the incumbent. A fixed fraction of the budget (the old
  ``budget / eta^2``) says nothing about when this problem reaches its target:
  on the default study it was past every lr's target. A probe that ends short
  of the target gives no scale, and the rungs are ``budget / eta^R, ...``; an
  explicit ``min_budget`` gives the classic ``b_0, eta b_0, ...`` (capped too).

Nothing is recomputed: a trial always has the study's full budget in its
config; a rung only *pauses* it (``lrscale.engine.loop.train(pause_at_step=)``
checkpoints at exactly that step) and the next resumes it, so the schedule's
horizon is the full budget from step 0 and a trial that runs to its end is
bitwise the grid's. (A decaying schedule still biases the *ranking*: at a
partial budget a cosine run is un-annealed; the default study's lr is constant.)
Stopped trials keep their partial metrics and are marked ``pruned`` (the
analysis counts them as not reached), so ``results.csv`` and the report are
read from the survivors. Compute is counted exactly: the optimizer steps every
trial ran (``summary.json``'s ``steps``).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections import defaultdict
from typing import Any, Callable, Sequence

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
from lrscale.study.incumbent import Incumbent, Seed, beaten, lower_bound, proof_step, resolved

PRUNED = "pruned"
PROBE = "probe"


def rung_budgets(full: int, min_budget: int, eta: int) -> list[int]:
  """``[b_0, eta b_0, eta^2 b_0, ..., full]`` in steps (the last one is always ``full``)."""
  budgets, b = [], max(1, min_budget)
  while b < full:
    budgets.append(b)
    b *= eta
  return budgets + [full]


def num_cuts(n: int, eta: int) -> int:
  """``R = floor(log_eta n)``: the halvings ``n`` points allow before one is left."""
  cuts = 0
  while eta ** (cuts + 1) <= n:
    cuts += 1
  return cuts


def reference_budgets(scale: int, n: int, eta: int, full: int, floor: int) -> list[int]:
  """``[scale / eta^R, ..., scale / eta, full]`` (each at least ``floor``, below ``full``)."""
  cuts = num_cuts(n, eta)
  rungs = {max(floor, math.ceil(scale / eta ** (cuts - r))) for r in range(cuts)}
  return sorted(b for b in rungs if b < full) + [full]


def validate(study: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad ``config.search`` field of a halving study."""
  eta = study.search.eta
  if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
    raise ValueError(f"config.search.eta must be an integer >= 2, got {eta!r}.")
  min_steps = study.search.min_steps
  if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 0:
    raise ValueError(f"config.search.min_steps must be an integer >= 0, got {min_steps!r}.")
  if len(study.lr.grid) < 2:
    raise ValueError("config.search.type='halving' needs at least 2 lrs in config.lr.grid.")


class _Point:
  """One candidate: an lr (and params) with all its seeds' trials."""

  def __init__(self, trials: list[tuple[space.Trial, config_lib.RunPlan]]):
    self.trials = trials
    self.lr = trials[0][0].lr
    self.full = trials[0][1].total_steps

  def seeds(self, workdir: str, target: store_reader.Target) -> list[Seed]:
    """Each seed's state, read from its trial directory (nothing yet: 0 steps, running)."""
    sign, out = (1.0 if target.mode == "max" else -1.0), []
    for trial, _ in self.trials:
      tdir = store.trial_dir(workdir, trial.id)
      summary = store.read_json(os.path.join(tdir, "summary.json")) or {}
      _, evals = store_reader.split_rows(
        store_reader.read_jsonl(os.path.join(tdir, "metrics.jsonl"))
      )
      rows = [row for row in evals if target.metric in row]
      out.append(
        Seed(
          steps=int(summary.get("steps", 0)),
          reached=first_step_reaching(rows, target),
          finished=summary.get("status") in store.FINISHED,
          metric=sign * rows[-1][target.metric] if rows else -math.inf,
          loss=rows[-1].get("eval_loss", math.inf) if rows else math.inf,
        )
      )
    return out


def probe_order(points: Sequence[_Point], rule_lr: float) -> list[_Point]:
  """The point nearest the rule's lr (in log; ties to the lower), then every lower lr, highest
  first: a probe that diverges says its lr is too high."""
  first = min(points, key=lambda p: (round(abs(math.log(p.lr / rule_lr)), 9), p.lr))
  return [first] + sorted((p for p in points if p.lr < first.lr), key=lambda p: -p.lr)


def _train_trial(workdir: str, trial: space.Trial, plan, step: int, setup, data) -> None:
  tdir = store.trial_dir(workdir, trial.id)
  os.makedirs(tdir, exist_ok=True)
  store.write_trial_json(workdir, trial.to_json())
  pause = step if step < plan.total_steps else None
  train_lib.train(plan.config, tdir, plan=plan, setup=setup, data=data, pause_at_step=pause)


TrainFn = Callable[[space.Trial, Any, int], None]  # (trial, plan, step): train it to step


def first_rung(study: ml_collections.ConfigDict, plan: config_lib.RunPlan) -> int | None:
  """An explicit ``config.search.min_budget`` in steps at this batch size (at least
  ``min_steps``); ``None`` when it is ``''`` (rungs from the probe)."""
  if not study.search.min_budget:
    return None
  steps = plan.to_steps(study.search.min_budget, field="search.min_budget")
  if not 0 < steps <= plan.total_steps:
    raise ValueError(
      f"config.search.min_budget={study.search.min_budget!r} is {steps} steps at batch "
      f"{plan.batch_size}; it must be between 1 step and the budget ({plan.total_steps})."
    )
  return max(steps, min(plan.total_steps, int(study.search.min_steps)))


class _Search:
  """The search at one batch size: the incumbent, and each point advanced to a budget."""

  def __init__(self, workdir: str, target: store_reader.Target, train: TrainFn):
    self.workdir, self.target, self.train = workdir, target, train
    self.inc: Incumbent | None = None

  def advance(self, p: _Point, budget: int) -> int:
    """Trains ``p`` to ``budget``, or less where that proves it beaten; returns steps trained."""
    ran = 0
    while True:
      seeds = p.seeds(self.workdir, self.target)
      if resolved(seeds):
        median = lower_bound(seeds)
        if math.isfinite(median) and not beaten(median, p.lr, self.inc):
          self.inc = Incumbent(median, p.lr)
        return ran
      if beaten(lower_bound(seeds), p.lr, self.inc):
        return ran
      step = min(budget, proof_step(seeds, p.lr, self.inc, p.full))
      todo = [(t, pl, s) for (t, pl), s in zip(p.trials, seeds) if s.reached is None]
      todo = [(t, pl, s) for t, pl, s in todo if not s.finished and s.steps < step]
      if not todo:
        return ran
      for trial, plan, _ in todo:
        self.train(trial, plan, step)
      now = sum(a.steps - b.steps for a, b in zip(p.seeds(self.workdir, self.target), seeds))
      if now <= 0:  # nothing moved (cannot happen with a working trainer): never spin
        return ran
      ran += now

  def live(self, p: _Point) -> bool:
    seeds = p.seeds(self.workdir, self.target)
    return not resolved(seeds) and not beaten(lower_bound(seeds), p.lr, self.inc)

  def rank(self, points: Sequence[_Point]) -> list[_Point]:
    """Best first: by mean target metric at the last eval (better first), then eval loss."""

    def key(p: _Point) -> tuple[float, float]:
      seeds = p.seeds(self.workdir, self.target)
      return -float(np.mean([s.metric for s in seeds])), float(np.mean([s.loss for s in seeds]))

    return sorted(points, key=key)


def run_batch_size(
  study: ml_collections.ConfigDict,
  workdir: str,
  resolved_trials: Sequence[tuple[space.Trial, config_lib.RunPlan]],
  train: TrainFn,
) -> list[dict[str, Any]]:
  """The search over the points of one batch size; returns its rung rows."""
  target = store_reader.Target(
    metric=study.target.metric, value=float(study.target.value), mode=study.target.mode
  )
  groups: dict[tuple, list] = defaultdict(list)
  for trial, plan in resolved_trials:
    groups[(trial.lr, trial.params)].append((trial, plan))
  points = [_Point(members) for members in groups.values()]
  plan0 = resolved_trials[0][1]
  batch, full, eta = plan0.batch_size, plan0.total_steps, int(study.search.eta)
  floor = min(full, int(study.search.min_steps))
  search, rows = _Search(workdir, target, train), []

  def row(rung: int | str, budget: int, n: int, ran: int, survivors: list[_Point]) -> None:
    inc = search.inc
    rows.append(
      dict(
        batch_size=batch,
        rung=rung,
        budget_steps=budget,
        points=n,
        trained_steps=ran,
        survivors=[p.lr for p in survivors],
        incumbent_lr=None if inc is None else inc.lr,
        incumbent_steps=None if inc is None else inc.steps,
      )
    )
    logging.info(
      "Halving B=%d rung %s (%d steps): %d points, %d go on.",
      batch,
      rung,
      budget,
      n,
      len(survivors),
    )

  alive, b0 = list(points), first_rung(study, plan0)
  if b0 is not None:
    budgets = rung_budgets(full, b0, eta)
  else:
    for p in probe_order(points, space.rule_lr(study, batch)):
      alive.remove(p)
      row(PROBE, full, 1, search.advance(p, full), [])
      seeds = p.seeds(workdir, target)
      if search.inc is not None or any(s.reached is None and s.steps >= full for s in seeds):
        break  # a scale; or a probe too slow to reach the target at all, so no scale
    scale = full if search.inc is None else math.ceil(search.inc.steps)
    budgets = reference_budgets(scale, len(alive), eta, full, floor)
  for rung, budget in enumerate(budgets):
    n = len(alive)
    ran = sum(search.advance(p, budget) for p in search.rank(alive))
    alive = [p for p in search.rank(alive) if search.live(p)]
    if rung < len(budgets) - 1:
      alive = alive[: math.ceil(n / eta)]
    row(rung, budget, n, ran, alive)
    if not alive:
      break
  for trial, _ in resolved_trials:  # what did not run to its end was stopped here
    path = os.path.join(store.trial_dir(workdir, trial.id), "summary.json")
    summary = store.read_json(path)
    if summary is None:  # beaten before its first step (the incumbent met the target at 0)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      store.write_trial_json(workdir, trial.to_json())
      summary = dict(status="paused", steps=0)
    if summary.get("status") == "paused":
      summary["status"] = PRUNED
      atomic_write_json(path, summary)
  return rows


def run_halving(
  study: ml_collections.ConfigDict,
  workdir: str,
  resolved_trials: Sequence[tuple[space.Trial, config_lib.RunPlan]],
  train: TrainFn | None = None,
) -> dict[str, Any]:
  """The search for every batch size of ``study``; writes halving.json / halving.md.

  Args:
    study: the study config (``config.search.type == "halving"``).
    workdir: the study directory.
    resolved_trials: every trial of the grid with its resolved plan.
    train: ``train(trial, plan, step)`` trains a trial to ``step`` (pausing
      there unless it is the budget); default: ``lrscale.engine.loop.train``.

  Returns:
    ``dict(rungs=[...], steps_used=..., grid_max_steps=..., wall_s=...)``: the
    rung table, the optimizer steps all trials ran, and what the grid would run
    at most (every trial to its budget; with stop-at-target a grid runs less,
    see ``compare_with_grid``).
  """
  validate(study)
  by_program: dict[str, list] = defaultdict(list)
  for trial, plan in resolved_trials:
    by_program[program_key(plan)].append((trial, plan))
  for members in by_program.values():  # a bad first rung is named before any step
    first_rung(study, members[0][1])
  t0, rows, data = time.perf_counter(), [], None
  for members in by_program.values():
    fn = train
    if fn is None:
      from lrscale.data import registry  # pylint: disable=g-import-not-at-top

      data = data or registry.load_in_memory(members[0][1].config.dataset)
      setup = train_lib.RunSetup(members[0][1], data)
      fn = functools.partial(_train_trial, workdir, setup=setup, data=data)
    rows += run_batch_size(study, workdir, members, fn)
  result = dict(
    eta=int(study.search.eta),
    min_budget=study.search.min_budget or "S_ref / eta^R (S_ref: the probe's steps-to-target)",
    min_steps=int(study.search.min_steps),
    rungs=rows,
    steps_used=steps_used(workdir, [t for t, _ in resolved_trials]),
    grid_max_steps=int(sum(p.total_steps for _, p in resolved_trials)),
    wall_s=time.perf_counter() - t0,
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
  used = store.read_json(os.path.join(halving_dir, "halving.json"))["steps_used"]
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
    f"# Successive halving (eta = {result['eta']}, first rung {result['min_budget']}, "
    f"at least {result['min_steps']} steps)",
    "",
    "| B | rung | budget (steps) | points | steps trained | go on (lr) | incumbent lr (steps) |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in result["rungs"]:
    on = ", ".join(f"{lr:.4g}" for lr in r["survivors"]) or "-"
    inc = (
      "-" if r["incumbent_lr"] is None else f"{r['incumbent_lr']:.4g} ({r['incumbent_steps']:g})"
    )
    lines.append(
      f"| {r['batch_size']} | {r['rung']} | {r['budget_steps']} | {r['points']} | "
      f"{r['trained_steps']} | {on} | {inc} |"
    )
  frac = result["steps_used"] / max(1, result["grid_max_steps"])
  lines += [
    "",
    "A rung's budget is its cap: every point also stops at the step that proves it cannot "
    "beat the incumbent, and a point at the target needs no more (`lrscale.study.incumbent`).",
    "",
    f"Optimizer steps: {result['steps_used']} = {100 * frac:.1f}% of the "
    f"{result['grid_max_steps']} a grid runs at most (every trial to its budget; with "
    "stop-at-target a grid runs fewer: `lrscale.study.halving.compare_with_grid`). "
    f"Wall time {result['wall_s']:.0f} s.",
    "",
  ]
  return "\n".join(lines)
