"""Exact SGD dynamics on Gaussian linear regression (lrscale.analysis.theory)."""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
import pytest

from lrscale.analysis import theory

REFERENCE_STEPS = [1597, 814, 428, 224, 124, 80, 62, 57, 54, 53, 53, 53, 52]  # REFERENCE.md


@pytest.fixture(scope="module")
def reference_curve():
  problem = theory.LinregSpec(dim=100, alpha=1.0, teacher_power=0.0, noise=0.5)
  batch_sizes = 2 ** np.arange(13)
  start = time.perf_counter()
  curve = theory.exact_steps_curve(problem, batch_sizes, theory.sqrt2_grid(-16, 4), 0.02)
  return curve, time.perf_counter() - start


def test_reference_steps_lrs_and_fit(reference_curve):
  curve, seconds = reference_curve
  assert curve["steps"] == REFERENCE_STEPS
  lrs = np.array(curve["best_lr"])
  # The best lr doubles with B up to B = 4, rises more slowly to B = 32 and saturates at sqrt(2)
  # (measured on the grid: 2^-3.5, 2^-2.5, 2^-1.5, 2^-1, 1, then 2^0.5).
  np.testing.assert_allclose(np.log2(lrs[:6]), [-3.5, -2.5, -1.5, -1.0, 0.0, 0.5])
  np.testing.assert_allclose(lrs[5:], np.sqrt(2.0))
  assert not any(curve["best_lr_at_grid_edge"])
  assert curve["fit"]["s_min"] == pytest.approx(48.45, abs=0.05)
  assert curve["fit"]["b_crit"] == pytest.approx(29.39, abs=0.05)
  assert seconds < 5.0  # 13 batch sizes x 21 lrs, up to 5000 steps


def test_grid_anchor_matters():
  """A grid offset from 2^(k/2) (here 0.1 * 2^(k/2)) gives other numbers: the anchor is part of the answer."""
  problem = theory.LinregSpec()
  curve = theory.exact_steps_curve(
    problem, 2 ** np.arange(13), 0.1 * theory.sqrt2_grid(-10, 10), 0.02
  )
  assert curve["steps"][0] != REFERENCE_STEPS[0] and curve["steps"][-1] != REFERENCE_STEPS[-1]


def test_unreachable_and_divergent_are_inf():
  problem = theory.LinregSpec()
  steps = theory.steps_to_target(problem, [1, 64], [1e-4, 2**-3.5, 0.5, 4.0], 0.02, max_steps=3000)
  assert np.isinf(steps[:, 0]).all()  # too slow for the budget
  assert np.isfinite(steps[:, 1]).all()
  # lr 0.5 at B = 1: the a^2 / B coupling through sum_j h_j m_j (tr h = 5.19) makes it diverge;
  # at B = 64 it reaches.
  assert np.isinf(steps[0, 2]) and np.isfinite(steps[1, 2])
  assert np.isinf(steps[:, 3]).all()  # lr 4 > 2 / h_1: diverges
  curves = theory.risk_curves(problem, [1, 64], [0.5, 4.0], 3000)
  assert curves[0, 0, 200] > 1e3 and curves[1, 1, 50] > 1e3


def test_per_batch_lr_grids_with_nan_padding():
  problem = theory.LinregSpec(dim=20)
  shared = theory.steps_to_target(problem, [4, 32], [0.25, 0.5], 0.05)
  ragged = theory.steps_to_target(problem, [4, 32], [[0.25, 0.5, np.nan], [0.25, 0.5, 1.0]], 0.05)
  np.testing.assert_array_equal(ragged[:, :2], shared)
  assert np.isinf(ragged[0, 2]) and np.isfinite(ragged[1, 2])


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="target_rel"):
    theory.steps_to_target(theory.LinregSpec(), [1], [0.1], 1.5)
  with pytest.raises(ValueError, match="dim"):
    theory.LinregSpec(dim=0)


@pytest.mark.parametrize("batch,lr", [(1, 0.3), (2, 0.5), (8, 1.0)])
def test_recursion_matches_monte_carlo_sgd(batch, lr):
  """Brute force: 20k independent float64 SGD runs; their mean excess risk is the recursion's."""
  problem = theory.LinregSpec(dim=6, alpha=1.0, teacher_power=0.5, noise=0.5)
  h, w_star = problem.spectrum, problem.teacher
  runs, steps = 20000, 30
  rng = np.random.default_rng(0)
  w = np.zeros((runs, problem.dim))
  mean_risk, std_err = [problem.initial_excess], [0.0]
  for _ in range(steps):
    x = rng.standard_normal((runs, batch, problem.dim)) * np.sqrt(h)
    y = x @ w_star + problem.noise * rng.standard_normal((runs, batch))
    resid = np.einsum("rbi,ri->rb", x, w) - y
    w = w - lr * np.einsum("rb,rbi->ri", resid, x) / batch
    risk = 0.5 * ((w - w_star) ** 2) @ h
    mean_risk.append(float(np.mean(risk)))
    std_err.append(float(np.std(risk) / np.sqrt(runs)))
  exact = theory.risk_curves(problem, [batch], [lr], steps)[0, 0] * problem.initial_excess
  mean_risk, std_err = np.array(mean_risk), np.array(std_err)
  # Within 4.5 Monte-Carlo standard errors at every step (31 steps: a false alarm < 1e-3), and
  # those errors are small enough for the check to bite: a few percent of the risk.
  assert np.all(np.abs(mean_risk - exact) <= 4.5 * std_err + 1e-12)
  assert np.all(std_err[1:] / exact[1:] < 0.05)
  np.testing.assert_allclose(np.mean(mean_risk / exact), 1.0, atol=0.02)
  # The check can tell SGD from gradient descent (B -> inf): the a^2 / B terms matter here.
  gd = theory.risk_curves(problem, [1e12], [lr], steps)[0, 0] * problem.initial_excess
  assert exact[-1] > 1.3 * gd[-1]


# --------------------------------------------------------------------------- the analysis hook


def _linreg_study(workdir, *, batch_sizes=(1, 4, 16, 64, 256, 1024), seeds=2, sigma=0.05):
  """A linreg study on disk whose trials log the exact curve times per-trial noise."""
  from tests.synthetic_study import _dump, _write_trial

  problem = theory.LinregSpec()
  target = {"metric": "eval_relative_excess", "value": 0.02, "mode": "min"}
  dataset = {"name": "linreg", "linreg": dataclasses.asdict(problem)}
  _dump(
    os.path.join(workdir, "study.json"),
    {
      "name": "linreg_synthetic",
      "target": target,
      "batch_sizes": list(batch_sizes),
      "optimizer": "sgd",
      "config": {"base": {"dataset": dataset}},
    },
  )
  rng = np.random.default_rng(0)
  lrs = theory.sqrt2_grid(-9, 2)
  curves = theory.risk_curves(problem, batch_sizes, lrs, 2000)
  for i, b in enumerate(batch_sizes):
    for k, lr in enumerate(lrs):
      for seed in range(seeds):
        curve = curves[i, k] * math.exp(sigma * rng.normal())
        rows = [
          {"step": t, "eval_relative_excess": min(float(curve[t]), 1e30)} for t in range(2, 2001, 2)
        ]
        stop = next((j for j, r in enumerate(rows) if r["eval_relative_excess"] <= 0.02), None)
        rows = rows if stop is None else rows[: stop + 1]
        summary = {"status": "complete", "steps": rows[-1]["step"], "final": rows[-1]}
        trial = {"id": f"b{b}_k{k}_s{seed}", "batch_size": b, "lr": float(lr), "seed": seed}
        _write_trial(os.path.join(workdir, "trials"), {**trial, "params": {}}, summary, rows)
  return workdir


def test_analysis_adds_exact_answer_for_linreg_study(tmp_path):
  from lrscale.analysis import run

  analysis = run.analyze(_linreg_study(str(tmp_path)), n_bootstrap=50)
  th = analysis["theory"]
  assert th["problem"] == {"dim": 100, "alpha": 1.0, "teacher_power": 0.0, "noise": 0.5}
  exact = {r["batch_size"]: r["exact_steps"] for r in th["per_batch"]}
  # The study's grid 2^(k/2), k = -9..2, contains every reference optimum.
  assert [exact[b] for b in (1, 4, 16, 64, 256, 1024)] == [1597, 428, 124, 62, 54, 53]
  for r in th["per_batch"]:
    assert r["exact_steps_at_eval"] == r["exact_steps"] + (r["exact_steps"] % 2)
    # Measured: the same curves times exp(0.05 z) and evaluated every 2 steps.
    assert abs(r["measured_steps"] / r["exact_steps_at_eval"] - 1) < 0.1
  assert th["fit"]["b_crit"] == pytest.approx(
    theory.exact_steps_curve(theory.LinregSpec(), list(exact), theory.sqrt2_grid(-9, 2), 0.02)[
      "fit"
    ]["b_crit"]
  )
  for name in ("s_min", "b_crit"):
    c = th["comparison"][name]
    assert c["measured"] == analysis["fit"][name] and c["exact_inside_ci"] is not None
  text = open(tmp_path / "report.md").read()
  assert "## Exact answer vs measured" in text and "exact inside CI" in text
  assert os.path.getsize(tmp_path / "steps_to_result.png") > 0


def test_no_theory_for_other_studies():
  from lrscale.analysis import run
  from lrscale.analysis.store_reader import Study
  from tests.synthetic_study import make_study

  study = make_study(seed=0, batch_sizes=(16, 64, 256), n_lrs=3, n_seeds=1)
  assert run.build_analysis(Study(study.spec(), study.records()), n_bootstrap=10)["theory"] is None
