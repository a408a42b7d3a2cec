"""lr_find.png: the smoothed loss against the lr, with each suggestion marked."""

from __future__ import annotations

import math

import numpy as np

from lrscale.lr_find.results import LrFindResult

MARKERS = dict(steepest="v", valley="o", minimum="s", stable="X", recommended="*")
LABELS = dict(
  steepest="steepest",
  valley="valley",
  minimum="minimum / 10",
  stable="largest stable",
  recommended="recommended",
)


def plot(result: LrFindResult, path: str) -> str:
  """lr_find.png: smoothed loss vs lr (log axis), one colour per batch size.

  The line is the median over seeds, the band their min..max (each seed until
  it diverged); markers sit at each suggestion's median lr on that line.
  """
  # Imported here: matplotlib costs start-up, and only the outputs need it.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from matplotlib.lines import Line2D  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(7.2, 4.8), layout="tight")
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  lo, hi = math.inf, -math.inf
  for i, r in enumerate(result.results):
    color = f"C{i}"
    n = max(s.curve.lrs.size for s in r.sweeps)
    lrs = next(s.curve.lrs for s in r.sweeps if s.curve.lrs.size == n)
    curves = np.full((len(r.sweeps), n), np.nan)
    for j, s in enumerate(r.sweeps):
      curves[j, : s.curve.end] = s.curve.smoothed[: s.curve.end]
    seen = np.isfinite(curves).any(axis=0)
    lrs, curves = lrs[seen], curves[:, seen]
    mid = np.nanmedian(curves, axis=0)
    ax.fill_between(
      lrs, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=color, alpha=0.2, linewidth=0
    )
    ax.plot(lrs, mid, color=color, label=f"B={r.batch_size} ({len(r.sweeps)} seeds)")
    lo, hi = min(lo, np.nanmin(curves)), max(hi, mid[0])
    points = {n: s.lr for n, s in r.spreads.items()}
    points["recommended"] = r.recommendation.lr
    for name, lr in points.items():
      y = np.interp(math.log(lr), np.log(lrs), mid)
      unreliable = not (
        r.spreads[name].reliable if name in r.spreads else r.recommendation.reliable
      )
      ax.plot(
        [lr],
        [y],
        MARKERS[name],
        color=color,
        markersize=12 if name == "recommended" else 8,
        markerfacecolor="none" if unreliable else color,
        markeredgecolor="k",
      )
    _prediction(ax, result, r.batch_size, lrs, mid, color)
  ax.set_xscale("log")
  ax.set_xlabel("learning rate")
  ax.set_ylabel("smoothed training loss")
  span = max(hi - lo, 1e-3 * max(abs(hi), 1.0))  # the range's start up to the lowest loss
  ax.set_ylim(lo - 0.05 * span, hi + 0.5 * span)
  ax.set_title("LR range test (hollow marker: unreliable across seeds)")
  handles, _ = ax.get_legend_handles_labels()
  handles += [
    Line2D([], [], marker=m, linestyle="none", color="grey", markeredgecolor="k", label=LABELS[n])
    for n, m in MARKERS.items()
  ]
  if result.predictions:
    handles.append(
      Line2D([], [], marker="P", color="grey", markeredgecolor="k", label="predicted (seeds)")
    )
  ax.legend(handles=handles, fontsize=8)
  fig.savefig(path, dpi=110)
  return path


def _prediction(ax, result: LrFindResult, batch_size: int, lrs, mid, color) -> None:
  """The short runs' predicted lr (``P``) with its interval over seeds as a bar."""
  for p in result.predictions:
    if p.batch_size != batch_size or not math.isfinite(p.lr):
      continue
    y = np.interp(math.log(p.lr), np.log(lrs), mid)
    ax.plot([p.low, p.high], [y, y], color=color, linewidth=3, alpha=0.7)
    ax.plot(
      [p.lr],
      [y],
      "P",
      color=color,
      markersize=12,
      markerfacecolor=color if p.reliable else "none",
      markeredgecolor="k",
    )
