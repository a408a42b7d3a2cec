"""Regimes of data parallelism from the steps-to-result curve (Shallue et al. 2018).

The local slope of ``log S`` against ``log B`` says which regime a pair of
batch sizes is in: perfect scaling near -1, maximal data parallelism near 0,
diminishing returns in between. On the fitted curve of :mod:`lrscale.analysis.fits`
the slope is ``-B_crit / (B + B_crit)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from lrscale.analysis import fits

PERFECT = "perfect_scaling"
DIMINISHING = "diminishing_returns"
MAXIMAL = "maximal_data_parallelism"


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
  b, s = fits.validated_points(batch_sizes, steps)
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
  intervals: Sequence[RegimeInterval], fit: fits.ScalingFit | None, *, maximal_slope: float = -0.1
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
  fit: fits.ScalingFit | None,
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
