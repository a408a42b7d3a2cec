"""Fine-tuning vs from-scratch learning rate across batch sizes (digits 0-4 -> 5-9).

The practice checked: a pre-trained network is fine-tuned with a *smaller* lr
than the one that trains the same network from scratch (e.g. BERT and ImageNet
transfer recipes use 10-100x below pre-training lrs), and the question of how
that best fine-tuning lr moves with the batch size B.

The MLP is pre-trained once on the offline digits' classes 0-4, then trained
on classes 5-9 (a new 5-way task, labels 0-4) two ways: fine-tuned from the
pre-trained parameters (``config.init``; the head re-initialised,
``init.reset='head/.*'``) or from scratch, with the same lr grid (factors of
2), schedule, seeds and number of epochs, at every batch size, for a short and
a long budget (pre-training should matter most when the budget is short). The
best lr is the one with the lowest mean final eval loss over seeds; a parabola
through the best grid point and its neighbours (loss vs log2 lr) refines it
between grid points. How it scales with B is the least-squares slope of
log2(best lr) on log2(B) (1: linear rule, 0.5: square root).

  python -m experiments.finetune_lr --workdir=runs/finetune_lr --outdir=docs/images/finetune_lr
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from experiments import common

NAME = "finetune_lr"
TITLE = "Fine-tuning lr vs from-scratch lr across batch sizes (digits 0-4 -> 5-9)"
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
TASK_CLASSES = (5, 6, 7, 8, 9)
ARMS = ("fine-tune", "scratch")


@dataclasses.dataclass(frozen=True)
class Setting:
  """The pre-training recipe and the sweep of the second task."""

  base: ml_collections.ConfigDict
  pretrain: Mapping[str, Any]  # config fields of the pre-training run
  batch_sizes: tuple[int, ...]
  lrs: tuple[float, ...]
  seeds: tuple[int, ...]
  budgets: tuple[float, ...]  # the second task's epochs, both arms


def analogue_setting(*, smoke: bool = False) -> Setting:
  base = common.digits_base(smoke=smoke)
  # Pixels in [0, 1] for both tasks: standardising each class subset by its own
  # statistics would shift the inputs the pre-trained layers were trained on.
  base.dataset.standardize = False
  base.optimizer.name = "momentum"
  base.optimizer.momentum = 0.9
  base.schedule.name = "cosine"
  pretrain = {
    "dataset.classes": PRETRAIN_CLASSES,
    "batch_size": 32,
    "lr": 0.05,
    "budget": "2 epochs" if smoke else "30 epochs",
  }
  if smoke:
    return Setting(base, pretrain, (16, 64), (0.01, 0.04, 0.16), (0,), (1.0,))
  lrs = tuple(0.002 * 2.0**k for k in range(10))  # 0.002 .. 1.024
  return Setting(base, pretrain, (8, 16, 32, 64, 128), lrs, (0, 1, 2), (2.0, 8.0))


def pretrain_run(setting: Setting) -> common.Run:
  """The one pre-training run on classes 0-4 (its final checkpoint is the init)."""
  cfg = common.set_fields(setting.base, **setting.pretrain)
  cfg.eval_every = cfg.budget
  return common.Run("pretrain", cfg, {"arm": "pretrain"})


def sweep_runs(setting: Setting, checkpoint: str) -> list[common.Run]:
  """Both arms on classes 5-9 at every budget, batch size, lr and seed."""
  runs = []
  for epochs in setting.budgets:
    budget = f"{epochs:g} epochs"
    for arm in ARMS:
      init = {"init.checkpoint": checkpoint, "init.reset": "head/.*"} if arm == "fine-tune" else {}
      for b in setting.batch_sizes:
        for lr in setting.lrs:
          for seed in setting.seeds:
            cfg = common.set_fields(
              setting.base,
              **{"dataset.classes": TASK_CLASSES, "batch_size": b, "lr": lr, "seed": seed},
              **{"budget": budget, "eval_every": budget},
              **init,
            )
            tags = {"epochs": epochs, "arm": arm, "batch_size": b, "lr": lr, "seed": seed}
            runs.append(common.Run(f"e{epochs:g}_{arm}_b{b}_lr{lr:g}_s{seed}", cfg, tags))
  return runs


def final_loss(summary: Mapping[str, Any]) -> float:
  """Final eval loss; a diverged (or non-finite) run counts as +inf."""
  value = summary.get("final", {}).get("eval_loss")
  if summary["status"] == "diverged" or value is None or not math.isfinite(float(value)):
    return math.inf
  return float(value)


def refine_best(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float, float, str]:
  """(grid best lr, refined best lr, why not refined): the parabola vertex in log2 lr.

  Through the best grid point and its two neighbours. At an edge of the grid
  (``'edge'``) or next to a diverged lr (``'diverged'``: the best lr sits at
  the stability limit) the grid point is returned unrefined; ``''`` = refined.
  """
  y = np.asarray(losses, float)
  i = int(np.argmin(y))
  if i == 0 or i == len(y) - 1:
    return lrs[i], lrs[i], "edge"
  if not np.all(np.isfinite(y[i - 1 : i + 2])):
    return lrs[i], lrs[i], "diverged"
  x = np.log2(np.asarray(lrs[i - 1 : i + 2], float))
  a, b, _ = np.polyfit(x, y[i - 1 : i + 2], 2)
  vertex = float(np.clip(-b / (2 * a), x[0], x[2])) if a > 0 else float(x[1])
  return lrs[i], float(2.0**vertex), ""


def slope(batch_sizes: Sequence[int], lrs: Sequence[float]) -> float:
  """Least-squares slope of log2(lr) on log2(B)."""
  return float(np.polyfit(np.log2(batch_sizes), np.log2(lrs), 1)[0])


Table = Mapping[str, Mapping[int, Mapping[str, Any]]]  # arm -> B -> row


def collect(
  runs: Sequence[common.Run], done: Mapping[str, Any], setting: Setting, epochs: float
) -> dict[str, dict[int, dict[str, Any]]]:
  """For one budget, per arm and batch size: mean final eval loss per lr, the best lr."""
  table: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in ARMS}
  for arm in ARMS:
    for b in setting.batch_sizes:
      losses, accs = [], []
      for lr in setting.lrs:
        tags = {"epochs": epochs, "arm": arm, "batch_size": b, "lr": lr}
        mine = [done[r.name] for r in runs if all(r.tags[k] == v for k, v in tags.items())]
        losses.append(float(np.mean([final_loss(s) for s in mine])))
        accs.append(100.0 - float(np.mean([common.error_pct(s, num_classes=5) for s in mine])))
      grid_best, refined, unrefined = refine_best(setting.lrs, losses)
      i = setting.lrs.index(grid_best)
      table[arm][b] = dict(
        losses=losses,
        accuracy=accs,
        best_lr=grid_best,
        refined_lr=refined,
        unrefined=unrefined,
        best_loss=losses[i],
        best_accuracy=accs[i],
      )
  return table


def initial_losses(runs: Sequence[common.Run], workdir: str, lr: float) -> dict[str, float]:
  """Per arm, the mean first train loss (before any update) of the runs at ``lr``."""
  out = {}
  for arm in ARMS:
    first = [
      common.read_rows(common.run_dir(workdir, r.name))[0][0]["train_loss"]
      for r in runs
      if r.tags["arm"] == arm and r.tags["lr"] == lr
    ]
    out[arm] = float(np.mean(first))
  return out


def findings(table: Table, setting: Setting) -> dict[str, Any]:
  """What one budget's table says about the two questions."""
  bs = setting.batch_sizes
  ft, sc = table["fine-tune"], table["scratch"]
  return dict(
    smaller_at=[b for b in bs if ft[b]["best_lr"] < sc[b]["best_lr"]],
    equal_at=[b for b in bs if ft[b]["best_lr"] == sc[b]["best_lr"]],
    larger_at=[b for b in bs if ft[b]["best_lr"] > sc[b]["best_lr"]],
    ratio_refined=[ft[b]["refined_lr"] / sc[b]["refined_lr"] for b in bs],
    slope_fine_tune=slope(bs, [ft[b]["refined_lr"] for b in bs]),
    slope_scratch=slope(bs, [sc[b]["refined_lr"] for b in bs]),
    unrefined=[
      f"{arm} B={b} ({table[arm][b]['unrefined']})"
      for arm in ARMS
      for b in bs
      if table[arm][b]["unrefined"]
    ],
    fine_tune_lower_loss_at=[b for b in bs if ft[b]["best_loss"] < sc[b]["best_loss"]],
    best_loss_ratio=[ft[b]["best_loss"] / sc[b]["best_loss"] for b in bs],
    smallest_lr_loss_ratio=[ft[b]["losses"][0] / sc[b]["losses"][0] for b in bs],
  )


def plot(tables: Mapping[float, Table], setting: Setting, path: str) -> str:
  """Per budget: eval loss vs lr (both arms, every B) and the best lr vs B."""
  fig, axes = common.figure(len(tables), 2, width=12.0, height=4.0 * len(tables))
  colors = common.batch_colors(setting.batch_sizes)
  for row, (epochs, table) in zip(axes, tables.items()):
    ax = row[0]
    for arm, style in zip(ARMS, ("-", "--")):
      for b in setting.batch_sizes:
        y = np.asarray(table[arm][b]["losses"], float)
        y[~np.isfinite(y)] = np.nan  # diverged: a gap
        ax.plot(setting.lrs, y, style, marker=".", color=colors[b], label=f"{arm} B={b}")
    ax.set(xscale="log", yscale="log", xlabel="lr", ylabel="final eval loss (mean over seeds)")
    ax.set_title(f"{epochs:g} epochs: solid fine-tuned from 0-4, dashed from scratch", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax = row[1]
    for arm, color in zip(ARMS, ("C0", "C3")):
      best = [table[arm][b] for b in setting.batch_sizes]
      ax.plot(setting.batch_sizes, [r["refined_lr"] for r in best], "o-", color=color, label=arm)
      ax.plot(setting.batch_sizes, [r["best_lr"] for r in best], "x", color=color)
    common.batch_axis(ax, setting.batch_sizes)
    ax.set(yscale="log", ylabel="best lr (o refined, x grid)")
    ax.set_title(f"{epochs:g} epochs: best lr vs batch size", fontsize=9)
    ax.legend(fontsize=7)
  return common.save_figure(fig, path)


def _table_md(table: Table, setting: Setting) -> str:
  ft, sc = table["fine-tune"], table["scratch"]
  rows = [
    [b]
    + [
      r[k] for r in (ft[b], sc[b]) for k in ("best_lr", "refined_lr", "best_loss", "best_accuracy")
    ]
    + [ft[b]["refined_lr"] / sc[b]["refined_lr"]]
    for b in setting.batch_sizes
  ]
  head = ["best lr (grid)", "(refined)", "eval loss", "acc %"]
  return common.md_table(
    ["B"] + [f"{a} {h}" for a in ARMS for h in head] + ["ratio ft / scratch"], rows
  )


def _finding_lines(epochs: float, found: Mapping[str, Any], setting: Setting) -> list[str]:
  held = len(found["smaller_at"]) == len(setting.batch_sizes)
  ratios = ", ".join(f"{r:.2f}" for r in found["ratio_refined"])
  lines = [
    common.verdict(
      held,
      f"({epochs:g} epochs) the best fine-tuning lr is smaller than the best from-scratch lr "
      "at every batch size.",
      f"On the grid it is smaller at B = {found['smaller_at'] or 'none'}, equal at "
      f"B = {found['equal_at'] or 'none'}, larger at B = {found['larger_at'] or 'none'}; "
      f"refined ratio fine-tune / scratch {ratios} (B = "
      f"{', '.join(map(str, setting.batch_sizes))}).",
    ),
    f"({epochs:g} epochs) slope of log2(best lr) on log2(B): fine-tune "
    f"{found['slope_fine_tune']:.2f}, scratch {found['slope_scratch']:.2f} "
    "(1 = linear rule, 0.5 = square root).",
    f"({epochs:g} epochs) what pre-training bought: fine-tuning reached a lower best eval "
    f"loss than scratch at B = {found['fine_tune_lower_loss_at'] or 'none'} (best-loss ratio "
    f"fine-tune / scratch {', '.join(f'{r:.2f}' for r in found['best_loss_ratio'])}; at the "
    f"smallest lr {', '.join(f'{r:.2f}' for r in found['smallest_lr_loss_ratio'])}).",
  ]
  if found["unrefined"]:
    lines.append(
      f"({epochs:g} epochs) best lr not refined (at the grid's edge, or next to an lr "
      f"that diverged: the optimum sits at the stability limit): {', '.join(found['unrefined'])}."
    )
  return lines


def report_sections(tables, founds, initial, setting, figure, runtime_s, done, smoke) -> list[str]:
  base, pre = setting.base, setting.pretrain
  lines = [x for e in setting.budgets for x in _finding_lines(e, founds[e], setting)]
  why = (
    ": a fresh head on the pre-trained features (larger activations) starts with confident "
    "random logits, a handicap a short fine-tuning run must first undo"
    if initial["fine-tune"] > 1.1 * initial["scratch"]
    else ""
  )
  lines.append(
    f"Initial train loss (before the first update): fine-tune {initial['fine-tune']:.2f}, "
    f"scratch {initial['scratch']:.2f} (ln 5 = {math.log(5):.2f}){why}."
  )
  return [
    "A common practice, not one paper's number: fine-tuning uses a smaller lr than "
    "training from scratch. Checked here on a small offline analogue; all numbers are ours.",
    "## Setting\n\n"
    f"- pre-training: {base.model.name} {tuple(base.model.hidden)} on digits {PRETRAIN_CLASSES}, "
    f"B = {pre['batch_size']}, lr {pre['lr']:g}, {pre['budget']}, momentum SGD 0.9, cosine.\n"
    f"- second task: digits {TASK_CLASSES} (relabelled 0-4), "
    f"{' and '.join(f'{e:g}' for e in setting.budgets)} epochs, cosine to 0, no warmup; "
    "fine-tune = pre-trained parameters with a fresh head (`init.reset='head/.*'`), "
    f"scratch = fresh initialisation; B = {', '.join(map(str, setting.batch_sizes))}; lr grid "
    f"{', '.join(f'{x:g}' for x in setting.lrs)}; seeds {setting.seeds}. Best lr = lowest "
    "mean final eval loss over seeds (a run that diverged counts as infinite loss).",
    "## Findings\n\n" + "\n".join(f"- {x}" for x in lines),
    *(
      f"## Best lr per batch size, {e:g} epochs\n\n" + _table_md(tables[e], setting)
      for e in setting.budgets
    ),
    f"## Eval loss vs lr\n\n![eval loss vs lr]({figure})",
    common.runtime_line(runtime_s, done, smoke=smoke)
    + f" Command: `python -m experiments.{NAME} --workdir=runs/{NAME} "
    f"--outdir=docs/images/{NAME}`.",
  ]


def execute(outdir: str, *, mode: str, workdir: str, smoke: bool) -> common.Outcome:
  """Pre-trains, sweeps both arms (resuming finished runs), analyses, draws the figure."""
  if mode != "analogue":
    raise ValueError(
      f"--mode={mode}: {NAME} has only the offline analogue (no paper-scale setting); "
      "use --mode=analogue"
    )
  setting = analogue_setting(smoke=smoke)
  pre = pretrain_run(setting)
  done_pre = common.run_all([pre], workdir)
  runs = sweep_runs(setting, common.run_dir(workdir, pre.name))
  done = common.run_all(runs, workdir)
  done.update(done_pre)
  done.total, done.reused = done.total + done_pre.total, done.reused + done_pre.reused
  tables = {e: collect(runs, done, setting, e) for e in setting.budgets}
  founds = {e: findings(tables[e], setting) for e in setting.budgets}
  initial = initial_losses(runs, workdir, setting.lrs[0])
  figure = plot(tables, setting, f"{outdir}/loss_vs_lr.png")
  results = {
    f"{e:g} epochs": dict(
      findings=founds[e],
      table={arm: {str(b): v for b, v in t.items()} for arm, t in tables[e].items()},
    )
    for e in setting.budgets
  }
  return common.Outcome(
    sections=lambda runtime: report_sections(
      tables, founds, initial, setting, figure, runtime, done, smoke
    ),
    results=dict(budgets=results, lrs=list(setting.lrs), initial_train_loss=initial),
    figures=[figure],
    returned=dict(findings=founds, tables=tables),
  )


run = common.experiment(NAME, TITLE, execute)


if __name__ == "__main__":
  common.launch(run)
