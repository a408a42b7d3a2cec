"""Analyse a study directory end to end (what the CLI calls).

:func:`build_analysis` turns a loaded :class:`Study` into one JSON-able dict
(no files touched, so tests and notebooks can call it on in-memory records);
:func:`analyze` reads the directory, builds that dict and writes
``results.csv``, ``analysis.json``, the plots and ``report.md`` beside it.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from lrscale.analysis import (
  fits,
  intervals,
  lr_fits,
  noise_readings,
  options,
  plots,
  regimes,
  report,
  seed_mean,
  targets,
)
from lrscale.analysis.ground_truth import theory_section
from lrscale.analysis.steps_to_result import (
  BatchSummary,
  PointSteps,
  TrialOutcome,
  bootstrap_best_steps,
  config_results,
  policy_text,
  seed_median,
  seeds_per_point,
  selection_bias_log,
  summarize_batches,
  trial_outcomes,
)
from lrscale.analysis.store_reader import (
  Study,
  Target,
  TrialRecord,
  load_study,
)

MIN_BATCHES_FOR_FIT = 3


def _usable(summaries: Sequence[BatchSummary]) -> list[BatchSummary]:
  return [s for s in summaries if s.reached]


def fit_section(
  summaries: Sequence[BatchSummary],
  boot: dict[int, np.ndarray],
  *,
  level: float,
  n_seeds: dict[int, int] | None = None,
) -> tuple[dict[str, Any], fits.ScalingFit | None]:
  """The ``fit`` block: S_min, B_crit, E_min with intervals, or the reason it was skipped.

  ``s_min, b_crit, e_min`` fit the measured best steps (Shallue's policy).
  The intervals (``ci``) are :func:`intervals.profile_steps_intervals` on the best
  steps corrected for the winner's curse,
  ``log S_b - selection_bias_log_b`` (:func:`selection_bias_log`), whose fit
  is ``corrected``; the seed-resampling percentile intervals of earlier
  versions are kept as ``ci_seed_bootstrap`` (too narrow: they see neither
  the lr-grid error nor, with 2 seeds, the seed variance).
  """
  usable = _usable(summaries)
  b = [s.batch_size for s in usable]
  steps = [float(s.best_steps) for s in usable]
  if len(usable) < MIN_BATCHES_FOR_FIT:
    reason = f"only {len(usable)} batch size(s) reached the target; need {MIN_BATCHES_FOR_FIT}"
    return {"ok": False, "reason": reason, "batch_sizes": b, "steps": steps}, None
  fit = fits.fit_steps_curve(b, steps)
  samples = np.stack([boot[x] for x in b], axis=1)
  n_seeds = n_seeds or {}
  bias = [selection_bias_log(boot[x], s, n_seeds.get(x, 1)) for x, s in zip(b, steps)]
  corrected_steps = [s * math.exp(-d) for s, d in zip(steps, bias)]
  corrected = fits.fit_steps_curve(b, corrected_steps)
  return {
    "ok": True,
    "reason": None,
    "model": "S(B) = S_min (1 + B_crit / B), least squares on log S (McCandlish et al. 2018)",
    "s_min": fit.s_min,
    "b_crit": fit.b_crit,
    "e_min": fit.e_min,
    "rmse_log": fit.rmse_log,
    "b_crit_at_bound": fit.b_crit_at_bound,
    "ci": intervals.profile_steps_intervals(b, corrected_steps, level=level),
    "corrected": {
      "s_min": corrected.s_min,
      "b_crit": corrected.b_crit,
      "e_min": corrected.e_min,
      "selection_bias_log": bias,
      "steps": corrected_steps,
    },
    "ci_seed_bootstrap": fits.bootstrap_steps_fit(b, samples, level=level),
    "n_bootstrap": int(samples.shape[0]),
    "batch_sizes": b,
    "steps": steps,
  }, fit


def lr_section(
  summaries: Sequence[BatchSummary], study_name: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
  """The ``lr_fit`` block and the ``lr_rule`` block (``None`` when it cannot be fitted)."""
  usable = _usable(summaries)
  b = [s.batch_size for s in usable]
  lrs = [float(s.best_lr) for s in usable]
  if len(usable) < 2:
    return {
      "ok": False,
      "reason": f"only {len(usable)} batch size(s) reached the target; need 2",
    }, None
  lr_fit = lr_fits.fit_lr_scaling(b, lrs)
  section = {
    "ok": True,
    "reason": None,
    "model": lr_fit.model,
    "coef": lr_fit.coef,
    "exponent": lr_fit.exponent,
    "max_lr": lr_fit.max_lr,
    "saturation_batch": lr_fit.saturation_batch,
    "rms_log_residual": lr_fit.rms_log_residual,
    "batch_sizes": b,
    "best_lr": lrs,
    "fitted_lr": [float(v) for v in lr_fit.predict(np.array(b, dtype=float))],
    "grid_edge_batches": [s.batch_size for s in usable if s.best_lr_at_grid_edge],
    "rules": {
      "linear": lr_fits.rule_predictions(b, lrs, 1.0),
      "sqrt": lr_fits.rule_predictions(b, lrs, 0.5),
    },
  }
  return section, lr_fits.lr_rule_dict(lr_fit, study_name)


def configs_section(
  outcomes: Sequence[TrialOutcome], metric: str, point_steps: PointSteps = seed_median
) -> list[dict[str, Any]]:
  """One row per (B, lr, params) point: its steps (``point_steps``) and median final metric."""
  final = {o.trial.id: o.trial.final_metrics().get(metric) for o in outcomes}
  rows = []
  for c in config_results(outcomes, point_steps):
    metrics = [
      final[i] for i in c.trial_ids if final.get(i) is not None and math.isfinite(final[i])
    ]
    rows.append(
      {
        "batch_size": c.batch_size,
        "lr": c.lr,
        "params": c.params,
        "steps": c.steps if math.isfinite(c.steps) else None,
        "n_seeds": len(c.trial_ids),
        "n_reached": c.n_reached,
        "n_diverged": c.n_diverged,
        "final_metric": float(np.median(metrics)) if metrics else None,
      }
    )
  return rows


def per_batch_section(
  summaries: Sequence[BatchSummary], boot: dict[int, np.ndarray], *, level: float
) -> list[dict[str, Any]]:
  """Per-B summaries plus a percentile bootstrap interval on the best steps."""
  q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
  rows = []
  for s in summaries:
    row = s.to_dict()
    sample = boot.get(s.batch_size)
    finite = sample[np.isfinite(sample)] if sample is not None else np.array([])
    row["best_steps_ci"] = (
      [float(v) for v in np.percentile(finite, q)] if len(finite) >= 10 else None
    )
    rows.append(row)
  return rows


def point_steps_for(target: Target, target_from: str) -> PointSteps:
  """How a point's steps come from its seeds under ``config.analysis.target_from``."""
  return seed_mean.point_steps(target) if target_from == options.SEED_MEAN else seed_median


def steps_curve(
  trials: Sequence[TrialRecord],
  target: Target,
  *,
  target_from: str = options.PER_SEED,
  within_pct: float = 10.0,
  n_bootstrap: int = 200,
  seed: int = 0,
  level: float = 0.9,
  perfect_slope: float = -0.8,
  maximal_slope: float = -0.1,
) -> dict[str, Any]:
  """Best steps per batch size at one target, their bootstrap, the fit and the regimes.

  Returns:
    ``{"outcomes", "summaries", "boot", "fit_block", "fit", "regimes"}``.
  """
  point_steps = point_steps_for(target, target_from)
  outcomes = trial_outcomes(trials, target)
  summaries = summarize_batches(outcomes, within_pct=within_pct, point_steps=point_steps)
  boot = bootstrap_best_steps(
    outcomes, n_bootstrap=n_bootstrap, rng=np.random.default_rng(seed), point_steps=point_steps
  )
  fit_block, fit = fit_section(summaries, boot, level=level, n_seeds=seeds_per_point(outcomes))
  usable = _usable(summaries)
  if len(usable) >= 2:
    regime_block = regimes.regimes_summary(
      [s.batch_size for s in usable],
      [float(s.best_steps) for s in usable],
      fit,
      perfect_slope=perfect_slope,
      maximal_slope=maximal_slope,
      b_crit_ci=fit_block["ci"]["b_crit"] if fit is not None else None,
    )
    regime_block.update(ok=True, reason=None)
  else:
    regime_block = {"ok": False, "reason": "fewer than 2 batch sizes reached the target"}
  return dict(
    outcomes=outcomes,
    summaries=summaries,
    boot=boot,
    fit_block=fit_block,
    fit=fit,
    regimes=regime_block,
  )


def build_analysis(
  study: Study,
  *,
  within_pct: float = 10.0,
  n_bootstrap: int = 200,
  seed: int = 0,
  level: float = 0.9,
  perfect_slope: float = -0.8,
  maximal_slope: float = -0.1,
) -> dict[str, Any]:
  """Every number of the analysis as one JSON-able dict (see :func:`analyze`).

  ``study.json``'s ``config.analysis`` (:mod:`lrscale.analysis.options`)
  chooses the steps policy (``target_from``) and any extra ``targets``.
  """
  spec = study.spec
  opts = options.from_study_json(spec.raw)
  kwargs = dict(
    within_pct=within_pct,
    n_bootstrap=n_bootstrap,
    seed=seed,
    level=level,
    perfect_slope=perfect_slope,
    maximal_slope=maximal_slope,
  )
  curve = steps_curve(study.trials, spec.target, target_from=opts.target_from, **kwargs)
  outcomes, summaries, boot = curve["outcomes"], curve["summaries"], curve["boot"]
  fit_block, fit, regimes = curve["fit_block"], curve["fit"], curve["regimes"]
  lr_block, lr_rule = lr_section(summaries, spec.name)
  present = {s.batch_size for s in summaries}
  excluded = [
    {"batch_size": s.batch_size, "reason": "no trial reached the target"}
    for s in summaries
    if not s.reached
  ] + [{"batch_size": b, "reason": "no trials found"} for b in spec.batch_sizes if b not in present]
  return {
    "study": {
      "name": spec.name,
      "workdir": study.workdir,
      "target": spec.target.to_dict(),
      "batch_sizes": list(spec.batch_sizes),
      "reference_batch": spec.reference_batch,
      "base_lr": spec.base_lr,
      "scaling_rule": spec.scaling_rule,
      "optimizer": spec.optimizer,
      "num_train_examples": spec.num_train_examples,
    },
    "policy": policy_text(spec.target, opts.target_from),
    "settings": {
      "target_from": opts.target_from,
      "within_pct": within_pct,
      "n_bootstrap": n_bootstrap,
      "seed": seed,
      "ci_level": level,
      "perfect_slope": perfect_slope,
      "maximal_slope": maximal_slope,
    },
    "n_trials": len(study.trials),
    "status_counts": dict(Counter(t.status for t in study.trials)),
    "per_batch": per_batch_section(summaries, boot, level=level),
    "excluded_batches": excluded,
    "configs": configs_section(
      outcomes, spec.target.metric, point_steps_for(spec.target, opts.target_from)
    ),
    "fit": fit_block,
    "regimes": regimes,
    "lr_fit": lr_block,
    "lr_rule": lr_rule,
    "noise_scale": noise_readings.noise_section(
      outcomes, summaries, None if fit is None else fit.b_crit
    ),
    "seed_mean_undetermined": (
      seed_mean.undetermined_points(outcomes, spec.target)
      if opts.target_from == options.SEED_MEAN
      else []
    ),
    "theory": theory_section(spec, outcomes, summaries, fit_block, boot, level=level),
    "targets": targets.targets_section(study, opts, steps_curve, **kwargs),
  }


def analyze(
  workdir: str, *, within_pct: float = 10.0, n_bootstrap: int = 200, seed: int = 0
) -> dict[str, Any]:
  """Analyse the study in ``workdir`` and write the results beside it.

  Writes ``results.csv`` (one row per trial), ``analysis.json`` (this dict,
  NaN/inf as null), the plots (``steps_to_result.png``,
  ``examples_to_result.png``, ``optimal_lr.png``, ``lr_sensitivity.png``,
  ``tradeoff.png``, ``noise_scale.png`` when B_simple was logged) and
  ``report.md``. Batch sizes where no trial reached the target are excluded
  from the fits and listed; with fewer than 3 usable batch sizes the steps
  fit is skipped with a reason instead of failing.

  Args:
    workdir: Study directory (``study.json`` + ``trials/``).
    within_pct: Tolerance defining the near-optimal lr range, in percent of
      the best steps.
    n_bootstrap: Bootstrap resamples for the confidence intervals.
    seed: Seed of the bootstrap.

  Returns:
    The analysis dict as written to ``analysis.json``.
  """
  study = load_study(workdir)
  analysis = build_analysis(study, within_pct=within_pct, n_bootstrap=n_bootstrap, seed=seed)
  outcomes = trial_outcomes(study.trials, study.spec.target)
  report.write_results_csv(outcomes, os.path.join(workdir, "results.csv"))
  analysis["plots"] = plots.plot_all(analysis, workdir)
  analysis["files"] = ["results.csv", "analysis.json", "report.md", *analysis["plots"]]
  analysis = report.to_jsonable(analysis)
  report.write_analysis_json(analysis, os.path.join(workdir, "analysis.json"))
  report.write_report(analysis, os.path.join(workdir, "report.md"))
  # A successive-halving study (lrscale.study.halving) wrote its rung table
  # beside the trials; it belongs in the same report, whichever main analyses.
  halving_md = os.path.join(workdir, "halving.md")
  if os.path.exists(halving_md):
    with open(halving_md) as f, open(os.path.join(workdir, "report.md"), "a") as out:
      out.write("\n" + f.read().replace("# Successive", "## Successive", 1))
  return analysis
