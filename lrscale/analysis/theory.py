"""Exact expected dynamics of minibatch SGD on Gaussian linear regression.

The known-answer problem of the study machinery: features ``x ~ N(0, diag(h))``
with ``h_i = i^-alpha`` (i = 1..dim), teacher ``w*_i = i^-teacher_power``,
``y = w*.x + noise eps``, loss ``(w.x - y)^2 / 2``, plain SGD from ``w = 0``
with learning rate ``a`` and batch ``B``. In the eigenbasis the second moments
``m_i = E[(w_i - w*_i)^2]`` obey exactly (Gaussian fourth moments
``E[x_i^2 x_j^2] = h_i h_j (1 + 2 [i = j])``; cf. Bordelon & Pehlevan 2022,
Paquette et al. 2021)::

    m_i <- m_i (1 - 2 a h_i + a^2 (1 + 1/B) h_i^2) + (a^2 / B) h_i (sum_j h_j m_j + noise^2)

and the expected excess risk is ``R = sum_i h_i m_i / 2``. The off-diagonal
moments start at zero (``w = 0`` gives ``m_i = w*_i^2`` and a rank-one
``E[(w - w*)(w - w*)^T]``, but only the diagonal enters ``R`` and the diagonal
recursion is closed), so this is the exact expected risk curve, not an
approximation. ``relative excess = R_t / R_0``.

From the curves: steps to a relative-excess target per (B, lr), the best lr
per B over a grid, and the exact ``S*(B)`` with its McCandlish fit
(:func:`lrscale.analysis.fits.fit_steps_curve`). Everything is float64 numpy,
vectorised over batch sizes and learning rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lrscale.analysis import fits
from lrscale.data.linreg_spec import LinregSpec

# A curve whose relative excess passes this has left any basin it could return from.
DIVERGED_RELATIVE_EXCESS = 1e6


def _grid(batch_sizes: Sequence[float], lrs: np.ndarray | Sequence[float]) -> np.ndarray:
  """Learning rates as ``(n_batch, n_lr)``: one shared grid, or one row per batch size.

  Rows may be padded with NaN (ragged per-B grids); a NaN lr never reaches.
  """
  lr = np.asarray(lrs, dtype=np.float64)
  if lr.ndim == 1:
    lr = np.broadcast_to(lr, (len(batch_sizes), lr.size))
  if lr.ndim != 2 or lr.shape[0] != len(batch_sizes):
    raise ValueError(f"lrs must be (n_lr,) or (n_batch={len(batch_sizes)}, n_lr); got {lr.shape}")
  return lr


def _run(
  problem: LinregSpec,
  batch_sizes: Sequence[float],
  lrs: np.ndarray | Sequence[float],
  steps: int,
  target: float | None,
  initial: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
  """Iterate the moment recursion for every (B, lr) at once, from ``m = initial``.

  The (B, lr) pairs are flattened into rows; with a target, rows that have
  reached it or diverged are dropped every few steps, so a grid whose slow
  lrs never reach costs only what its live rows cost.

  Returns:
    ``(curves, first)``: relative excess of shape ``(n_batch, n_lr, steps + 1)``
    when ``target`` is ``None`` (else ``None``), and the first step whose
    relative excess is ``<= target`` (``inf`` where never within ``steps`` or
    diverged; all ``inf`` when ``target`` is ``None``).
  """
  grid = _grid(batch_sizes, lrs)
  shape = grid.shape
  a = grid.reshape(-1, 1)
  b = np.repeat(np.asarray(batch_sizes, dtype=np.float64), shape[1])[:, None]
  valid = np.isfinite(a[:, 0])
  h, noise2, r0 = problem.spectrum, float(problem.noise) ** 2, problem.initial_excess
  # Per-step constants of the linear map m -> m * decay + gain * (h . m + noise^2).
  decay = 1.0 - 2.0 * a * h + a**2 * (1.0 + 1.0 / b) * h**2
  gain = a**2 / b * h
  m0 = problem.teacher**2 if initial is None else np.asarray(initial, np.float64)
  m = np.broadcast_to(m0, decay.shape).copy()
  first = np.full(len(a), np.inf)
  curves = None if target is not None else np.full((len(a), steps + 1), np.nan)
  if curves is not None:
    curves[valid, 0] = 0.5 * (m0 @ h) / r0
  rows = np.flatnonzero(valid)
  decay, gain, m = decay[rows], gain[rows], m[rows]
  done = np.zeros(len(rows), dtype=bool)
  with np.errstate(over="ignore", invalid="ignore"):
    for t in range(1, steps + 1):
      m = m * decay + gain * (m @ h + noise2)[:, None]
      rel = 0.5 * (m @ h) / r0
      if curves is not None:
        curves[rows, t] = rel
        continue
      hit = ~done & (rel <= target)
      first[rows[hit]] = t
      done |= hit | ~(rel < DIVERGED_RELATIVE_EXCESS)
      if t % 16 == 0 or done.all():
        keep = ~done
        rows, decay, gain, m, done = rows[keep], decay[keep], gain[keep], m[keep], done[keep]
        if not len(rows):
          break
  return (None if curves is None else curves.reshape(*shape, steps + 1)), first.reshape(shape)


def risk_curves(
  problem: LinregSpec,
  batch_sizes: Sequence[float],
  lrs: np.ndarray | Sequence[float],
  steps: int,
  *,
  initial: np.ndarray | None = None,
) -> np.ndarray:
  """Expected relative excess risk ``R_t / R_0`` for t = 0..steps.

  ``R_0`` is always the risk at ``w = 0``, so curves from different starts
  share one scale (the metric ``eval_relative_excess``).

  Args:
    problem: The regression problem.
    batch_sizes: Batch sizes, length ``n_batch``.
    lrs: Shared grid ``(n_lr,)`` or per-B grids ``(n_batch, n_lr)`` (NaN pads).
    steps: Number of SGD steps.
    initial: ``m_i = (w_i - w*_i)^2`` at step 0 (default ``w = 0``: ``w*^2``).
      From a known ``w`` the recursion is still exact: the diagonal moments'
      update involves only the diagonal, whatever the off-diagonal terms.

  Returns:
    Array ``(n_batch, n_lr, steps + 1)``; NaN where the lr is NaN.
  """
  curves, _ = _run(problem, batch_sizes, lrs, int(steps), None, initial)
  assert curves is not None
  return curves


def steps_to_target(
  problem: LinregSpec,
  batch_sizes: Sequence[float],
  lrs: np.ndarray | Sequence[float],
  target_rel: float,
  *,
  max_steps: int = 5000,
) -> np.ndarray:
  """First step t with ``R_t / R_0 <= target_rel`` for every (B, lr).

  Returns:
    Array ``(n_batch, n_lr)``; ``inf`` where the target is not met within
    ``max_steps`` or the curve diverges first.
  """
  if not 0.0 < target_rel < 1.0:
    raise ValueError(f"target_rel={target_rel}: must lie in (0, 1) (relative to w = 0)")
  return _run(problem, batch_sizes, lrs, int(max_steps), float(target_rel))[1]


def sqrt2_grid(k_lo: int = -16, k_hi: int = 4) -> np.ndarray:
  """The reference lr grid ``2^(k/2)`` for integer k in ``[k_lo, k_hi]`` (anchored at lr = 1)."""
  return 2.0 ** (np.arange(k_lo, k_hi + 1) / 2.0)


def best_over_grid(
  problem: LinregSpec,
  batch_sizes: Sequence[float],
  lrs: np.ndarray | Sequence[float],
  target_rel: float,
  *,
  max_steps: int = 5000,
) -> dict[str, np.ndarray]:
  """Fewest steps per batch size over the lr grid (ties to the lower lr, as the analysis).

  Returns:
    ``{"steps": (n_batch,), "best_lr": (n_batch,), "best_lr_at_grid_edge": (n_batch,)}``;
    steps ``inf`` and best lr NaN where no lr reaches the target.
  """
  grid = _grid(batch_sizes, lrs)
  steps = steps_to_target(problem, batch_sizes, grid, target_rel, max_steps=max_steps)
  # Sort each row by lr so argmin's first-index rule breaks ties towards the lower lr.
  order = np.argsort(np.where(np.isfinite(grid), grid, np.inf), axis=1)
  grid_s = np.take_along_axis(grid, order, axis=1)
  steps_s = np.take_along_axis(steps, order, axis=1)
  i = np.argmin(steps_s, axis=1)
  rows = np.arange(len(grid))
  best = steps_s[rows, i]
  n_lr = np.sum(np.isfinite(grid_s), axis=1)
  return {
    "steps": best,
    "best_lr": np.where(np.isfinite(best), grid_s[rows, i], np.nan),
    "best_lr_at_grid_edge": np.isfinite(best) & ((i == 0) | (i == n_lr - 1)),
  }


def exact_steps_curve(
  problem: LinregSpec,
  batch_sizes: Sequence[float],
  lrs: np.ndarray | Sequence[float],
  target_rel: float,
  *,
  max_steps: int = 5000,
) -> dict[str, Any]:
  """The exact best-lr ``S*(B)`` and its fit ``S_min (1 + B_crit / B)``.

  The fit uses exactly the analysis' fit (:func:`fits.fit_steps_curve`, least
  squares on log S) over the batch sizes that reach the target, so exact and
  measured fits differ only by the measurement, never by the method.

  Returns:
    ``{"batch_sizes", "steps", "best_lr", "best_lr_at_grid_edge", "fit"}``
    with ``fit = {"s_min", "b_crit", "e_min", "rmse_log"}`` or ``None`` with
    fewer than 3 reaching batch sizes.
  """
  best = best_over_grid(problem, batch_sizes, lrs, target_rel, max_steps=max_steps)
  b = np.asarray(batch_sizes, dtype=np.float64)
  ok = np.isfinite(best["steps"])
  fit = None
  if len(np.unique(b[ok])) >= 3:
    f = fits.fit_steps_curve(b[ok], best["steps"][ok])
    fit = {"s_min": f.s_min, "b_crit": f.b_crit, "e_min": f.e_min, "rmse_log": f.rmse_log}
  return {
    "batch_sizes": [float(x) for x in b],
    "steps": [float(x) for x in best["steps"]],
    "best_lr": [float(x) for x in best["best_lr"]],
    "best_lr_at_grid_edge": [bool(x) for x in best["best_lr_at_grid_edge"]],
    "fit": fit,
  }
