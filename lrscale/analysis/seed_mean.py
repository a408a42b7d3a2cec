"""Steps to result of the *expected* metric curve, estimated from the seeds' mean curve.

The per-seed policy (Shallue et al. 2018) records each run's first evaluation
at the target: the first passage of a fluctuating curve. Where the
fluctuations are large compared with the curve's descent (small batches: one
example's gradient noise), that first passage comes well before the step at
which the *expected* curve crosses the target, which is what a theory of the
expected risk computes (``lrscale.analysis.theory``: 1.5x earlier at B = 1 on
linreg). Averaging seeds shrinks the fluctuations only by ``sqrt(n)`` and
leaves the minimum over many noisy steps biased low by about as many standard
errors as before, so the first passage of the raw mean curve is biased too
(simulated: -11% at B = 1 with 3 seeds, -4% with 32).

The estimator here uses that the expected curve is monotone (on the linreg
study's grid every exact expected-risk curve that reaches its target falls at
every step, checked on the recursion; an expected accuracy curve is taken to
only rise, an assumption): the mean over seeds ``m_t`` at the
common evaluation steps is replaced by its least-squares monotone fit (pool
adjacent violators; Barlow et al. 1972, "Statistical Inference under Order
Restrictions"), and the point's steps to result are the first step at which
that fit meets the target. Noise above and below the curve then cancels
instead of the lowest dip deciding (simulated on linreg: within 2% of the
exact crossing at B = 1..64 with 3 to 32 seeds). Its uncertainty comes from
resampling seeds (:func:`point_steps`' ``draws``), the bootstrap of
:func:`lrscale.analysis.steps_to_result.bootstrap_best_steps`.

The mean curve exists only where every seed has an evaluation, so the trials
must run on past their own first passage (``target.stop_value`` harder than
``target.value``); a point whose fitted curve does not meet the target within
the steps all its seeds cover counts as not reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize

from lrscale.analysis.steps_to_result import PointSteps, TrialOutcome, group_points
from lrscale.analysis.store_reader import Target, as_float


def seed_curves(outcomes: Sequence[TrialOutcome], metric: str) -> tuple[np.ndarray, np.ndarray]:
  """The seeds' metric curves on their common evaluation steps.

  Common steps: those at which every seed evaluated, up to the first step at
  which any seed's value is non-finite (a diverged run has no mean after it).

  Returns:
    ``(steps (T,), values (n_seeds, T))``; ``T`` may be 0.
  """
  per_seed = []
  for o in outcomes:
    per_seed.append(
      {
        int(float(r["step"])): v
        for r in o.trial.eval_rows
        if metric in r and (v := as_float(r[metric])) is not None
      }
    )
  if not per_seed:
    return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
  common = sorted(set.intersection(*(set(d) for d in per_seed)))
  values = np.array([[d[s] for s in common] for d in per_seed], dtype=np.float64).reshape(
    len(per_seed), len(common)
  )
  bad = np.flatnonzero(~np.all(np.isfinite(values), axis=0))
  end = int(bad[0]) if len(bad) else len(common)
  return np.asarray(common[:end], dtype=np.int64), values[:, :end]


def monotone_crossing(steps: np.ndarray, curve: np.ndarray, target: Target) -> float:
  """First step at which the monotone least-squares fit of ``curve`` meets ``target``.

  The fit is non-increasing for ``mode="min"`` and non-decreasing for
  ``"max"`` (``scipy.optimize.isotonic_regression``, pool adjacent violators).

  Returns:
    The step, or ``inf`` when the fit never meets the target.
  """
  if not len(curve):
    return math.inf
  fit = optimize.isotonic_regression(curve, increasing=target.mode != "min").x
  value = np.float32(target.value)  # compared at float32, as Target.is_reached
  hit = fit.astype(np.float32) <= value if target.mode == "min" else fit.astype(np.float32) >= value
  return float(steps[int(np.argmax(hit))]) if hit.any() else math.inf


def undetermined_points(outcomes: Sequence[TrialOutcome], target: Target) -> list[dict[str, Any]]:
  """Points whose mean curve ends before it meets the target while a seed had met it.

  (and no seed diverged: a diverged seed ends the mean because the expected
  metric is infinite there, which is a true "not reached").

  Such a point's seeds stopped (at ``target.stop_value``) too soon for their
  mean to be followed to the target: its reading is unknown, not "never",
  and the batch size's best point may then be a slower lr. A non-empty list
  means ``target.stop_value`` should be harder.
  """
  f = point_steps(target)
  out = []
  for members in group_points(outcomes):
    # A diverged seed ends the mean for good (the expected metric is infinite): not reached.
    cut_short = any(o.reached for o in members) and not any(o.trial.diverged for o in members)
    if cut_short and math.isinf(f(members, np.arange(len(members))[None])[0]):
      t = members[0].trial
      out.append({"batch_size": t.batch_size, "lr": t.lr, "params": dict(t.params)})
  return out


def point_steps(target: Target) -> PointSteps:
  """The ``seed_mean`` reading of one (B, lr, params) point, for ``steps_to_result``.

  Returns:
    ``f(members, draws) -> (k,)``: for each row of ``draws`` (indices into
    ``members``, shape ``(k, n)``; a bootstrap resample of the seeds, or
    ``arange(n)[None]`` for the point itself), :func:`monotone_crossing` of
    the mean of those seeds' curves.
  """

  def steps_of(members: Sequence[TrialOutcome], draws: np.ndarray) -> np.ndarray:
    steps, values = seed_curves(members, target.metric)
    n = len(members)
    # The mean of a resample is (counts of each seed) @ values / n.
    counts = np.stack([np.bincount(row, minlength=n) for row in np.atleast_2d(draws)])
    means = counts @ values / n if values.size else np.zeros((len(counts), 0))
    return np.array([monotone_crossing(steps, m, target) for m in means])

  return steps_of
