"""linreg: generated data, exact evaluation, and the real loop against closed-form SGD.

The ground truth here is written independently of ``lrscale.analysis.theory``:
a few lines of numpy for the expected SGD recursion on Gaussian features,

  d_i' = (1 - lr h_i)^2 d_i + lr^2 [h_i^2 d_i + h_i (h . d + noise^2)] / B,

with d_i = E[(w_i - w*_i)^2] and excess risk h . d / 2 (Gaussian fourth
moments: E[x x^T M x x^T] = 2 H M H + tr(H M) H).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrscale import config as config_lib
from lrscale.data import linreg, registry
from lrscale.engine import loop as train_lib
from lrscale.engine.outputs import read_jsonl
from lrscale.engine.programs import program_key


def linreg_config(**overrides):
  c = config_lib.base_config()
  c.parallel.num_devices = 1
  c.compilation_cache = ""
  c.tensorboard = False
  c.dataset.name = "linreg"
  c.model.name = "linear"
  c.optimizer.name = "sgd"  # plain SGD: the recursion below
  c.dataset.linreg.dim = 12
  c.batch_size = 8
  c.lr = 0.3
  c.budget = "40 steps"
  c.log_every = "1 steps"
  c.eval_every = "1 steps"
  c.checkpoint_every = "20 steps"
  c.sync_every = "10 steps"
  c.target.metric = "eval_relative_excess"
  c.target.mode = "min"
  for key, value in overrides.items():
    config_lib.set_field(c, key, value)
  return c


_SETUPS = {}


def setup_for(plan):
  """One compiled RunSetup per program, shared by the tests (as a study shares it)."""
  key = program_key(plan)
  if key not in _SETUPS:
    _SETUPS[key] = train_lib.RunSetup(plan, registry.load_in_memory(plan.config.dataset))
  return _SETUPS[key]


def run(cfg, workdir, **kwargs):
  plan = config_lib.resolve(cfg)
  setup = setup_for(plan)
  return train_lib.train(cfg, str(workdir), plan=plan, setup=setup, data=setup.data, **kwargs)


def eval_rows(workdir):
  return [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "eval_loss" in r]


def expected_excess(spec, *, batch_size, lr, steps):
  """E[excess risk] after each of 0..steps SGD steps from w = 0 (module docstring)."""
  h, w_star = spec.spectrum, spec.teacher
  d = w_star**2
  out = [h @ d / 2]
  for _ in range(steps):
    d = (1 - lr * h) ** 2 * d + lr**2 * (h**2 * d + h * (h @ d + spec.noise**2)) / batch_size
    out.append(h @ d / 2)
  return np.asarray(out)


def test_samples_have_the_stated_distribution():
  spec = linreg.LinregSpec(dim=6, alpha=1.5, teacher_power=0.5, noise=0.3)
  sample = linreg.make_sampler(spec)
  x, y = jax.jit(sample)(linreg.example_ids(seed=3, start=0, count=40_000))
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  n = len(y)
  # Standard errors of a sample covariance entry: sqrt(h_i h_j / n) at most.
  np.testing.assert_allclose(x.T @ x / n, np.diag(spec.spectrum), atol=4 / np.sqrt(n))
  residual = y - x @ spec.teacher
  assert abs(residual.std() - spec.noise) < 4 * spec.noise / np.sqrt(2 * n)
  np.testing.assert_allclose(x.T @ residual / n, 0.0, atol=4 * spec.noise / np.sqrt(n))
  # Pure in (seed, k): the same id gives the same example, any slice of the stream.
  x2, y2 = jax.jit(sample)(linreg.example_ids(seed=3, start=100, count=5))
  np.testing.assert_array_equal(np.asarray(x2), x[100:105].astype(np.float32))
  x3, _ = jax.jit(sample)(linreg.example_ids(seed=4, start=100, count=5))
  assert not np.allclose(np.asarray(x3), np.asarray(x2))


def test_loop_matches_numpy_sgd_on_the_same_examples(tmp_path):
  """The loop's logged exact metrics = closed-form risk of a numpy SGD on its batches."""
  cfg = linreg_config(**{"dataset.linreg.noise": 0.2, "budget": "15 steps"})
  run(cfg, tmp_path)
  spec = linreg.LinregSpec.from_config(cfg.dataset.linreg)
  x, y = linreg.make_sampler(spec)(linreg.example_ids(seed=0, start=0, count=15 * 8))
  x, y = np.asarray(x, np.float64).reshape(15, 8, -1), np.asarray(y, np.float64).reshape(15, 8)
  w, h, w_star = np.zeros(spec.dim), spec.spectrum, spec.teacher
  e0 = 0.5 * h @ w_star**2
  rows = {r["step"]: r for r in eval_rows(tmp_path)}
  for step in range(16):
    excess = 0.5 * h @ (w - w_star) ** 2
    row = rows[step]
    np.testing.assert_allclose(row["eval_excess_risk"], excess, rtol=2e-5)
    np.testing.assert_allclose(row["eval_relative_excess"], excess / e0, rtol=2e-5)
    np.testing.assert_allclose(row["eval_loss"], excess + 0.5 * 0.2**2, rtol=2e-5)
    if step < 15:
      w = w - 0.3 * x[step].T @ (x[step] @ w - y[step]) / 8


def test_one_vs_eight_devices_same_numbers(tmp_path):
  out = {}
  for n in (1, 8):
    cfg = linreg_config(**{"parallel.num_devices": n, "batch_size": 16, "budget": "20 steps"})
    run(cfg, tmp_path / str(n))
    out[n] = [r["eval_excess_risk"] for r in eval_rows(tmp_path / str(n))]
  assert len(out[1]) == 21
  np.testing.assert_allclose(out[1], out[8], rtol=1e-5)


def test_resume_after_stop_equals_uninterrupted(tmp_path):
  cfg = linreg_config()
  whole = run(cfg, tmp_path / "whole")
  part = run(cfg, tmp_path / "resumed", stop_after_steps=20)
  assert part["status"] == "interrupted"
  resumed = run(cfg, tmp_path / "resumed")
  assert resumed["steps"] == whole["steps"] == 40
  a = [r["eval_excess_risk"] for r in eval_rows(tmp_path / "whole")]
  b = [r["eval_excess_risk"] for r in eval_rows(tmp_path / "resumed")]
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("batch_size,lr", [(1, 0.25), (8, 0.6), (32, 1.2)])
def test_mean_over_seeds_of_the_real_loop_matches_the_exact_recursion(batch_size, lr):
  """128 seeds of the compiled training segment (vmapped, as a study runs them) vs the
  expected-risk recursion, at several steps."""
  seeds, steps, every = 128, 40, 5
  plans = [
    config_lib.resolve(
      linreg_config(
        **{
          "seed": seed,
          "batch_size": batch_size,
          "lr": lr,
          "budget": f"{steps} steps",
          "sync_every": f"{steps} steps",
          "eval_every": f"{every} steps",
        }
      )
    )
    for seed in range(seeds)
  ]
  setup = setup_for(plans[0])

  def stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

  segment = jax.jit(jax.vmap(setup.fns.segment, in_axes=(0, None, None, 0, None, None, 0, None)))
  _, buf, done, _ = segment(
    stack([setup.initial_state(p) for p in plans]),
    setup.train_x,
    setup.train_y,
    stack([setup.indices(p, 0, steps)[0] for p in plans]),
    jnp.int32(steps),
    setup.eval_batches,
    stack([setup.control(p, max_loss=1e9, target_done=False) for p in plans]),
    None,
  )
  assert np.all(np.asarray(done) == steps)
  measured = np.asarray(buf["eval_excess_risk"])[:, every - 1 :: every]
  spec = linreg.LinregSpec.from_config(plans[0].config.dataset.linreg)
  exact = expected_excess(spec, batch_size=batch_size, lr=lr, steps=steps)[every::every]
  mean = measured.mean(axis=0)
  stderr = measured.std(axis=0, ddof=1) / np.sqrt(seeds)
  # Every step within 4 standard errors of the seed average (each under 15%) ...
  assert np.all(np.abs(mean - exact) <= 4 * stderr), (mean, exact, stderr)
  assert np.all(stderr / exact < 0.15), stderr / exact
  # ... and the whole trajectory within a few percent.
  assert abs(np.sum(mean) / np.sum(exact) - 1) < 0.05
  assert exact[-1] < 0.3 * exact[0]  # the runs did learn: not a comparison of start values


def test_noise_scale_estimator_recovers_b_simple_at_the_start(tmp_path):
  """At w ~ 0: |G|^2 = |H w*|^2, tr(Sigma) = |H w*|^2 + (w*^T H w* + noise^2) tr H."""
  cfg = linreg_config(
    **{
      "lr": 1e-7,
      "batch_size": 64,
      "budget": "400 steps",
      "sync_every": "100 steps",
      "noise_scale.enabled": True,
      "noise_scale.splits": 4,
      "noise_scale.decay": 0.995,
    }
  )
  summary = run(cfg, tmp_path)
  spec = linreg.LinregSpec.from_config(cfg.dataset.linreg)
  h, w_star = spec.spectrum, spec.teacher
  g2 = np.sum((h * w_star) ** 2)
  trace = g2 + (h @ w_star**2 + spec.noise**2) * h.sum()
  ns = summary["noise_scale"]
  np.testing.assert_allclose(ns["grad_sq_norm"], g2, rtol=0.1)
  np.testing.assert_allclose(ns["trace_sigma"], trace, rtol=0.1)
  np.testing.assert_allclose(ns["b_simple"], trace / g2, rtol=0.15)


@pytest.mark.parametrize(
  "overrides,field",
  [
    ({"budget": "5 epochs"}, "config.budget"),
    ({"eval_every": "1 epochs"}, "config.eval_every"),
    ({"model.name": "mlp"}, "config.model.name"),
    ({"dataset.linreg.dim": 0}, "config.dataset.linreg.dim"),
    ({"dataset.linreg.noise": -1.0}, "config.dataset.linreg.noise"),
    ({"target.metric": "eval_accuracy"}, "config.target.metric"),
    ({"target.mode": "max"}, "config.target.metric"),
  ],
)
def test_bad_linreg_config_is_one_clear_error(overrides, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    config_lib.resolve(linreg_config(**overrides))


def test_plan_has_no_epochs_and_any_batch_size():
  plan = config_lib.resolve(linreg_config(**{"batch_size": 1 << 20, "budget": "4e6 examples"}))
  assert plan.steps_per_epoch is None and plan.total_steps == 4
  resolved = json.loads(config_lib.to_json(plan))["resolved"]
  assert resolved["num_train_examples"] is None and resolved["steps_per_epoch"] is None
