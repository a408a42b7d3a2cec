"""Fits on the per-batch-size results: steps curve, regimes, optimal-lr law.

* Steps curve (McCandlish et al. 2018, "An Empirical Model of Large-Batch
  Training", Eq. 2.11): ``S(B) = S_min (1 + B_crit / B)``, equivalently
  ``E(B) = E_min (1 + B / B_crit)`` with ``E_min = S_min * B_crit``; fitted by
  least squares on ``log S`` so that every batch size weighs the same whatever
  its step count.
* Regimes (Shallue et al. 2018): local slope of ``log S`` against ``log B``;
  perfect scaling near -1, maximal data parallelism near 0, diminishing
  returns in between. On the fitted curve the slope is ``-B_crit / (B + B_crit)``.
* Optimal learning rate: ``lr*(B) = c B^alpha`` up to a saturation batch, flat
  (``max_lr``) after it, chosen over a plain power law by BIC.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PERFECT = "perfect_scaling"
DIMINISHING = "diminishing_returns"
MAXIMAL = "maximal_data_parallelism"


# --------------------------------------------------------------------------- steps curve


@dataclasses.dataclass(frozen=True)
class ScalingFit:
  """Fitted ``S(B) = S_min (1 + B_crit / B)``.

  Attributes:
    s_min: Minimum steps to result (B -> infinity).
    b_crit: Critical batch size, ``E_min / S_min``.
    e_min: Minimum examples to result (B -> 0), ``S_min * B_crit``.
    rmse_log: Root mean square residual of ``log S``.
    b_crit_at_bound: The optimum sits on the search bound for B_crit, i.e.
      the data show no curvature (all perfect scaling or all flat).
  """

  s_min: float
  b_crit: float
  e_min: float
  rmse_log: float
  b_crit_at_bound: bool = False


def steps_model(batch_size: np.ndarray | float, s_min: float, b_crit: float) -> np.ndarray:
  """``S(B) = S_min (1 + B_crit / B)`` (McCandlish et al. 2018)."""
  return s_min * (1.0 + b_crit / np.asarray(batch_size, dtype=float))


def examples_model(batch_size: np.ndarray | float, s_min: float, b_crit: float) -> np.ndarray:
  """``E(B) = E_min (1 + B / B_crit)`` with ``E_min = S_min B_crit``."""
  return s_min * b_crit * (1.0 + np.asarray(batch_size, dtype=float) / b_crit)


def _validated(
  batch_sizes: Sequence[float], values: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
  b, v = np.asarray(batch_sizes, dtype=float), np.asarray(values, dtype=float)
  if b.shape != v.shape or b.ndim != 1:
    raise ValueError("batch_sizes and values must be 1-D and the same length")
  if not (np.all(np.isfinite(v)) and np.all(v > 0) and np.all(b > 0)):
    raise ValueError("batch sizes and values must be finite and positive")
  return b, v


def _profile_sse(
  log_b_crit: np.ndarray, b: np.ndarray, log_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """SSE and optimal ``log S_min`` for candidate ``log B_crit`` values.

  For fixed B_crit the model is ``log S = log S_min + f(B)``, so the best
  ``log S_min`` is the mean of ``log S - f(B)``: the 2-D fit reduces to 1-D.

  Args:
    log_b_crit: Candidates, shape ``(..., k)``.
    b: Batch sizes, shape ``(n,)``.
    log_s: Log steps, shape ``(..., 1, n)`` broadcastable against the candidates.

  Returns:
    ``(sse, log_s_min)``, each of shape ``(..., k)``.
  """
  shape = np.log1p(np.exp(log_b_crit)[..., None] / b)
  log_s_min = np.mean(log_s - shape, axis=-1)
  sse = np.sum((log_s - shape - log_s_min[..., None]) ** 2, axis=-1)
  return sse, log_s_min


def _fit_log_b_crit(b: np.ndarray, log_s: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Global minimiser of the profiled SSE over ``[lo, hi]`` for each row of ``log_s``.

  A dense grid, then repeated zooms around the best point (vectorised over
  rows so a few hundred bootstrap refits cost milliseconds); the final
  bracket is ~1e-7 wide in log B_crit.
  """
  rows = log_s[:, None, :]
  centre = np.full(len(log_s), 0.5 * (lo + hi))
  half = 0.5 * (hi - lo)
  for _ in range(6):
    grid = np.clip(centre[:, None] + np.linspace(-half, half, 65)[None, :], lo, hi)
    best = np.argmin(_profile_sse(grid, b, rows)[0], axis=1)
    centre = grid[np.arange(len(grid)), best]
    half *= 2.0 / 64.0 * 2.0
  return centre


def fit_steps_curves(batch_sizes: Sequence[float], steps: np.ndarray) -> list[ScalingFit]:
  """Least-squares fits of ``log S = log S_min + log(1 + B_crit / B)``, one per row.

  ``S_min`` is profiled out analytically (:func:`_profile_sse`) and the 1-D
  problem in ``log B_crit`` is solved globally by zooming grids
  (:func:`_fit_log_b_crit`). B_crit is bounded to ``[1e-3 min B, 1e3 max B]``
  because outside the measured range it is not identified.

  Args:
    batch_sizes: Batch sizes (>= 3 distinct), shape ``(n,)``.
    steps: Best steps to result, shape ``(m, n)``; every entry finite and > 0.

  Returns:
    ``m`` :class:`ScalingFit` objects.

  Raises:
    ValueError: on fewer than 3 distinct batch sizes or non-positive values.
  """
  b = np.asarray(batch_sizes, dtype=float)
  s = np.atleast_2d(np.asarray(steps, dtype=float))
  for row in s:
    _validated(b, row)
  if len(np.unique(b)) < 3:
    raise ValueError("need at least 3 distinct batch sizes to fit S_min and B_crit")
  log_s = np.log(s)
  lo, hi = math.log(1e-3 * b.min()), math.log(1e3 * b.max())
  x = _fit_log_b_crit(b, log_s, lo, hi)
  sse, log_s_min = _profile_sse(x[:, None], b, log_s[:, None, :])
  fits = []
  for xi, e, ls in zip(x, sse[:, 0], log_s_min[:, 0]):
    s_min, b_crit = float(np.exp(ls)), float(np.exp(xi))
    fits.append(
      ScalingFit(
        s_min=s_min,
        b_crit=b_crit,
        e_min=s_min * b_crit,
        rmse_log=float(np.sqrt(e / len(b))),
        b_crit_at_bound=bool(min(xi - lo, hi - xi) < 1e-3 * (hi - lo)),
      )
    )
  return fits


def fit_steps_curve(batch_sizes: Sequence[float], steps: Sequence[float]) -> ScalingFit:
  """Fit ``S(B) = S_min (1 + B_crit / B)`` to one set of best steps.

  The global grid solution of :func:`fit_steps_curves` is polished with
  ``scipy.optimize.least_squares`` on ``(log S_min, log B_crit)``, which
  also confirms it is a stationary point of the full 2-parameter problem.

  Args:
    batch_sizes: Batch sizes (>= 3 distinct).
    steps: Best steps to result at each batch size.

  Returns:
    A :class:`ScalingFit`.

  Raises:
    ValueError: on fewer than 3 distinct batch sizes or non-positive values.
  """
  b, s = _validated(batch_sizes, steps)
  start = fit_steps_curves(b, s[None, :])[0]
  lo, hi = math.log(1e-3 * b.min()), math.log(1e3 * b.max())
  x0 = np.array([math.log(start.s_min), min(max(math.log(start.b_crit), lo), hi)])
  from scipy import optimize  # pylint: disable=g-import-not-at-top  (~1 s import)

  res = optimize.least_squares(
    lambda p: p[0] + np.log1p(np.exp(p[1]) / b) - np.log(s),
    x0,
    bounds=([-np.inf, lo], [np.inf, hi]),
  )
  rmse = float(np.sqrt(np.mean(res.fun**2)))
  if rmse > start.rmse_log:
    return start
  s_min, b_crit = float(np.exp(res.x[0])), float(np.exp(res.x[1]))
  return dataclasses.replace(start, s_min=s_min, b_crit=b_crit, e_min=s_min * b_crit, rmse_log=rmse)


def bootstrap_steps_fit(
  batch_sizes: Sequence[float], samples: np.ndarray, *, level: float = 0.9
) -> dict[str, Any]:
  """Percentile bootstrap confidence intervals for S_min, B_crit, E_min.

  Args:
    batch_sizes: Batch sizes, length ``n``.
    samples: Resampled best steps, shape ``(n_bootstrap, n)``; a row with a
      non-finite entry (a resample where some batch size never reached the
      target) is skipped.
    level: Two-sided coverage of the percentile interval.

  Returns:
    ``{"level", "n_ok", "s_min": [lo, hi], "b_crit": [lo, hi], "e_min": [lo, hi]}``;
    intervals are ``None`` when fewer than 10 resamples could be fitted.
  """
  samples = np.atleast_2d(np.asarray(samples, dtype=float))
  ok = samples[np.all(np.isfinite(samples) & (samples > 0), axis=1)]
  fits = fit_steps_curves(batch_sizes, ok) if len(ok) else []
  q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
  out: dict[str, Any] = {"level": level, "n_ok": len(fits)}
  for name in ("s_min", "b_crit", "e_min"):
    vals = np.array([getattr(f, name) for f in fits])
    out[name] = [float(v) for v in np.percentile(vals, q)] if len(vals) >= 10 else None
  return out


# --------------------------------------------------------------------------- regimes


@dataclasses.dataclass(frozen=True)
class RegimeInterval:
  """Measured local slope between two consecutive batch sizes."""

  b_lo: float
  b_hi: float
  slope: float
  regime: str


def classify_slope(
  slope: float, *, perfect_slope: float = -0.8, maximal_slope: float = -0.1
) -> str:
  """Regime of a local slope d log S / d log B (Shallue et al. 2018).

  ``slope <= perfect_slope`` is perfect scaling, ``slope > maximal_slope``
  maximal data parallelism, anything between diminishing returns.
  """
  if slope <= perfect_slope:
    return PERFECT
  if slope > maximal_slope:
    return MAXIMAL
  return DIMINISHING


def regime_intervals(
  batch_sizes: Sequence[float],
  steps: Sequence[float],
  *,
  perfect_slope: float = -0.8,
  maximal_slope: float = -0.1,
) -> list[RegimeInterval]:
  """Local slopes ``Δlog S / Δlog B`` between consecutive batch sizes, classified."""
  b, s = _validated(batch_sizes, steps)
  order = np.argsort(b)
  b, s = b[order], s[order]
  slopes = np.diff(np.log(s)) / np.diff(np.log(b))
  return [
    RegimeInterval(
      float(b[i]),
      float(b[i + 1]),
      float(k),
      classify_slope(float(k), perfect_slope=perfect_slope, maximal_slope=maximal_slope),
    )
    for i, k in enumerate(slopes)
  ]


def batch_at_fitted_slope(b_crit: float, slope: float) -> float:
  """B where the fitted curve's slope ``-B_crit/(B + B_crit)`` equals ``slope`` (in (-1, 0))."""
  if not -1.0 < slope < 0.0:
    raise ValueError("slope must lie in (-1, 0)")
  return b_crit * (-1.0 / slope - 1.0)


def largest_useful_batch(
  intervals: Sequence[RegimeInterval], fit: ScalingFit | None, *, maximal_slope: float = -0.1
) -> dict[str, Any]:
  """Largest batch size that still buys a meaningful reduction in steps.

  Definition used here: the batch size at which the local slope of
  ``log S`` vs ``log B`` rises above ``maximal_slope`` (default -0.1: a
  doubling of B then saves < 7% of the steps), i.e. where maximal data
  parallelism starts.

  * ``fitted``: on the fitted curve, ``B = B_crit (1/|maximal_slope| - 1)``
    (``9 B_crit`` by default, where ``S = 1.11 S_min``).
  * ``measured``: the lower end of the flat tail, i.e. of the run of
    maximal-data-parallelism intervals that reaches the largest measured B
    (a flat pair among small batches, from noise or an lr grid that missed
    the optimum there, is not where larger batches stop paying off); the
    largest measured B if the last interval is not flat (``within_grid`` false).
  """
  measured, within_grid = None, False
  for iv in reversed(intervals):
    if iv.regime != MAXIMAL:
      break
    measured, within_grid = iv.b_lo, True
  if measured is None and intervals:
    measured = intervals[-1].b_hi
  fitted = None if fit is None else batch_at_fitted_slope(fit.b_crit, maximal_slope)
  return {
    "fitted": fitted,
    "fitted_steps_over_s_min": None if fitted is None else 1.0 + fit.b_crit / fitted,
    "measured": measured,
    "measured_within_grid": within_grid,
    "definition": (
      f"B where d log S / d log B rises above {maximal_slope} (onset of maximal data "
      "parallelism); fitted: B_crit * (1/|slope| - 1)"
    ),
  }


def regimes_summary(
  batch_sizes: Sequence[float],
  steps: Sequence[float],
  fit: ScalingFit | None,
  *,
  perfect_slope: float = -0.8,
  maximal_slope: float = -0.1,
  b_crit_ci: Sequence[float | None] | None = None,
) -> dict[str, Any]:
  """Measured intervals, fitted regime boundaries and the largest useful batch.

  The regimes are read off the fitted curve, whose local slope is
  ``-B_crit / (B + B_crit)``: perfect scaling up to
  ``B = B_crit (1/|perfect_slope| - 1)`` (B_crit / 4 at -0.8), maximal data
  parallelism from ``B = B_crit (1/|maximal_slope| - 1)`` (9 B_crit at -0.1).
  Both are fixed multiples of B_crit, so their intervals are the B_crit
  interval ``b_crit_ci`` times the same factors (a monotone map carries a
  profile interval over exactly). The slopes between consecutive measured
  batch sizes are kept as ``intervals`` for inspection; they are noisy and
  are not used to place the boundaries.
  """
  intervals = (
    regime_intervals(batch_sizes, steps, perfect_slope=perfect_slope, maximal_slope=maximal_slope)
    if len(batch_sizes) >= 2
    else []
  )
  boundaries = None
  if fit is not None:
    factor = {"perfect_until": perfect_slope, "maximal_from": maximal_slope}
    boundaries = {k: batch_at_fitted_slope(fit.b_crit, v) for k, v in factor.items()}
    if b_crit_ci is not None:
      boundaries["ci"] = {
        k: [None if c is None else batch_at_fitted_slope(c, v) for c in b_crit_ci]
        for k, v in factor.items()
      }
  return {
    "thresholds": {"perfect_slope": perfect_slope, "maximal_slope": maximal_slope},
    "intervals": [dataclasses.asdict(iv) for iv in intervals],
    "fitted_boundaries": boundaries,
    "largest_useful_batch": largest_useful_batch(intervals, fit, maximal_slope=maximal_slope),
  }


# --------------------------------------------------------------------------- optimal lr


POWER_LAW = "power_law"
POWER_LAW_THEN_FLAT = "power_law_then_flat"


@dataclasses.dataclass(frozen=True)
class LrFit:
  """``lr*(B) = min(coef * B^exponent, max_lr)``.

  Attributes:
    coef: c, for B counted in examples.
    exponent: alpha.
    max_lr: Saturation lr, ``None`` when the plain power law was preferred.
    saturation_batch: B where the power law meets ``max_lr``.
    model: ``"power_law"`` or ``"power_law_then_flat"``.
    rms_log_residual: RMS residual of ``log lr``.
    n_points: Batch sizes used.
  """

  coef: float
  exponent: float
  max_lr: float | None
  saturation_batch: float | None
  model: str
  rms_log_residual: float
  n_points: int

  def predict(self, batch_size: np.ndarray | float) -> np.ndarray:
    lr = self.coef * np.asarray(batch_size, dtype=float) ** self.exponent
    return lr if self.max_lr is None else np.minimum(lr, self.max_lr)


def _hinge_lstsq(x: np.ndarray, y: np.ndarray, x_break: float) -> tuple[float, float, float]:
  """Least squares of ``y = a + alpha * min(x, x_break)``: returns (a, alpha, sse)."""
  design = np.stack([np.ones_like(x), np.minimum(x, x_break)], axis=1)
  (a, alpha), *_ = np.linalg.lstsq(design, y, rcond=None)
  return float(a), float(alpha), float(np.sum((design @ np.array([a, alpha]) - y) ** 2))


def _bic(sse: float, n: int, k: int) -> float:
  # The floor stops an exact fit (lrs on a grid can align perfectly) from
  # giving -inf and winning regardless of its parameter count.
  return n * math.log(max(sse / n, 1e-6)) + k * math.log(n)


def fit_lr_scaling(
  batch_sizes: Sequence[float], best_lrs: Sequence[float], *, min_flat_points: int = 2
) -> LrFit:
  """Fit the optimal learning rate against batch size in log-log space.

  Two models: ``log lr = log c + alpha log B`` and the continuous hinge
  ``log lr = log c + alpha min(log B, log B_sat)`` (power law, then flat at
  ``max_lr = c B_sat^alpha``). For a fixed breakpoint the hinge is linear
  least squares; the breakpoint is scanned on a fine grid that leaves at
  least 2 batch sizes on the rising side and ``min_flat_points`` on the flat
  side, then polished with ``scipy.optimize.minimize_scalar``. The hinge is
  kept only when its BIC is lower than the plain power law's and it rises
  (alpha > 0).

  Args:
    batch_sizes: Batch sizes (>= 2).
    best_lrs: Best learning rate at each batch size.
    min_flat_points: Batch sizes required beyond the saturation point.

  Returns:
    An :class:`LrFit`.

  Raises:
    ValueError: on fewer than 2 distinct batch sizes.
  """
  b, lr = _validated(batch_sizes, best_lrs)
  order = np.argsort(b)
  x, y = np.log(b[order]), np.log(lr[order])
  n = len(x)
  if len(np.unique(x)) < 2:
    raise ValueError("need at least 2 distinct batch sizes to fit the lr scaling")
  a, alpha, sse = _hinge_lstsq(x, y, x[-1])
  best = LrFit(float(np.exp(a)), alpha, None, None, POWER_LAW, math.sqrt(sse / n), n)
  best_bic = _bic(sse, n, 2)
  if n >= 2 + min_flat_points and x[1] < x[n - min_flat_points]:
    grid = np.linspace(x[1], x[n - min_flat_points], 200)
    sse_grid = np.array([_hinge_lstsq(x, y, xb)[2] for xb in grid])
    i = int(np.argmin(sse_grid))
    # Polish the breakpoint between the grid neighbours (the SSE is smooth there).
    from scipy import optimize  # pylint: disable=g-import-not-at-top

    polish = optimize.minimize_scalar(
      lambda xb: _hinge_lstsq(x, y, xb)[2],
      bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]),
      method="bounded",
      options={"xatol": 1e-10},
    )
    xb = float(polish.x) if polish.fun < sse_grid[i] else float(grid[i])
    a_h, alpha_h, sse_h = _hinge_lstsq(x, y, xb)
    if alpha_h > 0 and _bic(sse_h, n, 3) < best_bic:
      best = LrFit(
        coef=float(np.exp(a_h)),
        exponent=alpha_h,
        max_lr=float(np.exp(a_h + alpha_h * xb)),
        saturation_batch=float(np.exp(xb)),
        model=POWER_LAW_THEN_FLAT,
        rms_log_residual=math.sqrt(sse_h / n),
        n_points=n,
      )
  return best


def rule_predictions(
  batch_sizes: Sequence[float], best_lrs: Sequence[float], exponent: float
) -> dict[str, Any]:
  """lr predicted by ``lr(B) = lr*(B_0) (B / B_0)^exponent`` anchored at the smallest B.

  ``exponent=1`` is the linear rule (Goyal et al. 2017), ``0.5`` the
  square-root rule (Malladi et al. 2022 for Adam-like optimizers).

  Returns:
    ``{"exponent", "lr": [...], "rms_log_error"}`` against the measured best lrs.
  """
  b, lr = _validated(batch_sizes, best_lrs)
  i0 = int(np.argmin(b))
  pred = lr[i0] * (b / b[i0]) ** exponent
  err = float(np.sqrt(np.mean(np.log(pred / lr) ** 2)))
  return {"exponent": exponent, "lr": [float(p) for p in pred], "rms_log_error": err}


def lr_rule_dict(fit: LrFit, study_name: str) -> dict[str, Any]:
  """The ``lr_rule`` block of analysis.json (read by the ``fitted`` scaling rule).

  ``lr(B) = min(coef * B**exponent, max_lr)`` with B in examples; ``max_lr``
  is ``None`` when no saturation was detected.
  """
  return {
    "coef": fit.coef,
    "exponent": fit.exponent,
    "max_lr": fit.max_lr,
    "reference": f"fitted on {study_name}",
  }
