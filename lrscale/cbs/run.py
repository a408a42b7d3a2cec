"""Running a CBS measurement: the reference, its branches, cbs.json, figure and report."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from absl import logging

from lrscale import config as config_lib
from lrscale.cbs import branch, measure
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
  try:
    for step in branch.branch_points(cfg, plan):
      for seed in cfg.seeds:
        for k in cfg.multipliers:
          rows.append(_run_branch(cfg, plan, ckpt, setups, data, workdir, step, k, seed))
  finally:
    ckpt.close()
  result = _results(cfg, plan, rows, ref_dir)
  from lrscale.cbs.plan import plan_batch_ramp  # pylint: disable=g-import-not-at-top

  result["batch_ramp"] = plan_batch_ramp(result["points"], batch_size=plan.batch_size)
  outputs.atomic_write_json(os.path.join(workdir, "cbs.json"), result)
  from lrscale.cbs import report  # pylint: disable=g-import-not-at-top  (matplotlib)

  report.write(result, workdir)
  return result


def _run_branch(cfg, plan, ckpt, setups, data, workdir, step, k, seed) -> dict[str, Any]:
  bplan = branch.branch_plan(cfg, plan, step=step, k=k, seed=seed)
  key = program_key(bplan)
  if key not in setups:
    setups[key] = RunSetup(bplan, data)
  setup = setups[key]
  out = branch.branch_dir(workdir, step, k, seed)
  summary_path = os.path.join(out, "summary.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      summary = json.load(f)
  else:
    fresh = setup.initial_state(bplan)
    start = fresh
    if step > 0:
      restored, _ = ckpt.restore(step, abstract_like(fresh))
      start = branch.branch_state(fresh, restored)
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
    rule=cfg.rule or branch.default_rule(plan.config.optimizer),
    tolerance=cfg.tolerance,
    metric=cfg.metric,
    branch_length=cfg.branch_length,
    tokens_per_example=plan.dataset.tokens_per_example,
    dataset=plan.dataset.summary(),
    points=points,
    branches=rows,
  )
