"""Smith, Kindermans, Ying & Le 2017: "Don't decay the learning rate, increase the batch size".

Claim: SGD's noise scale is g = lr N / B (N = training-set size), so multiplying
B by k at a milestone has the same effect on training, per epoch, as dividing
the lr by k, while taking k times fewer parameter updates for the rest of the
run. We train an lr-decay run (lr / 5 at each milestone) and its batch-ramp
twin (B x 5 at the same milestones, constant lr), with three seeds each, and
compare their curves per epoch and the steps each used.

Analogue (here, ~1 minute on 2 CPU cores):
  python -m experiments.smith2017 --mode=analogue --workdir=runs/smith2017
Full scale (a CIFAR-10 ResNet-20, lr 0.1 at B=128, /5 at epochs 60, 120, 160
of 200 vs B x 5 at the same epochs; needs CIFAR-10 prepared for TFDS; in memory,
without augmentation, since a batch ramp does not stream):
  python -m experiments.smith2017 --mode=full --workdir=runs/smith2017_full
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from experiments import common
from lrscale import config as config_lib
from lrscale.optim import schedule_config

NAME = "smith2017"
TITLE = "Smith et al. 2017: increase the batch size"
FACTOR = 5
SEEDS = (0, 1, 2)


def _pair(
  base, *, batch_size: int, lr: float, milestones: tuple[str, ...], budget: str
) -> dict[str, Any]:
  """The lr-decay run and its batch-ramp twin, from one base config."""
  shared = {
    "batch_size": batch_size,
    "lr": lr,
    "budget": budget,
    "optimizer.name": "momentum",
    "optimizer.momentum": 0.9,
  }
  decay = common.set_fields(
    base,
    **shared,
    **{
      "schedule.name": "multistep",
      "schedule.milestones": milestones,
      "schedule.gamma": 1.0 / FACTOR,
    },
  )
  ramp = common.set_fields(
    base, **shared, **{"batch_ramp.milestones": milestones, "batch_ramp.factor": FACTOR}
  )
  ramp.schedule = schedule_config.default_config()  # constant lr: drop the base's decay fields
  return {"lr decay": decay, "batch ramp": ramp}


def analogue_configs(*, smoke: bool) -> dict[str, Any]:
  base = common.digits_base(smoke=smoke)
  base.eval_every = "0.25 epochs"
  if smoke:
    return _pair(
      base, batch_size=16, lr=0.05, milestones=("1 epochs", "2 epochs"), budget="3 epochs"
    )
  # 16 -> 80 -> 400 examples per step; the largest stays below the 1437 train examples.
  return _pair(
    base, batch_size=16, lr=0.05, milestones=("6 epochs", "12 epochs"), budget="18 epochs"
  )


def full_configs() -> dict[str, Any]:
  base = common.load_repo_config("configs/cifar10_resnet.py")
  base.warmup.length = "0 steps"
  # A batch ramp needs in-memory data (the streamed pipeline has one batch size),
  # and in-memory data is not augmented: CIFAR-10 fits in memory, but this full
  # mode trains without the pad-4 crop + flip Smith et al. used (expect a higher error).
  base.dataset.stream = False
  base.dataset.augment = "none"
  return _pair(
    base,
    batch_size=128,
    lr=0.1,
    milestones=("60 epochs", "120 epochs", "160 epochs"),
    budget="200 epochs",
  )


def noise_scale_by_epoch(cfg, epochs: np.ndarray, num_train: int) -> np.ndarray:
  """g(epoch) = lr N / B of a run, from its resolved plan (no training needed)."""
  plan = config_lib.resolve(cfg, dataset_meta=common.stand_in_meta(cfg.dataset))
  lr_fn = plan.lr_fn()
  out = []
  for e in epochs:
    step = max(plan.to_steps(f"{e * num_train} examples") - 1, 0)
    batch = plan.batch_size * plan.microbatches_at(step) // plan.microbatches
    out.append(float(lr_fn(step, plan.lr)) * num_train / batch)
  return np.asarray(out)


def run(
  *, mode: str, workdir: str, outdir: str | None = None, smoke: bool = False
) -> Mapping[str, Any]:
  """Runs the experiment and writes report.md, results.json and the figure to ``outdir``."""
  if mode == "full":
    configs = full_configs()
    common.check_full_runs(list(configs.values()))
    return {"report": None}

  def execute(outdir: str) -> common.Outcome:
    configs = analogue_configs(smoke=smoke)
    runs = [
      common.Run(
        f"{name.replace(' ', '_')}_s{seed}",
        common.set_fields(cfg, seed=seed),
        {"method": name, "seed": seed},
      )
      for name, cfg in configs.items()
      for seed in SEEDS[: 2 if smoke else 3]
    ]
    summaries = common.run_all(runs, workdir)
    n = common.DIGITS_NUM_TRAIN
    budget_epochs = float(configs["lr decay"].budget.split()[0])
    edges = np.linspace(0, budget_epochs, 13 if smoke else 37)
    centres = (edges[:-1] + edges[1:]) / 2
    curves: dict[str, dict[str, np.ndarray]] = {}
    for name in configs:
      per_seed = {"eval_accuracy": [], "train_loss": []}
      for r in runs:
        if r.tags["method"] != name:
          continue
        train_rows, eval_rows = common.read_rows(common.run_dir(workdir, r.name))
        for key, rows in (("eval_accuracy", eval_rows), ("train_loss", train_rows)):
          x, y = common.curve(rows, key, num_train=n)
          per_seed[key].append(common.binned_mean(x, y, edges))
      curves[name] = {k: np.asarray(v) for k, v in per_seed.items()}

    fig, axes = common.figure(1, 3, width=13.0, height=3.8)
    for name, color in (("lr decay", "C0"), ("batch ramp", "C3")):
      for ax, key in zip(axes[0][:2], ("train_loss", "eval_accuracy")):
        with warnings.catch_warnings():  # bins no seed logged into stay NaN (gaps)
          warnings.simplefilter("ignore", RuntimeWarning)
          mean = np.nanmean(curves[name][key], axis=0)
          std = np.nanstd(curves[name][key], axis=0)
        ax.plot(centres, mean, color=color, label=name)
        ax.fill_between(centres, mean - std, mean + std, color=color, alpha=0.2)
      g = noise_scale_by_epoch(configs[name], centres, n)
      axes[0][2].plot(
        centres, g, color=color, label=name, linestyle="-" if name == "lr decay" else "--"
      )
    axes[0][0].set(
      xlabel="epoch", ylabel="train loss", yscale="log", title="train loss (mean, band = seeds)"
    )
    axes[0][1].set(xlabel="epoch", ylabel="eval accuracy", title="eval accuracy")
    axes[0][2].set(
      xlabel="epoch", ylabel="g = lr N / B", yscale="log", title="SGD noise scale (Smith et al.)"
    )
    for ax in axes[0]:
      ax.legend()
    fig_name = common.save_figure(fig, f"{outdir}/curves_per_epoch.png")

    rows, results = [], {}
    for name, cfg in configs.items():
      plan = config_lib.resolve(cfg)
      steps = [summaries[r.name]["steps"] for r in runs if r.tags["method"] == name]
      errors = [common.error_pct(summaries[r.name]) for r in runs if r.tags["method"] == name]
      phases = [p.start_step for p in plan.ramp] + [plan.total_steps]
      per_phase = (
        [b - a for a, b in zip(phases, phases[1:])] if len(plan.ramp) > 1 else [plan.total_steps]
      )
      rows.append(
        [name, plan.total_steps, " + ".join(map(str, per_phase)), common.fmt_mean_std(errors)]
      )
      results[name] = dict(
        total_steps=plan.total_steps,
        steps_per_phase=per_phase,
        final_error_pct=errors,
        steps_run=steps,
      )
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      acc = {k: np.nanmean(v["eval_accuracy"], axis=0) for k, v in curves.items()}
      gap = float(np.nanmax(np.abs(acc["lr decay"] - acc["batch ramp"])))
      seed_std = float(np.nanmax([np.nanstd(v["eval_accuracy"], axis=0) for v in curves.values()]))
    fewer = results["batch ramp"]["total_steps"] < results["lr decay"]["total_steps"]
    final_gap = abs(
      np.mean(results["batch ramp"]["final_error_pct"])
      - np.mean(results["lr decay"]["final_error_pct"])
    )
    final_spread = max(np.std(results[k]["final_error_pct"]) for k in results)
    held = fewer and final_gap <= max(2 * final_spread, 1.0)
    results.update(max_curve_gap=gap, max_seed_std=seed_std)
    sections = (
      lambda runtime: [  # noqa: E731
        "Smith, Kindermans, Ying & Le 2017. Analogue: MLP on the offline digits, momentum 0.9, "
        f"B0 = {configs['lr decay'].batch_size}, lr {configs['lr decay'].lr}; at each milestone "
        f"({', '.join(configs['lr decay'].schedule.milestones)}) the lr-decay run divides the lr "
        f"by {FACTOR}, the ramp multiplies the batch by {FACTOR}. Seeds {SEEDS[: len(runs) // 2]}.",
        f"![curves per epoch]({fig_name})",
        common.md_table(
          ["method", "optimizer steps", "steps per phase", "final eval error % (mean ± std)"], rows
        ),
        f"Largest gap between the two mean eval-accuracy curves per epoch bin: {gap:.3f} "
        f"(largest seed std in a bin: {seed_std:.3f}).",
        common.verdict(
          held,
          "Increasing the batch instead of decaying the lr gives the same "
          "curve per epoch with fewer parameter updates:",
          f"the ramp used {results['batch ramp']['total_steps']} steps vs "
          f"{results['lr decay']['total_steps']}; final error differs by "
          f"{final_gap:.2f} points (seed spread {final_spread:.2f}).",
        ),
        common.runtime_line(runtime, smoke=smoke),
      ]
    )
    return common.Outcome(sections=sections, results=results, figures=[fig_name])

  return common.run_experiment(
    NAME, TITLE, execute, mode=mode, workdir=workdir, outdir=outdir, smoke=smoke
  )


if __name__ == "__main__":
  common.launch(run)
