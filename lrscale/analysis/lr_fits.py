"""The optimal learning rate against the batch size.

``lr*(B) = c B^alpha`` up to a saturation batch, flat (``max_lr``) after it,
chosen over a plain power law by BIC; and the linear / square-root rules'
predictions beside it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lrscale.analysis import fits

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
  b, lr = fits.validated_points(batch_sizes, best_lrs)
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
  b, lr = fits.validated_points(batch_sizes, best_lrs)
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
