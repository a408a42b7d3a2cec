"""Early stopping on an evaluation metric, decided on the host.

Keras ``EarlyStopping`` semantics (``patience`` counted in evaluations, an
absolute ``min_delta``), kept outside ``jax.jit`` like reduce-on-plateau
(``lrscale.optim.plateau``): the metric arrives once per evaluation, and the
state is a NamedTuple of Python scalars that round-trips through JSON, so a
run resumed from a checkpoint stops at exactly the evaluation an
uninterrupted one would.

Per evaluation with metric ``m`` (``mode='min'``; ``'max'`` mirrors it):

1. ``m < best - min_delta`` is an improvement (the same test as the plateau
   controller's absolute threshold, ``plateau.is_better``): ``best = m``,
   ``best_step = step``, ``num_bad = 0``. The first finite metric always
   improves on the initial ``best = +inf``; a NaN never does.
2. Otherwise ``num_bad += 1``; when ``num_bad >= patience`` the run stops at
   this evaluation (Keras: ``wait >= patience``). So ``patience=3`` stops at
   the third evaluation in a row without improvement.

Only the evaluations made during training count; the evaluation of the
initial parameters at step 0 is not a baseline (Keras has none either).
"""

from __future__ import annotations

import math
import types
from typing import Any, Mapping, NamedTuple

import ml_collections

from lrscale.optim import plateau

MODES = ("min", "max")


class EarlyStoppingState(NamedTuple):
  """Host-side early-stopping state (Python scalars only).

  Attributes:
    best: best metric so far (``+inf`` / ``-inf`` before the first one).
    best_step: step of the best evaluation (-1 before the first).
    best_metrics: every eval metric of the best evaluation.
    num_bad: consecutive evaluations without improvement.
    num_evals: evaluations seen.
    stopped_step: the step at which the run stopped (-1 while running).
  """

  best: float
  best_step: int = -1
  best_metrics: Mapping[str, float] = {}
  num_bad: int = 0
  num_evals: int = 0
  stopped_step: int = -1

  @property
  def stopped(self) -> bool:
    return self.stopped_step >= 0

  def to_dict(self) -> dict[str, Any]:
    """JSON-safe dict (non-finite floats as 'inf' / '-inf' / 'nan' strings)."""
    out = self._asdict()
    out["best"] = _json_float(self.best)
    out["best_metrics"] = {k: _json_float(v) for k, v in self.best_metrics.items()}
    return out

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "EarlyStoppingState":
    """Inverse of ``to_dict``."""
    return cls(
      best=float(data["best"]),
      best_step=int(data["best_step"]),
      best_metrics={k: float(v) for k, v in data["best_metrics"].items()},
      num_bad=int(data["num_bad"]),
      num_evals=int(data["num_evals"]),
      stopped_step=int(data["stopped_step"]),
    )


def _json_float(x: float) -> float | str:
  return x if math.isfinite(x) else repr(float(x))


def default_config() -> ml_collections.ConfigDict:
  """Returns the ``config.early_stopping`` section (disabled)."""
  return ml_collections.ConfigDict(
    dict(
      enabled=False,
      metric="eval_loss",  # any eval metric of the task
      mode="min",  # the metric's direction: min for losses, max for accuracies
      patience=10,  # evaluations without improvement before stopping
      min_delta=0.0,  # an improvement must beat best by more than this (absolute)
      # Put back the parameters of the best evaluation at the stop (they are
      # checkpointed to workdir/best/ at every improvement).
      restore_best=False,
    )
  )


def validate_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad ``config.early_stopping`` field."""
  p = "config.early_stopping"
  if cfg.mode not in MODES:
    raise ValueError(f"{p}.mode must be one of {MODES}, got {cfg.mode!r}.")
  if isinstance(cfg.patience, bool) or not isinstance(cfg.patience, int) or cfg.patience < 1:
    raise ValueError(
      f"{p}.patience must be an integer >= 1 (evaluations without improvement), "
      f"got {cfg.patience!r}."
    )
  if not isinstance(cfg.min_delta, (int, float)) or not cfg.min_delta >= 0:
    raise ValueError(f"{p}.min_delta must be a number >= 0, got {cfg.min_delta!r}.")


def init_early_stopping(cfg: ml_collections.ConfigDict) -> EarlyStoppingState:
  """Initial state: nothing seen."""
  return EarlyStoppingState(best=math.inf if cfg.mode == "min" else -math.inf)


def update_early_stopping(
  state: EarlyStoppingState,
  metrics: Mapping[str, float],
  *,
  step: int,
  cfg: ml_collections.ConfigDict,
) -> EarlyStoppingState:
  """Feeds one evaluation; returns the new state (``.stopped`` once it says stop).

  Args:
    state: current state; a stopped state is returned unchanged.
    metrics: the evaluation's metrics (``cfg.metric`` among them).
    step: the step of the evaluation.
    cfg: the ``config.early_stopping`` section.
  """
  if not cfg.enabled or state.stopped:
    return state
  metric = float(metrics[cfg.metric])
  # The plateau controller's test with an absolute threshold is Keras' min_delta.
  rule = types.SimpleNamespace(mode=cfg.mode, threshold=float(cfg.min_delta), threshold_mode="abs")
  evals = state.num_evals + 1
  if plateau.is_better(metric, state.best, cfg=rule):
    return state._replace(
      best=metric,
      best_step=step,
      best_metrics={k: float(v) for k, v in metrics.items()},
      num_bad=0,
      num_evals=evals,
    )
  num_bad = state.num_bad + 1
  return state._replace(
    num_bad=num_bad,
    num_evals=evals,
    stopped_step=step if num_bad >= cfg.patience else -1,
  )


def summary(state: EarlyStoppingState, cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The ``early_stopping`` entry of summary.json: where it stopped and the best eval."""
  return dict(
    metric=cfg.metric,
    mode=cfg.mode,
    patience=cfg.patience,
    min_delta=cfg.min_delta,
    stopped=state.stopped,
    stopped_step=state.stopped_step if state.stopped else None,
    best_step=state.best_step if state.best_step >= 0 else None,
    best=dict(state.best_metrics),
    restored_best=bool(cfg.restore_best and state.stopped),
  )
