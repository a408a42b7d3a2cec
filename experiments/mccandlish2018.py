"""McCandlish et al. 2018, "An Empirical Model of Large-Batch Training".

The findings reproduced: (1) the best steps S and examples E to a target,
across batch sizes, lie on the hyperbola (S/S_min - 1)(E/E_min - 1) = 1, i.e.
S(B) = S_min (1 + B_crit / B) with B_crit = E_min / S_min; (2) the gradient
noise scale measured during training, B_simple = tr(Sigma) / |G|^2, predicts
B_crit within roughly an order of magnitude (from the paper). Both come from one
study: the steps-to-result measurement of Shallue et al. (experiments/
shallue2018.py) with B_simple logged by every trial, analysed here for several
targets, since B_crit and B_simple are both properties of a point in training.

``--mode=full`` analyses Shallue et al.'s MNIST / Fashion-MNIST CNN studies
(experiments/shallue2018.py's full mode, noise scale on) in ``--study_dir``
(shallue2018's full-mode workdir; default this workdir). ``--mode=analogue``
reuses the digits study in ``--study_dir``, by default
``runs/shallue2018/study`` (where the documented shallue2018 command puts it)
when that exists, else ``<workdir>/study``; a missing or incomplete study is
run or finished there, and a directory holding another study is refused.

  python -m experiments.mccandlish2018 --mode=analogue --workdir=runs/mccandlish2018 \
      --study_dir=runs/shallue2018/study --outdir=docs/images/mccandlish2018
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments import common, shallue2018
from experiments import mccandlish2018_figures as mc_figures
from lrscale import errors
from lrscale.analysis.run import build_analysis
from lrscale.analysis.store_reader import Study, Target, load_study

NAME = "mccandlish2018"
TITLE = "McCandlish et al. 2018: critical batch size and gradient noise scale"
DEFAULT_STUDY_DIR = os.path.join("runs", shallue2018.NAME, shallue2018.STUDY_SUBDIR)
# Eval-accuracy targets of the analogue, easiest first; none is a multiple of
# 1/360 (the eval set), so no measured accuracy sits exactly on a target. The
# last is the study's own target (trials stop there).
ANALOGUE_TARGETS = (0.88, 0.92, 0.94, shallue2018.ANALOGUE_TARGET)
SMOKE_TARGETS = (0.6, 0.7, 0.8)
# Full mode: val-error targets per dataset, the last being Shallue et al.'s.
FULL_TARGETS = {"mnist": (0.97, 0.98, 0.99), "fashion_mnist": (0.86, 0.88, 0.90)}
ORDER_OF_MAGNITUDE = mc_figures.ORDER_OF_MAGNITUDE


def targets_for(study: Study, values: Sequence[float]) -> list[Study]:
  """The same trials judged against each target (the study's metric and mode)."""
  t = study.spec.target
  return [
    dataclasses.replace(
      study,
      spec=dataclasses.replace(
        study.spec, target=Target(metric=t.metric, value=float(v), mode=t.mode)
      ),
    )
    for v in values
  ]


def b_simple_at_target(analysis: Mapping[str, Any]) -> dict[str, Any]:
  """B_simple of each batch size's best trial when it reached the target; median over B.

  B_simple does not depend on the batch size it is measured at (it is
  tr(Sigma)/|G|^2 at the current weights), so every batch size's best trial
  gives an estimate at the same point of training; the median is robust to
  the noisy estimates of the smallest batches.
  """
  noise = analysis.get("noise_scale") or {}
  per_b = {r["batch_size"]: r["best_trial_at_target"] for r in noise.get("per_batch", [])}
  vals = [v for v in per_b.values() if v is not None and math.isfinite(v) and v > 0]
  return dict(per_batch=per_b, median=float(np.median(vals)) if vals else None, n=len(vals))


def analyse_targets(
  study: Study, values: Sequence[float], *, n_bootstrap: int = 200
) -> list[dict[str, Any]]:
  """Per target: the fitted S_min, E_min, B_crit (bootstrap CI), the points, B_simple."""
  rows = []
  for judged in targets_for(study, values):
    a = build_analysis(judged, n_bootstrap=n_bootstrap)
    fit = a["fit"]
    noise = b_simple_at_target(a)
    points = [
      (r["batch_size"], r["best_steps"]) for r in a["per_batch"] if r["best_steps"] is not None
    ]
    ratio = None
    if fit.get("ok") and noise["median"]:
      ratio = fit["b_crit"] / noise["median"]
    rows.append(
      dict(
        target=judged.spec.target.value,
        metric=judged.spec.target.metric,
        fit_ok=fit["ok"],
        reason=fit.get("reason"),
        s_min=fit.get("s_min"),
        e_min=fit.get("e_min"),
        b_crit=fit.get("b_crit"),
        b_crit_ci=(fit.get("ci") or {}).get("b_crit"),
        rmse_log=fit.get("rmse_log"),
        b_crit_at_bound=fit.get("b_crit_at_bound"),
        batch_sizes=[b for b, _ in points],
        steps=[s for _, s in points],
        b_simple=noise["median"],
        b_simple_per_batch=noise["per_batch"],
        b_crit_over_b_simple=ratio,
        series=(a.get("noise_scale") or {}).get("series", []),
      )
    )
  return rows


def findings(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """The paper's two claims judged on every target that could be fitted."""
  fitted = [r for r in rows if r["fit_ok"]]
  ratios = [r["b_crit_over_b_simple"] for r in fitted if r["b_crit_over_b_simple"]]
  within = [1 / ORDER_OF_MAGNITUDE <= x <= ORDER_OF_MAGNITUDE for x in ratios]
  rmse = [r["rmse_log"] for r in fitted]
  b_crit = [r["b_crit"] for r in fitted]
  return dict(
    n_targets=len(rows),
    n_fitted=len(fitted),
    max_rmse_log=max(rmse) if rmse else None,
    hyperbola_fits=bool(rmse) and max(rmse) < 0.15,  # within ~16% on every point
    ratios=ratios,
    within_order_of_magnitude=bool(within) and all(within),
    b_crit_increases_with_target=len(b_crit) > 1
    and all(b2 >= b1 for b1, b2 in zip(b_crit, b_crit[1:])),
    any_b_crit_at_bound=any(r["b_crit_at_bound"] for r in fitted),
  )


def verdict_lines(rows: Sequence[Mapping[str, Any]], found: Mapping[str, Any]) -> list[str]:
  """Honest one-liners on the two claims, plus how B_crit moves with the target."""
  fitted = [r for r in rows if r["fit_ok"]]
  if not fitted:
    return ["No target had 3 batch sizes reaching it: nothing to fit."]
  ratio_text = ", ".join(
    f"{r['target']:g}: {r['b_crit_over_b_simple']:.2g}" for r in fitted if r["b_crit_over_b_simple"]
  )
  lines = [
    common.verdict(
      found["hyperbola_fits"],
      "the measured (S, E) points lie on (S/S_min - 1)(E/E_min - 1) = 1.",
      f"Largest RMS log residual of S(B) = S_min (1 + B_crit / B) over the targets: "
      f"{found['max_rmse_log']:.3f} (we call < 0.15, i.e. ~16 %, a fit)"
      + (
        ", but B_crit hit its search bound for some target" if found["any_b_crit_at_bound"] else ""
      )
      + ".",
    ),
    common.verdict(
      found["within_order_of_magnitude"],
      "the gradient noise scale B_simple predicts B_crit within an order of magnitude.",
      f"B_crit / B_simple by target: {ratio_text}.",
    ),
  ]
  b = ", ".join(f"{r['b_crit']:.3g}" for r in fitted)
  lines.append(
    f"Observation: B_crit by target (easiest first): {b} examples; it "
    f"{'grows' if found['b_crit_increases_with_target'] else 'does not grow steadily'}"
    " as the target gets harder."
  )
  return lines


# ----------------------------------------------------------------------------- report


def target_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """S_min, E_min, B_crit with its interval, and B_simple, one row per target."""
  # A bootstrap bound is None where too few resamples fitted; fmt writes it as "-".
  ci = lambda c: "-" if not c else f"[{common.fmt(c[0], '.3g')}, {common.fmt(c[1], '.3g')}]"  # noqa: E731
  return common.md_table(
    [
      "target",
      "batch sizes reaching it",
      "S_min (steps)",
      "E_min (examples)",
      "B_crit (examples)",
      "B_crit 90% CI",
      "RMS log resid.",
      "B_simple at target (median)",
      "B_crit / B_simple",
    ],
    [
      [
        f"{r['metric']} >= {r['target']:g}",
        len(r["batch_sizes"]),
        common.fmt(r["s_min"], ".3g"),
        common.fmt(r["e_min"], ".3g"),
        common.fmt(r["b_crit"], ".3g"),
        ci(r["b_crit_ci"]),
        common.fmt(r["rmse_log"], ".3f"),
        common.fmt(r["b_simple"], ".3g"),
        common.fmt(r["b_crit_over_b_simple"], ".2g"),
      ]
      for r in rows
    ],
  )


def noise_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """B_simple of each batch size's best trial at each target."""
  batches = sorted({b for r in rows for b in r["b_simple_per_batch"]})
  return common.md_table(
    ["B"] + [f"B_simple at {r['target']:g}" for r in rows],
    [[b] + [common.fmt(r["b_simple_per_batch"].get(b), ".3g") for r in rows] for b in batches],
  )


def report_sections(
  entries: Sequence[tuple[str, str, Sequence[Mapping[str, Any]], Mapping[str, Any]]],
  figures: Mapping[str, Sequence[str]],
  runtime_s: float,
  done: common.Done | None,
  smoke: bool,
  mode: str,
) -> list[str]:
  """The model in words, then per workload: findings, fit table, figures, B_simple table."""
  sections = [
    "McCandlish et al. 2018 model the steps S and examples E to a target as "
    "(S/S_min - 1)(E/E_min - 1) = 1, so S(B) = S_min (1 + B_crit / B) with B_crit = "
    "E_min / S_min, and find that the simple noise scale B_simple = tr(Sigma) / |G|^2, "
    "measured cheaply during training with the two-batch estimator, tracks B_crit within "
    "roughly an order of magnitude across tasks (from the paper). They give no number for "
    "our setting, so the comparison is qualitative. B_simple here is the EMA of the "
    "two-batch estimates (each batch split in two) logged by every trial."
  ]
  for label, study_dir, rows, found in entries:
    sections += [
      f"## {label}\n\nStudy: `{study_dir}` (the steps-to-result study of "
      "experiments/shallue2018.py; best lr and momentum per batch size), analysed for "
      f"{len(rows)} targets.",
      "### Findings\n\n" + "\n".join(f"- {x}" for x in verdict_lines(rows, found)),
      "### Trade-off and fit per target\n\n"
      + target_table(rows)
      + "\n\n"
      + f"![trade-off]({figures[label][0]})",
      "### Noise scale vs critical batch size\n\n" + f"![noise scale]({figures[label][1]})\n\n"
      "B_simple of each batch size's best trial at the moment it reached each target "
      "(the smallest batches give the noisiest estimates; non-positive estimates, where "
      "the unbiased |G|^2 estimate went negative, are left out):\n\n" + noise_table(rows),
    ]
  if mode == "analogue":
    sections.append(
      common.runtime_line(runtime_s, done, smoke=smoke) + " (Reused trials "
      "come from the shared study; its own runtime is in the Shallue report.) "
      "Command: `python -m experiments.mccandlish2018 --mode=analogue "
      f"--workdir=runs/{NAME} --study_dir={DEFAULT_STUDY_DIR} "
      f"--outdir=docs/images/{NAME}`."
    )
  return sections


def default_study_dir(mode: str, workdir: str, *, smoke: bool) -> str:
  """Where the shared study is when ``--study_dir`` is not given (see the module docstring)."""
  if mode == "full":
    return workdir
  if not smoke and os.path.exists(os.path.join(DEFAULT_STUDY_DIR, "study.json")):
    return DEFAULT_STUDY_DIR
  return os.path.join(workdir, shallue2018.STUDY_SUBDIR)


def run(
  *,
  mode: str = "analogue",
  workdir: str,
  outdir: str | None = None,
  smoke: bool = False,
  study_dir: str | None = None,
) -> dict[str, Any]:
  """Analyses (running it first if needed) the shared study; writes report, results, figures."""
  if mode != "full" and study_dir and not os.path.exists(os.path.join(study_dir, "study.json")):
    # Given explicitly, it names an existing study: a typo must not start a new one.
    raise errors.MissingInput(
      f"--study_dir={study_dir} holds no study.json: check the path (an existing study "
      "directory), or omit --study_dir to use the default."
    )
  study_dir = study_dir or default_study_dir(mode, workdir, smoke=smoke)

  def execute(outdir: str) -> common.Outcome:
    if mode == "full":
      studies = shallue2018.full_studies()
      for study in studies.values():
        common.check_full_study(study)
      dirs = {k: os.path.join(study_dir, k) for k in studies}
      done = None
      for k, study in studies.items():
        common.run_study(study, dirs[k])
      work = [(f"{k} (simple CNN)", dirs[k], FULL_TARGETS[k]) for k in studies]
    else:
      done = shallue2018.ensure_study(study_dir, smoke=smoke)
      work = [("digits MLP", study_dir, SMOKE_TARGETS if smoke else ANALOGUE_TARGETS)]
    entries, figures, results = [], {}, {}
    for i, (label, sdir, values) in enumerate(work):
      rows = analyse_targets(load_study(sdir), values, n_bootstrap=50 if smoke else 200)
      found = findings(rows)
      prefix = "" if len(work) == 1 else f"{i}_"
      figures[label] = [
        mc_figures.plot_tradeoff(rows, os.path.join(outdir, f"{prefix}tradeoff.png")),
        mc_figures.plot_noise_scale(rows, os.path.join(outdir, f"{prefix}noise_scale.png")),
      ]
      entries.append((label, sdir, rows, found))
      results[label] = dict(
        findings=found, targets=[{k: v for k, v in r.items() if k != "series"} for r in rows]
      )
    return common.Outcome(
      sections=lambda runtime: report_sections(entries, figures, runtime, done, smoke, mode),
      results=dict(workloads=results),
      figures=[f for names in figures.values() for f in names],
      returned=dict(results=results),
    )

  return common.run_experiment(
    NAME, TITLE, execute, mode=mode, workdir=workdir, outdir=outdir, smoke=smoke
  )


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top

  _STUDY_DIR = flags.DEFINE_string(
    "study_dir",
    "",
    "The shared steps-to-result study (experiments/shallue2018.py's "
    f"<workdir>/study); run there if missing. '' = {DEFAULT_STUDY_DIR} if it exists, "
    "else <workdir>/study (full mode: <workdir>).",
  )
  common.launch(lambda **kw: run(**kw, study_dir=_STUDY_DIR.value or None))
