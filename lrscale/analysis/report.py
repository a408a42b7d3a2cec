"""Written outputs of an analysis: results.csv, analysis.json and report.md."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lrscale.analysis import targets
from lrscale.analysis.steps_to_result import TrialOutcome
from lrscale.analysis.store_reader import final_b_simple


def to_jsonable(obj: Any) -> Any:
  """Recursively convert to strict-JSON types: numpy scalars to Python, NaN/inf to ``None``.

  Strict JSON keeps analysis.json readable by any consumer (``json.load``
  with NaN is Python-only).
  """
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return to_jsonable(dataclasses.asdict(obj))
  if isinstance(obj, Mapping):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return to_jsonable(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  return obj


def write_analysis_json(analysis: Mapping[str, Any], path: str) -> None:
  """Write ``analysis`` as strict, indented JSON."""
  with open(path, "w", encoding="utf-8") as f:
    json.dump(to_jsonable(analysis), f, indent=2, allow_nan=False)
    f.write("\n")


def results_rows(outcomes: Sequence[TrialOutcome]) -> tuple[list[str], list[dict[str, Any]]]:
  """One row per trial: (column names, rows). Swept params become ``param_<name>`` columns."""
  param_keys = sorted({k for o in outcomes for k in o.trial.params})
  final_keys = sorted({k for o in outcomes for k in o.trial.final_metrics()})
  rows = []
  for o in outcomes:
    t, summary = o.trial, o.trial.summary or {}
    finals = t.final_metrics()
    row: dict[str, Any] = {"id": t.id, "batch_size": t.batch_size, "lr": t.lr, "seed": t.seed}
    row.update({f"param_{k}": t.params.get(k) for k in param_keys})
    row.update(
      status=t.status,
      diverged=t.diverged,
      reached=o.reached,
      steps_to_target=o.steps,
      examples_to_target=o.examples,
      steps_source=o.source,
      steps_done=summary.get("steps"),
    )
    row.update({f"final_{k}": finals.get(k) for k in final_keys})
    row.update(wall_time_s=summary.get("wall_time_s"), b_simple_final=final_b_simple(t))
    rows.append(row)
  columns = list(rows[0]) if rows else ["id", "batch_size", "lr", "seed", "status"]
  return columns, rows


def write_results_csv(outcomes: Sequence[TrialOutcome], path: str) -> None:
  """Write :func:`results_rows` as CSV (missing values empty)."""
  columns, rows = results_rows(outcomes)
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _fmt(value: Any, spec: str = ".4g") -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return format(value, spec)
  return str(value)


def _ci(ci: Sequence[float | None] | None) -> str:
  return "-" if not ci else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
  return lines + [""]


def _per_batch_lines(analysis: Mapping[str, Any]) -> list[str]:
  pct = analysis["settings"]["within_pct"]
  header = [
    "B",
    "best lr",
    "steps",
    f"steps {int(100 * analysis['settings']['ci_level'])}% CI",
    "examples",
    f"lr range within {pct:g}%",
    "largest stable lr",
    "smallest diverged lr",
    "#reached",
    "#diverged",
    "#trials",
  ]
  rows = []
  for r in analysis["per_batch"]:
    within = (
      None if r["lr_within"] is None else f"{_fmt(r['lr_within'][0])} - {_fmt(r['lr_within'][1])}"
    )
    best_lr = _fmt(r["best_lr"]) + (" (grid edge!)" if r["best_lr_at_grid_edge"] else "")
    rows.append(
      [
        r["batch_size"],
        best_lr,
        r["best_steps"],
        _ci(r.get("best_steps_ci")),
        r["best_examples"],
        within,
        r["largest_stable_lr"],
        r["smallest_diverged_lr"],
        r["n_reached"],
        r["n_diverged"],
        r["n_trials"],
      ]
    )
  return _table(header, rows)


def _fit_lines(analysis: Mapping[str, Any]) -> list[str]:
  fit = analysis["fit"]
  if not fit.get("ok"):
    return [f"Steps fit skipped: {fit['reason']}.", ""]
  ci, boot, corr = fit["ci"], fit["ci_seed_bootstrap"], fit["corrected"]
  pct = int(100 * ci["level"])
  lines = [
    f"Model: {fit['model']}; RMS log residual {fit['rmse_log']:.3f}. **{pct}% intervals**: "
    f"profile likelihood on log S with the residual variance pooled across batch sizes "
    f"(sigma_log {ci['sigma_log']:.3f}, {ci['dof']} dof, F(1, n-2) threshold; Bates & Watts 1988), "
    "fitted to best steps corrected for the winner's curse of picking the best of several noisy "
    "lrs (bootstrap bias estimate, scaled by sqrt(n/(n-1)) for n seeds). The seed-resampling "
    f"bootstrap ({boot['n_ok']}/{fit['n_bootstrap']} refits) is shown for comparison; it is too "
    "narrow (it sees neither the lr-grid error nor, with 2 seeds, the seed variance). "
    "`-` marks an end the data do not bound.",
    "",
  ]
  lines += _table(
    ["quantity", "estimate", "corrected", f"{pct}% CI", "seed bootstrap"],
    [
      [f"{q} ({u})", fit[k], corr[k], _ci(ci[k]), _ci(boot[k])]
      for q, u, k in (
        ("S_min", "steps", "s_min"),
        ("B_crit", "examples", "b_crit"),
        ("E_min", "examples", "e_min"),
      )
    ],
  )
  if fit["b_crit_at_bound"]:
    lines += [
      "**Warning:** B_crit sits on its search bound: the measured batch sizes do not "
      "show the bend of S(B), so B_crit is not identified.",
      "",
    ]
  return lines


def _regime_lines(analysis: Mapping[str, Any]) -> list[str]:
  reg = analysis["regimes"]
  if not reg.get("ok"):
    return [f"Regimes skipped: {reg['reason']}.", ""]
  th = reg["thresholds"]
  lines = [
    f"Local slope d log S / d log B between consecutive batch sizes: perfect scaling if <= "
    f"{th['perfect_slope']}, maximal data parallelism if > {th['maximal_slope']}, "
    "diminishing returns in between (Shallue et al. 2018).",
    "",
  ]
  lines += _table(
    ["B from", "B to", "slope", "regime"],
    [[iv["b_lo"], iv["b_hi"], f"{iv['slope']:.2f}", iv["regime"]] for iv in reg["intervals"]],
  )
  if reg.get("fitted_boundaries"):
    fb = reg["fitted_boundaries"]
    fci = fb.get("ci") or {}
    lines += [
      f"**On the fitted curve** (slope -B_crit/(B + B_crit); intervals from the B_crit interval): "
      f"perfect scaling up to B = {_fmt(fb['perfect_until'])} {_ci(fci.get('perfect_until'))} "
      f"(B_crit/{1 / (-1 / th['perfect_slope'] - 1):.3g}), maximal data parallelism from B = "
      f"{_fmt(fb['maximal_from'])} {_ci(fci.get('maximal_from'))} "
      f"({-1 / th['maximal_slope'] - 1:.3g} B_crit), diminishing returns in between. The "
      "consecutive-pair slopes above are noisy and do not place these boundaries.",
      "",
    ]
  lub = reg["largest_useful_batch"]
  lines += [
    f"**Largest useful batch** ({lub['definition']}): fitted {_fmt(lub['fitted'])}, measured "
    f"{_fmt(lub['measured'])}"
    + ("" if lub["measured_within_grid"] else " (no flat interval in the grid: at least this)")
    + ".",
    "",
  ]
  return lines


def _lr_lines(analysis: Mapping[str, Any]) -> list[str]:
  lr = analysis["lr_fit"]
  if not lr.get("ok"):
    return [f"Learning-rate fit skipped: {lr['reason']}.", ""]
  sat = (
    f"saturating at max_lr = {_fmt(lr['max_lr'])} from B = {_fmt(lr['saturation_batch'])}"
    if lr["max_lr"]
    else "no saturation detected"
  )
  lines = [
    f"Fitted lr*(B) = {_fmt(lr['coef'])} * B^{lr['exponent']:.3f}, {sat} (model `{lr['model']}`, "
    f"RMS log residual {lr['rms_log_residual']:.3f}).",
    "",
  ]
  rules = lr["rules"]
  rows = [
    [b, best, fit, lin, sq]
    for b, best, fit, lin, sq in zip(
      lr["batch_sizes"], lr["best_lr"], lr["fitted_lr"], rules["linear"]["lr"], rules["sqrt"]["lr"]
    )
  ]
  lines += _table(["B", "best lr", "fitted", "linear rule", "sqrt rule"], rows)
  lines += [
    f"RMS log error anchored at the smallest B: linear {rules['linear']['rms_log_error']:.3f}, "
    f"sqrt {rules['sqrt']['rms_log_error']:.3f}, fitted {lr['rms_log_residual']:.3f}.",
    "",
  ]
  if lr["grid_edge_batches"]:
    lines += [
      f"**Warning:** the best lr is at the edge of the lr grid for B = {lr['grid_edge_batches']}; "
      "the optimum may lie outside the grid.",
      "",
    ]
  lines += [
    "`lr_rule` in analysis.json (read by the `fitted` scaling rule): "
    f"`{json.dumps(analysis['lr_rule'])}` meaning lr(B) = min(coef * B^exponent, max_lr).",
    "",
  ]
  return lines


def _noise_lines(analysis: Mapping[str, Any]) -> list[str]:
  noise = analysis.get("noise_scale") or {}
  if not noise.get("available"):
    return ["No gradient-noise-scale data were logged.", ""]
  lines = [
    f"{noise['definition']}. B_simple grows during training, so three readings are named: "
    "`final` (last value, median over non-diverged trials), `at_target` (best trial, at its "
    "steps to result) and `trajectory_mean` (best trial, mean up to the target). B_crit: "
    f"{_fmt(noise['b_crit'])} (McCandlish et al. find B_crit ~ B_noise within about an order "
    "of magnitude).",
    "",
  ]
  readings = noise.get("readings") or {}
  lines += _table(
    ["reading", "median over B", "ratio to B_crit"],
    [[k, v["median"], v["ratio_to_b_crit"]] for k, v in readings.items()],
  )
  lines += _table(
    ["B", "median final", "best trial at target", "best trial trajectory mean", "#trials"],
    [
      [
        r["batch_size"],
        r["final_median"],
        r["best_trial_at_target"],
        r.get("best_trial_trajectory_mean"),
        r["n_trials"],
      ]
      for r in noise["per_batch"]
    ],
  )
  return lines


def _theory_lines(analysis: Mapping[str, Any]) -> list[str]:
  th = analysis.get("theory")
  if not th:
    return []
  p = th["problem"]
  yes = {True: "yes", False: "**no**", None: "-"}
  pct = lambda v: f"{100 * v:.3g}%"  # noqa: E731
  per_seed = analysis["settings"].get("target_from", "per_seed") == "per_seed"
  lines = [
    "## Exact answer vs measured",
    "",
    f"Gaussian linear regression, dim {p['dim']}, h_i = i^-{p['alpha']:g}, w*_i = "
    f"i^-{p['teacher_power']:g}, noise {p['noise']:g}: {th['definition']}. Target relative "
    f"excess <= {th['target_rel']:g}. `exact at eval` rounds the exact step up to the study's "
    f"next evaluation. Measured intervals: seed bootstrap of the best steps, pointwise "
    f"{pct(th['ci_level'])} and a simultaneous band ({pct(th['band_level'])} at each of "
    f"{len(th['per_batch'])} batch sizes, Bonferroni), each widened by one evaluation interval "
    f"(a step count is whole evaluations). Exact inside: {th['n_inside_ci']}/"
    f"{len(th['per_batch'])} pointwise, {th['n_inside_band']}/{len(th['per_batch'])} in the band.",
    "",
  ]
  if per_seed:
    lines += [
      "**Caveat:** steps are read per seed (first passage of one noisy run), which comes "
      "before the expected risk's crossing where fluctuations are large (small B); "
      "`config.analysis.target_from='seed_mean'` measures what the theory computes.",
      "",
    ]
  lines += _table(
    [
      "B",
      "exact steps",
      "exact at eval",
      "measured steps",
      "pointwise CI",
      "band",
      "exact in band",
      "exact best lr",
      "measured best lr",
    ],
    [
      [
        r["batch_size"],
        r["exact_steps"],
        r["exact_steps_at_eval"],
        r["measured_steps"],
        _ci(r.get("measured_ci")),
        _ci(r.get("measured_band")),
        yes[r.get("exact_inside_band")],
        r["exact_best_lr"],
        r["measured_best_lr"],
      ]
      for r in th["per_batch"]
    ],
  )
  rows = []
  for name, label in (("s_min", "S_min"), ("b_crit", "B_crit")):
    c = th["comparison"][name]
    rows.append([label, c["exact"], c["measured"], _ci(c["ci"]), yes[c["exact_inside_ci"]]])
  lines += _table(["quantity", "exact fit", "measured fit", "measured CI", "exact inside CI"], rows)
  return lines


def render_report(analysis: Mapping[str, Any]) -> str:
  """The markdown report of an analysis dict."""
  study = analysis["study"]
  t = study["target"]
  plots = set(analysis.get("plots") or [])
  img = lambda name, alt: [f"![{alt}]({name})", ""] if name in plots else []  # noqa: E731
  lines = [
    f"# Batch-size scaling study: {study['name']}",
    "",
    f"Target: {t['metric']} {'<=' if t['mode'] == 'min' else '>='} {t['value']}. Optimizer "
    f"{study['optimizer']}, scaling rule {study['scaling_rule']}, reference batch {study['reference_batch']}, "
    f"base lr {study['base_lr']}. Trials: {analysis['n_trials']} ({analysis['status_counts']}).",
    "",
    f"**Policy.** {analysis['policy']}",
    "",
    "## Per batch size",
    "",
    *_per_batch_lines(analysis),
  ]
  if analysis.get("seed_mean_undetermined"):
    pts = analysis["seed_mean_undetermined"]
    lines += [
      f"**Warning:** {len(pts)} point(s) whose seeds stopped before their mean curve met the "
      "target (read as not reached, so a slower lr may have won there; make "
      "target.stop_value harder): "
      + ", ".join(f"B={p['batch_size']} lr={p['lr']:.4g}" for p in pts)
      + ".",
      "",
    ]
  if analysis["excluded_batches"]:
    lines += [
      "Excluded from the fits: "
      + ", ".join(f"B={e['batch_size']} ({e['reason']})" for e in analysis["excluded_batches"])
      + ".",
      "",
    ]
  lines += [
    "## Steps to result",
    "",
    *img("steps_to_result.png", "steps to result"),
    *_fit_lines(analysis),
    *img("examples_to_result.png", "examples to result"),
    *img("tradeoff.png", "trade-off"),
    *_theory_lines(analysis),
    *targets.report_lines(analysis),
    "## Regimes",
    "",
    *_regime_lines(analysis),
    "## Optimal learning rate",
    "",
    *img("optimal_lr.png", "optimal lr"),
    *_lr_lines(analysis),
    *img("lr_sensitivity.png", "lr sensitivity"),
    "## Gradient noise scale",
    "",
    *img("noise_scale.png", "noise scale"),
    *_noise_lines(analysis),
    "Per-trial results: `results.csv`; every number: `analysis.json`.",
    "",
  ]
  return "\n".join(lines)


def write_report(analysis: Mapping[str, Any], path: str) -> None:
  """Write :func:`render_report` to ``path``."""
  with open(path, "w", encoding="utf-8") as f:
    f.write(render_report(analysis))
