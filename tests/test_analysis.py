"""Tests for lrscale.analysis on synthetic studies with known truth (tests/synthetic_study.py)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from lrscale.analysis import fits, lr_fits, regimes, run
from lrscale.analysis import steps_to_result as st
from lrscale.analysis.store_reader import Study, Target, TrialRecord, load_study
from tests.synthetic_study import make_study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLOT_FILES = [
  "steps_to_result.png",
  "examples_to_result.png",
  "optimal_lr.png",
  "lr_sensitivity.png",
  "tradeoff.png",
  "noise_scale.png",
]


def in_memory(study, **kwargs):
  """build_analysis on a synthetic study without touching disk."""
  return run.build_analysis(Study(study.spec(), study.records()), **kwargs)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """The default synthetic study written to disk (with broken extras) and analysed."""
  study = make_study(seed=0)
  workdir = study.write(str(tmp_path_factory.mktemp("study")))
  return study, workdir, run.analyze(workdir, n_bootstrap=100)


@pytest.fixture(scope="module")
def replicates():
  """20 independent synthetic studies, analysed in memory (coarser evals keep this fast)."""
  out = []
  for seed in range(20):
    study = make_study(seed=100 + seed, evals_per_curve=50)
    out.append((study.truth, in_memory(study, n_bootstrap=200, seed=seed)))
  return out


# --------------------------------------------------------------------------- steps-to-result policy


def _trial(eval_rows, summary_target=None, status="complete"):
  summary = {"status": status, "target": summary_target or {}}
  return TrialRecord(
    id="t",
    batch_size=32,
    lr=0.1,
    seed=0,
    params={},
    status=status,
    summary=summary,
    train_rows=[],
    eval_rows=eval_rows,
  )


def test_steps_is_first_eval_step_reaching_target():
  target = Target("eval_accuracy", 0.95, "max")
  rows = [
    {"step": s, "eval_accuracy": a} for s, a in [(40, 0.97), (10, 0.90), (20, 0.96), (30, math.nan)]
  ]
  # The summary claims another step: the eval rows are authoritative.
  trial = _trial(rows, {"reached": True, "step": 40})
  assert st.steps_to_target(trial, target) == (20, "metrics")
  outcome = st.trial_outcomes([trial], target)[0]
  assert outcome.examples == 20 * 32


def test_steps_min_mode_and_summary_fallback():
  target = Target("eval_loss", 0.5, "min")
  rows = [{"step": 5, "eval_loss": 0.7}, {"step": 10, "eval_loss": 0.5}]
  assert st.steps_to_target(_trial(rows), target) == (10, "metrics")
  assert st.steps_to_target(_trial([], {"reached": True, "step": 17}), target) == (17, "summary")
  assert st.steps_to_target(_trial([], {"reached": False, "step": None}), target) == (None, "none")
  never = [{"step": 5, "eval_loss": math.inf}, {"step": 10, "eval_loss": math.nan}]
  assert st.steps_to_target(_trial(never, {"reached": True, "step": 10}), target) == (
    None,
    "metrics",
  )


def test_best_trial_ties_go_to_lower_lr_and_range_within_pct():
  target = Target("eval_accuracy", 0.9)

  def trial(lr, step, status="complete"):
    rows = [{"step": step, "eval_accuracy": 0.95}] if step else [{"step": 5, "eval_accuracy": 0.1}]
    return TrialRecord(
      id=f"lr{lr}",
      batch_size=64,
      lr=lr,
      seed=0,
      params={},
      status=status,
      summary={"status": status},
      train_rows=[],
      eval_rows=rows,
    )

  trials = [
    trial(0.1, 120),
    trial(0.2, 100),
    trial(0.4, 100),
    trial(0.8, 109),
    trial(1.6, None, "diverged"),
  ]
  summary = st.summarize_batch(st.trial_outcomes(trials, target), within_pct=10.0)
  assert (summary.best_lr, summary.best_steps, summary.best_trial_id) == (0.2, 100.0, "lr0.2")
  assert summary.lr_within == (0.2, 0.8)
  assert (summary.largest_stable_lr, summary.smallest_diverged_lr, summary.n_diverged) == (
    0.8,
    1.6,
    1,
  )
  assert not summary.best_lr_at_grid_edge


# --------------------------------------------------------------------------- fits on analytic data


def test_steps_fit_exact_on_noiseless_curve():
  b = np.array([16, 64, 256, 1024, 4096], dtype=float)
  fit = fits.fit_steps_curve(b, 100.0 * (1 + 256.0 / b))
  np.testing.assert_allclose([fit.s_min, fit.b_crit, fit.e_min], [100.0, 256.0, 25600.0], rtol=1e-6)
  assert fit.rmse_log < 1e-8 and not fit.b_crit_at_bound


def test_steps_fit_needs_three_batch_sizes():
  with pytest.raises(ValueError):
    fits.fit_steps_curve([16, 32], [10.0, 6.0])


def test_regimes_and_largest_useful_batch_on_model_curve():
  b_crit = 100.0
  b = b_crit * np.array([1 / 64, 1 / 32, 1, 2, 50, 100])
  steps = 10.0 * (1 + b_crit / b)
  reg = regimes.regimes_summary(b, steps, fits.fit_steps_curve(b, steps))
  # Slopes: -0.98, -0.81, -0.42, -0.12, -0.014.
  assert [iv["regime"] for iv in reg["intervals"]] == [
    regimes.PERFECT,
    regimes.PERFECT,
    regimes.DIMINISHING,
    regimes.DIMINISHING,
    regimes.MAXIMAL,
  ]
  np.testing.assert_allclose(reg["fitted_boundaries"]["perfect_until"], b_crit / 4, rtol=1e-5)
  lub = reg["largest_useful_batch"]
  np.testing.assert_allclose(lub["fitted"], 9 * b_crit, rtol=1e-5)
  np.testing.assert_allclose(lub["fitted_steps_over_s_min"], 1 + 1 / 9)
  assert lub["measured"] == pytest.approx(50 * b_crit) and lub["measured_within_grid"]


def test_lr_fit_recovers_hinge_and_plain_power_law():
  b = 2.0 ** np.arange(4, 13)
  hinge = np.minimum(1e-3 * b**0.8, 0.3)
  fit = lr_fits.fit_lr_scaling(b, hinge)
  assert fit.model == lr_fits.POWER_LAW_THEN_FLAT
  np.testing.assert_allclose([fit.coef, fit.exponent, fit.max_lr], [1e-3, 0.8, 0.3], rtol=1e-3)
  plain = lr_fits.fit_lr_scaling(b, 0.02 * b**0.5)
  assert plain.model == lr_fits.POWER_LAW and plain.max_lr is None
  np.testing.assert_allclose([plain.coef, plain.exponent], [0.02, 0.5], rtol=1e-6)
  rules = lr_fits.rule_predictions(b, 0.02 * b**0.5, 0.5)
  assert rules["rms_log_error"] < 1e-9


# --------------------------------------------------------------------------- recovery of known truth


def test_recovers_s_min_and_b_crit(written):
  study, _, analysis = written
  fit = analysis["fit"]
  assert fit["ok"]
  assert abs(fit["s_min"] / study.truth.s_min - 1) < 0.10
  assert abs(fit["b_crit"] / study.truth.b_crit - 1) < 0.15
  np.testing.assert_allclose(fit["e_min"], fit["s_min"] * fit["b_crit"])


def test_bootstrap_ci_coverage_over_replicates(replicates):
  for name in ("s_min", "b_crit"):
    hits = [
      r["fit"]["ci"][name][0] <= getattr(t, name) <= r["fit"]["ci"][name][1] for t, r in replicates
    ]
    assert np.mean(hits) >= 0.7, (name, np.mean(hits))


def test_lr_exponent_and_saturation_recovered(written, replicates):
  study, _, analysis = written
  assert abs(analysis["lr_fit"]["exponent"] - study.truth.lr_exponent) < 0.1
  exponents = [r["lr_fit"]["exponent"] for _, r in replicates]
  assert abs(np.mean(exponents) - study.truth.lr_exponent) < 0.05
  saturated = [r["lr_fit"]["max_lr"] for _, r in replicates if r["lr_fit"]["max_lr"] is not None]
  assert len(saturated) >= 0.8 * len(replicates)
  assert abs(np.median(saturated) / study.truth.max_lr - 1) < 0.25


def test_diverged_trials_handled(written):
  study, _, analysis = written
  for row in analysis["per_batch"]:
    lr_star = study.truth.best_lr(row["batch_size"])
    assert row["n_diverged"] == 6  # 2 lrs above 2.5 lr* x 3 seeds
    assert row["largest_stable_lr"] <= 2.5 * lr_star < row["smallest_diverged_lr"]
    assert row["best_lr"] < row["smallest_diverged_lr"]
  assert analysis["status_counts"]["diverged"] == 6 * len(analysis["per_batch"])


def test_unreached_batch_excluded_from_fits():
  analysis = in_memory(make_study(seed=1, unreachable_batches=(4096,)), n_bootstrap=50)
  assert analysis["excluded_batches"] == [
    {"batch_size": 4096, "reason": "no trial reached the target"}
  ]
  assert 4096 not in analysis["fit"]["batch_sizes"] and analysis["fit"]["ok"]
  assert 4096 not in analysis["lr_fit"]["batch_sizes"]


def test_bootstrap_without_replicate_seeds_resamples_trials():
  study = make_study(seed=2, n_seeds=1, batch_sizes=(32, 256, 2048))
  outcomes = st.trial_outcomes(study.records(), study.spec().target)
  boot = st.bootstrap_best_steps(outcomes, n_bootstrap=300, rng=np.random.default_rng(0))
  best = {s.batch_size: s.best_steps for s in st.summarize_batches(outcomes)}
  for b, sample in boot.items():
    assert sample.shape == (300,) and np.all(sample >= best[b]) and np.ptp(sample) > 0


# --------------------------------------------------------------------------- files and robustness


def test_analyze_writes_all_files(written):
  study, workdir, analysis = written
  for name in ["results.csv", "analysis.json", "report.md", *PLOT_FILES]:
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "analysis.json")) as f:
    on_disk = json.load(f, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
  assert set(on_disk["lr_rule"]) == {"coef", "exponent", "max_lr", "reference"}
  assert on_disk["lr_rule"]["reference"] == "fitted on synthetic"
  assert on_disk["lr_rule"] == analysis["lr_rule"]
  for key in ("fit", "regimes", "per_batch", "noise_scale", "lr_fit"):
    assert key in on_disk
  assert on_disk["noise_scale"]["available"]
  assert 0.5 < on_disk["noise_scale"]["ratio_to_b_crit"] < 2  # synthetic B_simple ends at B_crit
  with open(os.path.join(workdir, "results.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
  assert (
    len(rows) == len(study.trials) + 3
  )  # + never-started, running, failed (no-trial.json dir skipped)
  assert {
    "id",
    "batch_size",
    "lr",
    "seed",
    "param_momentum",
    "status",
    "steps_to_target",
    "examples_to_target",
    "final_eval_accuracy",
    "wall_time_s",
  } <= set(rows[0])
  report_md = open(os.path.join(workdir, "report.md")).read()
  for name in PLOT_FILES:
    assert f"]({name})" in report_md
  assert "first evaluation step" in report_md


def test_broken_trials_change_nothing(written):
  study, workdir, analysis = written
  loaded = load_study(workdir)
  statuses = {t.id: t.status for t in loaded.trials}
  assert statuses["zz_never_started"] == "missing" and statuses["zz_running"] == "running"
  assert "zz_no_trial_json" not in statuses
  clean = in_memory(study, n_bootstrap=100)
  strip = lambda rows: [(r["batch_size"], r["best_lr"], r["best_steps"]) for r in rows]  # noqa: E731
  assert strip(clean["per_batch"]) == strip(analysis["per_batch"])


def test_too_few_batch_sizes_skips_fits(tmp_path):
  workdir = make_study(seed=3, batch_sizes=(64, 128), n_lrs=3, n_seeds=1).write(
    str(tmp_path), with_broken=False
  )
  analysis = run.analyze(workdir, n_bootstrap=20)
  assert not analysis["fit"]["ok"] and "need 3" in analysis["fit"]["reason"]
  assert analysis["lr_fit"]["ok"] and analysis["regimes"]["ok"]
  assert os.path.exists(os.path.join(workdir, "report.md"))
  assert "Steps fit skipped" in open(os.path.join(workdir, "report.md")).read()


def test_nothing_reached_does_not_crash():
  analysis = in_memory(
    make_study(seed=4, batch_sizes=(64, 128), unreachable_batches=(64, 128), n_lrs=3),
    n_bootstrap=20,
  )
  assert (
    not analysis["fit"]["ok"] and not analysis["regimes"]["ok"] and not analysis["lr_fit"]["ok"]
  )
  assert analysis["lr_rule"] is None and len(analysis["excluded_batches"]) == 2


def test_missing_study_json_raises(tmp_path):
  with pytest.raises(FileNotFoundError):
    load_study(str(tmp_path))


def test_analysis_imports_no_model_code(written):
  _, workdir, _ = written
  code = (
    "import sys; from lrscale.analysis import build_analysis, load_study, plots; "
    "build_analysis(load_study(sys.argv[1]), n_bootstrap=10); "
    "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax', 'tensorflow', 'torch')"
    " or m.startswith(('lrscale.models', 'lrscale.engine', 'lrscale.train', 'lrscale.data'))"
    # The linreg problem's definition (numpy only) is what the exact theory computes from.
    " and m not in ('lrscale.data', 'lrscale.data.linreg_spec')]; "
    "assert not bad, bad"
  )
  subprocess.run([sys.executable, "-c", code, workdir], cwd=REPO, check=True, timeout=120)


def test_target_met_at_float32_precision_counts():
  """A run stops when float32 accuracy 342/360 meets 0.95; the analysis must agree."""
  from lrscale.analysis.store_reader import Target

  logged = float(np.float32(342) / np.float32(360))  # what metrics.jsonl holds
  assert logged < 0.95  # in float64 it falls short
  assert Target("eval_accuracy", 0.95, "max").is_reached(logged)
  assert not Target("eval_accuracy", 0.95, "max").is_reached(float(np.float32(341 / 360)))


def test_b_simple_readings_named(written):
  _, _, analysis = written
  readings = analysis["noise_scale"]["readings"]
  b_crit = analysis["fit"]["b_crit"]
  # Synthetic B_simple rises linearly in progress from B_crit/2 to B_crit at the target.
  assert readings["at_target"]["median"] == pytest.approx(256.0, rel=0.05)
  assert 0.65 * 256 < readings["trajectory_mean"]["median"] < 0.85 * 256
  assert readings["at_target"]["ratio_to_b_crit"] == pytest.approx(
    readings["at_target"]["median"] / b_crit
  )


def test_regime_boundaries_carry_b_crit_interval(written):
  _, _, analysis = written
  fb, ci = analysis["regimes"]["fitted_boundaries"], analysis["fit"]["ci"]["b_crit"]
  np.testing.assert_allclose(fb["ci"]["perfect_until"], np.array(ci) / 4)
  np.testing.assert_allclose(fb["ci"]["maximal_from"], np.array(ci) * 9)
  assert fb["ci"]["maximal_from"][0] < fb["maximal_from"] < fb["ci"]["maximal_from"][1]
