"""Predicting the lr that trains best for the run's budget: short runs inside the ramp's bracket.

The ramp (``lrscale.lr_find.sweep``) sees where the loss falls fastest
(``steepest``) and where a sweep blows up (``stable``), not which lr trains
best over a whole run: on the digits MLP its recommendation grows ~B^0.09
while the trained optimum grows ~B^0.45 (docs/lr_find.md). With
``config.lr_find.predict = "short_runs"`` the finder then trains, at each
batch size, ``K = predict_points`` runs of the config itself (its model,
optimizer and schedule; the schedule's horizon compressed with the budget) at
lrs log-spaced over the bracket

  ``[steepest, predict_headroom x stable]`` (medians over seeds),

for ``predict_fraction`` of the run's budget, every seed, and picks the lr by

* ``eval_loss``: the eval loss at the short run's end (diverged = +inf), or
* ``target``: the run's steps to ``config.target`` (Shallue et al. 2018, the
  study's measure; unreached = +inf, ties to the lower lr). With a constant
  schedule a short run is an exact prefix of the full one, so a reached
  target is the full run's steps-to-target.

The point estimate is the vertex of the least-squares parabola through the best
lr and up to two neighbours on each side in ``(log lr, log score)``, the score
the geometric mean over seeds (the vertex kept within those points). A best lr
at an end of the bracket extends the grid past it (``predict_extend`` lrs at the
same spacing, up to ``predict_extend_rounds`` times). The interval is the
per-seed best lrs (each its own parabola), its spread ``max / min``, and the
prediction is reliable when the spread is at most ``max_spread`` and the best
lr is not at the bracket's edge. The top of the bracket goes past the
largest stable lr (default 4x) because a whole run at a large batch trains
best above it: on digits at B = 1024, full 20-epoch trainings (3 seeds, 7
lrs) are best at 0.6, the sweep's stable lr is 0.28 (docs/lr_find.md).

The short runs at one batch size share one ``RunSetup`` (one compiled train
step serves every lr and seed, ``lrscale.engine.loop.train``); on an
accelerator all ``K x seeds`` run as one vmapped program
(``lrscale.study.vmap_group``). Each writes an ordinary run directory under
``WORKDIR/short_runs`` (a rerun with the same config reuses them).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from lrscale import config as config_lib
from lrscale.data import registry
from lrscale.engine import loop as train_lib
from lrscale.lr_find.results import BatchResult, base_lr_for

MODES = ("", "short_runs")
METRICS = ("eval_loss", "target")


class Prediction(NamedTuple):
  """The predicted lr at one batch size, from ``K x seeds`` short runs.

  Attributes:
    batch_size: B.
    lr: the point estimate (parabola vertex of the seeds' geometric-mean score).
    low, high: the smallest and largest per-seed best lr (the interval; the point
      estimate, from the seeds' mean score, can fall outside it).
    per_seed: each seed's best lr.
    spread: ``high / low``.
    reliable: spread <= max_spread and the best lr inside the bracket.
    at_edge: the best grid lr is an end of the bracket (the optimum may lie past it).
    lrs: the K lrs tried.
    scores: ``[seed][k]`` the score (eval loss or steps to target; inf = diverged/unreached).
    metric: ``eval_loss`` or ``target``.
    steps: steps of each short run (its budget).
    seconds: wall time of the short runs at this batch size (compilation included).
  """

  batch_size: int
  lr: float
  low: float
  high: float
  per_seed: tuple[float, ...]
  spread: float
  reliable: bool
  at_edge: bool
  lrs: tuple[float, ...]
  scores: tuple[tuple[float, ...], ...]
  metric: str
  steps: int
  seconds: float


def validate(lf: ml_collections.ConfigDict) -> None:
  """Checks the ``predict*`` fields of ``config.lr_find``; ValueError naming the field."""

  def bad(field: str, why: str) -> ValueError:
    return ValueError(f"config.lr_find.{field}={lf[field]!r}: {why}")

  if lf.predict not in MODES:
    raise bad("predict", "use '' (the ramp only) or 'short_runs'.")
  if not (isinstance(lf.predict_points, int) and lf.predict_points >= 3):
    raise bad("predict_points", "an integer >= 3 (lrs tried in the bracket; default 7).")
  if not lf.predict_headroom >= 1.0:
    raise bad("predict_headroom", "a factor >= 1 over the largest stable lr (default 4).")
  for field in ("predict_extend", "predict_extend_rounds"):
    if not (isinstance(lf[field], int) and not isinstance(lf[field], bool) and lf[field] >= 0):
      raise bad(field, "an integer >= 0 (default 2).")
  if not 0.0 < lf.predict_fraction <= 1.0:
    raise bad("predict_fraction", "a fraction of the run's budget in (0, 1] (default 0.25).")
  if lf.predict_metric not in METRICS:
    raise bad("predict_metric", f"use one of {METRICS}.")


def bracket(result: BatchResult, lf: ml_collections.ConfigDict) -> tuple[float, float]:
  """``[steepest, headroom x stable]`` of the ramp (medians over seeds), at least 10x wide."""
  hi = lf.predict_headroom * result.spreads["stable"].lr
  lo = min(result.spreads["steepest"].lr, hi / 10.0)
  return lo, hi


def grid(lo: float, hi: float, k: int) -> np.ndarray:
  """K lrs evenly spaced in log lr, both ends included."""
  return np.exp(np.linspace(math.log(lo), math.log(hi), k))


# Neighbours on each side of the best grid lr that the parabola is fitted to. Two (a
# least-squares fit to five points) rather than one (the exact parabola through three):
# steps-to-target of a few seeds is integer and noisy, and on the default study the wider
# fit moved 6 of 8 batch sizes closer to the study's best lr and none further away
# (docs/lr_find.md).
VERTEX_NEIGHBOURS = 2


def vertex(
  lrs: Sequence[float], scores: Sequence[float], neighbours: int = VERTEX_NEIGHBOURS
) -> tuple[float, bool]:
  """The best lr of a scored grid: (parabola vertex in (log lr, log score), at an edge).

  The parabola is the least-squares fit to the argmin (ties to the lower lr) and up to
  ``neighbours`` grid points on each side with finite scores; its vertex is kept within
  those points (a flat or concave fit gives the argmin itself). At an end of the grid,
  or with fewer than three finite points, the argmin is returned.
  """
  x = np.log(np.asarray(lrs, float))
  y = np.asarray(scores, float)
  i = int(np.argmin(y))  # first minimum: the lower lr on ties
  if not np.isfinite(y[i]):
    return float("nan"), True
  if i in (0, len(y) - 1):
    return float(lrs[i]), True
  near = slice(max(0, i - neighbours), i + neighbours + 1)
  xs, ys = x[near], y[near]
  keep = np.isfinite(ys)
  if keep.sum() < 3:
    return float(lrs[i]), False
  xs, yy = xs[keep], np.log(np.maximum(ys[keep], 1e-30))
  a, b, _ = np.polyfit(xs, yy, 2)
  if a <= 0:
    return float(lrs[i]), False
  return float(np.exp(np.clip(-b / (2 * a), xs.min(), xs.max()))), False


def score(summary: dict[str, Any], metric: str) -> float:
  """A short run's score, lower is better: final eval loss, or steps to the target."""
  if summary.get("status") == "diverged":
    return math.inf
  if metric == "target":
    t = summary.get("target") or {}
    return float(t["step"]) if t.get("reached") else math.inf
  loss = (summary.get("final") or {}).get("eval_loss")
  return float(loss) if loss is not None and math.isfinite(loss) else math.inf


def short_config(
  cfg: ml_collections.ConfigDict, batch_size: int, lr: float, seed: int, steps: int, metric: str
) -> ml_collections.ConfigDict:
  """The run config of one short run: ``cfg`` at ``batch_size`` and lr ``lr`` for ``steps``."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  c.batch_size = batch_size
  c.seed = seed
  prefix, base = base_lr_for(cfg, lr, batch_size)
  if prefix:  # a fitted rule ignores config.lr: switch it off
    c.scaling.rule = "none"
  c.lr = base
  c.budget = f"{steps} steps"  # the schedule's horizon follows the budget
  c.checkpoint_every = f"{steps} steps"
  c.tensorboard = False
  c.batch_ramp.milestones = ()
  c.target.stop = metric == "target"  # steps-to-target needs no step past it
  if metric != "target":  # the eval loss at the end only (the run's cadence may skip it)
    c.eval_every = f"{steps} steps"
  return c


def short_steps(cfg: ml_collections.ConfigDict, batch_size: int, fraction: float) -> int:
  """Steps of a short run: ``fraction`` of the run's budget at ``batch_size`` (>= 1)."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  c.batch_size = batch_size
  c.batch_ramp.milestones = ()
  return max(1, round(fraction * config_lib.resolve(c).total_steps))


def predict(
  cfg: ml_collections.ConfigDict,
  result: BatchResult,
  data: registry.InMemoryData,
  workdir: str | None,
) -> Prediction:
  """The short runs at one batch size and the lr they predict (see the module docstring)."""
  lf = cfg.lr_find
  t0 = time.perf_counter()
  b = result.batch_size
  lrs = grid(*bracket(result, lf), lf.predict_points)
  steps = short_steps(cfg, b, lf.predict_fraction)
  seeds = tuple(lf.seeds)
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(workdir, "short_runs") if workdir else tmp

    def run(grid_lrs: np.ndarray) -> np.ndarray:
      """Scores ``[seed][k]`` of the short runs at ``grid_lrs``."""
      members = [(s, lr) for s in seeds for lr in grid_lrs]
      cfgs = [short_config(cfg, b, float(lr), s, steps, lf.predict_metric) for s, lr in members]
      dirs = [os.path.join(root, f"B{b}_lr{lr:.4g}_seed{s}") for s, lr in members]
      flat = [score(m, lf.predict_metric) for m in _train_all(cfgs, dirs, data, lf)]
      return np.asarray(flat, float).reshape(len(seeds), len(grid_lrs))

    scores = run(lrs)
    # A best lr at an end of the bracket may lie past it: extend the grid on that side
    # by ``predict_extend`` points (same log spacing), up to ``predict_extend_rounds``
    # times; the lower end stops at the ramp's smallest lr.
    step = math.log(lrs[1] / lrs[0])
    for _ in range(lf.predict_extend_rounds):
      mean = _seed_mean(scores)
      i = int(np.argmin(mean))
      if 0 < i < len(lrs) - 1 or not np.isfinite(mean[i]):
        break
      sign = -1.0 if i == 0 else 1.0
      edge = lrs[0] if i == 0 else lrs[-1]
      new = edge * np.exp(sign * step * np.arange(1, lf.predict_extend + 1))
      new = new[new >= lf.min_lr]
      if not len(new):
        break
      more = run(new)
      if i == 0:
        lrs, scores = np.concatenate([new[::-1], lrs]), np.concatenate([more[:, ::-1], scores], 1)
      else:
        lrs, scores = np.concatenate([lrs, new]), np.concatenate([scores, more], 1)
  mean = _seed_mean(scores)
  lr, at_edge = vertex(lrs, mean)
  per_seed = tuple(vertex(lrs, row)[0] for row in scores)
  finite = [p for p in per_seed if math.isfinite(p)]
  low, high = (min(finite), max(finite)) if finite else (math.nan, math.nan)
  spread = high / low if len(finite) == len(per_seed) else math.inf
  return Prediction(
    batch_size=b,
    lr=lr,
    low=low,
    high=high,
    per_seed=per_seed,
    spread=spread,
    reliable=bool(spread <= lf.max_spread and not at_edge and math.isfinite(lr)),
    at_edge=at_edge,
    lrs=tuple(float(x) for x in lrs),
    scores=tuple(tuple(float(v) for v in row) for row in scores),
    metric=lf.predict_metric,
    steps=steps,
    seconds=time.perf_counter() - t0,
  )


def _seed_mean(scores: np.ndarray) -> np.ndarray:
  """Geometric mean over seeds (axis 0) per lr; inf where any seed is inf."""
  with np.errstate(divide="ignore"):
    return np.exp(np.mean(np.log(np.maximum(scores, 1e-30)), axis=0))


def _train_all(cfgs, dirs, data, lf) -> list[dict[str, Any]]:
  """Trains the short runs of one batch size on one compiled set-up; their summaries."""
  plans = [train_lib.prepare(c, plan=config_lib.resolve(c)) for c in cfgs]
  setup = train_lib.RunSetup(plans[0], data)  # one compile: lr and seed are inputs
  vmap = lf.vmap == "on" or (lf.vmap == "auto" and jax.default_backend() != "cpu")
  if vmap and not any(p.config.plateau.enabled for p in plans):
    from lrscale.study import vmap_group  # pylint: disable=g-import-not-at-top

    fresh = [d for d in dirs if not os.path.isdir(d)]
    if len(fresh) == len(dirs):
      return vmap_group.train_group(plans, dirs, setup)
  return [train_lib.train(p.config, d, plan=p, setup=setup, data=data) for p, d in zip(plans, dirs)]


def describe(p: Prediction) -> str:
  """One line: the predicted lr, its interval over seeds and whether it is reliable."""
  flag = "" if p.reliable else (" (UNRELIABLE: at the bracket's edge)" if p.at_edge else "")
  if not p.reliable and not p.at_edge:
    flag = " (UNRELIABLE: seeds disagree)"
  return (
    f"predicted {p.lr:.3g} [{p.low:.3g}, {p.high:.3g}] (x{p.spread:.2f}; {len(p.lrs)} lrs "
    f"{p.lrs[0]:.3g}..{p.lrs[-1]:.3g}, {p.steps} steps, {p.metric}){flag}"
  )


def to_json(p: Prediction) -> dict[str, Any]:
  """The prediction's entry in lr_find.json."""

  def clean(v):  # JSON has no inf / NaN: null
    return v if not isinstance(v, float) or math.isfinite(v) else None

  out = {
    k: ([clean(x) for x in v] if isinstance(v, tuple) else clean(v)) for k, v in p._asdict().items()
  }
  out["scores"] = [[clean(x) for x in row] for row in p.scores]
  return out
