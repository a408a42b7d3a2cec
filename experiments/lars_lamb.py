"""LARS (You, Gitman & Ginsburg 2017) and LAMB (You et al. 2019) at the largest batches.

The claim checked: layer-wise trust ratios let large-batch training keep the
small-batch accuracy where plain momentum SGD (LARS's baseline) and Adam(W)
(LAMB's baseline) lose it; LARS trained ResNet-50 to B = 32k without accuracy
loss (from the paper). lrscale's ``lars`` is optax.lars (weight decay, trust
ratio 1e-3 * ||w|| / ||g + wd w||, lr, momentum) and ``lamb`` is optax.lamb
(Adam, decoupled weight decay, trust ratio, lr); see docs/optimizers.md.

Each optimizer gets its own small lr grid (half-decade steps) at every batch
size, with the same warmup + polynomial (power 2) decay, the schedule LARS
was published with; the best lr by mean final error over seeds is reported,
and how wide the near-best lr range is (robustness).

``--mode=full``: ImageNet ResNet-50 (configs/imagenet_resnet50_goyal.py's
model, data and BN) at B = 8k, 16k and 32k, 90 epochs, 5-epoch warmup, poly(2)
decay; lr grids and weight decays are ours (the papers give none), so treat
it as a template. ``--mode=analogue``: the MLP on the offline digits at the
analogue study's largest batches, B = 512 and 1024, plus momentum SGD at
B = 64 as the small-batch reference.

  python -m experiments.lars_lamb --mode=analogue --workdir=runs/lars_lamb \
      --outdir=docs/images/lars_lamb
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from experiments import common
from lrscale.analysis.steps_to_result import first_step_reaching
from lrscale.analysis.store_reader import Target

NAME = "lars_lamb"
TITLE = "LARS and LAMB (You et al.) vs momentum SGD and AdamW at large batch"
OPTIMIZERS: Mapping[str, str] = {
  "momentum": "momentum SGD",
  "lars": "LARS",
  "adamw": "AdamW",
  "lamb": "LAMB",
}
# Weight decay per optimizer: L2 (coupled) for momentum and LARS as in their
# papers' ResNet recipes; decoupled (x lr) for AdamW and LAMB, as in LAMB's.
WEIGHT_DECAY: Mapping[str, float] = {"momentum": 1e-4, "lars": 1e-4, "adamw": 0.01, "lamb": 0.01}
NEAR_BEST_POINTS = 1.0  # an lr is "near-best" within this many error points of the best
MARGIN_POINTS = 0.5  # two optimizers differ when their errors differ by more than this


@dataclasses.dataclass(frozen=True)
class Setting:
  """Batch sizes, per-optimizer lr grids and the small-batch reference."""

  base: ml_collections.ConfigDict
  batch_sizes: tuple[int, ...]
  lr_grids: Mapping[str, tuple[float, ...]]
  seeds: tuple[int, ...]
  reference_batch: int
  reference_lrs: tuple[float, ...]  # momentum SGD at reference_batch
  target: float  # eval accuracy for steps-to-target


def schedule(
  c: ml_collections.ConfigDict, *, epochs: float, warmup_epochs: float
) -> ml_collections.ConfigDict:
  """LARS's schedule: linear warmup from 0, then polynomial decay (power 2) to 0."""
  c.budget = f"{epochs:g} epochs"
  c.warmup.length = f"{warmup_epochs:g} epochs"
  c.warmup.init_factor = 0.0
  c.schedule.name = "polynomial"
  c.schedule.power = 2.0
  c.schedule.alpha = 0.0
  return c


def analogue_setting(*, smoke: bool = False) -> Setting:
  """The digits MLP at B = 512 and 1024, each optimizer over half-decade lr steps."""
  base = common.digits_base(smoke=smoke)
  base.eval_every = "0.5 epochs"
  base.target.value = 0.96
  base.target.stop = False
  base = schedule(base, epochs=4 if smoke else 60, warmup_epochs=0.5 if smoke else 5)
  half = lambda lo, n: tuple(float(f"{lo * 10 ** (i / 2):.3g}") for i in range(n))  # noqa: E731
  if smoke:
    return Setting(
      base=base,
      batch_sizes=(256,),
      seeds=(0,),
      reference_batch=64,
      reference_lrs=(0.05,),
      target=0.8,
      lr_grids={"momentum": (0.1,), "lars": (1.0,), "adamw": (3e-3,), "lamb": (3e-2,)},
    )
  return Setting(
    base=base,
    batch_sizes=(512, 1024),
    seeds=(0, 1, 2),
    reference_batch=64,
    reference_lrs=(0.025, 0.05, 0.1),
    target=0.96,
    lr_grids={
      "momentum": half(0.01, 6),
      "lars": half(0.1, 7),
      "adamw": half(3e-4, 6),
      "lamb": half(1e-3, 6),
    },
  )


def full_setting() -> Setting:
  """ImageNet ResNet-50 at 8k .. 32k (a template: grids and weight decays are ours)."""
  base = common.load_repo_config("configs/imagenet_resnet50_goyal.py")
  base.scaling.rule = "none"
  base.warmup.init_lr = None
  base.schedule.milestones = ()
  base.schedule.gamma = None
  base.optimizer.momentum_form = "optax"
  base.optimizer.momentum = None
  base = schedule(base, epochs=90, warmup_epochs=5)
  return Setting(
    base=base,
    batch_sizes=(8192, 16384, 32768),
    seeds=(0,),
    reference_batch=256,
    reference_lrs=(0.1,),
    target=0.75,
    lr_grids={
      "momentum": (3.2, 6.4, 12.8),
      "lars": (10.0, 20.0, 30.0),
      "adamw": (2e-3, 4e-3, 8e-3),
      "lamb": (1e-2, 2e-2, 4e-2),
    },
  )


def optimizer_config(
  base: ml_collections.ConfigDict, name: str, *, batch_size: int, lr: float, seed: int
) -> ml_collections.ConfigDict:
  """One run: ``name`` at ``lr`` (absolute: no scaling rule) and ``batch_size``."""
  c = common.set_fields(base, batch_size=batch_size, lr=lr, seed=seed, **{"scaling.rule": "none"})
  c.optimizer.name = name
  c.optimizer.nesterov = False
  if name in ("momentum", "lars"):
    c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = WEIGHT_DECAY[name]
  return c


def build_runs(setting: Setting) -> list[common.Run]:
  """The small-batch reference, then every optimizer x lr x seed at every large batch."""
  runs = []
  for lr in setting.reference_lrs:
    for seed in setting.seeds:
      cfg = optimizer_config(
        setting.base, "momentum", batch_size=setting.reference_batch, lr=lr, seed=seed
      )
      runs.append(
        common.Run(
          f"reference_lr{lr:g}_s{seed}",
          cfg,
          dict(optimizer="reference", batch_size=setting.reference_batch, lr=lr, seed=seed),
        )
      )
  for b in setting.batch_sizes:
    for name, grid in setting.lr_grids.items():
      for lr in grid:
        for seed in setting.seeds:
          cfg = optimizer_config(setting.base, name, batch_size=b, lr=lr, seed=seed)
          runs.append(
            common.Run(
              f"{name}_b{b}_lr{lr:g}_s{seed}",
              cfg,
              dict(optimizer=name, batch_size=b, lr=lr, seed=seed),
            )
          )
  return runs


# ----------------------------------------------------------------------------- results


def collect(
  runs: Sequence[common.Run],
  summaries: Mapping[str, Mapping[str, Any]],
  setting: Setting,
  workdir: str,
) -> dict[str, Any]:
  """Per (optimizer, B, lr): errors over seeds, steps to target; the best lr per (optimizer, B)."""
  target = Target("eval_accuracy", setting.target, "max")
  points: dict[tuple[str, int, float], dict[str, Any]] = {}
  for r in runs:
    t, s = r.tags, summaries[r.name]
    p = points.setdefault(
      (t["optimizer"], t["batch_size"], t["lr"]), dict(errors=[], steps=[], diverged=0)
    )
    p["errors"].append(common.error_pct(s))
    p["diverged"] += s["status"] == "diverged"
    steps = first_step_reaching(common.read_rows(common.run_dir(workdir, r.name))[1], target)
    p["steps"].append(math.inf if steps is None else steps)
  best = {}
  for opt, b in sorted({k[:2] for k in points}):
    lrs = sorted(lr for o, bb, lr in points if (o, bb) == (opt, b))
    means = {lr: float(np.mean(points[(opt, b, lr)]["errors"])) for lr in lrs}
    lr_best = min(lrs, key=lambda lr: (means[lr], lr))
    p = points[(opt, b, lr_best)]
    near = [lr for lr in lrs if means[lr] <= means[lr_best] + NEAR_BEST_POINTS]
    best[f"{opt}@{b}"] = dict(
      optimizer=opt,
      batch_size=b,
      lr=lr_best,
      errors=p["errors"],
      mean=means[lr_best],
      steps_median=float(np.median(p["steps"])),
      at_grid_edge=len(lrs) > 1 and lr_best in (lrs[0], lrs[-1]),
      near_best_lrs=near,
      near_best_decades=math.log10(max(near) / min(near)),
      lrs=lrs,
      means=[means[lr] for lr in lrs],
    )
  return dict(
    best=best,
    points={
      f"{o}@{b}@{lr:g}": dict(optimizer=o, batch_size=b, lr=lr, **p)
      for (o, b, lr), p in points.items()
    },
  )


def findings(results: Mapping[str, Any], setting: Setting) -> dict[str, Any]:
  """At each large B: LARS vs momentum SGD, LAMB vs AdamW, and each vs the small-batch error."""
  best = results["best"]
  ref = best[f"reference@{setting.reference_batch}"]
  out = {}
  for b in setting.batch_sizes:
    row = {}
    for layerwise, baseline in (("lars", "momentum"), ("lamb", "adamw")):
      a, c = best[f"{layerwise}@{b}"], best[f"{baseline}@{b}"]
      row[layerwise] = dict(
        vs=baseline,
        error=a["mean"],
        baseline_error=c["mean"],
        better=a["mean"] < c["mean"] - MARGIN_POINTS,
        worse=a["mean"] > c["mean"] + MARGIN_POINTS,
        keeps_small_batch_error=a["mean"] <= ref["mean"] + NEAR_BEST_POINTS,
        baseline_keeps_small_batch_error=c["mean"] <= ref["mean"] + NEAR_BEST_POINTS,
        near_best_decades=a["near_best_decades"],
        baseline_near_best_decades=c["near_best_decades"],
      )
    out[str(b)] = row
  return dict(reference_error=ref["mean"], reference_lr=ref["lr"], by_batch=out)


# ----------------------------------------------------------------------------- figures


STYLE = {"momentum": ("C0", "o"), "lars": ("C3", "s"), "adamw": ("C2", "^"), "lamb": ("C1", "D")}


def plot(results: Mapping[str, Any], setting: Setting, path: str) -> str:
  """Final error vs lr (relative to each optimizer's best) at every large B."""
  n = len(setting.batch_sizes)
  fig, axes = common.figure(1, n, width=5.0 * n, height=4.0)
  ref = results["best"][f"reference@{setting.reference_batch}"]
  for j, b in enumerate(setting.batch_sizes):
    ax = axes[0, j]
    for opt, label in OPTIMIZERS.items():
      row = results["best"][f"{opt}@{b}"]
      color, marker = STYLE[opt]
      ax.plot(
        np.asarray(row["lrs"]) / row["lr"],
        row["means"],
        marker=marker,
        color=color,
        label=f"{label} (best lr {row['lr']:.3g}: {row['mean']:.2f} %)",
      )
    ax.axhline(
      ref["mean"],
      color="k",
      ls="--",
      lw=1,
      label=f"momentum SGD at B = {setting.reference_batch} ({ref['mean']:.2f} %)",
    )
    ax.set(
      xscale="log",
      yscale="log",
      xlabel="lr / best lr of that optimizer",
      ylabel="final eval error (%)" if j == 0 else None,
      title=f"B = {b}",
    )
    ax.legend(fontsize=7)
  return common.save_figure(fig, path)


# ----------------------------------------------------------------------------- report


def report_sections(
  results: Mapping[str, Any],
  found: Mapping[str, Any],
  setting: Setting,
  figure: str,
  runtime_s: float,
  done: common.Summaries,
  smoke: bool,
) -> list[str]:
  """Setting, verdict lines, the table in the papers' form, the figure, the runtime."""
  best = results["best"]
  ref = best[f"reference@{setting.reference_batch}"]

  def steps(r: Mapping[str, Any]) -> str:
    return "not reached" if math.isinf(r["steps_median"]) else f"{r['steps_median']:.0f}"

  rows = [
    [
      "momentum SGD (reference)",
      setting.reference_batch,
      f"{ref['lr']:.3g}",
      common.fmt_mean_std(ref["errors"]),
      steps(ref),
      "-",
    ]
  ]
  for b in setting.batch_sizes:
    for opt, label in OPTIMIZERS.items():
      r = best[f"{opt}@{b}"]
      rows.append(
        [
          label,
          b,
          f"{r['lr']:.3g}" + (" (grid edge)" if r["at_grid_edge"] else ""),
          common.fmt_mean_std(r["errors"]),
          steps(r),
          f"{r['near_best_decades']:.1f}",
        ]
      )
  table = common.md_table(
    [
      "optimizer",
      "B",
      "best lr",
      f"final error % (mean ± std, {len(setting.seeds)} seeds)",
      f"steps to {setting.target:g} accuracy (median)",
      f"decades of lr within {NEAR_BEST_POINTS:g} point of best",
    ],
    rows,
  )
  lines = []
  ref_err = found["reference_error"]
  for b, row in found["by_batch"].items():
    for opt, f in row.items():
      label, base_label = OPTIMIZERS[opt], OPTIMIZERS[f["vs"]]
      lines.append(
        common.verdict(
          f["keeps_small_batch_error"],
          f"at B = {b}, {label} keeps the small-batch error (within {NEAR_BEST_POINTS:g} point).",
          f"Ours: {f['error']:.2f} % vs {ref_err:.2f} % at B = {setting.reference_batch}.",
        )
      )
      compared = (
        "better than"
        if f["better"]
        else "worse than"
        if f["worse"]
        else f"within {MARGIN_POINTS:g} point of"
      )
      lines.append(
        common.verdict(
          f["better"] and not f["baseline_keeps_small_batch_error"],
          f"at B = {b}, {base_label} loses accuracy that {label} keeps.",
          f"Ours: {label} {f['error']:.2f} % is {compared} {base_label} "
          f"{f['baseline_error']:.2f} %; {base_label} itself is "
          f"{'within' if f['baseline_keeps_small_batch_error'] else 'beyond'} "
          f"{NEAR_BEST_POINTS:g} point of the small-batch error. Near-best lr range: "
          f"{f['near_best_decades']:.1f} vs {f['baseline_near_best_decades']:.1f} decades.",
        )
      )
  base = setting.base
  return [
    "You et al. (LARS, 2017; LAMB, 2019) scale each layer's step by a trust ratio "
    "||w|| / ||update|| so that large batches can use large learning rates; LARS trained "
    "ResNet-50 to B = 32k without accuracy loss (from the paper). The papers give no number "
    "for our setting, so the comparison is qualitative; all numbers below are ours.",
    "## Setting\n\n"
    f"- ours: {base.model.name} {tuple(base.model.hidden)} on the offline digits, "
    f"B = {', '.join(map(str, setting.batch_sizes))} (the analogue study's largest), "
    f"{base.budget} with a {base.warmup.length} linear warmup from 0 and polynomial "
    f"(power 2) decay to 0, lr grids per optimizer: "
    + "; ".join(
      f"{OPTIMIZERS[o]} {', '.join(f'{x:g}' for x in g)}" for o, g in setting.lr_grids.items()
    )
    + f"; weight decay {', '.join(f'{OPTIMIZERS[o]} {w:g}' for o, w in WEIGHT_DECAY.items())}"
    f" (decoupled for AdamW and LAMB); momentum 0.9; {len(setting.seeds)} seeds. Small-batch "
    f"reference: momentum SGD at B = {setting.reference_batch}, best of lr "
    f"{', '.join(f'{x:g}' for x in setting.reference_lrs)}. Best lr = lowest mean final "
    "error.\n"
    "- paper: LARS on ImageNet ResNet-50 / AlexNet up to 32k; LAMB on BERT and ResNet-50 "
    "(`--mode=full` ships an ImageNet template).",
    "## Findings\n\n" + "\n".join(f"- {x}" for x in lines),
    "## Final error and steps to target at the largest batches\n\n" + table,
    f"## Error vs learning rate\n\n![error vs lr]({figure})",
    common.runtime_line(runtime_s, done, smoke=smoke) + f" Command: `python -m experiments."
    f"{NAME} --mode=analogue --workdir=runs/{NAME} --outdir=docs/images/{NAME}`.",
  ]


def execute(outdir: str, *, mode: str, workdir: str, smoke: bool) -> common.Outcome:
  """Trains (or resumes) the runs, reads them back and draws the figures into ``outdir``."""
  setting = full_setting() if mode == "full" else analogue_setting(smoke=smoke)
  runs = build_runs(setting)
  done = common.run_all(runs, workdir, full=mode == "full")
  results = collect(runs, done, setting, workdir)
  found = findings(results, setting)
  figure = plot(results, setting, f"{outdir}/error_vs_lr.png")
  return common.Outcome(
    sections=lambda runtime: report_sections(results, found, setting, figure, runtime, done, smoke),
    results=dict(findings=found, **results),
    figures=[figure],
    returned=dict(results=results, findings=found),
  )


run = common.experiment(NAME, TITLE, execute)


if __name__ == "__main__":
  common.launch(run)
