"""Local critical batch size by branching (lrscale.cbs) on the digits."""

import json
import math
import os

import jax.numpy as jnp
import optax
import pytest

from lrscale import config as config_lib
from lrscale.cbs import branch, measure
from lrscale.engine.outputs import read_jsonl
from lrscale.engine.step import TrainState
from lrscale.optim import hyperparams, optimizer_config, optimizers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_critical_multiplier_and_summary():
  assert measure.critical_multiplier({1: 1.0, 2: 1.005, 4: 1.02, 8: 1.0}, 0.01) == 2
  assert measure.critical_multiplier({1: 1.0, 2: float("nan"), 4: 1.0}, 0.01) == 1
  assert measure.critical_multiplier({1: 1.0, 2: 0.9, 4: 1.0099}, 0.01) == 4
  with pytest.raises(ValueError, match="k = 1"):
    measure.critical_multiplier({2: 1.0}, 0.01)
  assert measure.summarize([16, 64, 32]) == dict(median=32.0, lo=16.0, hi=64.0, n=3)
  rows = [{"step": 10, "gns_b_simple": 5.0}, {"step": 20, "gns_b_simple": 7.0}, {"step": 25}]
  assert measure.b_simple_at(rows, 24) == 7.0 and measure.b_simple_at(rows, 5) is None


def _cfg(tmp_path=None):
  c = branch.default_config()
  r = config_lib.base_config()
  r.parallel.num_devices = 1
  r.compilation_cache = ""
  r.tensorboard = False
  r.model.hidden = (32,)
  r.optimizer.name = "momentum"
  r.schedule.name = "constant"
  r.batch_size = 16
  r.lr = 0.05
  r.budget = "46 steps"
  r.eval_every = "0.25 epochs"
  r.log_every = "5 steps"
  r.noise_scale.enabled = True
  r.noise_scale.splits = 2
  c.reference = r
  c.every = "0.25 epochs"
  c.num_points = 2
  c.multipliers = (1, 2, 4)
  c.seeds = (0,)
  c.branch_length = "320 examples"
  return c


def test_branch_arithmetic_and_bad_input():
  cfg = _cfg()
  plan = branch.validate(cfg)
  assert branch.branch_points(cfg, plan) == [0, 23, 46]  # 0.25 x 1437 / 16 -> 23 steps
  for k in (1, 2, 4):
    b = branch.branch_plan(cfg, plan, step=23, k=k, seed=0)
    assert b.batch_size == 16 * k and b.total_steps * b.batch_size == 320
    assert b.lr == pytest.approx(0.05 * k)  # linear for SGD-type
  cfg.reference.optimizer.name = "adamw"
  cfg.reference.lr = 1e-3
  cfg.rule = "sqrt+beta2_halflife"
  plan = branch.validate(cfg)
  b = branch.branch_plan(cfg, plan, step=23, k=4, seed=0)
  assert b.lr == pytest.approx(2e-3) and b.optimizer.b2 == pytest.approx(0.999**4)
  bad = _cfg()
  bad.multipliers = (2, 4)
  with pytest.raises(ValueError, match="config.multipliers"):
    branch.validate(bad)
  bad = _cfg()
  bad.num_points = 5
  with pytest.raises(ValueError, match="exceeds the reference budget"):
    branch.validate(bad)
  bad = _cfg()
  bad.reference.warmup.length = "10 steps"
  bad.reference.warmup.init_momentum = 0.8
  with pytest.raises(ValueError, match=r"config\.reference\.warmup\.init_momentum"):
    branch.validate(bad)


def test_branch_state_keeps_moments_and_takes_the_branch_hyperparameters():
  params = {"w": jnp.ones((2, 2))}
  ref_cfg, br_cfg = optimizer_config.default_config(), optimizer_config.default_config()
  ref_cfg.name = br_cfg.name = "adamw"
  br_cfg.b2 = 0.9
  ref_opt = optimizers.build_optimizer(ref_cfg, params=params)
  s = ref_opt.init(params)
  s = ref_opt.update({"w": jnp.full((2, 2), 3.0)}, hyperparams.set_learning_rate(s, 0.1), params)[1]
  fresh_opt = optimizers.build_optimizer(br_cfg, params=params).init(params)

  def state(p, o):
    return TrainState(jnp.int32(0), p, {}, o, jnp.float32(1.0), jnp.float32(1.0), None)

  out = branch.branch_state(state({"w": jnp.zeros((2, 2))}, fresh_opt), state(params, s))
  assert float(hyperparams.current_hparams(out.opt_state)["b2"]) == pytest.approx(0.9)
  assert float(out.params["w"][0, 0]) == 1.0
  mu = optax.tree_utils.tree_get(out.opt_state, "mu")["w"]  # the reference moment survives
  assert float(mu[0, 0]) == pytest.approx(0.3)


def test_cbs_end_to_end_on_digits(tmp_path):
  from lrscale.cbs.run import run_cbs

  cfg = _cfg()
  result = run_cbs(cfg, str(tmp_path))
  assert [p["step"] for p in result["points"]] == [0, 23, 46]
  ref_rows = read_jsonl(os.path.join(tmp_path, "reference", "metrics.jsonl"))
  ref_eval = {r["step"]: r["eval_loss"] for r in ref_rows if "eval_loss" in r}
  for row in result["branches"]:
    assert row["branch_examples"] == 320 and row["lr"] == pytest.approx(0.05 * row["k"])
    # a branch starts exactly where the reference was at its branch point
    assert row["start_metric"] == pytest.approx(ref_eval[row["step"]], abs=1e-5)
    assert math.isfinite(row["metric"])
  for p in result["points"]:
    assert p["cbs"]["median"] in (16, 32, 64)
    assert p["b_simple"] is None if p["step"] == 0 else p["b_simple"] > 0
  # the k = 1 branch from step 23 sees the loss fall: training continued, not restarted
  k1 = [r for r in result["branches"] if r["k"] == 1 and r["step"] == 23][0]
  assert k1["metric"] < k1["start_metric"]
  assert json.load(open(tmp_path / "cbs.json"))["points"] == result["points"]
  assert (tmp_path / "cbs.png").exists() and "| 23 |" in (tmp_path / "report.md").read_text()
  # rerun: every branch is read back, not retrained, and the numbers agree
  again = run_cbs(cfg, str(tmp_path))
  assert again["points"] == result["points"]


def test_batch_ramp_plan_follows_the_cautious_cbs():
  from lrscale import units
  from lrscale.cbs.plan import plan_batch_ramp

  def pt(examples, lo):
    return {"examples": examples, "cbs": {"lo": lo}}

  points = [pt(0, 64), pt(1000, 16), pt(2000, 40), pt(3000, 128), pt(4000, 64), pt(5000, 512)]
  ramp = plan_batch_ramp(points, batch_size=16, factor=2)
  # 32 first fits at 2000 (lo 40), 64 at 3000 (one step per point), 128 at 5000; step 0 never
  assert ramp == dict(milestones=("2000 examples", "3000 examples", "5000 examples"), factor=2)
  phases = units.make_batch_ramp(
    ramp["milestones"], factor=2, batch_size=16, num_train_examples=10_000
  )
  assert [p.multiplier for p in phases] == [1, 2, 4, 8]
  assert plan_batch_ramp(points, batch_size=16, factor=2, max_batch=64)["milestones"] == (
    "2000 examples",
    "3000 examples",
  )


def test_batch_warmup_arms_share_everything_but_the_batch():
  from experiments.batch_warmup import arms

  cfg = _cfg()
  out = arms(cfg, dict(milestones=("200 examples", "400 examples"), factor=2))
  small, large, ramp = out.values()
  assert (small.batch_size, large.batch_size, ramp.batch_size) == (16, 64, 16)
  assert ramp.batch_ramp.milestones == ("200 examples", "400 examples")
  plans = [config_lib.resolve(c) for c in (small, large, ramp)]
  assert [p.examples_at(p.total_steps) >= 46 * 16 for p in plans] == [True] * 3
  assert [p.ramp[-1].multiplier for p in plans] == [1, 1, 4]
  assert len({p.lr for p in plans}) == 1  # the same lr in every arm


def _linreg_cfg():
  return config_lib.load_config_file(os.path.join(REPO, "configs", "cbs", "linreg.py"))


def test_cbs_on_linreg_falls_where_the_exact_recursion_puts_it(tmp_path):
  import numpy as np

  from lrscale.analysis import theory
  from lrscale.cbs import exact
  from lrscale.cbs.run import run_cbs

  cfg = _linreg_cfg()
  result = run_cbs(cfg, str(tmp_path))
  assert [p["step"] for p in result["points"]] == [0, 200]
  for p in result["points"]:
    ex = {int(k): v for k, v in p["exact_metric"].items()}
    assert ex[32] > 100 * ex[1]  # past the edge the risk explodes, in expectation and in runs
    for k in cfg.multipliers:
      got = [r["metric"] for r in result["branches"] if r["step"] == p["step"] and r["k"] == k]
      if k == 32:
        assert all(not v < 10 * ex[1] for v in got), got  # NaN (diverged) or exploded
      elif k <= 8:  # away from the edge the seeds' mean estimates the expectation
        se = np.std(got, ddof=1) / math.sqrt(len(got))
        assert abs(np.mean(got) - ex[k]) < 4 * se + 1e-4, (p["step"], k, got, ex[k])
    # The exact CBS lies in the measured range over seeds (near the edge the
    # k = 16 risk is heavy-tailed, so few seeds tend to overstate the CBS).
    assert p["cbs"]["lo"] <= p["exact_cbs"] <= p["cbs"]["hi"], p
  assert "exact CBS" in (tmp_path / "report.md").read_text()

  # The recursion from a known w against an independent numpy Monte Carlo of SGD.
  plan = branch.validate(cfg)
  problem = theory.LinregSpec(dim=32)
  rng = np.random.default_rng(0)
  w0 = problem.teacher * rng.uniform(0.5, 1.5, 32)  # some point along the way
  bplan = branch.branch_plan(cfg, plan, step=0, k=8, seed=0)
  reps, h = 3000, problem.spectrum
  w = np.tile(w0, (reps, 1))
  for _ in range(bplan.total_steps):
    x = rng.standard_normal((reps, bplan.batch_size, 32)) * np.sqrt(h)
    y = x @ problem.teacher + problem.noise * rng.standard_normal((reps, bplan.batch_size))
    w -= bplan.lr / bplan.batch_size * np.einsum("rbd,rb->rd", x, np.einsum("rbd,rd->rb", x, w) - y)
  rel = 0.5 * ((w - problem.teacher) ** 2 @ h) / problem.initial_excess
  want = exact.expected_metric(cfg, plan, step=0, k=8, w=w0)
  assert abs(rel.mean() - want) < 4 * rel.std() / math.sqrt(reps), (rel.mean(), want)
