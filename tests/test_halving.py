"""Successive halving: rung arithmetic, exact pause/resume, and agreement with the grid."""

import json
import os

import pytest

from lrscale.study import halving, runner, space
from tests.test_train import run, small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rung_budgets():
  assert halving.rung_budgets(810, 10, 3) == [10, 30, 90, 270, 810]
  assert halving.rung_budgets(100, 10, 3) == [10, 30, 90, 100]
  assert halving.rung_budgets(100, 100, 3) == [100]


def test_paused_then_continued_equals_uninterrupted_with_a_decaying_schedule(tmp_path):
  cfg = small_config(**{"schedule.name": "cosine"})  # the horizon is the full budget throughout
  full = run(cfg, tmp_path / "full")
  paused = run(cfg, tmp_path / "paused", pause_at_step=25)
  assert paused["status"] == "paused" and paused["steps"] == 25  # exactly there, not at 40
  assert run(cfg, tmp_path / "paused", pause_at_step=25)["status"] == "paused"  # idempotent
  again = run(cfg, tmp_path / "paused")
  assert again["status"] == "complete" and again["final"] == full["final"]


def _study(search_type):
  from configs.studies.default import get_config  # pylint: disable=g-import-not-at-top

  s = get_config()
  s.batch_sizes = (16, 256)
  s.base.parallel.num_devices = 1
  s.base.compilation_cache = ""
  s.base.tensorboard = False
  s.base.noise_scale.enabled = False
  s.search.type = search_type
  s.search.min_budget = "0.16 epochs"
  return s


def test_bad_eta_is_named():
  s = _study("halving")
  s.search.eta = 1
  with pytest.raises(ValueError, match="config.search.eta must be an integer >= 2"):
    halving.validate(s)


def test_finds_the_grids_best_lr_with_a_fraction_of_its_steps(tmp_path):
  grid_dir, halv_dir = str(tmp_path / "grid"), str(tmp_path / "halving")
  runner.run_study(_study("grid"), grid_dir)
  runner.run_study(_study("halving"), halv_dir)
  cmp = halving.compare_with_grid(halv_dir, grid_dir)
  assert all(row["agrees"] for row in cmp["per_batch"]), cmp
  assert cmp["ratio"] <= 0.4, cmp
  # Nothing recomputed: a trial that ran to the end in both is the grid's trial, bitwise.
  for tid in os.listdir(os.path.join(halv_dir, "trials")):
    with open(os.path.join(halv_dir, "trials", tid, "summary.json")) as f:
      h = json.load(f)
    if h["status"] == "complete":
      with open(os.path.join(grid_dir, "trials", tid, "summary.json")) as f:
        assert json.load(f)["final"] == h["final"]
  with open(os.path.join(halv_dir, "halving.json")) as f:
    table = json.load(f)
  assert table["steps_used"] == cmp["halving_steps"]
  assert {r["batch_size"] for r in table["rungs"]} == {16, 256}
  assert len(space.enumerate_trials(_study("halving"))) == 24  # the grid's points
