"""Range-test results: their types, the lr(B) fit, the paste line, lr_find.csv and .json."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any, NamedTuple

import ml_collections

from lrscale.lr_find import suggest as suggest_lib
from lrscale.optim import scaling

CSV_FIELDS = ("seed", "batch_size", "step", "lr", "loss", "smoothed_loss")


class Sweep(NamedTuple):
  """One seed's range test at one batch size.

  Attributes:
    seed: the seed (init, data order or both, per ``vary``).
    curve: the recorded losses, smoothed, and where they diverged.
    suggestions: ``{name: lr}`` for every name in ``suggest.SUGGESTIONS``.
    steps_run: steps computed (< N when the sweep stopped at divergence).
  """

  seed: int
  curve: suggest_lib.Curve
  suggestions: dict[str, float]
  steps_run: int


class BatchResult(NamedTuple):
  """All seeds at one batch size; ``seconds`` of sweeping (compilation excluded)."""

  batch_size: int
  sweeps: tuple[Sweep, ...]
  spreads: dict[str, suggest_lib.Spread]
  recommendation: suggest_lib.Recommendation
  seconds: float


class LrFindResult(NamedTuple):
  """A whole ``lr_find`` call: every batch size, the lr(B) fit and the paste line."""

  results: tuple[BatchResult, ...]
  batch_scaling: dict[str, Any] | None
  paste: str
  rule: str
  # lrscale.lr_find.predict.Prediction per batch size (config.lr_find.predict), else ().
  predictions: tuple[Any, ...] = ()


def batch_scaling(
  results: Sequence[BatchResult], predicted: Sequence[float] | None = None
) -> dict[str, Any] | None:
  """lr(B) = c B^alpha fitted to each suggestion's median lr, beside the linear and sqrt rules.

  The fit is ``lrscale.analysis.lr_fits.fit_lr_scaling`` (least squares in
  log-log, a saturating hinge only when BIC prefers it); the rules are anchored
  at the smallest batch size (``rule_predictions``): linear lr ~ B (Goyal et al.
  2017), square root lr ~ sqrt(B) (Malladi et al. 2022).

  Returns:
    None for fewer than two batch sizes, else ``{name: {...}}`` for
    ``recommended``, each suggestion and ``predicted`` (the short runs' lrs, if given).
  """
  if len(results) < 2:
    return None
  from lrscale.analysis import lr_fits

  b = [r.batch_size for r in results]
  series = {"recommended": [r.recommendation.lr for r in results]}
  series.update({n: [r.spreads[n].lr for r in results] for n in suggest_lib.SUGGESTIONS})
  if predicted is not None:
    series["predicted"] = list(predicted)
  out = {}
  for name, lrs in series.items():
    fit = lr_fits.fit_lr_scaling(b, lrs)
    out[name] = dict(
      batch_sizes=b,
      lrs=lrs,
      exponent=fit.exponent,
      coef=fit.coef,
      model=fit.model,
      max_lr=fit.max_lr,
      rms_log_residual=fit.rms_log_residual,
      linear_rule=lr_fits.rule_predictions(b, lrs, 1.0),
      sqrt_rule=lr_fits.rule_predictions(b, lrs, 0.5),
    )
  return out


def base_lr_for(cfg: ml_collections.ConfigDict, lr: float, batch_size: int) -> tuple[str, float]:
  """The ``--config`` flags that give a run at ``batch_size`` the lr ``lr``.

  ``config.lr`` is the base lr *before* the config's scaling rule, so the
  value to paste is ``lr`` divided by the rule's factor at ``batch_size``
  (``lrscale.optim.scaling``); a ``fitted`` rule ignores ``config.lr`` and is
  switched off in the printed line.
  """
  if cfg.scaling.rule == "fitted":
    return "--config.scaling.rule=none ", lr
  factor = scaling.apply_scaling(
    cfg.scaling, base_lr=1.0, batch_size=batch_size, optimizer_cfg=cfg.optimizer
  ).lr
  return "", lr / factor


def paste_line(
  cfg: ml_collections.ConfigDict,
  results: Sequence[BatchResult],
  fit: dict[str, Any] | None,
  predicted: Sequence[float] | None = None,
) -> str:
  """The flags to paste into ``python -m lrscale.train``: one line per batch size.

  The lr is the ramp's recommendation, or the short runs' ``predicted`` lrs
  when given (``lrscale.lr_find.predict``); the last line is that series' fit.
  """
  key = "recommended" if predicted is None else "predicted"
  lines = []
  for i, r in enumerate(results):
    lr = r.recommendation.lr if predicted is None else predicted[i]
    prefix, value = base_lr_for(cfg, lr, r.batch_size)
    batch = f"--config.batch_size={r.batch_size} " if len(results) > 1 else ""
    lines.append(f"{batch}{prefix}--config.lr={value:.3g}")
  if fit is not None:
    rec = fit[key]
    lines.append(
      f"--config.scaling.rule=fitted --config.scaling.coef={rec['coef']:.4g} "
      f"--config.scaling.exponent={rec['exponent']:.3f}"
    )
  return "\n".join(lines)


def describe(result: BatchResult) -> str:
  """One line: each suggestion with its spread over seeds, then the recommendation."""
  parts = [
    f"{n} {s.lr:.3g} (x{s.spread:.2f}{'' if s.reliable else ', UNRELIABLE'})"
    for n, s in result.spreads.items()
  ]
  rec = result.recommendation
  return "; ".join(parts) + (
    f" -> recommended {rec.lr:.3g}{'' if rec.reliable else ' (UNRELIABLE: seeds disagree)'}"
  )


def to_json(result: LrFindResult, cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """lr_find.json: per batch size, each seed's suggestions, their spreads and the recommendation."""
  per_batch = []
  for r in result.results:
    rec = r.recommendation
    per_batch.append(
      dict(
        batch_size=r.batch_size,
        seconds=r.seconds,
        suggestions={
          n: dict(lr=s.lr, per_seed=list(s.per_seed), spread=s.spread, reliable=s.reliable)
          for n, s in r.spreads.items()
        },
        recommendation=dict(lr=rec.lr, capped=rec.capped, reliable=rec.reliable),
        seeds=[
          dict(
            seed=s.seed,
            steps_run=s.steps_run,
            diverged=s.curve.diverged,
            diverged_at_step=s.curve.end if s.curve.diverged else None,
            diverged_at_lr=float(s.curve.lrs[s.curve.end]) if s.curve.diverged else None,
            suggestions=s.suggestions,
          )
          for s in r.sweeps
        ],
      )
    )
  from lrscale.lr_find import predict  # pylint: disable=g-import-not-at-top  (imports results)

  return dict(
    rule=result.rule,
    lr_find=cfg.lr_find.to_dict(),
    per_batch=per_batch,
    predictions=[predict.to_json(p) for p in result.predictions],
    batch_scaling=result.batch_scaling,
    paste=result.paste,
  )


def to_csv(result: LrFindResult) -> str:
  """lr_find.csv: every recorded step up to and including the one that diverged."""
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(CSV_FIELDS)
  for r in result.results:
    for sweep in r.sweeps:
      c = sweep.curve
      for t in range(min(c.end + 1, c.lrs.size)):
        writer.writerow(
          (
            sweep.seed,
            r.batch_size,
            t,
            f"{c.lrs[t]:.6g}",
            f"{c.losses[t]:.6g}",
            f"{c.smoothed[t]:.6g}",
          )
        )
  return buf.getvalue()
