"""CBS(t) from branch losses: the largest multiplier within tolerance, and its spread over seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def critical_multiplier(losses: Mapping[int, float], tolerance: float) -> int:
  """The largest k such that every branch k' <= k ends within ``tolerance`` of k = 1.

  Merrill et al. 2025 call a batch "critical" while the loss after a fixed
  number of tokens stays within a tolerance (0.01) of the small-batch branch.
  Requiring every smaller k to pass too keeps one lucky large batch from
  jumping over a failed one; a diverged (non-finite) branch fails.

  Args:
    losses: k -> the metric after the branch (lower is better); must hold k = 1.
    tolerance: allowed excess over the k = 1 loss.
  """
  if 1 not in losses or not math.isfinite(losses[1]):
    raise ValueError("the k = 1 branch is missing or diverged; CBS is undefined there.")
  best = 1
  for k in sorted(losses):
    loss = losses[k]
    if not (math.isfinite(loss) and loss <= losses[1] + tolerance):
      break
    best = k
  return best


def summarize(values: Sequence[float]) -> dict[str, float]:
  """Median and [min, max] over seeds (with few seeds the honest interval is the range)."""
  a = np.asarray(values, float)
  return dict(median=float(np.median(a)), lo=float(a.min()), hi=float(a.max()), n=int(a.size))


def b_simple_at(rows: Sequence[Mapping[str, float]], step: int) -> float | None:
  """The reference's logged B_simple (gns_b_simple) at the last log step <= ``step``."""
  found = [r for r in rows if "gns_b_simple" in r and r["step"] <= step]
  if not found:
    return None
  value = max(found, key=lambda r: r["step"])["gns_b_simple"]
  return float(value) if math.isfinite(value) else None
