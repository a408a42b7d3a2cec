"""Figures of a study analysis, drawn from the analysis dict alone.

Every plot reads only the JSON-able dict built by
:func:`lrscale.analysis.run.build_analysis`, so figures can be redrawn from
``analysis.json`` without the trials. Figures are built on
:class:`matplotlib.figure.Figure` with the Agg canvas directly: no pyplot
state and no global backend switch, so importing this module never disturbs
an interactive session.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REGIME_COLORS = {"perfect": "#d8f0d8", "diminishing": "#fdf1cf", "maximal": "#f6d6d6"}


def _figure(width: float = 6.4, height: float = 4.6) -> tuple[Figure, Axes]:
  fig = Figure(figsize=(width, height), layout="tight")
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot()


def _save(fig: Figure, path: str) -> str:
  fig.savefig(path, dpi=110)
  return path


def _usable_batches(
  analysis: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
  rows = [r for r in analysis["per_batch"] if r.get("best_steps") is not None]
  b = np.array([r["batch_size"] for r in rows], dtype=float)
  s = np.array([r["best_steps"] for r in rows], dtype=float)
  return b, s, rows


def _b_range(b: np.ndarray) -> np.ndarray:
  return np.geomspace(b.min() / 1.5, b.max() * 1.5, 200)


def _shade_regimes(ax: Axes, analysis: dict[str, Any], lo: float, hi: float) -> None:
  """Shade the fitted regimes (boundaries where the fitted slope crosses the thresholds)."""
  bounds = (analysis.get("regimes") or {}).get("fitted_boundaries")
  if not bounds:
    return
  p, m = bounds["perfect_until"], bounds["maximal_from"]
  spans = [
    (lo, min(p, hi), "perfect", "perfect scaling"),
    (max(p, lo), min(m, hi), "diminishing", "diminishing returns"),
    (max(m, lo), hi, "maximal", "maximal data parallelism"),
  ]
  for a, z, key, label in spans:
    if z > a:
      ax.axvspan(a, z, color=REGIME_COLORS[key], zorder=0, label=label)


def _per_batch_errorbars(
  rows: list[dict[str, Any]], scale: Callable[[dict[str, Any]], float]
) -> np.ndarray | None:
  """Asymmetric error bars from ``best_steps_ci`` (multiplied by ``scale(row)``)."""
  if not all(r.get("best_steps_ci") for r in rows):
    return None
  err = [
    [r["best_steps"] - r["best_steps_ci"][0], r["best_steps_ci"][1] - r["best_steps"]] for r in rows
  ]
  return np.clip(np.array(err).T * np.array([scale(r) for r in rows]), 0.0, None)


def _draw_theory(ax: Axes, analysis: dict[str, Any]) -> None:
  """The exact expected best steps of a linreg study (``analysis["theory"]``), if any."""
  th = analysis.get("theory")
  if not th:
    return
  pts = [(r["batch_size"], r["exact_steps"]) for r in th["per_batch"] if r["exact_steps"]]
  if pts:
    fit = th.get("fit") or {}
    extra = f": S_min={fit['s_min']:.3g}, B_crit={fit['b_crit']:.3g}" if fit else ""
    ax.plot(*zip(*pts), "s--", color="C2", ms=4, lw=1, label=f"exact (theory){extra}", zorder=2)


def _measured_to_result(analysis: dict[str, Any], *, per_example: bool, label: str):
  """Figure, regimes and the measured points (steps, or examples = steps x B) with their CIs.

  Returns ``(fig, ax, b, steps, grid)``, or None when no batch size reached the target.
  """
  b, s, rows = _usable_batches(analysis)
  if len(b) == 0:
    return None
  fig, ax = _figure()
  grid = _b_range(b)
  _shade_regimes(ax, analysis, grid[0], grid[-1])
  scale = (lambda r: r["batch_size"]) if per_example else (lambda r: 1.0)
  ax.errorbar(
    b,
    s * b if per_example else s,
    yerr=_per_batch_errorbars(rows, scale),
    fmt="o",
    color="k",
    capsize=3,
    label=label,
    zorder=3,
  )
  return fig, ax, b, s, grid


def _finish_to_result(fig, ax, grid, ylabel: str, title: str, legend_loc: str, path: str) -> str:
  ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel=ylabel, title=title)
  ax.set_xlim(grid[0], grid[-1])
  ax.legend(fontsize=7, loc=legend_loc)
  return _save(fig, path)


def plot_steps_to_result(analysis: dict[str, Any], path: str) -> str | None:
  """Log-log best steps vs B with the fitted S(B), S_min, B_crit, slope -1 and regimes."""
  start = _measured_to_result(
    analysis,
    per_example=False,
    label=(
      "best point, seeds' mean curve (bootstrap CI)"
      if analysis["settings"].get("target_from") == "seed_mean"
      else "best trial (bootstrap CI)"
    ),
  )
  if start is None:
    return None
  fig, ax, b, s, grid = start
  ax.plot(grid, s[0] * b[0] / grid, ":", color="gray", label="perfect scaling (slope -1)")
  fit = analysis["fit"]
  if fit.get("ok"):
    ax.plot(
      grid,
      fit["s_min"] * (1 + fit["b_crit"] / grid),
      "-",
      color="C0",
      label=f"S_min(1+B_crit/B): S_min={fit['s_min']:.3g}, B_crit={fit['b_crit']:.3g}",
    )
    ax.axhline(fit["s_min"], color="C0", ls="--", lw=1, label="S_min")
    ax.axvline(fit["b_crit"], color="C3", ls="-.", lw=1, label="B_crit")
  _draw_theory(ax, analysis)
  for row in analysis["excluded_batches"]:
    ax.axvline(row["batch_size"], color="C3", alpha=0.3, lw=3)
  ax.set_ylim(min(s.min(), fit.get("s_min") or s.min()) / 1.5, s.max() * 1.5)
  title = f"Steps to {analysis['study']['target']['metric']} target: {analysis['study']['name']}"
  return _finish_to_result(fig, ax, grid, "steps to result", title, "upper right", path)


def plot_examples_to_result(analysis: dict[str, Any], path: str) -> str | None:
  """Log-log examples to result vs B with ``E_min (1 + B / B_crit)``."""
  start = _measured_to_result(analysis, per_example=True, label="best trial")
  if start is None:
    return None
  fig, ax, _, _, grid = start
  fit = analysis["fit"]
  if fit.get("ok"):
    ax.plot(
      grid, fit["e_min"] * (1 + grid / fit["b_crit"]), "-", color="C0", label="E_min(1+B/B_crit)"
    )
    ax.axhline(fit["e_min"], color="C0", ls="--", lw=1, label=f"E_min={fit['e_min']:.3g}")
    ax.axvline(fit["b_crit"], color="C3", ls="-.", lw=1, label="B_crit")
  return _finish_to_result(
    fig, ax, grid, "examples to result", "Examples to result", "upper left", path
  )


def plot_optimal_lr(analysis: dict[str, Any], path: str) -> str | None:
  """Best lr vs B with the near-optimal range, fitted law and linear/sqrt rules."""
  lr_fit = analysis["lr_fit"]
  _, _, rows = _usable_batches(analysis)
  if not rows:
    return None
  b = np.array([r["batch_size"] for r in rows], dtype=float)
  best = np.array([r["best_lr"] for r in rows], dtype=float)
  lo = np.array([r["lr_within"][0] for r in rows])
  hi = np.array([r["lr_within"][1] for r in rows])
  fig, ax = _figure()
  grid = _b_range(b)
  ax.errorbar(
    b,
    best,
    yerr=[best - lo, hi - best],
    fmt="o",
    color="k",
    capsize=3,
    label=f"best lr (bar: within {analysis['settings']['within_pct']:g}% of best steps)",
    zorder=3,
  )
  stable = [(r["batch_size"], r["largest_stable_lr"]) for r in rows if r.get("largest_stable_lr")]
  if stable:
    ax.plot(*zip(*stable), "v", color="C3", ms=5, label="largest stable lr")
  i0 = int(np.argmin(b))
  ax.plot(grid, best[i0] * grid / b[i0], ":", color="C1", label="linear rule (Goyal et al.)")
  ax.plot(
    grid,
    best[i0] * np.sqrt(grid / b[i0]),
    ":",
    color="C2",
    label="sqrt rule (Adam SDE, Malladi et al.)",
  )
  if lr_fit.get("ok"):
    law = lr_fit["coef"] * grid ** lr_fit["exponent"]
    if lr_fit.get("max_lr"):
      law = np.minimum(law, lr_fit["max_lr"])
      ax.axvline(lr_fit["saturation_batch"], color="C0", ls="--", lw=1, label="saturation")
    ax.plot(
      grid,
      law,
      "-",
      color="C0",
      label=f"fit: {lr_fit['coef']:.3g} B^{lr_fit['exponent']:.2f}"
      + (f", max {lr_fit['max_lr']:.3g}" if lr_fit.get("max_lr") else ""),
    )
  ax.set(
    xscale="log",
    yscale="log",
    xlabel="batch size B",
    ylabel="learning rate",
    title="Optimal learning rate",
  )
  ax.set_xlim(grid[0], grid[-1])
  ax.set_ylim(
    min(lo.min(), best[i0] * np.sqrt(grid[0] / b[i0])) / 1.5, max(hi.max(), best.max()) * 3
  )
  ax.legend(fontsize=7, loc="upper left")
  return _save(fig, path)


def _log_edges(values: Sequence[float]) -> np.ndarray:
  """Cell edges around sorted positive values: geometric midpoints, ends mirrored."""
  v = np.log(np.asarray(values, dtype=float))
  if len(v) == 1:
    return np.exp(np.array([v[0] - 0.25, v[0] + 0.25]))
  mid = (v[1:] + v[:-1]) / 2
  return np.exp(np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]]))


def plot_lr_sensitivity(analysis: dict[str, Any], path: str) -> str | None:
  """Heatmap over (B, lr) of steps to result.

  Each batch size is a row with cells at its own lrs (lr grids usually move
  with B). Colour: log steps of the (median-seed) point; grey cells did not
  reach the target and show their final target metric; a red X marks a
  point whose seeds all diverged; a star marks the best lr.
  """
  configs = analysis.get("configs") or []
  if not configs:
    return None
  batches = sorted({c["batch_size"] for c in configs})
  steps = [c["steps"] for c in configs if c["steps"] is not None]
  norm = colors.LogNorm(vmin=min(steps), vmax=max(steps)) if steps else None
  best_lr = {r["batch_size"]: r["best_lr"] for r in analysis["per_batch"]}
  fig, ax = _figure(8.0, 0.55 * len(batches) + 1.6)
  mesh = None
  for i, bsz in enumerate(batches):
    row = sorted((c for c in configs if c["batch_size"] == bsz), key=lambda c: c["lr"])
    # Collapse other swept params onto lr: keep the best point per lr.
    by_lr: dict[float, dict[str, Any]] = {}
    for c in row:
      cur = by_lr.get(c["lr"])
      if cur is None or (c["steps"] or math.inf) < (cur["steps"] or math.inf):
        by_lr[c["lr"]] = c
    lrs = sorted(by_lr)
    edges = _log_edges(lrs)
    vals = np.ma.masked_invalid(
      [[by_lr[x]["steps"] if by_lr[x]["steps"] is not None else np.nan for x in lrs]]
    )
    ax.pcolormesh(
      edges, [i - 0.5, i + 0.5], np.ones_like(vals.data), cmap=colors.ListedColormap(["#d9d9d9"])
    )
    if norm is not None:
      mesh = ax.pcolormesh(edges, [i - 0.5, i + 0.5], vals, cmap="viridis_r", norm=norm)
    for x, c in by_lr.items():
      color = "k"
      if c["steps"] is not None:
        text = f"{c['steps']:.0f}"
        # Light text on the dark end of viridis_r (slow points) keeps it legible.
        color = "w" if norm is not None and norm(c["steps"]) > 0.6 else "k"
      elif c["n_diverged"] == c["n_seeds"]:
        ax.plot(x, i, "x", color="red", ms=9, mew=2)
        continue
      else:
        text = "-" if c["final_metric"] is None else f"{c['final_metric']:.3g}"
      ax.text(x, i, text, ha="center", va="center", fontsize=6, color=color)
    if best_lr.get(bsz):
      ax.plot(best_lr[bsz], i + 0.32, "*", color="white", mec="k", ms=8)
  ax.set_xscale("log")
  ax.set_yticks(range(len(batches)), [str(b) for b in batches])
  ax.set_ylim(-0.5, len(batches) - 0.5)
  ax.set(
    xlabel="learning rate",
    ylabel="batch size B",
    title="Steps to result (grey: not reached, final metric shown; X: diverged; *: best)",
  )
  ax.title.set_fontsize(9)
  if mesh is not None:
    fig.colorbar(mesh, ax=ax, label="steps to result")
  return _save(fig, path)


def plot_tradeoff(analysis: dict[str, Any], path: str) -> str | None:
  """E/E_min vs S/S_min with the hyperbola (S/S_min - 1)(E/E_min - 1) = 1 (McCandlish et al.)."""
  fit = analysis["fit"]
  b, s, _ = _usable_batches(analysis)
  if not fit.get("ok") or len(b) == 0:
    return None
  x, y = s / fit["s_min"], s * b / fit["e_min"]
  fig, ax = _figure()
  top = max(x.max(), y.max()) * 2
  xs = np.geomspace(1 + 1e-3, top, 400)
  ax.plot(xs, 1 + 1 / (xs - 1), "-", color="C0", label="(S/S_min - 1)(E/E_min - 1) = 1")
  ax.scatter(x, y, color="k", zorder=3, label="measured best trials")
  for bi, xi, yi in zip(b, x, y):
    ax.annotate(f"B={bi:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
  ax.axhline(1, color="gray", lw=0.8)
  ax.axvline(1, color="gray", lw=0.8)
  ax.set(
    xscale="log",
    yscale="log",
    xlabel="S / S_min (steps)",
    ylabel="E / E_min (examples)",
    title="Steps-examples trade-off",
  )
  lim = (min(0.8, x.min() / 1.2, y.min() / 1.2), top)
  ax.set_xlim(*lim)
  ax.set_ylim(*lim)
  ax.legend(fontsize=7)
  return _save(fig, path)


def plot_noise_scale(analysis: dict[str, Any], path: str) -> str | None:
  """B_simple against step for each batch size's best trial, beside B_crit."""
  noise = analysis.get("noise_scale") or {}
  series = noise.get("series") or []
  if not noise.get("available") or not series:
    return None
  fig, ax = _figure()
  cmap = colors.LinearSegmentedColormap.from_list("b", ["#5e3c99", "#e66101"])
  for k, ser in enumerate(series):
    color = cmap(k / max(1, len(series) - 1))
    ax.plot(ser["step"], ser["b_simple"], color=color, lw=1.2, label=f"B={ser['batch_size']}")
  fit = analysis["fit"]
  if fit.get("ok"):
    ax.axhline(fit["b_crit"], color="k", ls="--", label=f"B_crit={fit['b_crit']:.3g}")
    ci = (fit.get("ci") or {}).get("b_crit")
    if ci and None not in ci:
      ax.axhspan(ci[0], ci[1], color="gray", alpha=0.2, label="B_crit CI")
  ax.set(
    xscale="log",
    yscale="log",
    xlabel="step",
    ylabel="B_simple = tr(Sigma)/|G|^2",
    title="Gradient noise scale (McCandlish et al. 2018)",
  )
  ax.legend(fontsize=7, ncol=2)
  return _save(fig, path)


PLOTS: dict[str, Callable[[dict[str, Any], str], str | None]] = {
  "steps_to_result.png": plot_steps_to_result,
  "examples_to_result.png": plot_examples_to_result,
  "optimal_lr.png": plot_optimal_lr,
  "lr_sensitivity.png": plot_lr_sensitivity,
  "tradeoff.png": plot_tradeoff,
  "noise_scale.png": plot_noise_scale,
}


def plot_all(analysis: dict[str, Any], outdir: str) -> list[str]:
  """Draw every plot that has data; returns the file names written in ``outdir``."""
  written = []
  for name, draw in PLOTS.items():
    if draw(analysis, os.path.join(outdir, name)) is not None:
      written.append(name)
  return written
