"""Tests for the two-batch gradient noise scale estimator (McCandlish et al. 2018, A.1).

Ground truth comes from a finite linear-regression dataset: every per-example
gradient is computed with numpy, giving the exact full-data gradient G and the
exact per-example covariance Sigma. Batches drawn with replacement then obey
E|G_B|^2 = |G|^2 + tr(Sigma)/B exactly, so the estimators must be unbiased.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrscale import noise_scale as ns

B_SMALL, B_BIG = 4, 32


@pytest.fixture(scope="module")
def regression():
  """Per-example gradients of 0.5 (x.w - y)^2 at w != w*, plus exact G and tr(Sigma)."""
  rng = np.random.default_rng(0)
  n, d = 2000, 10
  x = rng.normal(size=(n, d))
  w_star = rng.normal(size=d)
  y = x @ w_star + 0.5 * rng.normal(size=n)
  w = w_star + rng.normal(size=d) * 0.1
  per_example = x * (x @ w - y)[:, None]  # g_i = x_i r_i
  g_full = per_example.mean(axis=0)
  trace = float(np.mean(np.sum((per_example - g_full) ** 2, axis=1)))  # tr of population covariance
  return per_example, float(g_full @ g_full), trace


def sample_sq_norms(
  per_example: np.ndarray, n_draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Per draw: mean over B/b small batches of |G_b|^2, and |G_B|^2 of their union."""
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(per_example), size=(n_draws, B_BIG // B_SMALL, B_SMALL))
  small_grads = per_example[idx].mean(axis=2)  # (draws, k, d)
  small_sq = np.mean(np.sum(small_grads**2, axis=-1), axis=1)
  big_sq = np.sum(small_grads.mean(axis=1) ** 2, axis=-1)
  return small_sq, big_sq


def test_estimate_exact_on_expected_norms():
  grad_sq, trace = 2.0, 10.0
  small = grad_sq + trace / B_SMALL
  big = grad_sq + trace / B_BIG
  g, t = ns.estimate(small, big, b_small=B_SMALL, b_big=B_BIG)
  np.testing.assert_allclose([float(g), float(t)], [grad_sq, trace], rtol=1e-6)


def test_estimate_rejects_bad_sizes():
  with pytest.raises(ValueError):
    ns.estimate(1.0, 1.0, b_small=8, b_big=8)


def test_two_batch_estimator_unbiased_and_naive_biased(regression):
  per_example, grad_sq_true, trace_true = regression
  assert 10 < trace_true / grad_sq_true < 100  # noise-dominated regime: the bias matters
  small, big = sample_sq_norms(per_example, n_draws=20000, seed=1)
  g, t = ns.estimate(small, big, b_small=B_SMALL, b_big=B_BIG)
  g, t = np.asarray(g, dtype=float), np.asarray(t, dtype=float)
  assert abs(g.mean() / grad_sq_true - 1) < 0.05
  assert abs(t.mean() / trace_true - 1) < 0.03
  # The naive big-batch norm overestimates |G|^2 by tr(Sigma)/B, and we can see it.
  se = big.std() / np.sqrt(len(big))
  assert abs(big.mean() - (grad_sq_true + trace_true / B_BIG)) < 4 * se
  assert big.mean() - grad_sq_true > 20 * se


def test_ema_ratio_recovers_b_simple_under_jit(regression):
  per_example, grad_sq_true, trace_true = regression
  small, big = sample_sq_norms(per_example, n_draws=20000, seed=2)

  @jax.jit
  def run(small, big):
    def body(state, xs):
      g, t = ns.estimate(xs[0], xs[1], b_small=B_SMALL, b_big=B_BIG)
      return ns.update_noise_scale(state, g, t, decay=0.9995), None

    state, _ = jax.lax.scan(body, ns.init_noise_scale(), (small, big))
    return state, ns.b_simple(state)

  state, bs = run(jnp.asarray(small, jnp.float32), jnp.asarray(big, jnp.float32))
  assert int(state.count) == 20000
  assert abs(float(bs) / (trace_true / grad_sq_true) - 1) < 0.15


def test_ema_is_bias_corrected_and_skips_non_finite():
  state = ns.init_noise_scale()
  assert np.isnan(float(ns.b_simple(state)))
  state = ns.update_noise_scale(state, 2.0, 50.0, decay=0.99)
  np.testing.assert_allclose(
    [float(state.ema_grad_sq), float(state.ema_trace)], [2.0, 50.0], rtol=1e-6
  )
  for _ in range(5):
    state = ns.update_noise_scale(state, 2.0, 50.0, decay=0.99)
  np.testing.assert_allclose(float(ns.b_simple(state)), 25.0, rtol=1e-5)
  skipped = ns.update_noise_scale(state, float("nan"), 1.0, decay=0.99)
  assert int(skipped.count) == int(state.count) == 6
  np.testing.assert_allclose(float(skipped.ema_trace), float(state.ema_trace))


def test_ema_matches_textbook_debiased_ema():
  rng = np.random.default_rng(3)
  xs = rng.normal(size=50) + 3.0
  decay, m = 0.9, 0.0
  state = ns.init_noise_scale()
  for i, x in enumerate(xs, start=1):
    m = decay * m + (1 - decay) * x
    state = ns.update_noise_scale(state, x, 2 * x, decay=decay)
    np.testing.assert_allclose(float(state.ema_grad_sq), m / (1 - decay**i), rtol=1e-5)
  np.testing.assert_allclose(float(ns.b_simple(state)), 2.0, rtol=1e-5)


def test_b_simple_undefined_when_grad_sq_not_positive():
  state = ns.update_noise_scale(ns.init_noise_scale(), -1.0, 5.0, decay=0.9)
  assert np.isnan(float(ns.b_simple(state)))


def test_tree_sq_norm():
  tree = {"a": jnp.ones((2, 3)), "b": [jnp.full((4,), 2.0, dtype=jnp.bfloat16)]}
  np.testing.assert_allclose(float(ns.tree_sq_norm(tree)), 6.0 + 16.0)
