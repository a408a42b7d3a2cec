"""Transfer rules head to head: which one keeps training the same when the batch grows?

Rules compared, each from one reference run (AdamW at lr_ref, b2, weight decay
tuned at B_ref) to B = k B_ref (lrscale.optim.scaling, lrscale.optim.transfer_rules):

* ``linear``: lr x k (Goyal et al. 2017);
* ``sqrt``: lr x sqrt(k);
* ``adam_sde``: lr x sqrt(k), 1 - beta x k for both betas, eps / sqrt(k) (Malladi et al. 2022);
* ``sqrt+beta2_halflife``: and b2 -> b2^k, the half-life of the second moment in
  examples fixed (Marek et al. 2025);
* ``sqrt+beta2_halflife+adamw_timescale``: and lambda -> lambda k lr_ref / lr, the
  AdamW timescale tau = B / (lr lambda D) fixed (Wang & Aitchison 2024; Bergsma et al. 2025);
* ``muon``: Muon (optax.contrib.muon, AdamW on non-matrix parameters) with the sqrt
  rule, from its own reference run at B_ref.

Two scores, on two workloads (a byte-level transformer on the stdlib text,
``stdlib_chars``, and the digits MLP), every run at a constant lr after a short
warmup for the same number of examples:

(a) the per-example curve mismatch against the reference batch: mean over the
    budget (after its first 10%) of |ln(loss_B / loss_ref)| of the seed-mean
    training loss in 10 bins of examples, as experiments/malladi2022.py scores rules
    (``common.mismatch``); Muon against Muon's reference;
(b) steps to result: the first evaluation step at which the seed-mean eval loss
    reaches the target, the AdamW reference's eval loss at half its budget (so the
    reference takes about half its budget, and a rule may take up to twice as many
    examples); perfect scaling is S_ref / k.

Default size (5.6 minutes, 60 runs, on 2 shared CPU cores): LM 2 blocks x width 64,
context 32, B_ref = 8 sequences, B up to 64, 1e5 tokens, 1 seed; digits MLP (128, 128),
B_ref = 32, B up to 256, 12 epochs, 2 seeds. ``--size=large`` (not run here): LM width
128, context 64, 4e5 tokens, 2 seeds; digits 20 epochs, 3 seeds, B up to 512.

  python -m experiments.transfer_rules --workdir=runs/transfer_rules \
      --outdir=docs/images/transfer_rules
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from experiments import common
from lrscale import errors
from lrscale.optim import scaling

NAME = "transfer_rules"
TITLE = "Transfer rules across batch sizes: lr, beta2 half-life, AdamW timescale, Muon"
RULES: Mapping[str, str] = {
  "linear": "linear",
  "sqrt": "sqrt",
  "adam_sde": "adam_sde (Malladi)",
  "sqrt+beta2_halflife": "sqrt + b2 half-life",
  "sqrt+beta2_halflife+adamw_timescale": "sqrt + b2 half-life + AdamW tau",
  "muon": "Muon (sqrt lr)",
}
# --smoke runs one lr rule, the full AdamW transfer and Muon: each rule is its own compile.
SMOKE_RULES = ("linear", "sqrt+beta2_halflife+adamw_timescale", "muon")
SIZES = ("default", "large")
BINS = 10


@dataclasses.dataclass(frozen=True)
class Workload:
  """One workload: the AdamW and Muon reference runs at B_ref and the batch sizes to reach.

  Attributes:
    key: short name (run directories, figure names).
    label: for the report.
    adamw: AdamW at B_ref (``scaling.reference_batch``), lr_ref, b2, weight decay.
    muon: Muon at B_ref.
    batch_sizes: B_ref first.
    seeds: seeds per point.
    budget_examples: examples per run (the x axis is examples / budget_examples).
    rules: the rules run (keys of RULES; "muon" among them).
  """

  key: str
  label: str
  adamw: ml_collections.ConfigDict
  muon: ml_collections.ConfigDict
  batch_sizes: tuple[int, ...]
  seeds: tuple[int, ...]
  budget_examples: int
  rules: tuple[str, ...] = tuple(RULES)

  @property
  def adamw_rules(self) -> tuple[str, ...]:
    return tuple(r for r in self.rules if r != "muon")

  @property
  def ref_batch(self) -> int:
    return int(self.adamw.scaling.reference_batch)


def _opts(c, *, name, lr, ref, wd, momentum=None):
  c = common.set_fields(c)
  c.optimizer.name = name
  c.optimizer.b1, c.optimizer.b2, c.optimizer.eps = 0.9, 0.99, 1e-8
  c.optimizer.momentum = momentum
  c.optimizer.weight_decay = wd
  c.schedule.name = "constant"
  c.lr = lr
  c.scaling.reference_batch = ref
  c.scaling.clip_betas = True  # adam_sde beyond k (1 - b1) = 1: b1 = 0, reported
  return c


def lm_workload(size: str, smoke: bool) -> Workload:
  """The byte-level transformer of configs/studies/lm_char.py (width 64, context 32)."""
  c = common.load_repo_config("configs/lm_char.py")
  c.noise_scale.enabled = False
  c.parallel.num_devices = 1
  c.tensorboard = False
  c.log_every, c.sync_every = "1 steps", "500 steps"
  c.checkpoint_every, c.checkpoint_keep = "1e9 tokens", 1
  large = size == "large"
  c.dataset.context = 64 if large else 32
  c.dataset.eval_examples = 128 if smoke else 512
  c.model.depth, c.model.width, c.model.heads = (
    (1, 32, 2) if smoke else (2, 128 if large else 64, 4)
  )
  tokens = 1e4 if smoke else (4e5 if large else 1e5)
  c.budget = f"{tokens:g} tokens"
  c.eval_every = f"{tokens / 20:g} tokens"
  c.warmup.length = f"{tokens / 20:g} tokens"
  if smoke:
    c.compilation_cache = ""
  batches = (8, 32) if smoke else (8, 16, 32, 64)
  return Workload(
    "lm",
    f"stdlib_chars transformer (depth {c.model.depth}, width {c.model.width}, context "
    f"{c.dataset.context}), {tokens:g} tokens",
    _opts(c, name="adamw", lr=3e-3, ref=8, wd=0.5),
    _opts(c, name="muon", lr=0.02, ref=8, wd=0.5, momentum=0.95),
    batches,
    (0,) if smoke or not large else (0, 1),
    int(tokens // c.dataset.context),
    SMOKE_RULES if smoke else tuple(RULES),
  )


def digits_workload(size: str, smoke: bool) -> Workload:
  """The digits MLP of the other analogues (experiments.common.digits_base)."""
  c = common.digits_base(smoke=smoke)
  large = size == "large"
  epochs = 3 if smoke else (20 if large else 12)
  c.budget = f"{epochs} epochs"
  c.eval_every = f"{epochs / 20:g} epochs"
  c.warmup.length = f"{epochs / 20:g} epochs"
  batches = (32, 128) if smoke else ((32, 64, 128, 256, 512) if large else (32, 64, 128, 256))
  return Workload(
    "digits",
    f"digits MLP {tuple(c.model.hidden)}, {epochs} epochs",
    _opts(c, name="adamw", lr=1e-3, ref=32, wd=0.5),
    _opts(c, name="muon", lr=0.02, ref=32, wd=0.5, momentum=0.95),
    batches,
    (0,) if smoke else ((0, 1, 2) if large else (0, 1)),
    epochs * common.DIGITS_NUM_TRAIN,
    SMOKE_RULES if smoke else tuple(RULES),
  )


def build_runs(w: Workload) -> list[common.Run]:
  """Both references at B_ref, then every rule at every larger batch, per seed."""
  runs = []
  for b in w.batch_sizes:
    for rule in ("reference", "muon_reference") if b == w.ref_batch else w.rules:
      base = w.muon if rule.startswith("muon") else w.adamw
      lr_rule = "none" if rule.endswith("reference") else ("sqrt" if rule == "muon" else rule)
      for seed in w.seeds:
        cfg = common.set_fields(base, batch_size=b, seed=seed, **{"scaling.rule": lr_rule})
        tags = dict(workload=w.key, rule=rule, batch_size=b, seed=seed)
        runs.append(common.Run(f"{w.key}_{rule.replace('+', '-')}_b{b}_s{seed}", cfg, tags))
  return runs


def scaled_hparams(cfg: ml_collections.ConfigDict) -> dict[str, float]:
  """lr, b1, b2, eps and weight decay after the run's rule."""
  s = scaling.apply_scaling(
    cfg.scaling, base_lr=float(cfg.lr), batch_size=cfg.batch_size, optimizer_cfg=cfg.optimizer
  )
  o = cfg.optimizer
  hp = dict(lr=s.lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  hp.update(s.optimizer_overrides)
  return {k: float(v) for k, v in hp.items()}


# ----------------------------------------------------------------------------- results


def steps_to(x: np.ndarray, y: np.ndarray, target: float, batch: int, budget: int) -> float:
  """Optimizer steps at the first point of the eval curve (x = examples / budget) <= target."""
  hit = np.nonzero(y <= target)[0]
  return float(round(x[hit[0]] * budget / batch)) if hit.size else math.inf


def collect(runs: Sequence[common.Run], done: common.Summaries, w: Workload, workdir: str):
  """Per (rule, B): hyperparameters, mismatch to its reference, steps to the target."""
  edges = np.linspace(0.0, 1.0, BINS + 1)
  groups, curves = common.curves_by_rule_and_batch(
    runs, workdir, edges=edges, num_train=w.budget_examples
  )
  ex, ey = curves[("reference", w.ref_batch)]["eval"]
  target = float(np.interp(0.5, ex, ey))
  cells = {}
  for (rule, b), members in groups.items():
    c = curves[(rule, b)]
    ref = curves[("muon_reference" if rule.startswith("muon") else "reference", w.ref_batch)]
    diverged = sum(done[r.name]["status"] == "diverged" for r in members)
    cells[f"{rule}@{b}"] = dict(
      rule=rule,
      batch_size=b,
      k=b / w.ref_batch,
      hparams=scaled_hparams(members[0].config),
      diverged=diverged,
      mismatch=math.inf if diverged else common.mismatch(*ref["train"], *c["train"], start=0.1),
      steps=steps_to(*c["eval"], target, b, w.budget_examples),
      final_eval_loss=float(c["eval"][1][-1]) if len(c["eval"][1]) else math.nan,
    )
  return dict(target=target, cells=cells, curves=_lists(curves))


def _lists(curves):
  return {
    f"{k[0]}@{k[1]}": {n: [list(map(float, a)) for a in v] for n, v in c.items()}
    for k, c in curves.items()
  }


def _or_inf(value: float | None) -> float:
  return math.inf if value is None else value


def findings(w: Workload, results: Mapping[str, Any]) -> dict[str, Any]:
  """Per rule: mean mismatch over B > B_ref, and at how many B it reached the target
  with what mean ln(S_B k / S_ref) there; Muon vs the best AdamW rule per B."""
  cells, larger = results["cells"], [b for b in w.batch_sizes if b != w.ref_batch]
  per_rule = {}
  for rule in w.rules:
    ref = cells[("muon_reference" if rule == "muon" else "reference") + f"@{w.ref_batch}"]
    mm = [cells[f"{rule}@{b}"]["mismatch"] for b in larger]
    excess = [
      math.log(cells[f"{rule}@{b}"]["steps"] * b / w.ref_batch / ref["steps"]) for b in larger
    ]
    reached = [e for e in excess if math.isfinite(e)]
    per_rule[rule] = dict(
      mismatch=float(np.mean(mm)),
      reached=len(reached),
      of=len(larger),
      steps_excess=float(np.mean(reached)) if reached else None,  # over the B it reached
    )
  muon = {}
  for b in w.batch_sizes:
    adamw = [cells[f"{r}@{b}"] for r in (("reference",) if b == w.ref_batch else w.adamw_rules)]
    m = cells[("muon_reference" if b == w.ref_batch else "muon") + f"@{b}"]
    best = min(a["steps"] for a in adamw)
    best_loss = min(a["final_eval_loss"] for a in adamw)
    muon[str(b)] = dict(
      muon_steps=m["steps"],
      best_adamw_steps=best,
      muon_loss=m["final_eval_loss"],
      best_adamw_loss=best_loss,
      muon_ahead=m["final_eval_loss"] < best_loss,
    )
  best_mm = min(w.adamw_rules, key=lambda r: per_rule[r]["mismatch"])
  # fewest steps: reached the target at the most batch sizes, then the least excess there
  best_steps = min(
    w.adamw_rules,
    key=lambda r: (-per_rule[r]["reached"], _or_inf(per_rule[r]["steps_excess"])),
  )
  top = str(max(w.batch_sizes))
  return dict(
    per_rule=per_rule,
    muon=muon,
    best_mismatch_rule=best_mm,
    best_steps_rule=best_steps,
    muon_ahead_at_largest=muon[top]["muon_ahead"],
    muon_ahead_at_ref=muon[str(w.ref_batch)]["muon_ahead"],
  )


def execute(outdir: str, *, mode: str, workdir: str, smoke: bool, size: str = "default"):
  """Trains (or resumes) both workloads' runs, scores the rules, draws the figure."""
  if mode != "analogue":
    raise errors.UserError(
      f"--mode={mode}: transfer_rules has only its CPU-sized analogue; use --mode=analogue "
      "(--size=large for the bigger one)."
    )
  if size not in SIZES:
    raise errors.UserError(f"--size must be one of {SIZES}, got {size!r}.")
  workloads = [lm_workload(size, smoke), digits_workload(size, smoke)]
  runs = {w.key: build_runs(w) for w in workloads}
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*clip.*", category=UserWarning)
    done = common.run_all([r for rs in runs.values() for r in rs], workdir)
    items = [(w, collect(runs[w.key], done, w, workdir)) for w in workloads]
  found = {w.key: findings(w, res) for w, res in items}
  from experiments import transfer_rules_report as report  # pylint: disable=g-import-not-at-top

  fig = report.plot_scores(items, f"{outdir}/scores.png")

  def sections(runtime):
    out = [
      "Which transfer rule keeps training the same when the batch grows k-fold from B_ref? "
      "Scores: (a) per-example curve mismatch = mean over 10 bins of the example budget "
      "(after the first) of |ln(loss_B / loss_ref)| of the seed-mean training loss, as in "
      "the Malladi report; (b) steps to the target, scored as mean ln(S_B k / S_ref) over "
      "B > B_ref that reached it (0 = perfect scaling), beside how many reached it. Constant lr after a 5% warmup, the "
      "same examples at every B. adam_sde clips b1 to 0 where k (1 - b1) >= 1. Muon is "
      "scored against its own reference at B_ref.",
      f"![scores]({fig})",
    ]
    for w, res in items:
      out += report.workload_sections(w, res, found[w.key])
    out.append(
      common.runtime_line(runtime, done, smoke=smoke) + f" Command: `python -m experiments.{NAME} "
      f"--workdir=runs/{NAME} --outdir=docs/images/{NAME}` (size {size})."
    )
    return out

  results = dict(
    size=size,
    workloads={
      w.key: dict(label=w.label, target=r["target"], cells=r["cells"], findings=found[w.key])
      for w, r in items
    },
  )
  return common.Outcome(
    sections=sections, results=results, figures=[fig], returned=dict(findings=found)
  )


def run(*, mode="analogue", workdir, outdir=None, smoke=False, size="default") -> dict[str, Any]:
  """Runs the comparison; writes report.md, results.json and scores.png to ``outdir``."""
  return common.run_experiment(
    NAME,
    TITLE,
    functools.partial(execute, mode=mode, workdir=workdir, smoke=smoke, size=size),
    mode=mode,
    workdir=workdir,
    outdir=outdir,
    smoke=smoke,
  )


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_enum(
    "size", "default", SIZES, "default: 5.6 min on 2 shared CPU cores; large: see the docstring."
  )
  common.launch(lambda **kw: run(size=flags.FLAGS.size, **kw))
