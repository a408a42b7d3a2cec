"""The LR range test's arithmetic: ramp, smoothing, divergence and suggestions.

Pure numpy, so every rule is testable on curves made by hand or by a plain
optimizer loop (``lrscale.lr_find.sweep`` runs the model and calls these).

A range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks", section 3.3) trains for ``N`` steps while the lr grows from
``min_lr`` to ``max_lr`` and records the loss at each step. This module turns
one such curve into suggestions, and several curves (seeds) into a
recommendation with its spread:

* **smoothing**: a running median over ``spike_window`` losses centred on each
  step (Tukey's running median), then fastai's bias-corrected EMA
  ``a_t = beta a_{t-1} + (1 - beta) x_t``, ``s_t = a_t / (1 - beta^{t+1})``
  run forward and then backward over the steps before divergence, so the
  curve has no lag (fastai's one-way EMA of 0.98 shows each lr with the loss
  of ~20 steps earlier). The median removes isolated spikes (one or two bad
  batches) that an EMA alone carries for tens of steps and that make fastai,
  Lightning and torch-lr-finder stop early or pick the rebound after the spike;
  ``spike_window=1`` turns it off.
* **divergence**: the first step whose loss is non-finite or whose
  median-smoothed loss exceeds ``factor`` times its best so far (fastai: 4,
  on its EMA). The median has no lag; the EMA of ``beta=0.98`` averages the
  last ~50 steps, so on a 100-step sweep it lets a blow-up run ~20 steps (an
  order of magnitude of lr) before it crosses the threshold, and it never sees
  a classifier that collapses to chance (loss ln C, from a best of ~ln C / 5,
  while the lagging best is ~ln C / 2; measured on digits).
* **suggestions** (on the smoothed curve before divergence, skipping the first
  ``skip_start`` and last ``skip_end`` fractions of the sweep as fastai does):
  ``steepest`` argmin d s / d log lr; ``valley`` fastai's longest decreasing
  subsequence, at its middle; ``minimum`` lr at min s, divided by 10 (Smith);
  ``stable`` the last lr before divergence (the sweep's end if none).
* **across seeds** each suggestion's lr is the median over seeds in log space,
  its spread ``max / min`` over seeds, and it is *unreliable* when the spread
  exceeds ``max_spread``.
* **recommendation** (``RECOMMENDATION_RULE``): ``sqrt(steepest x stable/4)``,
  the log-space midpoint between the lr where the loss falls fastest (a lower
  bracket) and a quarter of the largest stable lr (Smith's base lr of a cycle,
  an upper bracket), at most ``stable/4``. On SGD with a quadratic it lands at
  0.1-0.2 x 2/L, a stable lr within 5x of the best constant one 2/(L + mu);
  on the digits MLP within the range that trains best at B = 64, and below
  it at larger B (docs/lr_find.md). Valley and minimum/10 are reported, not
  used: valley moves with ``min_lr`` (the longest decreasing run of a curve
  that falls from the first step starts wherever the range does), and
  minimum/10 was fitted by practice to fastai's lagging curve (see smoothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

RAMPS = ("exponential", "linear")
# The suggestions, in the order reports list them.
SUGGESTIONS = ("steepest", "valley", "minimum", "stable")
# The recommendation's anchor below the edge: Smith (2017) starts a cycle at
# 1/3 to 1/4 of the lr where the loss turns up.
STABLE_FRACTION = 0.25
RECOMMENDATION_RULE = (
  "sqrt(steepest x stable/4): the geometric mean of the lr where the smoothed loss falls "
  "fastest and a quarter of the largest stable lr, each the median over seeds, and at most "
  "stable/4; reliable when both are"
)


def lr_ramp(
  min_lr: float, max_lr: float, num_steps: int, *, mode: str = "exponential"
) -> np.ndarray:
  """The lr of each step of the sweep, both ends included.

  exponential: ``lr_t = min_lr (max_lr / min_lr)^(t / (N - 1))`` (evenly spaced
  in log lr, Smith 2017 / fastai); linear: ``lr_t = min_lr + (max_lr - min_lr)
  t / (N - 1)`` (Smith's original, torch-lr-finder's ``step_mode='linear'``).

  Args:
    min_lr: the first lr (> 0).
    max_lr: the last lr (> min_lr).
    num_steps: N >= 2.
    mode: one of ``RAMPS``.

  Returns:
    float64 array [N].

  Raises:
    ValueError: on an impossible range or unknown mode.
  """
  if mode not in RAMPS:
    raise ValueError(f"config.lr_find.ramp={mode!r}: use one of {RAMPS}.")
  if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
    raise ValueError(
      f"config.lr_find.min_lr={min_lr} and config.lr_find.max_lr={max_lr}: "
      "the range needs 0 < min_lr < max_lr < inf."
    )
  if num_steps < 2:
    raise ValueError(f"config.lr_find.num_steps must be >= 2, got {num_steps}.")
  if mode == "exponential":
    return np.geomspace(min_lr, max_lr, num_steps)
  return np.linspace(min_lr, max_lr, num_steps)


def running_median(values: np.ndarray, window: int) -> np.ndarray:
  """Median of ``window`` values centred on each one (shorter at the ends).

  An odd window ``w`` ignores any run of up to ``(w - 1) // 2`` outliers.
  """
  values = np.asarray(values, np.float64)
  if window <= 1 or values.size == 0:
    return values.copy()
  half = window // 2
  padded = np.pad(values, half, constant_values=np.nan)
  windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
  return np.nanmedian(windows, axis=1)


def debiased_ema(values: np.ndarray, beta: float) -> np.ndarray:
  """``s_t = a_t / (1 - beta^{t+1})`` with ``a_t = beta a_{t-1} + (1 - beta) x_t``, ``a_{-1} = 0``.

  The bias correction (Kingma & Ba 2015, as fastai's recorder) makes ``s_0 = x_0``
  instead of ``(1 - beta) x_0``; torch-lr-finder omits it.
  """
  values = np.asarray(values, np.float64)
  out = np.empty_like(values)
  avg = 0.0
  for t, x in enumerate(values):
    avg = beta * avg + (1.0 - beta) * x
    out[t] = avg / (1.0 - beta ** (t + 1))
  return out


def smooth(losses: np.ndarray, *, beta: float = 0.9, spike_window: int = 5) -> np.ndarray:
  """Running median over ``spike_window`` steps, then the debiased EMA forward and backward.

  Forward-backward filtering (as ``scipy.signal.filtfilt``) cancels the EMA's
  lag: a one-way EMA shows at step t the loss of ~beta/(1-beta) steps earlier,
  i.e. at an lr ``r^(beta/(1-beta))`` too high on a ramp growing r per step
  (fastai's beta 0.98 on its 100-step ramp: ~20 steps at mid-sweep, 40x in lr).
  Steps from the first non-finite loss on are NaN (the model is lost there).
  """
  losses = np.asarray(losses, np.float64)
  bad = np.flatnonzero(~np.isfinite(losses))
  end = int(bad[0]) if bad.size else losses.size
  out = np.full_like(losses, np.nan)
  forward = debiased_ema(running_median(losses[:end], spike_window), beta)
  out[:end] = debiased_ema(forward[::-1], beta)[::-1]
  return out


def divergence_index(
  losses: np.ndarray, *, spike_window: int = 5, factor: float = 4.0
) -> int | None:
  """First step with a non-finite loss or ``m_t > factor * min_{u <= t} m_u``; None if none.

  ``m = running_median(losses, spike_window)``: one or two bad batches in a
  window of five do not count, a sustained rise counts from its first step.
  """
  losses = np.asarray(losses, np.float64)
  bad = np.flatnonzero(~np.isfinite(losses))
  end = int(bad[0]) if bad.size else losses.size
  m = running_median(losses[:end], spike_window)
  hits = np.flatnonzero(m > factor * np.minimum.accumulate(m)) if end else np.array([], int)
  if hits.size:
    return int(hits[0])
  return end if bad.size else None


class Curve(NamedTuple):
  """One seed's sweep, analysed.

  Attributes:
    lrs: lr of each recorded step [n].
    losses: training loss of each recorded step (before that step's update) [n].
    smoothed: ``smooth(losses)`` [n].
    end: number of steps before divergence (``n`` if none).
    diverged: whether the sweep diverged (at step ``end``).
  """

  lrs: np.ndarray
  losses: np.ndarray
  smoothed: np.ndarray
  end: int
  diverged: bool


def analyse(
  lrs: np.ndarray,
  losses: np.ndarray,
  *,
  beta: float = 0.9,
  spike_window: int = 5,
  factor: float = 4.0,
) -> Curve:
  """Smooths a recorded sweep and finds where it diverged."""
  lrs = np.asarray(lrs, np.float64)
  losses = np.asarray(losses, np.float64)
  if lrs.shape != losses.shape or lrs.ndim != 1 or lrs.size == 0:
    raise ValueError(
      f"lrs and losses must be equal-length 1-D arrays, got {lrs.shape} and {losses.shape}."
    )
  div = divergence_index(losses, spike_window=spike_window, factor=factor)
  end = lrs.size if div is None else div
  smoothed = np.full_like(losses, np.nan)  # of the steps before divergence only
  smoothed[:end] = smooth(losses[:end], beta=beta, spike_window=spike_window)
  return Curve(lrs, losses, smoothed, end, div is not None)


def _window(curve: Curve, skip_start: float, skip_end: float) -> tuple[int, int]:
  """Indices [lo, hi) the suggestions look at; the whole pre-divergence part if too short."""
  n = curve.lrs.size
  lo = int(skip_start * n)
  hi = curve.end - int(math.ceil(skip_end * n))
  if hi - lo < 3:
    lo, hi = 0, curve.end
  return lo, hi


def longest_decreasing_run(values: np.ndarray) -> tuple[int, int]:
  """fastai's valley: ``(start, end)`` of the longest strictly decreasing subsequence.

  ``end`` is the index where the longest subsequence ends and ``start = end -
  length`` (fastai's convention, exact when the subsequence is contiguous).
  Ties keep the earliest end. O(n^2), n is a few hundred.
  """
  values = np.asarray(values, np.float64)
  lds = np.ones(values.size, np.int64)
  for i in range(1, values.size):
    before = lds[:i][values[:i] > values[i]]
    if before.size:
      lds[i] = before.max() + 1
  end = int(np.argmax(lds))
  return max(end - int(lds[end]), 0), end


def suggest(curve: Curve, *, skip_start: float = 0.1, skip_end: float = 0.05) -> dict[str, float]:
  """The four suggestions of one curve: ``{name: lr}`` for every name in ``SUGGESTIONS``.

  Args:
    curve: from ``analyse``.
    skip_start: fraction of the sweep ignored at its start (fastai: 0.1).
    skip_end: fraction of the sweep ignored before divergence (fastai: 5 of 100).

  Raises:
    ValueError: when the curve diverged before its third step (the range starts too high).
  """
  if curve.end < 3:
    raise ValueError(
      f"the sweep diverged at step {curve.end}, lr {curve.lrs[curve.end]:.3g}, before any "
      "suggestion could be made: lower config.lr_find.min_lr."
    )
  lo, hi = _window(curve, skip_start, skip_end)
  s, log_lr = curve.smoothed[lo:hi], np.log(curve.lrs[lo:hi])
  slope = np.gradient(s, log_lr)  # central differences: even spacing for the exp ramp
  start, end = longest_decreasing_run(s)
  length = end - start
  valley = lo + start + length // 3 + length // 6  # fastai: 1/3 + 1/6 of the way in
  return dict(
    steepest=float(curve.lrs[lo + int(np.argmin(slope))]),
    valley=float(curve.lrs[valley]),
    minimum=float(curve.lrs[lo + int(np.argmin(s))]) / 10.0,
    stable=float(curve.lrs[curve.end - 1]),
  )


class Spread(NamedTuple):
  """One suggestion across seeds.

  Attributes:
    lr: median over seeds in log space (the geometric median of the values).
    per_seed: each seed's lr, in seed order.
    spread: ``max / min`` over seeds (1.0 for one seed).
    reliable: ``spread <= max_spread``.
  """

  lr: float
  per_seed: tuple[float, ...]
  spread: float
  reliable: bool


def log_median(values: Sequence[float]) -> float:
  """``exp(median(log values))``: the middle value, or the geometric mean of the middle two."""
  return float(np.exp(np.median(np.log(np.asarray(values, np.float64)))))


def across_seeds(
  per_seed: Sequence[Mapping[str, float]], *, max_spread: float = 3.0
) -> dict[str, Spread]:
  """Each suggestion's median, spread and reliability over the seeds' suggestions."""
  if not per_seed:
    raise ValueError("across_seeds needs at least one seed's suggestions.")
  out = {}
  for name in SUGGESTIONS:
    values = tuple(float(s[name]) for s in per_seed)
    spread = max(values) / min(values)
    out[name] = Spread(log_median(values), values, spread, spread <= max_spread)
  return out


class Recommendation(NamedTuple):
  """The lr to start from, and how it was reached.

  Attributes:
    lr: the recommended lr.
    capped: whether the steepest lr lay above stable/4, so the cap set it.
    reliable: whether both of its inputs were reliable across seeds.
    rule: ``RECOMMENDATION_RULE``.
  """

  lr: float
  capped: bool
  reliable: bool
  rule: str


def recommend(spreads: Mapping[str, Spread]) -> Recommendation:
  """Applies ``RECOMMENDATION_RULE`` to the output of ``across_seeds``."""
  steepest, stable = spreads["steepest"], spreads["stable"]
  edge = STABLE_FRACTION * stable.lr
  lr = min(math.sqrt(steepest.lr * edge), edge)
  return Recommendation(
    lr, steepest.lr > edge, steepest.reliable and stable.reliable, RECOMMENDATION_RULE
  )
