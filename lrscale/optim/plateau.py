"""Reduce-on-plateau, driven by the evaluation metric on the host.

PyTorch ``ReduceLROnPlateau`` semantics, kept outside ``jax.jit`` (the metric
arrives once per evaluation, so there is nothing to trace): the lr actually
used is ``schedule(step) * state.scale``, and the state is a small NamedTuple
of Python scalars that round-trips through JSON for checkpoints.

Per evaluation (PyTorch's ``step(metrics)``):

1. ``better``: mode ``min``: ``m < best - d``, mode ``max``: ``m > best + d``,
   with ``d = threshold * |best|`` (``rel``) or ``d = threshold`` (``abs``).
   Improvement resets ``num_bad`` to 0 and sets ``best = m``; otherwise
   ``num_bad += 1``. The first finite metric always improves on the initial
   ``best = +-inf``; a NaN metric is never better.
2. In cooldown (``cooldown_left > 0``): ``cooldown_left -= 1``, ``num_bad = 0``.
3. If ``num_bad > patience`` (the (patience+1)-th bad evaluation in a row):
   ``lr = peak_lr * scale``, ``new = max(lr * factor, min_lr)``; if
   ``lr - new > eps`` the scale becomes ``new / peak_lr``. Then
   ``cooldown_left = cooldown`` and ``num_bad = 0``.

Deviation from PyTorch, on purpose: PyTorch's relative threshold is
``best * (1 - threshold)``, which for a negative ``best`` lies *above* best, so
an unchanged negative metric counts as an improvement and the lr is never
reduced (``optax.contrib.reduce_on_plateau`` has the same flaw, and also
reduces on the patience-th bad evaluation, one early). Using ``|best|`` gives
identical decisions for positive metrics and correct ones for negative
metrics (e.g. a negative log-likelihood or -accuracy).

``min_lr`` floors ``peak_lr * scale``: the underlying schedule can still take
the product below ``min_lr`` when it decays.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import ml_collections

MODES = ("min", "max")
THRESHOLD_MODES = ("rel", "abs")


class PlateauState(NamedTuple):
  """Host-side reduce-on-plateau state (Python scalars only).

  Attributes:
    best: best metric so far (``+inf`` / ``-inf`` before the first one).
    num_bad: consecutive evaluations without improvement (PyTorch's
      ``num_bad_epochs``).
    cooldown_left: evaluations left in which bad ones are ignored.
    scale: multiplier on the scheduled lr.
    num_evals: evaluations seen.
    num_reductions: times the scale was reduced.
  """

  best: float
  num_bad: int
  cooldown_left: int
  scale: float
  num_evals: int = 0
  num_reductions: int = 0

  def to_dict(self) -> dict[str, Any]:
    """JSON-safe dict (non-finite floats become the strings 'inf', '-inf',
    'nan', since strict JSON has no infinities)."""
    out = self._asdict()
    for key in ("best", "scale"):
      if not math.isfinite(out[key]):
        out[key] = repr(out[key])  # 'inf', '-inf' or 'nan'.
    return out

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "PlateauState":
    """Inverse of ``to_dict``."""
    return cls(
      best=float(data["best"]),
      num_bad=int(data["num_bad"]),
      cooldown_left=int(data["cooldown_left"]),
      scale=float(data["scale"]),
      num_evals=int(data.get("num_evals", 0)),
      num_reductions=int(data.get("num_reductions", 0)),
    )


def default_config() -> ml_collections.ConfigDict:
  """Returns the ``config.plateau`` section (PyTorch's defaults, disabled)."""
  return ml_collections.ConfigDict(
    {
      "enabled": False,
      # The eval metric that drives it; use mode='max' for e.g. eval_accuracy.
      "metric": "eval_loss",
      "mode": "min",
      "factor": 0.1,
      "patience": 10,
      "threshold": 1e-4,
      "threshold_mode": "rel",
      "cooldown": 0,
      "min_lr": 0.0,
      "eps": 1e-8,
    }
  )


def validate_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad ``config.plateau`` field."""
  p = "config.plateau"
  if not isinstance(cfg.metric, str) or not cfg.metric.startswith("eval_"):
    raise ValueError(
      f"{p}.metric must name an eval metric (e.g. 'eval_loss', 'eval_accuracy'), got {cfg.metric!r}"
    )
  if cfg.mode not in MODES:
    raise ValueError(f"{p}.mode must be one of {MODES}, got {cfg.mode!r}")
  if cfg.threshold_mode not in THRESHOLD_MODES:
    raise ValueError(
      f"{p}.threshold_mode must be one of {THRESHOLD_MODES}, got {cfg.threshold_mode!r}"
    )
  if not 0.0 < cfg.factor < 1.0:
    raise ValueError(f"{p}.factor must be in (0, 1) (new lr = lr * factor), got {cfg.factor!r}")
  for field in ("patience", "cooldown"):
    value = cfg[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(
        f"{p}.{field} must be an integer >= 0 (counted in evaluations), got {value!r}"
      )
  for field in ("threshold", "min_lr", "eps"):
    if cfg[field] < 0.0:
      raise ValueError(f"{p}.{field} must be >= 0, got {cfg[field]!r}")


def init_plateau(cfg: ml_collections.ConfigDict) -> PlateauState:
  """Initial state: no metric seen, scale 1."""
  best = math.inf if cfg.mode == "min" else -math.inf
  return PlateauState(best=best, num_bad=0, cooldown_left=0, scale=1.0)


def is_better(metric: float, best: float, *, cfg: ml_collections.ConfigDict) -> bool:
  """Whether ``metric`` improves on ``best`` by more than the threshold."""
  if math.isnan(metric):
    return False
  if math.isinf(best):  # Nothing seen yet (or an infinite best): plain order.
    return metric < best if cfg.mode == "min" else metric > best
  margin = cfg.threshold * (abs(best) if cfg.threshold_mode == "rel" else 1.0)
  if cfg.mode == "min":
    return metric < best - margin
  return metric > best + margin


def update_plateau(
  state: PlateauState, metric: float, *, cfg: ml_collections.ConfigDict, peak_lr: float
) -> PlateauState:
  """Feeds one evaluation's metric; returns the new state.

  A no-op when ``cfg.enabled`` is False, so callers may call it always.

  Args:
    state: current state.
    metric: the evaluation metric (a Python float; pass ``float(x)``).
    cfg: the ``config.plateau`` section.
    peak_lr: the run's peak lr, to apply the absolute ``min_lr`` floor to
      ``peak_lr * scale``.

  Returns:
    The updated state.
  """
  if not cfg.enabled:
    return state
  metric = float(metric)
  best, num_bad = state.best, state.num_bad
  if is_better(metric, best, cfg=cfg):
    best, num_bad = metric, 0
  else:
    num_bad += 1
  cooldown_left = state.cooldown_left
  if cooldown_left > 0:
    cooldown_left -= 1
    num_bad = 0  # Bad evaluations during cooldown do not count.
  scale, num_reductions = state.scale, state.num_reductions
  if num_bad > cfg.patience:
    scale = reduced_scale(scale, cfg=cfg, peak_lr=peak_lr)
    num_reductions += scale != state.scale
    cooldown_left, num_bad = cfg.cooldown, 0
  return PlateauState(
    best=best,
    num_bad=num_bad,
    cooldown_left=cooldown_left,
    scale=scale,
    num_evals=state.num_evals + 1,
    num_reductions=num_reductions,
  )


def reduced_scale(scale: float, *, cfg: ml_collections.ConfigDict, peak_lr: float) -> float:
  """PyTorch ``_reduce_lr`` on ``lr = peak_lr * scale``, returned as a scale."""
  if peak_lr <= 0.0:  # No lr to floor; only the factor applies.
    return scale * cfg.factor
  old_lr = peak_lr * scale
  new_lr = max(old_lr * cfg.factor, cfg.min_lr)
  if old_lr - new_lr > cfg.eps:
    return new_lr / peak_lr
  return scale
