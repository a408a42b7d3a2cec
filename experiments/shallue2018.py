"""Shallue et al. 2018, "Measuring the Effects of Data Parallelism on Neural Network Training".

The finding reproduced: with the learning rate and momentum tuned per batch
size, the steps to reach a fixed validation target fall with the batch size in
three regimes on a log-log plot: perfect scaling (slope -1), diminishing
returns, and maximal data parallelism (flat); the optimal learning rate
follows no single simple rule. Steps to result is the first evaluation step at
which the best trial reaches the target (their Sec. 3; lrscale.analysis).

``--mode=full`` is their MNIST and Fashion-MNIST simple-CNN workload:
``configs/mnist_cnn.py`` (targets: val error 0.01 / 0.10), batch sizes 2 ..
32768 and the full training set, quasi-random lr search with momentum swept
per batch size. It validates every trial config and then needs the prepared
TFDS datasets.

``--mode=analogue`` measures the same on the offline digits with the MLP:
B = 2 .. 1024, an absolute lr grid (factors of 2) x Nesterov momentum
{0.9, 0.99}, 2 seeds per point, target eval accuracy >= 0.96. The gradient
noise scale is logged too, so McCandlish et al.'s analysis
(experiments/mccandlish2018.py) reuses this study. A second, smaller study
runs their simple CNN (two 5x5 convolutions, 32 and 64 channels, stride 2 in
place of max-pooling, a 128-unit dense layer) on the same 8x8 digits, so a
convolutional result is measured on a CPU too: B = 4 .. 1024, momentum 0.9,
2 seeds, the same target.

  python -m experiments.shallue2018 --mode=analogue --workdir=runs/shallue2018 \
      --outdir=docs/images/shallue2018
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from experiments import common
from lrscale.analysis import plots, regimes
from lrscale.study.space import default_study_config

NAME = "shallue2018"
TITLE = "Shallue et al. 2018: steps to result vs batch size"
# Shallue et al. 2018 targets (validation error), from the paper.
PAPER_TARGET_ERROR: Mapping[str, float] = {"mnist": 0.01, "fashion_mnist": 0.10}
# Their MNIST batch sizes: 1 .. 32768 and the full 55000-example training split.
PAPER_MNIST_BATCHES = "1 .. 32768 and 55000"
ANALOGUE_TARGET = 0.96  # not a multiple of 1/360, so no eval accuracy sits exactly on it
STUDY_SUBDIR = "study"
CNN_STUDY_SUBDIR = "study_cnn"


def analogue_study(*, smoke: bool = False, model: str = "mlp") -> ml_collections.ConfigDict:
  """The digits study: B = 2 .. 1024, lr x momentum tuned per B, B_simple logged.

  Args:
    smoke: the seconds-long test variant.
    model: ``mlp`` (the main study, shared with McCandlish et al.'s analysis)
      or ``cnn`` (Shallue et al.'s simple CNN: fewer batch sizes, one momentum).
  """
  base = common.digits_base(smoke=smoke)
  if model == "cnn":
    base.model.name = "cnn"
    base.model.channels = (8, 16) if smoke else (32, 64)
    base.model.dense = 32 if smoke else 128
  base.optimizer.name = "nesterov"  # momentum comes from the swept params
  base.schedule.name = "constant"
  base.log_every = "0.05 epochs"  # train rows (and B_simple) ~20 times per epoch
  base.target.stop = True
  base.noise_scale.enabled = True  # McCandlish et al.'s B_simple, same study
  base.noise_scale.splits = 2
  s = default_study_config()
  s.name = f"shallue2018_digits_{model}" + ("_smoke" if smoke else "")
  s.base = base
  s.lr.mode = "absolute"
  s.lr.rule = "none"
  s.target.metric = "eval_accuracy"
  s.target.mode = "max"
  s.eval_every = "0.02 epochs"  # 15 steps at B = 2, every step from B = 32
  if smoke:
    s.batch_sizes = (16, 64, 256)
    s.seeds = (0,)
    s.lr.grid = (0.05, 0.2)
    s.params = "optimizer.momentum=0.9"
    s.target.value = 0.8
    s.budget = "4 epochs"
    return s
  s.batch_sizes = tuple(2**i for i in range(1, 11))
  s.seeds = (0, 1)
  s.lr.grid = tuple(2.0**-i for i in range(10, -1, -1))  # 0.00098 .. 1
  s.params = "optimizer.momentum=0.9,0.99"
  if model == "cnn":  # ~10x the MLP's step cost: a smaller grid
    s.batch_sizes = tuple(2**i for i in range(2, 11))
    s.lr.grid = tuple(2.0**-i for i in range(9, -1, -1))  # 0.002 .. 1
    s.params = "optimizer.momentum=0.9"
  s.target.value = ANALOGUE_TARGET
  s.budget = "40 epochs"
  return s


def full_studies() -> dict[str, ml_collections.ConfigDict]:
  """Their MNIST and Fashion-MNIST simple-CNN studies (configs/mnist_cnn.py).

  Differences from the paper, forced or chosen: TFDS's 60000 / 10000 train /
  test split instead of their 55000 / 5000 train / validation; B starts at 2
  (the noise-scale estimator splits each batch in two); the budget is ours.
  One device: the small CNN fits one accelerator at every B, and B = 2 cannot
  be split over several.
  """
  studies = {}
  for dataset, error in PAPER_TARGET_ERROR.items():
    base = common.load_repo_config("configs/mnist_cnn.py", dataset)
    base.parallel.num_devices = 1
    base.target.stop = True
    base.noise_scale.enabled = True
    base.noise_scale.splits = 2
    s = default_study_config()
    s.name = f"shallue2018_{dataset}_cnn"
    s.base = base
    s.batch_sizes = tuple(2**i for i in range(1, 16)) + (60000,)
    s.seeds = (0,)  # their best trial per batch size
    s.search.type = "quasirandom"  # as their search; lr log-uniform in the range
    s.search.num_trials = 34  # x 3 momenta ~ their 100 trials per B
    s.lr.mode = "absolute"
    s.lr.rule = "none"
    s.lr.grid = (1e-4, 10.0)
    s.params = "optimizer.momentum=0.9,0.99,0.999"
    s.target.metric = "eval_accuracy"
    s.target.value = 1.0 - error
    s.target.mode = "max"
    s.budget = "25 epochs"
    studies[dataset] = s
  return studies


# ----------------------------------------------------------------------------- results


def batch_rows(analysis: Mapping[str, Any]) -> list[dict[str, Any]]:
  """Per batch size: best lr and momentum, steps and examples to result, local regime."""
  regime_at = {iv["b_hi"]: iv["regime"] for iv in analysis["regimes"].get("intervals", [])}
  rows = []
  for r in analysis["per_batch"]:
    params = r.get("best_params") or {}
    rows.append(
      dict(
        batch_size=r["batch_size"],
        best_lr=r["best_lr"],
        best_momentum=params.get("optimizer.momentum"),
        steps=r["best_steps"],
        examples=r["best_examples"],
        lr_at_grid_edge=r["best_lr_at_grid_edge"],
        regime_from_previous=regime_at.get(float(r["batch_size"])),
        reached=r["best_steps"] is not None,
      )
    )
  return rows


def findings(analysis: Mapping[str, Any]) -> dict[str, Any]:
  """Whether the three regimes and a rule-less optimal lr show up in this study."""
  reg = analysis["regimes"]
  kinds = [iv["regime"] for iv in reg.get("intervals", [])]
  fit = analysis["fit"]
  lr = analysis["lr_fit"]
  rules = (lr.get("rules") or {}) if lr.get("ok") else {}
  rms = {k: v["rms_log_error"] for k, v in rules.items()}
  simple_rule_ok = bool(rms) and min(rms.values()) < 0.35  # within ~1.4x everywhere
  return dict(
    regimes_seen=sorted(set(kinds)),
    perfect_at_small_batch=bool(kinds) and kinds[0] == regimes.PERFECT,
    maximal_at_large_batch=bool(kinds) and kinds[-1] == regimes.MAXIMAL,
    three_regimes=len(set(kinds)) == 3,
    fit_ok=bool(fit.get("ok")),
    b_crit=fit.get("b_crit"),
    s_min=fit.get("s_min"),
    fitted_boundaries=reg.get("fitted_boundaries"),
    largest_useful_batch=reg.get("largest_useful_batch"),
    lr_rule_rms_log_error=rms,
    simple_lr_rule_fits=simple_rule_ok,
    lr_fit=dict(
      model=lr.get("model"),
      exponent=lr.get("exponent"),
      max_lr=lr.get("max_lr"),
      saturation_batch=lr.get("saturation_batch"),
    ),
  )


def verdict_lines(found: Mapping[str, Any]) -> list[str]:
  """Honest one-liners on the paper's claims."""
  reg = ", ".join(k.replace("_", " ") for k in found["regimes_seen"]) or "none"
  lines = [
    common.verdict(
      found["perfect_at_small_batch"] and found["maximal_at_large_batch"],
      "steps to result fall with slope about -1 at small B (perfect scaling), then bend "
      "(diminishing returns) and flatten (maximal data parallelism).",
      f"Local regimes measured between consecutive batch sizes: {reg}; first interval "
      f"{'perfect' if found['perfect_at_small_batch'] else 'not perfect'}, last "
      f"{'flat' if found['maximal_at_large_batch'] else 'not flat'}. Fitted B_crit = "
      f"{common.fmt(found['b_crit'], '.3g')} examples, S_min = "
      f"{common.fmt(found['s_min'], '.3g')} steps.",
    )
  ]
  rms = found["lr_rule_rms_log_error"]
  if rms:
    lf = found["lr_fit"]
    shape = (
      f"a power law B^{lf['exponent']:.2f}"
      if lf["model"] == "power_law"
      else f"B^{lf['exponent']:.2f} up to B = {common.fmt(lf['saturation_batch'], '.3g')}, "
      f"then flat at {common.fmt(lf['max_lr'], '.3g')}"
    )
    lines.append(
      common.verdict(
        not found["simple_lr_rule_fits"],
        "the optimal learning rate follows neither the linear nor the square-root rule "
        "over the whole range.",
        f"Best lr vs B is {shape}; RMS log error of the rules anchored at the smallest B: "
        f"linear {rms['linear']:.2f}, sqrt {rms['sqrt']:.2f} (we call a rule adequate below "
        "0.35, i.e. within ~1.4x).",
      )
    )
  return lines


def report_sections(
  entries: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
  figures: Mapping[str, Sequence[str]],
  runtime_s: float,
  done: common.Done,
  smoke: bool,
  mode: str,
) -> list[str]:
  """Sections for each studied workload (MLP and CNN in the analogue, two datasets in full)."""
  sections = [
    "Shallue et al. 2018 measure, per batch size and after tuning the learning rate and "
    "momentum, the steps needed to reach a validation target, and find three regimes: "
    "perfect scaling, diminishing returns and maximal data parallelism (from the paper). "
    f"Their MNIST sweep used B = {PAPER_MNIST_BATCHES} and target val error 0.01 "
    "(Fashion-MNIST 0.10). They report these curves as figures, not a table, so the "
    "comparison here is qualitative."
  ]
  for label, analysis, found in entries:
    study = analysis["study"]
    t = study["target"]
    rows = batch_rows(analysis)
    table = common.md_table(
      ["B", "best lr", "best momentum", "steps to result", "examples", "regime (from previous B)"],
      [
        [
          r["batch_size"],
          common.fmt(r["best_lr"], ".3g") + (" (grid edge)" if r["lr_at_grid_edge"] else ""),
          r["best_momentum"],
          r["steps"],
          r["examples"],
          (r["regime_from_previous"] or "-").replace("_", " "),
        ]
        for r in rows
      ],
    )
    excluded = ", ".join(str(e["batch_size"]) for e in analysis["excluded_batches"])
    sections += [
      f"## {label}\n\nTarget {t['metric']} >= {t['value']}; {analysis['n_trials']} trials "
      f"({analysis['status_counts']}). {analysis['policy']}"
      + (f" Batch sizes that never reached the target: {excluded}." if excluded else ""),
      "### Findings\n\n" + "\n".join(f"- {x}" for x in verdict_lines(found)),
      "### Steps to result (their Figure 1 form)\n\n"
      + "\n\n".join(f"![{name}]({name})" for name in figures[label])
      + "\n\n"
      + table,
    ]
  if mode == "analogue":
    sections.append(
      "The whole studies (every trial, `report.md` with the fit, bootstrap intervals and the "
      f"lr-sensitivity map) are in `<workdir>/{STUDY_SUBDIR}/` (MLP) and "
      f"`<workdir>/{CNN_STUDY_SUBDIR}/` (CNN). "
      + common.runtime_line(runtime_s, done, smoke=smoke)
      + f" Command: `python -m experiments.{NAME} "
      f"--mode=analogue --workdir=runs/{NAME} --outdir=docs/images/{NAME}`."
    )
  return sections


def ensure_study(study_dir: str, *, smoke: bool = False, model: str = "mlp") -> common.Done:
  """Runs the analogue study into ``study_dir`` (finished trials are skipped) and analyses it."""
  return common.run_study(analogue_study(smoke=smoke, model=model), study_dir)


def _paper_figures(analysis: Mapping[str, Any], outdir: str, prefix: str) -> list[str]:
  """lrscale's steps-to-result plot (already in their form) and the optimal-lr plot."""
  names = []
  for name, draw in (
    ("steps_to_result.png", plots.plot_steps_to_result),
    ("optimal_lr.png", plots.plot_optimal_lr),
  ):
    path = os.path.join(outdir, prefix + name)
    if draw(analysis, path) is not None:
      names.append(prefix + name)
  return names


def execute(outdir: str, *, mode: str, workdir: str, smoke: bool) -> common.Outcome:
  """Trains (or resumes) the runs, reads them back and draws the figures into ``outdir``."""
  if mode == "full":
    studies = full_studies()
    for study in studies.values():
      common.check_full_study(study)
    done = {
      f"{k} (simple CNN)": common.run_study(s, os.path.join(workdir, k)) for k, s in studies.items()
    }
    prefixes = {label: f"{i}_" for i, label in enumerate(done)}
  else:
    done = {
      "digits MLP": ensure_study(os.path.join(workdir, STUDY_SUBDIR), smoke=smoke),
      "digits simple CNN": ensure_study(
        os.path.join(workdir, CNN_STUDY_SUBDIR), smoke=smoke, model="cnn"
      ),
    }
    prefixes = {"digits MLP": "", "digits simple CNN": "cnn_"}
  analyses = {label: d.value for label, d in done.items()}
  os.makedirs(outdir, exist_ok=True)  # the analysis' plots write into it
  entries, figures, results = [], {}, {}
  for label, analysis in analyses.items():
    found = findings(analysis)
    entries.append((label, analysis, found))
    figures[label] = _paper_figures(analysis, outdir, prefixes[label])
    results[label] = dict(findings=found, per_batch=batch_rows(analysis), fit=analysis["fit"])
  total = common.Done(
    None, sum(d.total for d in done.values()), sum(d.reused for d in done.values())
  )
  return common.Outcome(
    sections=lambda runtime: report_sections(entries, figures, runtime, total, smoke, mode),
    results=dict(workloads=results),
    figures=[f for names in figures.values() for f in names],
    returned=dict(results=results, analyses=analyses),
  )


run = common.experiment(NAME, TITLE, execute)


if __name__ == "__main__":
  common.launch(run)
