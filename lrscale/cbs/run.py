"""Running a CBS measurement: the reference, its branches, cbs.json, figure and report."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from absl import logging

from lrscale import config as config_lib
from lrscale.cbs import branch, exact, measure
from lrscale.data import registry
from lrscale.engine import loop as loop_lib
from lrscale.engine import outputs
from lrscale.engine.checkpoint import Checkpointer, abstract_like
from lrscale.engine.programs import program_key
from lrscale.engine.setup import RunSetup


def run_cbs(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the reference (or resumes it), every branch, and writes the results.

  Outputs in ``workdir``: reference/ (a normal run), branches/t<step>_k<k>_s<seed>/,
  cbs.json, cbs.png, report.md. Finished branches are not rerun.
  """
  plan = branch.validate(cfg)
  loop_lib.prepare(plan.config, plan=plan)
  ref_dir = os.path.join(workdir, "reference")
  data = registry.load_in_memory(plan.config.dataset)
  if not os.path.exists(os.path.join(ref_dir, "summary.json")):  # finished runs are not resumed
    loop_lib.train(plan.config, ref_dir, plan=plan, data=data)
  ckpt = Checkpointer(ref_dir, keep=cfg.num_points + 1)
  setups: dict[Any, RunSetup] = {}
  rows = []
  weights = {}
  try:
    for step in branch.branch_points(cfg, plan):
      for seed in cfg.seeds:
        for k in cfg.multipliers:
          rows.append(_run_branch(cfg, plan, ckpt, setups, data, workdir, step, k, seed))
      if exact.applies(cfg, plan):
        weights[step] = _start_state(cfg, plan, ckpt, setups, data, step, 1, cfg.seeds[0]).params
  finally:
    ckpt.close()
  result = _results(cfg, plan, rows, ref_dir)
  if weights:  # linreg: the exact CBS beside the measured one
    for point, (step, ex) in zip(result["points"], exact.exact_points(cfg, plan, weights).items()):
      assert point["step"] == step
      point["exact_cbs"] = ex["cbs"]
      point["exact_metric"] = {str(k): v for k, v in ex["expected"].items()}
  from lrscale.cbs.plan import plan_batch_ramp  # pylint: disable=g-import-not-at-top

  result["batch_ramp"] = plan_batch_ramp(result["points"], batch_size=plan.batch_size)
  outputs.atomic_write_json(os.path.join(workdir, "cbs.json"), result)
  from lrscale.cbs import report  # pylint: disable=g-import-not-at-top  (matplotlib)

  report.write(result, workdir)
  return result


def _setup(setups, bplan, data) -> RunSetup:
  key = program_key(bplan)
  if key not in setups:
    setups[key] = RunSetup(bplan, data)
  return setups[key]


def _start_state(cfg, plan, ckpt, setups, data, step, k, seed):
  """A branch's first state: its fresh state, with the reference's at ``step`` > 0."""
  bplan = branch.branch_plan(cfg, plan, step=step, k=k, seed=seed)
  fresh = _setup(setups, bplan, data).initial_state(bplan)
  if step == 0:
    return fresh
  restored, _ = ckpt.restore(step, abstract_like(fresh))
  return branch.branch_state(fresh, restored)


def _run_branch(cfg, plan, ckpt, setups, data, workdir, step, k, seed) -> dict[str, Any]:
  bplan = branch.branch_plan(cfg, plan, step=step, k=k, seed=seed)
  setup = _setup(setups, bplan, data)
  out = branch.branch_dir(workdir, step, k, seed)
  summary_path = os.path.join(out, "summary.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
  else:
    start = _start_state(cfg, plan, ckpt, setups, data, step, k, seed)
    summary = loop_lib.train(
      bplan.config, out, plan=bplan, setup=setup, data=data, initial_state=start
    )
  first = outputs.read_jsonl(os.path.join(out, "metrics.jsonl"))[0]
  logging.info("CBS branch t=%d k=%d seed=%d: %s", step, k, seed, summary["final"])
  return dict(
    step=step,
    examples_at_branch=plan.examples_at(step),
    k=k,
    batch_size=bplan.batch_size,
    seed=seed,
    lr=bplan.lr,
    branch_steps=bplan.total_steps,
    branch_examples=bplan.total_steps * bplan.batch_size,
    start_metric=first.get(cfg.metric),
    metric=summary["final"].get(cfg.metric) if summary["status"] != "diverged" else float("nan"),
    status=summary["status"],
  )


def _results(cfg, plan: config_lib.RunPlan, rows, ref_dir: str) -> dict[str, Any]:
  ref_rows = outputs.read_jsonl(os.path.join(ref_dir, "metrics.jsonl"))
  points = []
  for step in branch.branch_points(cfg, plan):
    per_seed = []
    for seed in cfg.seeds:
      losses = {r["k"]: r["metric"] for r in rows if r["step"] == step and r["seed"] == seed}
      per_seed.append(measure.critical_multiplier(losses, cfg.tolerance) * plan.batch_size)
    points.append(
      dict(
        step=step,
        examples=plan.examples_at(step),
        tokens=plan.examples_at(step) * plan.dataset.tokens_per_example or None,
        cbs_per_seed=per_seed,
        cbs=measure.summarize(per_seed),
        b_simple=measure.b_simple_at(ref_rows, step),
        reference_metric=next(
          (r[cfg.metric] for r in ref_rows if r["step"] == step and cfg.metric in r), None
        ),
      )
    )
  return dict(
    reference_batch=plan.batch_size,
    multipliers=list(cfg.multipliers),
    max_batch=plan.batch_size * max(cfg.multipliers),
    rule=cfg.rule or branch.default_rule(plan.optimizer),
    tolerance=cfg.tolerance,
    metric=cfg.metric,
    branch_length=cfg.branch_length,
    tokens_per_example=plan.dataset.tokens_per_example,
    dataset=plan.dataset.summary(),
    points=points,
    branches=rows,
  )
