"""Successive halving: rung arithmetic, exact incumbent bounds, exact step accounting on
synthetic curves, exact pause/resume, and agreement with the grid at a fraction of its steps."""

import json
import os

import pytest

from lrscale.study import halving, incumbent, runner, space, store
from tests.test_train import run, small_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rung_budgets():
  assert halving.rung_budgets(810, 10, 3) == [10, 30, 90, 270, 810]
  assert halving.rung_budgets(100, 10, 3) == [10, 30, 90, 100]
  assert halving.rung_budgets(100, 100, 3) == [100]
  assert [halving.num_cuts(n, 3) for n in (1, 2, 3, 8, 9, 27)] == [0, 0, 1, 1, 2, 3]
  # n = 5 points, eta 3: one cut, at S_ref / 3; the floor and the budget clip the rungs.
  assert halving.reference_budgets(88, 5, 3, 7185, 20) == [30, 7185]
  assert halving.reference_budgets(88, 9, 3, 7185, 20) == [20, 30, 7185]
  assert halving.reference_budgets(88, 9, 3, 25, 20) == [20, 25]


def _seed(steps, reached=None, finished=False):
  return incumbent.Seed(steps, reached, finished, 0.0, 0.0)


def test_incumbent_bounds_in_closed_form():
  inc = incumbent.Incumbent(steps=42.5, lr=0.025)
  half = [_seed(36, reached=36, finished=True), _seed(36)]
  assert incumbent.lower_bound(half) == (36 + 37) / 2
  assert not incumbent.beaten(incumbent.lower_bound(half), 0.05, inc)
  # median(36, x + 1) > 42.5  <=>  x >= 49; a higher lr already loses the tie at x = 48.
  assert incumbent.proof_step(half, 0.01, inc, full=1000) == 49
  assert incumbent.proof_step(half, 0.05, inc, full=1000) == 48
  both = [_seed(10), _seed(10)]  # x + 1 > 40 at a lower lr; >= 40 at a higher (ties go lower)
  assert incumbent.proof_step(both, 0.01, incumbent.Incumbent(40, 0.02), 1000) == 40
  assert incumbent.proof_step(both, 0.04, incumbent.Incumbent(40, 0.02), 1000) == 39
  assert incumbent.proof_step(both, 0.04, None, 1000) == 1000  # nothing bounds it
  dead = [_seed(7, finished=True), _seed(7)]  # one of two seeds ended short: median inf
  assert incumbent.beaten(incumbent.lower_bound(dead), 0.01, None)


def _synthetic_study(grid, **search):
  from configs.studies.default import get_config  # pylint: disable=g-import-not-at-top

  s = get_config()
  s.batch_sizes, s.seeds, s.lr.grid = (64,), (0,), grid
  s.search.type, s.search.min_steps = "halving", 0
  s.search.update(search)
  return s


def _synthetic_train(study, workdir, curves):
  """A trainer replaying made-up runs: eval accuracy climbs linearly to the 0.95 target at
  step T, or the run diverges at step D; the trial with multiplier m follows curves[m]."""
  rule = space.rule_lr(study, 64)

  def train(trial, plan, step):
    kind, at = curves[round(trial.lr / rule, 6)]
    end = min(step, at)
    tdir = store.trial_dir(workdir, trial.id)
    os.makedirs(tdir, exist_ok=True)
    store.write_trial_json(workdir, trial.to_json())
    with open(os.path.join(tdir, "metrics.jsonl"), "w") as f:
      for s in range(end if kind == "reach" else end - 1):
        acc = 0.95 * (s + 1) / at if kind == "reach" else 0.1
        f.write(json.dumps(dict(step=s + 1, eval_accuracy=acc, eval_loss=1 - acc)) + "\n")
    status = "paused" if step < at else ("complete" if kind == "reach" else "diverged")
    with open(os.path.join(tdir, "summary.json"), "w") as f:
      json.dump(dict(status=status, steps=end), f)

  return train


def _statuses(workdir, study):
  out = {}
  for t in space.enumerate_trials(study):
    s = store.read_json(os.path.join(store.trial_dir(workdir, t.id), "summary.json"))
    out[round(t.lr / space.rule_lr(study, 64), 6)] = (s["status"], s["steps"])
  return out


def test_probe_then_exact_caps_count_every_step(tmp_path):
  s = _synthetic_study((0.25, 0.5, 1.0, 2.0))
  curves = {0.25: ("reach", 90), 0.5: ("reach", 40), 1.0: ("diverge", 3), 2.0: ("reach", 60)}
  out = halving.run_halving(
    s, str(tmp_path), runner._resolved_trials(s), _synthetic_train(s, str(tmp_path), curves)
  )
  # The rule's lr (m = 1) diverges, so the next lower lr is probed and sets S* = 40; the
  # other two then run only until they cannot beat it: 40 steps at the lower lr, 39 at the
  # higher one (it would lose a tie).
  assert [r["rung"] for r in out["rungs"]] == ["probe", "probe", 0]
  assert _statuses(str(tmp_path), s) == {
    1.0: ("diverged", 3),
    0.5: ("complete", 40),
    0.25: ("pruned", 40),
    2.0: ("pruned", 39),
  }
  assert out["steps_used"] == 3 + 40 + 40 + 39 == sum(r["trained_steps"] for r in out["rungs"])
  assert out["rungs"][-1]["incumbent_steps"] == 40


def test_classic_rungs_cut_to_one_in_eta(tmp_path):
  s = _synthetic_study((0.25, 0.5, 1.0, 2.0, 4.0, 8.0), min_budget="10 steps")
  curves = {0.25: ("reach", 200), 0.5: ("reach", 120), 1.0: ("reach", 30)}
  curves.update({2.0: ("reach", 45), 4.0: ("reach", 60), 8.0: ("diverge", 5)})
  out = halving.run_halving(
    s, str(tmp_path), runner._resolved_trials(s), _synthetic_train(s, str(tmp_path), curves)
  )
  rule = space.rule_lr(s, 64)
  # Rung 0 (10 steps): the two best of six by accuracy go on; rung 1 (30): m = 1 reaches
  # the target at 30 and stops m = 2 at 29.
  assert [r["budget_steps"] for r in out["rungs"]] == [10, 30]
  assert out["rungs"][0]["survivors"] == pytest.approx([rule, 2 * rule])
  assert out["rungs"][0]["trained_steps"] == 5 * 10 + 5
  assert out["rungs"][1]["trained_steps"] == 20 + 19
  assert _statuses(str(tmp_path), s)[2.0] == ("pruned", 29)
  assert "| 64 | 1 | 30 | 2 | 39 | - |" in halving.render(out)


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
  s.batch_sizes = (8, 16)  # the two smallest: where the grid spends most of its steps
  s.base.parallel.num_devices = 1
  s.base.compilation_cache = ""
  s.base.tensorboard = False
  s.base.noise_scale.enabled = False
  s.search.type = search_type  # halving with its defaults: no first rung chosen by hand
  return s


def test_bad_eta_is_named():
  s = _study("halving")
  s.search.eta = 1
  with pytest.raises(ValueError, match="config.search.eta must be an integer >= 2"):
    halving.validate(s)


def test_a_first_rung_past_the_budget_is_named_before_any_step(tmp_path):
  s = _synthetic_study((0.5, 1.0), min_budget="100 epochs")

  def never(*_):
    raise AssertionError("trained")

  with pytest.raises(ValueError, match="config.search.min_budget='100 epochs' is .* steps"):
    halving.run_halving(s, str(tmp_path), runner._resolved_trials(s), never)


def test_finds_the_grids_best_lr_with_a_fraction_of_its_steps(tmp_path):
  from lrscale.analysis.run import analyze  # pylint: disable=g-import-not-at-top

  grid_dir, halv_dir = str(tmp_path / "grid"), str(tmp_path / "halving")
  runner.run_study(_study("grid"), grid_dir)
  runner.run_study(_study("halving"), halv_dir)
  cmp = halving.compare_with_grid(halv_dir, grid_dir)
  assert all(row["agrees"] for row in cmp["per_batch"]), cmp
  assert cmp["ratio"] <= 0.4, cmp  # measured 0.30 (1326 of 4432 steps)
  # Nothing recomputed: a trial that ran to the end in both is the grid's trial, bitwise.
  complete = 0
  for tid in os.listdir(os.path.join(halv_dir, "trials")):
    with open(os.path.join(halv_dir, "trials", tid, "summary.json")) as f:
      h = json.load(f)
    if h["status"] == "complete":
      complete += 1
      with open(os.path.join(grid_dir, "trials", tid, "summary.json")) as f:
        assert json.load(f)["final"] == h["final"]
  assert complete >= 4  # at least the probe and the best point, at both batch sizes
  with open(os.path.join(halv_dir, "halving.json")) as f:
    table = json.load(f)
  assert table["steps_used"] == cmp["halving_steps"]
  assert table["steps_used"] == sum(r["trained_steps"] for r in table["rungs"])
  assert {r["batch_size"] for r in table["rungs"]} == {8, 16}
  assert len(space.enumerate_trials(_study("halving"))) == 24  # the grid's points
  analyze(halv_dir)
  with open(os.path.join(halv_dir, "report.md")) as f:
    assert "## Successive halving" in f.read()
