"""McCandlish et al. 2018 reproduction: the figures (steps-examples tradeoff, noise scale).

The experiment itself is ``experiments/mccandlish2018.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments import common

# "Within an order of magnitude": McCandlish et al.'s claim for B_simple vs B_crit.
ORDER_OF_MAGNITUDE = 10.0


def _target_colors(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
  """One colour per target, easiest first."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top

  n = max(1, len(rows) - 1)
  return [colormaps["plasma"](0.85 * i / n) for i in range(len(rows))]


def plot_tradeoff(rows: Sequence[Mapping[str, Any]], path: str) -> str:
  """Their Figure (steps vs examples per target) and the normalised collapse onto one hyperbola."""
  fig, axes = common.figure(1, 2, width=10.0, height=4.2)
  ax_raw, ax_norm = axes[0]
  top = 1.0
  for row, color in zip(rows, _target_colors(rows)):
    if not row["batch_sizes"]:
      continue
    b, s = np.asarray(row["batch_sizes"], float), np.asarray(row["steps"], float)
    ax_raw.plot(b * s, s, "o", color=color, label=f"target {row['target']:g}")
    if not row["fit_ok"]:
      continue
    grid = np.geomspace(b.min() / 4, b.max() * 4, 200)
    ax_raw.plot(
      row["s_min"] * row["b_crit"] * (1 + grid / row["b_crit"]),
      row["s_min"] * (1 + row["b_crit"] / grid),
      "-",
      color=color,
      lw=1,
    )
    x, y = s / row["s_min"], b * s / row["e_min"]
    top = max(top, x.max(), y.max())
    ax_norm.plot(x, y, "o", color=color, label=f"target {row['target']:g}")
  xs = np.geomspace(1 + 1e-3, 2 * top, 400)
  ax_norm.plot(xs, 1 + 1 / (xs - 1), "k-", lw=1, label="(S/S_min - 1)(E/E_min - 1) = 1")
  ax_raw.set(
    xscale="log",
    yscale="log",
    xlabel="examples to target E",
    ylabel="steps to target S",
    title="steps vs examples (one point per B)",
  )
  ax_norm.set(
    xscale="log",
    yscale="log",
    xlabel="S / S_min",
    ylabel="E / E_min",
    xlim=(0.8, 2 * top),
    ylim=(0.8, 2 * top),
    title="normalised: one hyperbola",
  )
  ax_raw.legend(fontsize=7)
  ax_norm.legend(fontsize=7)
  return common.save_figure(fig, path)


def plot_noise_scale(rows: Sequence[Mapping[str, Any]], path: str) -> str:
  """B_simple over training for the best trials beside B_crit per target; B_crit vs B_simple."""
  fig, axes = common.figure(1, 2, width=10.0, height=4.2)
  ax_t, ax_s = axes[0]
  last = rows[-1]
  batches = [s["batch_size"] for s in last["series"]]
  colors = common.batch_colors(batches)
  for ser in last["series"]:
    examples = np.asarray(ser["step"], float) * ser["batch_size"]
    ok = np.asarray(ser["b_simple"]) > 0
    ax_t.plot(
      examples[ok],
      np.asarray(ser["b_simple"])[ok],
      color=colors[ser["batch_size"]],
      lw=1,
      label=f"B={ser['batch_size']}",
    )
  for row, color in zip(rows, _target_colors(rows)):
    if row["fit_ok"]:
      ax_t.axhline(
        row["b_crit"], color=color, ls="--", lw=1.2, label=f"B_crit, target {row['target']:g}"
      )
  ax_t.set(
    xscale="log",
    yscale="log",
    xlabel="examples seen",
    ylabel="B_simple = tr(Sigma) / |G|^2",
    title=f"B_simple of each B's best trial (target {last['target']:g})",
  )
  ax_t.legend(fontsize=6, ncol=2)
  pts = [
    (r["b_simple"], r["b_crit"], r["b_crit_ci"], r["target"], c)
    for r, c in zip(rows, _target_colors(rows))
    if r["fit_ok"] and r["b_simple"]
  ]
  if pts:
    lo = min(min(p[0], p[1]) for p in pts) / 30
    hi = max(max(p[0], p[1]) for p in pts) * 30
    grid = np.geomspace(lo, hi, 10)
    ax_s.fill_between(
      grid, grid / ORDER_OF_MAGNITUDE, grid * ORDER_OF_MAGNITUDE, color="0.9", label="within 10x"
    )
    ax_s.plot(grid, grid, "k-", lw=1, label="B_crit = B_simple")
    for x, y, ci, t, color in pts:
      # A bootstrap bound is None where too few resamples fitted: no bar on that side.
      lo_ci, hi_ci = ci if ci else (None, None)
      yerr = [
        [0 if lo_ci is None else max(y - lo_ci, 0)],
        [0 if hi_ci is None else max(hi_ci - y, 0)],
      ]
      ax_s.errorbar([x], [y], yerr=yerr, fmt="o", color=color, capsize=3, label=f"target {t:g}")
    ax_s.set(xlim=(lo, hi), ylim=(lo, hi))
  ax_s.set(
    xscale="log",
    yscale="log",
    xlabel="B_simple at the target (median over B)",
    ylabel="B_crit fitted from S(B)",
    title="critical batch vs noise scale",
  )
  ax_s.legend(fontsize=7)
  return common.save_figure(fig, path)
