"""Published steps-to-target tables through the same fits as a study.

``python -m lrscale.analyze --from_table=FILE.csv --workdir=W`` reads a CSV
with one row per (group, batch size): a group column (``model`` unless told),
a batch column (``batch_size`` or ``batch_size_<unit>``, e.g.
``batch_size_sequences``), ``steps_to_target`` and optionally a target column
(``target*``). Every group is fitted with ``S(B) = S_min (1 + B_crit / B)``
(:func:`lrscale.analysis.fits.fit_steps_curve`) and profile intervals
(:func:`lrscale.analysis.intervals.profile_steps_intervals`); published tables
carry one number per point, so there is no seed bootstrap and no
winner's-curse correction. Writes ``analysis.json``, ``fits.csv``,
``report.md``, ``steps_to_result.png`` (all groups) and ``b_crit.png``.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from lrscale.analysis import fits, intervals, regimes, report
from lrscale.analysis.plots import _figure, _save

STEPS_COLUMN = "steps_to_target"
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMBT])\s*$", re.IGNORECASE)
_SIZE_UNITS = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def _batch_column(columns: Sequence[str], wanted: str | None, path: str) -> str:
  if wanted and wanted not in columns:
    raise ValueError(f"{path}: no batch column {wanted!r} in {list(columns)}; pass an existing one")
  found = wanted or next(
    (c for c in columns if c == "batch_size" or c.startswith("batch_size_")), None
  )
  if found is None:
    raise ValueError(
      f"{path}: no batch-size column in {list(columns)}; name it batch_size or "
      "batch_size_<unit>, or pass --batch_column=NAME"
    )
  return found


def read_table(
  path: str, *, group_column: str = "model", batch_column: str | None = None
) -> dict[str, Any]:
  """Parse and check the CSV (before any fitting).

  Returns:
    ``{"path", "group_column", "batch_column", "target_column", "groups":
    {name: {"batch_sizes": [...], "steps": [...], "target": value or None}}}``,
    groups in file order, points sorted by batch size.

  Raises:
    ValueError: missing file, missing column, or a non-numeric or
      non-positive batch size / step count, naming the file, row and column.
  """
  if not os.path.isfile(path):
    raise ValueError(f"--from_table={path}: no such file; pass the path of a CSV file")
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  columns = list(rows[0]) if rows else []
  if not rows:
    raise ValueError(f"{path}: no data rows; the CSV needs a header and one row per point")
  if group_column not in columns:
    raise ValueError(
      f"{path}: no group column {group_column!r} in {columns}; pass --group_column=NAME"
    )
  batch = _batch_column(columns, batch_column, path)
  if STEPS_COLUMN not in columns:
    raise ValueError(f"{path}: no column {STEPS_COLUMN!r} in {columns}; add it (steps per point)")
  target = next((c for c in columns if c.startswith("target")), None)
  groups: dict[str, dict[str, Any]] = {}
  for i, row in enumerate(rows, start=2):  # line 1 is the header
    values = []
    for col in (batch, STEPS_COLUMN):
      try:
        v = float(row[col])
      except (TypeError, ValueError):
        v = math.nan
      if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{path} line {i}: column {col!r} = {row[col]!r}; must be a number > 0")
      values.append(v)
    g = groups.setdefault(str(row[group_column]), {"batch_sizes": [], "steps": [], "target": None})
    g["batch_sizes"].append(values[0])
    g["steps"].append(values[1])
    if target and row.get(target) not in (None, ""):
      g["target"] = row[target]
  for g in groups.values():
    order = np.argsort(g["batch_sizes"])
    g["batch_sizes"] = [g["batch_sizes"][j] for j in order]
    g["steps"] = [g["steps"][j] for j in order]
  return {
    "path": path,
    "group_column": group_column,
    "batch_column": batch,
    "target_column": target,
    "groups": groups,
  }


def model_size(name: str) -> float | None:
  """``"85M"`` -> 8.5e7, ``"1.2B"`` -> 1.2e9; ``None`` when the name is not a size."""
  m = _SIZE.match(name)
  return None if m is None else float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def fit_group(batch_sizes: Sequence[float], steps: Sequence[float], level: float) -> dict[str, Any]:
  """Fit, intervals and fitted regime boundaries of one group (or the reason it was skipped)."""
  if len(set(batch_sizes)) < 3:
    return {"ok": False, "reason": f"{len(set(batch_sizes))} distinct batch sizes; need 3"}
  fit = fits.fit_steps_curve(batch_sizes, steps)
  ci = intervals.profile_steps_intervals(batch_sizes, steps, level=level)
  regime_block = regimes.regimes_summary(batch_sizes, steps, fit, b_crit_ci=ci["b_crit"])
  return {
    "ok": True,
    "s_min": fit.s_min,
    "b_crit": fit.b_crit,
    "e_min": fit.e_min,
    "rmse_log": fit.rmse_log,
    "b_crit_at_bound": fit.b_crit_at_bound,
    "ci": ci,
    "fitted_boundaries": regime_block["fitted_boundaries"],
  }


def build_table_analysis(table: dict[str, Any], *, level: float = 0.9) -> dict[str, Any]:
  """Every group's fit as one JSON-able dict."""
  groups = {}
  for name, g in table["groups"].items():
    groups[name] = {
      **g,
      "model_size": model_size(name),
      **fit_group(g["batch_sizes"], g["steps"], level),
    }
  return {
    "source": {k: table[k] for k in ("path", "group_column", "batch_column", "target_column")},
    "model": "S(B) = S_min (1 + B_crit / B), least squares on log S (McCandlish et al. 2018)",
    "ci_level": level,
    "groups": groups,
  }


def plot_steps(analysis: dict[str, Any], path: str) -> str:
  """Steps to target vs B for every group, with each group's fitted curve."""
  fig, ax = _figure(7.0, 5.0)
  for k, (name, g) in enumerate(analysis["groups"].items()):
    b = np.array(g["batch_sizes"])
    ax.plot(b, g["steps"], "o", color=f"C{k}", ms=4)
    if g["ok"]:
      grid = np.geomspace(b.min() / 1.5, b.max() * 1.5, 200)
      label = f"{name}: B_crit={g['b_crit']:.3g}, S_min={g['s_min']:.3g}"
      ax.plot(
        grid, fits.steps_model(grid, g["s_min"], g["b_crit"]), "-", color=f"C{k}", label=label
      )
  unit = analysis["source"]["batch_column"]
  ax.set(xscale="log", yscale="log", xlabel=unit, ylabel="steps to target")
  ax.set_title(f"Steps to target: {os.path.basename(analysis['source']['path'])}", fontsize=9)
  ax.legend(fontsize=7)
  return _save(fig, path)


def plot_b_crit(analysis: dict[str, Any], path: str) -> str | None:
  """B_crit per group with its interval; against model size when the names are sizes."""
  items = [(n, g) for n, g in analysis["groups"].items() if g["ok"]]
  if not items:
    return None
  sizes = [g["model_size"] for _, g in items]
  by_size = all(s is not None for s in sizes)
  x = np.array(sizes if by_size else range(len(items)), dtype=float)
  est = np.array([g["b_crit"] for _, g in items])
  lo = np.array([g["ci"]["b_crit"][0] or e for (_, g), e in zip(items, est)])
  hi = np.array([g["ci"]["b_crit"][1] or e for (_, g), e in zip(items, est)])
  fig, ax = _figure()
  ax.errorbar(x, est, yerr=[est - lo, hi - est], fmt="o", color="k", capsize=3)
  for (name, _), xi, yi in zip(items, x, est):
    ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(5, -10), fontsize=7)
  ax.set(yscale="log", ylabel=f"B_crit ({analysis['source']['batch_column']})")
  if by_size:
    ax.set(xscale="log", xlabel="model size (parameters)")
  else:
    ax.set_xticks(x, [n for n, _ in items])
  ax.set_title(f"Critical batch size ({int(100 * analysis['ci_level'])}% profile intervals)")
  return _save(fig, path)


def render_table_report(analysis: dict[str, Any], plots: Sequence[str]) -> str:
  """Markdown report: one row per group."""
  src = analysis["source"]
  pct = int(100 * analysis["ci_level"])
  rows = []
  for name, g in analysis["groups"].items():
    if not g["ok"]:
      rows.append([name, len(g["batch_sizes"]), g["target"], g["reason"], "", "", "", ""])
      continue
    fb = g["fitted_boundaries"]
    rows.append(
      [
        name,
        len(g["batch_sizes"]),
        g["target"],
        g["s_min"],
        report._ci(g["ci"]["s_min"]),
        g["b_crit"],
        report._ci(g["ci"]["b_crit"]),
        f"{fb['maximal_from']:.4g} {report._ci(fb['ci']['maximal_from'])}",
      ]
    )
  lines = [
    f"# Steps-to-target table: {os.path.basename(src['path'])}",
    "",
    f"{analysis['model']}, one fit per `{src['group_column']}`; batch sizes in "
    f"`{src['batch_column']}`. {pct}% profile-likelihood intervals (residual variance pooled "
    "across batch sizes, F(1, n-2) threshold). Maximal data parallelism: where the fitted slope "
    "rises above -0.1 (9 B_crit).",
    "",
    *report._table(
      [
        src["group_column"],
        "#B",
        src["target_column"] or "target",
        "S_min",
        f"S_min {pct}% CI",
        "B_crit",
        f"B_crit {pct}% CI",
        "maximal from",
      ],
      rows,
    ),
  ]
  lines += [f"![{p}]({p})\n" for p in plots]
  return "\n".join(lines) + "\n"


def analyze_table(
  path: str,
  workdir: str,
  *,
  group_column: str = "model",
  batch_column: str | None = None,
  level: float = 0.9,
) -> dict[str, Any]:
  """Read, fit and write every output of a steps-to-target table into ``workdir``."""
  table = read_table(path, group_column=group_column, batch_column=batch_column)
  analysis = build_table_analysis(table, level=level)
  os.makedirs(workdir, exist_ok=True)
  plots = [os.path.basename(plot_steps(analysis, os.path.join(workdir, "steps_to_result.png")))]
  if plot_b_crit(analysis, os.path.join(workdir, "b_crit.png")):
    plots.append("b_crit.png")
  analysis["plots"] = plots
  analysis = report.to_jsonable(analysis)
  report.write_analysis_json(analysis, os.path.join(workdir, "analysis.json"))
  with open(os.path.join(workdir, "fits.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(
      [
        "group",
        "n_batches",
        "s_min",
        "s_min_lo",
        "s_min_hi",
        "b_crit",
        "b_crit_lo",
        "b_crit_hi",
        "rmse_log",
      ]
    )
    for name, g in analysis["groups"].items():
      if g["ok"]:
        ci = g["ci"]
        writer.writerow(
          [
            name,
            len(g["batch_sizes"]),
            g["s_min"],
            *ci["s_min"],
            g["b_crit"],
            *ci["b_crit"],
            g["rmse_log"],
          ]
        )
  with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
    f.write(render_table_report(analysis, plots))
  return analysis
