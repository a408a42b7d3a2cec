"""Confidence intervals for the steps-curve fit that cover at their nominal level.

See :func:`profile_steps_intervals`; tests/test_coverage.py measures the
coverage on synthetic studies with known S_min and B_crit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lrscale.analysis.fits import _profile_sse, fit_steps_curve, validated_points


def _min_over_log_b_crit(
  model: Any, rows: int, b: np.ndarray, log_s: np.ndarray, lo: float, hi: float
) -> np.ndarray:
  """``min over log B_crit in [lo, hi]`` of the SSE of ``model(x) = (rows, k, n)`` predictions.

  Used to profile out B_crit with another parameter held at each of ``rows``
  candidate values; vectorised zooming grid as in :func:`_fit_log_b_crit`
  (the SSE in log B_crit is unimodal for the profiles used here).
  """
  centre = np.full(rows, 0.5 * (lo + hi))
  half = 0.5 * (hi - lo)
  sse = lambda x: np.sum((log_s - model(x)) ** 2, axis=-1)  # noqa: E731
  for _ in range(6):
    grid = np.clip(centre[:, None] + np.linspace(-half, half, 33)[None, :], lo, hi)
    centre = grid[np.arange(rows), np.argmin(sse(grid), axis=1)]
    half *= 2.0 / 32.0 * 2.0
  return sse(centre[:, None])[:, 0]


def _crossings(grid: np.ndarray, excess: Any, at: int) -> tuple[float | None, float | None]:
  """Where ``excess(values)`` (<= 0 inside, minimum near ``grid[at]``) turns positive each side.

  The grid brackets each crossing; ``scipy.optimize.brentq`` then solves it
  to 1e-10 (a grid coarser than the interval would otherwise shrink it).
  ``None`` on a side that never turns positive on the grid (the interval
  runs into the search bound).
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top

  values = excess(grid)
  scalar = lambda v: float(excess(np.array([v]))[0])  # noqa: E731
  out: list[float | None] = []
  for side in (-1, 1):
    idx = np.arange(at, -1, -1) if side < 0 else np.arange(at, len(grid))
    pos = np.flatnonzero(values[idx] > 0)
    if not len(pos) or pos[0] == 0:
      out.append(None if not len(pos) else float(grid[at]))
      continue
    j, k = idx[pos[0] - 1], idx[pos[0]]
    out.append(float(optimize.brentq(scalar, grid[j], grid[k], xtol=1e-10)))
  return out[0], out[1]


def profile_steps_intervals(
  batch_sizes: Sequence[float], steps: Sequence[float], *, level: float = 0.9
) -> dict[str, Any]:
  """Profile-likelihood (F-based) intervals for S_min, B_crit and E_min.

  Model: ``log S_b = log S_min + log(1 + B_crit / B_b) + e_b`` with
  ``e_b ~ N(0, sigma^2)`` independent across the ``n`` batch sizes. The noise
  of a best-steps point (seed noise, the lr grid's distance to the optimum,
  the winner's curse of picking the best of several noisy lrs) is estimated
  from the scatter about the fitted curve, pooled across batch sizes:
  ``s^2 = SSE_min / (n - 2)``. For one parameter ``theta`` the interval is
  the set where the profiled SSE stays within

      SSE_p(theta) <= SSE_min (1 + F_{1, n-2}(level) / (n - 2))

  (Bates & Watts 1988, "Nonlinear Regression Analysis", Sec. 6.1, the
  profile-t interval). ``F_{1, n-2}`` rather than ``chi^2_1`` is the
  small-sample correction for estimating ``sigma`` from ``n - 2`` degrees of
  freedom (6 batch sizes: F = 4.54 against chi^2 = 2.71). Resampling seeds
  within each point cannot express this noise with 2 seeds per point, and
  misses the lr-grid and selection parts entirely. ``E_min = S_min B_crit``
  is profiled the same way on ``log E_min = log S_min + log B_crit``.

  An end that would pass the search bound of B_crit (``[1e-3 min B, 1e3
  max B]``) is ``None``: the data do not bound it on that side.

  Args:
    batch_sizes: Batch sizes (>= 3 distinct; with exactly 3 there is one
      degree of freedom and the interval is very wide, as it should be).
    steps: Best steps to result per batch size.
    level: Two-sided coverage.

  Returns:
    ``{"method", "level", "dof", "sigma_log", "s_min": [lo, hi], "b_crit":
    [lo, hi], "e_min": [lo, hi]}``.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top

  b, s = validated_points(batch_sizes, steps)
  if len(np.unique(b)) < 3:
    raise ValueError("need at least 3 distinct batch sizes to fit S_min and B_crit")
  log_s = np.log(s)
  lo, hi = math.log(1e-3 * b.min()), math.log(1e3 * b.max())
  fit = fit_steps_curve(b, s)
  x_hat, c_hat = math.log(fit.b_crit), math.log(fit.s_min)
  dof = len(b) - 2
  sse_min = float(np.sum((c_hat + np.log1p(fit.b_crit / b) - log_s) ** 2))
  # A perfect fit (noiseless data) would give a zero-width interval; a floor of 1e-12 per
  # point in log S keeps the arithmetic finite and the interval at the fit.
  sse_min = max(sse_min, 1e-12 * len(b))
  limit = sse_min * (1.0 + stats.f.ppf(level, 1, dof) / dof)
  out: dict[str, Any] = {
    "method": "profile likelihood, F(1, n-2) threshold on log-S residuals pooled across B",
    "level": level,
    "dof": dof,
    "sigma_log": math.sqrt(sse_min / dof),
  }
  # B_crit: SSE profiled over S_min analytically.
  gx = np.unique(np.concatenate([np.linspace(lo, hi, 2001), [x_hat]]))
  x_lo, x_hi = _crossings(
    gx,
    lambda v: _profile_sse(v, b, log_s[None, :])[0] - limit,
    int(np.argmin(np.abs(gx - x_hat))),
  )
  out["b_crit"] = [
    None if x_lo is None else math.exp(x_lo),
    None if x_hi is None else math.exp(x_hi),
  ]
  # S_min (c = log S_min held) and E_min (log E_min = c + x held): B_crit profiled out.
  # S_min is bounded by the data (S_min <= min S as B_crit -> 0), so a window of many
  # sigmas in log S is wide enough; an end reaching the window edge is reported as None.
  span = max(3.0, 20.0 * out["sigma_log"])
  shape = lambda x: np.log1p(np.exp(x)[..., None] / b)  # noqa: E731
  for name, centre, model in (
    ("s_min", c_hat, lambda v: lambda x: v[:, None, None] + shape(x)),
    ("e_min", c_hat + x_hat, lambda v: lambda x: v[:, None, None] - x[..., None] + shape(x)),
  ):
    grid = np.unique(np.concatenate([centre + np.linspace(-span, span, 401), [centre]]))
    v_lo, v_hi = _crossings(
      grid,
      lambda v, m=model: _min_over_log_b_crit(m(v), len(v), b, log_s, lo, hi) - limit,
      int(np.argmin(np.abs(grid - centre))),
    )
    out[name] = [None if v is None else math.exp(v) for v in (v_lo, v_hi)]
  return out
