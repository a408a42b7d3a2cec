"""B_crit against the target: the same trials read at several target values.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training", Sec.
3.3 and Fig. 7) find the critical batch size grows as the target gets harder.
``config.analysis.targets`` lists extra values of the study's target metric;
each is read from the stored eval rows by the study's steps policy and
fitted with ``S(B) = S_min (1 + B_crit / B)`` and its profile intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lrscale.analysis import options
from lrscale.analysis.store_reader import Study, Target


def targets_section(
  study: Study,
  opts: options.AnalysisOptions,
  steps_curve: Callable[..., dict[str, Any]],
  **kwargs: Any,
) -> list[dict[str, Any]]:
  """One S(B) fit per value of ``config.analysis.targets`` (same metric and mode).

  McCandlish et al. (2018, Sec. 3.3) find B_crit grows as the target gets
  harder; each target's steps are read from the same eval rows (trials stop
  at the hardest), by the study's ``target_from`` policy.

  Args:
    study: The loaded study.
    opts: Its analysis options.
    steps_curve: :func:`lrscale.analysis.run.steps_curve` (passed in: it
      builds on the run module's fit section).
    **kwargs: Passed to ``steps_curve`` (bootstrap size, level, slopes).
  """
  rows = []
  t = study.spec.target
  for value in opts.targets:
    target = Target(metric=t.metric, value=value, mode=t.mode)
    c = steps_curve(study.trials, target, target_from=opts.target_from, **kwargs)
    fb, reg = c["fit_block"], c["regimes"]
    bounds = (reg.get("fitted_boundaries") or {}) if reg.get("ok") else {}
    rows.append(
      {
        "value": value,
        "fit_ok": fb["ok"],
        "reason": fb["reason"],
        "s_min": fb.get("s_min"),
        "b_crit": fb.get("b_crit"),
        "ci": {k: (fb.get("ci") or {}).get(k) for k in ("s_min", "b_crit")},
        "maximal_from": bounds.get("maximal_from"),
        "maximal_from_ci": (bounds.get("ci") or {}).get("maximal_from"),
        "batch_sizes": [s.batch_size for s in c["summaries"]],
        "best_steps": [s.best_steps for s in c["summaries"]],
      }
    )
  return rows


def report_lines(analysis: Mapping[str, Any]) -> list[str]:
  """The report's "B_crit against the target" section (empty without extra targets)."""
  # report imports this module; its table helpers are read at call time.
  from lrscale.analysis.report import _ci, _table  # pylint: disable=g-import-not-at-top

  rows = analysis.get("targets") or []
  if not rows:
    return []
  t = analysis["study"]["target"]
  op = "<=" if t["mode"] == "min" else ">="
  lines = [
    "## B_crit against the target",
    "",
    f"The same trials read at each `config.analysis.targets` value of {t['metric']} (trials "
    "stop at the hardest), each fitted on its own with profile intervals; McCandlish et al. "
    "(2018) find B_crit grows as the target gets harder. Maximal data parallelism: from "
    "9 B_crit on the fitted curve.",
    "",
  ]
  table = []
  for r in rows:
    if not r["fit_ok"]:
      table.append([f"{op} {r['value']:g}", r["reason"], "", "", "", "", ""])
      continue
    table.append(
      [
        f"{op} {r['value']:g}",
        r["s_min"],
        _ci(r["ci"]["s_min"]),
        r["b_crit"],
        _ci(r["ci"]["b_crit"]),
        r["maximal_from"],
        _ci(r["maximal_from_ci"]),
      ]
    )
  lines += _table(
    ["target", "S_min", "S_min CI", "B_crit", "B_crit CI", "flat from", "flat from CI"], table
  )
  batch = rows[0]["batch_sizes"]
  lines += _table(
    ["B", *[f"steps at {op} {r['value']:g}" for r in rows]],
    [[b, *[r["best_steps"][i] for r in rows]] for i, b in enumerate(batch)],
  )
  return lines
