"""The gradient noise scale against the critical batch size, in three readings.

The analysis' ``noise_scale`` section (:func:`noise_section`): B_simple logged by
the trials (``config.noise_scale``) per batch size, beside B_crit from the steps
fit (McCandlish et al. 2018).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from lrscale.analysis.steps_to_result import BatchSummary, TrialOutcome
from lrscale.analysis.store_reader import final_b_simple, noise_scale_series

# Points of a B_simple(step) series kept in analysis.json (thinned evenly).
MAX_SERIES_POINTS = 200


def _value_at(steps: Sequence[int], values: Sequence[float], step: float) -> float | None:
  """Last value logged at or before ``step``."""
  before = [v for s, v in zip(steps, values) if s <= step]
  return before[-1] if before else None


def _thin(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
  stride = max(1, math.ceil(len(steps) / MAX_SERIES_POINTS))
  return steps[::stride], values[::stride]


def noise_section(
  outcomes: Sequence[TrialOutcome], summaries: Sequence[BatchSummary], b_crit: float | None
) -> dict[str, Any]:
  """B_simple per batch size against B_crit, in three named readings.

  B_simple grows during training, so "the" noise scale needs a convention:

  * ``final``: last logged value, median over non-diverged trials;
  * ``at_target``: the best trial's value at its steps-to-result (the
    moment the target is met);
  * ``trajectory_mean``: the best trial's mean over its logged steps up to
    the target (McCandlish et al. 2018 compare B_crit with B_noise averaged
    over the run, Sec. 3 / Fig. 5, since the critical batch of a whole run
    integrates the noise along it).

  Each has a median over batch sizes and its ratio to B_crit; McCandlish et
  al. find B_crit tracks B_noise within about an order of magnitude.
  """
  per_b: dict[int, list[float]] = defaultdict(list)
  for o in outcomes:
    value = final_b_simple(o.trial)
    if value is not None and not o.trial.diverged:
      per_b[o.trial.batch_size].append(value)
  if not per_b:
    return {"available": False}
  by_id = {o.trial.id: o for o in outcomes}
  rows, series = [], []
  for s in summaries:
    best = by_id.get(s.best_trial_id) if s.best_trial_id else None
    at_target = trajectory = None
    if best is not None:
      steps, values = noise_scale_series(best.trial)
      at_target = _value_at(steps, values, best.steps_or_inf)
      upto = [v for st_, v in zip(steps, values) if st_ <= best.steps_or_inf]
      trajectory = float(np.mean(upto)) if upto else None
      if steps:
        st, va = _thin(steps, values)
        series.append(
          {"batch_size": s.batch_size, "trial_id": best.trial.id, "step": st, "b_simple": va}
        )
    vals = per_b.get(s.batch_size, [])
    rows.append(
      {
        "batch_size": s.batch_size,
        "n_trials": len(vals),
        "final_median": float(np.median(vals)) if vals else None,
        "best_trial_at_target": at_target,
        "best_trial_trajectory_mean": trajectory,
      }
    )
  overall = float(np.median([v for vals in per_b.values() for v in vals]))
  med = lambda key: (  # noqa: E731
    float(np.median(v)) if (v := [r[key] for r in rows if r[key] is not None]) else None
  )
  readings = {
    "final": overall,
    "at_target": med("best_trial_at_target"),
    "trajectory_mean": med("best_trial_trajectory_mean"),
  }
  return {
    "available": True,
    "definition": "B_simple = tr(Sigma) / |G|^2, two-batch estimator (McCandlish et al. 2018, A.1)",
    "per_batch": rows,
    "median_final": overall,
    "readings": {
      k: {"median": v, "ratio_to_b_crit": None if not (b_crit and v) else v / b_crit}
      for k, v in readings.items()
    },
    "b_crit": b_crit,
    "ratio_to_b_crit": None if not b_crit else overall / b_crit,
    "series": series,
  }
