"""Steps-to-result per trial and the best trial per batch size.

Policy (Shallue et al. 2018, "Measuring the Effects of Data Parallelism on
Neural Network Training", Sec. 3): the *steps to result* of a trial is the
first **evaluation** step at which the target metric reaches the target
(``>= value`` for ``mode="max"``, ``<= value`` for ``mode="min"``). It is read
from the eval rows of ``metrics.jsonl``; only when a trial has no eval row
carrying the metric do we fall back to ``summary.json``'s ``target.step``.
A trial that reached the target and diverged later still reached it: the
result was obtained at that step. Examples to result = steps x batch size.

Per batch size the best hyperparameter point is the one with the fewest
steps to result after tuning the learning rate (and any other swept
hyperparameter); ties go to the lower learning rate. With several seeds per
point the point's steps are the median over its seeds, counting a seed that
did not reach the target as infinity (so a point needs more than half its
seeds to succeed); with one seed per point this is exactly Shallue's best
trial. That per-seed reading is :func:`seed_median`; any other
:data:`PointSteps` may replace it (``lrscale.analysis.seed_mean``: the
crossing of the seeds' mean curve).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from lrscale.analysis.store_reader import (
  STATUS_DIVERGED,
  STATUS_ENDED,
  STATUS_MISSING,
  STATUS_PRUNED,
  STATUS_RUNNING,
  Target,
  TrialRecord,
  as_float,
)

POLICY = (
  "Steps to result = first evaluation step at which {metric} {op} {value} "
  "(Shallue et al. 2018); examples to result = steps x batch size. Per batch size the best "
  "(lr, params) point has the fewest steps (median over seeds, unreached seeds count as "
  "infinite); ties go to the lower lr."
)


SEED_MEAN_POLICY = (
  "Steps to result of a (B, lr, params) point = first evaluation step at which the monotone "
  "least-squares fit of its seeds' MEAN {metric} curve has {metric} {op} {value} (an estimate "
  "of where the expected curve crosses the target; lrscale.analysis.seed_mean); examples to "
  "result = steps x batch size. Per batch size the best point has the fewest steps; ties go to "
  "the lower lr; intervals resample the seeds."
)


def policy_text(target: Target, target_from: str = "per_seed") -> str:
  """The steps-to-result policy in words, for reports."""
  op = "<=" if target.mode == "min" else ">="
  text = SEED_MEAN_POLICY if target_from == "seed_mean" else POLICY
  return text.format(metric=target.metric, op=op, value=target.value)


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
  """Steps to result of one trial.

  Attributes:
    trial: The trial.
    steps: First eval step reaching the target, ``None`` if not reached.
    source: ``"metrics"``, ``"summary"`` or ``"none"`` (where ``steps`` came from).
  """

  trial: TrialRecord
  steps: int | None
  source: str

  @property
  def reached(self) -> bool:
    return self.steps is not None

  @property
  def examples(self) -> int | None:
    """Examples to result, ``steps * batch_size``."""
    return None if self.steps is None else self.steps * self.trial.batch_size

  @property
  def settled(self) -> bool:
    """Whether the outcome is final: reached, or the trial stopped without reaching.

    Running, never-started and crashed (``failed``) trials that have not
    reached the target say nothing about the hyperparameters, so they are
    left out of the comparison instead of being counted as failures.
    """
    return self.reached or self.trial.status in (*STATUS_ENDED, STATUS_DIVERGED, STATUS_PRUNED)

  @property
  def steps_or_inf(self) -> float:
    return math.inf if self.steps is None else float(self.steps)


# Steps to result of one (B, lr, params) point from its seeds: f(members, draws) -> (k,), one
# value per row of ``draws`` (indices into ``members``, shape (k, n): bootstrap resamples of the
# seeds, or arange(n)[None] for the point itself).
PointSteps = Callable[[Sequence[TrialOutcome], np.ndarray], np.ndarray]


def seed_median(members: Sequence[TrialOutcome], draws: np.ndarray) -> np.ndarray:
  """The per-seed reading: median over the drawn seeds of their steps (unreached = inf)."""
  steps = np.array([o.steps_or_inf for o in members])
  return np.median(steps[np.atleast_2d(draws)], axis=1)


def first_step_reaching(eval_rows: Iterable[dict[str, Any]], target: Target) -> int | None:
  """First eval step whose ``target.metric`` meets the target, else ``None``."""
  rows = sorted((r for r in eval_rows if target.metric in r), key=lambda r: float(r["step"]))
  for row in rows:
    if target.is_reached(as_float(row.get(target.metric))):
      return int(float(row["step"]))
  return None


def steps_to_target(trial: TrialRecord, target: Target) -> tuple[int | None, str]:
  """Steps to result of one trial and where the number came from.

  Returns:
    ``(steps, source)``; source is ``"metrics"`` when eval rows carry the
    metric (authoritative, even when they never reach it), else
    ``"summary"`` when ``summary.json`` reports a reached target, else ``"none"``.
  """
  if any(target.metric in r for r in trial.eval_rows):
    return first_step_reaching(trial.eval_rows, target), "metrics"
  summary_target = (trial.summary or {}).get("target") or {}
  step = as_float(summary_target.get("step"))
  if summary_target.get("reached") and step is not None and math.isfinite(step):
    return int(step), "summary"
  return None, "none"


def trial_outcomes(trials: Iterable[TrialRecord], target: Target) -> list[TrialOutcome]:
  """:func:`steps_to_target` for every trial."""
  return [TrialOutcome(t, *steps_to_target(t, target)) for t in trials]


@dataclasses.dataclass(frozen=True)
class ConfigResult:
  """One hyperparameter point (batch size, lr, params) aggregated over seeds.

  Attributes:
    steps: Median over settled seeds of steps to result (inf if not reached).
    trial_ids: Settled trials of this point.
    best_trial_id: The settled trial with the fewest steps.
  """

  batch_size: int
  lr: float
  params: dict[str, Any]
  steps: float
  trial_ids: tuple[str, ...]
  best_trial_id: str | None
  n_reached: int
  n_diverged: int


def _group(outcomes: Iterable[TrialOutcome]) -> dict[tuple[Any, ...], list[TrialOutcome]]:
  groups: dict[tuple[Any, ...], list[TrialOutcome]] = defaultdict(list)
  for o in outcomes:
    groups[o.trial.config_key].append(o)
  return groups


def group_points(outcomes: Iterable[TrialOutcome]) -> list[list[TrialOutcome]]:
  """The settled outcomes of each (B, lr, params) point (the seeds of one point together)."""
  return list(_group(o for o in outcomes if o.settled).values())


def config_results(
  outcomes: Iterable[TrialOutcome], point_steps: PointSteps = seed_median
) -> list[ConfigResult]:
  """Aggregate settled outcomes into one :class:`ConfigResult` per point, sorted by lr.

  A point's steps are ``point_steps`` of its settled seeds (default: their median).
  """
  results = []
  for members in _group(o for o in outcomes if o.settled).values():
    first = members[0].trial
    best = min(members, key=lambda o: (o.steps_or_inf, o.trial.id))
    results.append(
      ConfigResult(
        batch_size=first.batch_size,
        lr=first.lr,
        params=dict(first.params),
        steps=float(point_steps(members, np.arange(len(members))[None])[0]),
        trial_ids=tuple(o.trial.id for o in members),
        best_trial_id=best.trial.id if best.reached else None,
        n_reached=sum(o.reached for o in members),
        n_diverged=sum(o.trial.diverged for o in members),
      )
    )
  return sorted(results, key=lambda c: (c.lr, repr(sorted(c.params.items()))))


@dataclasses.dataclass(frozen=True)
class BatchSummary:
  """Everything measured at one batch size.

  Attributes:
    batch_size: B.
    n_trials: Trials found at this B (any status).
    n_missing: Trials never started or still running without a result.
    n_reached: Trials that reached the target.
    n_diverged: Trials that diverged.
    best_trial_id: Fewest-steps trial of the best point (``None`` if none reached).
    best_lr: Learning rate of the best point.
    best_params: Other hyperparameters of the best point.
    best_steps: Steps to result of the best point (median over its seeds).
    best_examples: ``best_steps * batch_size``.
    lr_within: (lowest, highest) lr whose point is within ``within_pct``% of
      ``best_steps``.
    largest_stable_lr: Largest lr at which no finished trial diverged.
    smallest_diverged_lr: Smallest lr at which some trial diverged.
    best_lr_at_grid_edge: The best lr is the lowest or highest lr tried, so the
      grid may not bracket the optimum.
    lrs: All learning rates tried at this B.
  """

  batch_size: int
  n_trials: int
  n_missing: int
  n_reached: int
  n_diverged: int
  best_trial_id: str | None
  best_lr: float | None
  best_params: dict[str, Any] | None
  best_steps: float | None
  best_examples: float | None
  lr_within: tuple[float, float] | None
  largest_stable_lr: float | None
  smallest_diverged_lr: float | None
  best_lr_at_grid_edge: bool
  lrs: tuple[float, ...]

  @property
  def reached(self) -> bool:
    return self.best_steps is not None

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["lr_within"] = None if self.lr_within is None else list(self.lr_within)
    d["lrs"] = list(self.lrs)
    return d


def best_config(configs: Sequence[ConfigResult]) -> ConfigResult | None:
  """Fewest steps; ties to the lower lr. ``None`` if no point reached the target."""
  reached = [c for c in configs if math.isfinite(c.steps)]
  return min(reached, key=lambda c: (c.steps, c.lr)) if reached else None


def summarize_batch(
  outcomes: Sequence[TrialOutcome],
  *,
  within_pct: float = 10.0,
  point_steps: PointSteps = seed_median,
) -> BatchSummary:
  """Summarise the outcomes of one batch size (all must share it)."""
  batch_sizes = {o.trial.batch_size for o in outcomes}
  if len(batch_sizes) != 1:
    raise ValueError(f"expected one batch size, got {sorted(batch_sizes)}")
  configs = config_results(outcomes, point_steps)
  best = best_config(configs)
  finished = [o.trial for o in outcomes if o.trial.status in (*STATUS_ENDED, STATUS_DIVERGED)]
  diverged_lrs = sorted({t.lr for t in finished if t.diverged})
  stable_lrs = sorted({t.lr for t in finished} - set(diverged_lrs))
  tried = sorted({o.trial.lr for o in outcomes})
  lr_within = None
  if best is not None:
    limit = best.steps * (1.0 + within_pct / 100.0)
    close = [c.lr for c in configs if c.steps <= limit]
    lr_within = (min(close), max(close))
  settled_lrs = sorted({c.lr for c in configs})
  return BatchSummary(
    batch_size=batch_sizes.pop(),
    n_trials=len(outcomes),
    n_missing=sum(
      not o.settled and o.trial.status in (STATUS_MISSING, STATUS_RUNNING) for o in outcomes
    ),
    n_reached=sum(o.reached for o in outcomes),
    n_diverged=sum(o.trial.diverged for o in outcomes),
    best_trial_id=None if best is None else best.best_trial_id,
    best_lr=None if best is None else best.lr,
    best_params=None if best is None else best.params,
    best_steps=None if best is None else best.steps,
    best_examples=None if best is None else best.steps * best.batch_size,
    lr_within=lr_within,
    largest_stable_lr=stable_lrs[-1] if stable_lrs else None,
    smallest_diverged_lr=diverged_lrs[0] if diverged_lrs else None,
    best_lr_at_grid_edge=best is not None
    and len(settled_lrs) > 1
    and best.lr in (settled_lrs[0], settled_lrs[-1]),
    lrs=tuple(tried),
  )


def by_batch_size(outcomes: Iterable[TrialOutcome]) -> dict[int, list[TrialOutcome]]:
  """Group outcomes by batch size, keys ascending."""
  groups: dict[int, list[TrialOutcome]] = defaultdict(list)
  for o in outcomes:
    groups[o.trial.batch_size].append(o)
  return dict(sorted(groups.items()))


def summarize_batches(
  outcomes: Iterable[TrialOutcome],
  *,
  within_pct: float = 10.0,
  point_steps: PointSteps = seed_median,
) -> list[BatchSummary]:
  """:func:`summarize_batch` for every batch size, ascending."""
  return [
    summarize_batch(g, within_pct=within_pct, point_steps=point_steps)
    for g in by_batch_size(outcomes).values()
  ]


def _bootstrap_one_batch(
  outcomes: Sequence[TrialOutcome],
  *,
  n_bootstrap: int,
  rng: np.random.Generator,
  point_steps: PointSteps = seed_median,
) -> np.ndarray:
  """Resampled best steps of one batch size, shape ``(n_bootstrap,)``.

  Seeds are resampled with replacement within each (lr, params) point, the
  point steps recomputed (``point_steps``) and the best point taken,
  mirroring :func:`best_config`. When no point has a second seed, that
  resampling would be a no-op, so points are resampled across the whole
  batch size instead (the best point is then the best drawn one).
  """
  groups = list(_group(o for o in outcomes if o.settled).values())
  if not groups:
    return np.full(n_bootstrap, np.inf)
  if max(len(g) for g in groups) < 2:
    pool = np.concatenate([point_steps(g, np.arange(len(g))[None]) for g in groups])
    draws = pool[rng.integers(0, len(pool), size=(n_bootstrap, len(pool)))]
    return draws.min(axis=1)
  steps = [point_steps(g, rng.integers(0, len(g), size=(n_bootstrap, len(g)))) for g in groups]
  return np.min(np.stack(steps, axis=1), axis=1)


def bootstrap_best_steps(
  outcomes: Iterable[TrialOutcome],
  *,
  n_bootstrap: int = 200,
  rng: np.random.Generator | None = None,
  point_steps: PointSteps = seed_median,
) -> dict[int, np.ndarray]:
  """Bootstrap samples of the best steps to result per batch size.

  Args:
    outcomes: Outcomes of all trials.
    n_bootstrap: Number of resamples.
    rng: Random generator (seeded by the caller for reproducibility).
    point_steps: How a point's steps come from its seeds (default: median).

  Returns:
    ``{batch_size: array (n_bootstrap,)}``; ``inf`` where a resample has no
    point reaching the target.
  """
  rng = np.random.default_rng(0) if rng is None else rng
  return {
    b: _bootstrap_one_batch(g, n_bootstrap=n_bootstrap, rng=rng, point_steps=point_steps)
    for b, g in by_batch_size(outcomes).items()
  }


def seeds_per_point(outcomes: Iterable[TrialOutcome]) -> dict[int, int]:
  """Median number of settled seeds per (lr, params) point, per batch size."""
  counts: dict[int, list[int]] = defaultdict(list)
  for c in config_results(outcomes):
    counts[c.batch_size].append(len(c.trial_ids))
  return {b: int(np.median(v)) for b, v in sorted(counts.items())}


def selection_bias_log(sample: np.ndarray, best_steps: float, n_seeds: int) -> float:
  """Bootstrap estimate of the bias of ``log`` best steps (the winner's curse).

  Taking the fewest-steps point among several noisy lrs biases the best
  steps low. The bootstrap bias estimate (Efron & Tibshirani 1993, "An
  Introduction to the Bootstrap", Sec. 10.2) is ``mean(log S*) - log S`` over
  the resamples ``S*`` of :func:`bootstrap_best_steps`. Resampling ``n``
  seeds with replacement shrinks the variance of a point's mean by
  ``(n - 1) / n``, so the noise driving the curse, and with it the bias (of
  order the noise sd), is under-reproduced by ``sqrt((n - 1) / n)``; the
  estimate is scaled back by ``sqrt(n / (n - 1))`` (``n = 1``: the trials are
  resampled across lrs instead and no scaling applies).

  Returns:
    The estimated bias (<= 0 typically); 0 when fewer than 10 resamples reached.
  """
  finite = sample[np.isfinite(sample) & (sample > 0)]
  if len(finite) < 10 or not best_steps or best_steps <= 0:
    return 0.0
  scale = math.sqrt(n_seeds / (n_seeds - 1)) if n_seeds >= 2 else 1.0
  return scale * float(np.mean(np.log(finite)) - math.log(best_steps))
