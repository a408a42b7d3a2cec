"""The steps curve fitted to the per-batch-size results, with its intervals.

The steps curve (McCandlish et al. 2018, "An Empirical Model of Large-Batch
  Training", Eq. 2.11): ``S(B) = S_min (1 + B_crit / B)``, equivalently
  ``E(B) = E_min (1 + B / B_crit)`` with ``E_min = S_min * B_crit``; fitted by
  least squares on ``log S`` so that every batch size weighs the same whatever
  its step count.

Regimes from this curve: :mod:`lrscale.analysis.regimes`; the optimal-lr law:
:mod:`lrscale.analysis.lr_fits`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

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


def validated_points(
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
    validated_points(b, row)
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
  b, s = validated_points(batch_sizes, steps)
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
