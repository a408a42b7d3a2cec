"""The exact answer beside the measured one, for studies on the ``linreg`` dataset.

Hook: a study whose config has ``dataset.name == "linreg"`` with
``dataset.linreg.{dim, alpha, teacher_power, noise}`` and whose target is
``eval_relative_excess`` (mode ``min``) has a known answer: the expected
relative excess risk of SGD (:mod:`lrscale.analysis.theory`). The dataset
block is read from ``study.json`` (``config.base.dataset``, as the study
runner writes it, or a top-level ``dataset`` mapping). The exact best steps
are computed on the study's own lr grid at each batch size and fitted with
the same fit, so the comparison isolates the measurement (one noisy run per
seed instead of the expectation, eval-interval quantisation) from the method.

The theory is of the *expected* risk, so the like-for-like measurement is
``config.analysis.target_from="seed_mean"`` (:mod:`lrscale.analysis.seed_mean`);
the per-seed first passage of a fluctuating curve comes earlier at small B
and is compared here all the same, with that caveat in the report. Per batch
size the exact steps are set against the bootstrap interval of the measured
best steps, pointwise (the analysis' level) and as a simultaneous band over
all batch sizes (Bonferroni: level ``1 - (1 - level) / n_B`` at each), since
with 13 batch sizes a 90% pointwise interval is expected to miss about one.
Both are widened by one evaluation interval on each side: a first step at
the target is a whole number of evaluations, and a resampled mean that sits
a hair from the target at an evaluation moves it by a whole interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lrscale.analysis import theory
from lrscale.analysis.steps_to_result import BatchSummary, TrialOutcome, by_batch_size
from lrscale.analysis.store_reader import StudySpec, as_float

TARGET_METRIC = "eval_relative_excess"
DEFAULT_MAX_STEPS = 5000


def linreg_problem(spec: StudySpec) -> theory.LinregSpec | None:
  """The problem of a linreg study with a relative-excess target, else ``None``."""
  raw = spec.raw
  dataset = ((raw.get("config") or {}).get("base") or {}).get("dataset")
  if not isinstance(dataset, Mapping):
    dataset = raw.get("dataset") if isinstance(raw.get("dataset"), Mapping) else None
  if not dataset or dataset.get("name") != "linreg":
    return None
  if spec.target.metric != TARGET_METRIC or spec.target.mode != "min":
    return None
  return theory.LinregSpec.from_mapping(dataset.get("linreg") or {})


def _eval_steps(outcomes: Sequence[TrialOutcome], metric: str) -> np.ndarray:
  return np.unique([float(r["step"]) for o in outcomes for r in o.trial.eval_rows if metric in r])


def _percentiles(
  sample: np.ndarray | None, level: float, widen: tuple[float, float]
) -> list[float] | None:
  """Percentile interval of a bootstrap sample at ``level``, widened by ``widen`` = (below, above)."""
  finite = np.asarray([] if sample is None else sample, dtype=float)
  finite = finite[np.isfinite(finite)]
  if len(finite) < 10:
    return None
  lo, hi = np.percentile(finite, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
  return [float(lo - widen[0]), float(hi + widen[1])]


def _eval_gaps(evals: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
  """The evaluation interval just below ``lo`` and just above ``hi`` (0 at the ends)."""
  below, above = evals[evals < lo], evals[evals > hi]
  return (lo - below[-1] if len(below) else 0.0, above[0] - hi if len(above) else 0.0)


def _inside(value: float | None, ci: Sequence[float | None] | None) -> bool | None:
  if value is None or not ci:
    return None
  return (ci[0] is None or ci[0] <= value) and (ci[1] is None or value <= ci[1])


def theory_section(
  spec: StudySpec,
  outcomes: Sequence[TrialOutcome],
  summaries: Sequence[BatchSummary],
  fit_block: Mapping[str, Any],
  boot: Mapping[int, np.ndarray] | None = None,
  *,
  level: float = 0.9,
) -> dict[str, Any] | None:
  """The ``theory`` block of analysis.json, or ``None`` for other studies.

  Per batch size: the exact first step reaching the target at the best lr
  of the study's grid (``exact_steps``), that step rounded up to the next
  step at which the study evaluated (``exact_steps_at_eval``, what a
  noiseless run would have measured), the exact best lr, the measured
  values, and the measured best steps' bootstrap intervals (``boot``, from
  :func:`lrscale.analysis.steps_to_result.bootstrap_best_steps`): pointwise
  ``measured_ci`` and simultaneous ``measured_band`` (see the module
  docstring), each with whether the exact steps lie inside. ``fit`` is the
  exact curve's ``S_min, B_crit`` by the analysis' fit; ``comparison`` sets
  them beside the measured fit and its interval.
  """
  problem = linreg_problem(spec)
  if problem is None or not summaries:
    return None
  groups = by_batch_size(outcomes)
  batch_sizes = [s.batch_size for s in summaries]
  width = max(len(s.lrs) for s in summaries)
  grid = np.full((len(summaries), width), np.nan)
  for i, s in enumerate(summaries):
    grid[i, : len(s.lrs)] = s.lrs
  done = [as_float((o.trial.summary or {}).get("steps")) for o in outcomes]
  max_steps = int(max([DEFAULT_MAX_STEPS, *[2 * d for d in done if d and math.isfinite(d)]]))
  exact = theory.exact_steps_curve(
    problem, batch_sizes, grid, spec.target.value, max_steps=max_steps
  )
  rows = []
  band_level = 1.0 - (1.0 - level) / max(1, len(summaries))
  for i, s in enumerate(summaries):
    steps = exact["steps"][i]
    evals = _eval_steps(groups.get(s.batch_size, []), spec.target.metric)
    later = evals[evals >= steps] if math.isfinite(steps) else evals[:0]
    sample = None if boot is None else boot.get(s.batch_size)
    intervals = {}
    for key, lvl in (("measured_ci", level), ("measured_band", band_level)):
      raw = _percentiles(sample, lvl, (0.0, 0.0))
      intervals[key] = None if raw is None else _percentiles(sample, lvl, _eval_gaps(evals, *raw))
    exact_value = steps if math.isfinite(steps) else None
    rows.append(
      {
        "batch_size": s.batch_size,
        "exact_steps": exact_value,
        "exact_steps_at_eval": float(later[0]) if len(later) else None,
        "exact_best_lr": exact["best_lr"][i] if math.isfinite(steps) else None,
        "measured_steps": s.best_steps,
        "measured_best_lr": s.best_lr,
        **intervals,
        "exact_inside_ci": _inside(exact_value, intervals["measured_ci"]),
        "exact_inside_band": _inside(exact_value, intervals["measured_band"]),
      }
    )
  comparison = {}
  for name in ("s_min", "b_crit"):
    value = (exact["fit"] or {}).get(name)
    ci = (fit_block.get("ci") or {}).get(name) if fit_block.get("ok") else None
    comparison[name] = {
      "exact": value,
      "measured": fit_block.get(name) if fit_block.get("ok") else None,
      "ci": ci,
      "exact_inside_ci": _inside(value, ci),
    }
  return {
    "problem": {
      "dim": problem.dim,
      "alpha": problem.alpha,
      "teacher_power": problem.teacher_power,
      "noise": problem.noise,
    },
    "definition": (
      "exact expected relative excess risk of SGD on Gaussian linear regression "
      "(lrscale.analysis.theory), best lr of the study's own grid per B"
    ),
    "target_rel": spec.target.value,
    "max_steps": max_steps,
    "per_batch": rows,
    "ci_level": level,
    "band_level": band_level,
    "n_inside_ci": sum(bool(r["exact_inside_ci"]) for r in rows),
    "n_inside_band": sum(bool(r["exact_inside_band"]) for r in rows),
    "fit": exact["fit"],
    "comparison": comparison,
  }
