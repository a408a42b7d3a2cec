"""Smith et al. 2017: growing the batch instead of decaying the lr."""

import math
import os

import numpy as np
import pytest

from lrscale import config as config_lib
from lrscale import units
from lrscale.engine import loop as train_lib
from lrscale.engine.outputs import read_jsonl
from tests.test_train import small_config, train_losses

N = 1437  # digits training examples


def test_phases_closed_form():
  phases = units.make_batch_ramp(
    ("2 epochs", "4 epochs"), factor=5, batch_size=32, num_train_examples=N
  )
  s1 = math.ceil(2 * N / 32)
  e1 = s1 * 32
  s2 = s1 + math.ceil((4 * N - e1) / 160)
  assert phases == (
    units.RampPhase(0, 0, 1),
    units.RampPhase(s1, e1, 5),
    units.RampPhase(s2, e1 + (s2 - s1) * 160, 25),
  )
  assert units.examples_at_step(s1 + 3, phases, 32) == e1 + 3 * 160
  assert units.ramp_to_steps(
    "6 epochs", phases=phases, batch_size=32, num_train_examples=N
  ) == s2 + math.ceil((6 * N - phases[2].start_example) / 800)
  with pytest.raises(ValueError, match=r"batch_ramp\.milestones\[0\]"):
    units.make_batch_ramp(("100 steps",), factor=5, batch_size=32, num_train_examples=N)


def _pair():
  decay = small_config(batch_size=32, budget="6 epochs", lr=0.05)
  decay.schedule.name = "multistep"
  decay.schedule.milestones = ("2 epochs", "4 epochs")
  decay.schedule.gamma = 0.2
  ramp = small_config(batch_size=32, budget="6 epochs", lr=0.05)
  ramp.schedule.name = "constant"
  ramp.batch_ramp.milestones = ("2 epochs", "4 epochs")
  ramp.batch_ramp.factor = 5
  return decay, ramp


def test_noise_scale_of_ramp_matches_the_decay_run_it_replaces():
  """g = lr N / B (Smith et al.) is the same function of epochs in both runs."""
  decay_cfg, ramp_cfg = _pair()
  decay, ramp = config_lib.resolve(decay_cfg), config_lib.resolve(ramp_cfg)
  lr_d, lr_r = decay.lr_fn(), ramp.lr_fn()

  def g(plan, lr_fn, example):
    step = units.ramp_to_steps(
      f"{example} examples", phases=plan.ramp, batch_size=plan.batch_size, num_train_examples=N
    )
    step = max(step - 1, 0)  # the step that consumes this example
    batch = plan.batch_size * units.multiplier_at_step(step, plan.ramp)
    return float(lr_fn(step, plan.lr)) * N / batch

  points = np.linspace(1, 6 * N - 1, 97).astype(int)
  gd = np.array([g(decay, lr_d, e) for e in points])
  gr = np.array([g(ramp, lr_r, e) for e in points])
  np.testing.assert_allclose(gr, gd, rtol=1e-6)
  assert len(set(np.round(gd, 6))) == 3  # three noise levels: the test is not vacuous
  assert ramp.total_steps < decay.total_steps  # fewer updates for the same epochs


def test_ramp_run_compiles_once_and_matches_fixed_batch_before_the_milestone(tmp_path):
  decay_cfg, ramp_cfg = _pair()
  ramp_cfg.sync_every = "20 steps"  # several segments in every phase
  plan = config_lib.resolve(ramp_cfg)
  data = train_lib.registry.load_in_memory(plan.config.dataset)
  setup = train_lib.RunSetup(plan, data)
  summary = train_lib.train(ramp_cfg, str(tmp_path / "ramp"), plan=plan, setup=setup, data=data)
  assert summary["status"] == "complete"
  assert setup.fns.train_segment._cache_size() == 1  # one program for all three phases
  rows = [
    r for r in read_jsonl(os.path.join(tmp_path, "ramp", "metrics.jsonl")) if "train_loss" in r
  ]
  for r in rows:
    assert r["examples_seen"] == plan.examples_at(r["step"])
  assert summary["examples_seen"] >= 6 * N
  assert summary["final"]["eval_accuracy"] > 0.9
  # Before the first milestone the ramp run is a plain B=32 constant-lr run.
  fixed = small_config(batch_size=32, budget="6 epochs", lr=0.05)
  fixed.schedule.name = "constant"
  train_lib.train(fixed, str(tmp_path / "fixed"))
  first = plan.ramp[1].start_step // 5  # log rows are every 5 steps
  np.testing.assert_allclose(
    train_losses(tmp_path / "ramp")[:first], train_losses(tmp_path / "fixed")[:first], rtol=1e-5
  )


def test_bad_ramp_is_rejected():
  _, ramp = _pair()
  ramp.batch_ramp.factor = 1
  with pytest.raises(ValueError, match=r"config\.batch_ramp\.factor"):
    config_lib.resolve(ramp)
