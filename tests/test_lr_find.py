"""The LR range test: known answers on quadratics, spikes, seeds, purity, divergence, outputs."""

import csv
import json
import os
import random
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrscale import config as config_lib
from lrscale.data import registry
from lrscale.engine.setup import RunSetup
from lrscale.lr_find import config as lf_config
from lrscale.lr_find import results as lf_results
from lrscale.lr_find import suggest as S
from lrscale.lr_find import sweep as lf_sweep
from lrscale.lr_find.run import lr_find

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------
# Known answers: SGD on a quadratic, a plain JAX loop (no model, no lrscale step).
# --------------------------------------------------------------------------

L_MAX = 4.0  # largest Hessian eigenvalue
EIGS = np.geomspace(0.4, L_MAX, 16)  # condition number 10
LIMIT = 2.0 / L_MAX  # SGD (no momentum) is stable iff lr < 2/L


@jax.jit
def quadratic_losses(lrs, eigs, seeds, sigma):
  """Losses of SGD on 0.5 sum_i eigs_i w_i^2, gradient noise N(0, sigma^2), lr_t = lrs[t].

  Row s is seed s (its own w_0 ~ N(0, I) and noise); entry t is the loss before update t.
  """

  def one(seed):
    init_key, noise_key = jax.random.split(jax.random.key(seed))
    w0 = jax.random.normal(init_key, eigs.shape)
    tx = optax.sgd(lambda t: lrs[t])

    def step(carry, t):
      w, opt = carry
      grad = eigs * w + sigma * jax.random.normal(jax.random.fold_in(noise_key, t), w.shape)
      updates, opt = tx.update(grad, opt, w)
      return (optax.apply_updates(w, updates), opt), 0.5 * jnp.sum(eigs * w * w)

    return jax.lax.scan(step, (w0, tx.init(w0)), jnp.arange(lrs.shape[0]))[1]

  return jax.vmap(one)(seeds)


def sweeps(lrs, *, eigs=EIGS, seeds=(0, 1, 2), sigma=0.1):
  return np.asarray(
    quadratic_losses(
      jnp.asarray(lrs, jnp.float32),
      jnp.asarray(eigs, jnp.float32),
      jnp.asarray(seeds),
      jnp.float32(sigma),
    ),
    np.float64,
  )


def test_isotropic_quadratic_minimum_is_exactly_the_stability_limit():
  """GD on (L/2)|w|^2: loss_{t+1} = loss_t (1 - lr_t L)^2, falling iff lr_t < 2/L.

  With smoothing off, the loss minimum is therefore the first lr of the ramp
  above 2/L (minimum = that lr / 10), and the sweep cannot diverge before it.
  """
  lrs = S.lr_ramp(1e-6, 10.0, 100)
  first_unstable = lrs[np.argmax(lrs > LIMIT)]
  for losses in sweeps(lrs, eigs=np.full(16, L_MAX), sigma=0.0):
    curve = S.analyse(lrs, losses, beta=0.0, spike_window=1)
    found = S.suggest(curve, skip_start=0.0, skip_end=0.0)
    assert found["minimum"] * 10 == pytest.approx(first_unstable)
    assert curve.diverged and found["stable"] >= first_unstable


def test_stable_lr_converges_to_2_over_L_and_the_recommendation_is_stable():
  """GD on (L/2)|w|^2 with default smoothing.

  The largest stable lr is never below 2/L (theory: nothing grows before),
  and its overshoot, the ramp's progress while the unstable direction grows
  past k x best, shrinks as the ramp gets finer. The recommendation converges
  (< 2/L) and is within 10x of the best constant lr 1/L.
  """
  overshoot = {}
  for n in (100, 300):  # (float32: a finer ramp kills the mode to exactly 0 at 1/L)
    lrs = S.lr_ramp(1e-6, 10.0, n)
    found = [
      S.suggest(S.analyse(lrs, losses))
      for losses in sweeps(lrs, eigs=np.full(16, L_MAX), sigma=0.0)
    ]
    stable = np.array([f["stable"] for f in found])
    assert np.all(stable >= LIMIT), stable / LIMIT
    overshoot[n] = stable.max() / LIMIT
    rec = S.recommend(S.across_seeds(found))
    assert 0.1 / L_MAX < rec.lr < LIMIT, rec.lr * L_MAX
  assert overshoot[100] < 1.6 and overshoot[300] < 1.3, overshoot


def test_noisy_quadratic_answers_within_a_factor_of_theory():
  """SGD with gradient noise, condition number 10, the default 100 steps.

  The loss floor of noisy SGD grows with the lr, so k x best can trip a little
  before or after 2/L; the recommendation stays a stable lr within 10x of the
  best constant lr 2/(L + mu).
  """
  lrs = S.lr_ramp(1e-6, 10.0, 100)
  found = [S.suggest(S.analyse(lrs, losses)) for losses in sweeps(lrs)]
  stable = np.array([f["stable"] for f in found])
  assert np.all((stable > LIMIT / 2) & (stable < 2.5 * LIMIT)), stable / LIMIT
  rec = S.recommend(S.across_seeds(found))
  best = 2 / (L_MAX + EIGS[0])
  assert best / 10 < rec.lr < LIMIT, rec.lr / best


def test_valley_moves_with_the_range_steepest_and_minimum_do_not():
  """Why the recommendation leaves valley out: same problem, min_lr 1e-6 vs 1e-8."""
  found = {}
  for min_lr in (1e-6, 1e-8):
    lrs = S.lr_ramp(min_lr, 10.0, 100)
    found[min_lr] = S.across_seeds([S.suggest(S.analyse(lrs, l)) for l in sweeps(lrs)])
  ratio = {name: found[1e-6][name].lr / found[1e-8][name].lr for name in S.SUGGESTIONS}
  assert ratio["valley"] > 5, ratio
  for name in ("minimum", "stable"):
    assert 1 / 2 < ratio[name] < 2, ratio


# --------------------------------------------------------------------------
# The rules on curves made by hand.
# --------------------------------------------------------------------------


def test_ramp_is_evenly_spaced_in_log_lr_with_both_ends():
  lrs = S.lr_ramp(1e-6, 10.0, 100)
  assert lrs.size == 100 and lrs[0] == 1e-6 and lrs[-1] == pytest.approx(10.0, rel=1e-12)
  np.testing.assert_allclose(np.diff(np.log(lrs)), np.log(1e7) / 99, rtol=1e-9)
  np.testing.assert_allclose(S.lr_ramp(0.1, 1.0, 10, mode="linear"), np.linspace(0.1, 1.0, 10))
  with pytest.raises(ValueError, match="min_lr"):
    S.lr_ramp(1.0, 0.1, 10)


def test_debiased_ema_is_the_normalised_weighted_mean():
  x = np.random.default_rng(0).uniform(1, 3, 50)
  beta = 0.9
  s = S.debiased_ema(x, beta)
  for t in (0, 1, 7, 49):
    w = beta ** np.arange(t, -1, -1)  # weight beta^(t-i) of x_i
    assert s[t] == pytest.approx(np.sum(w * x[: t + 1]) / np.sum(w), rel=1e-12)
  assert s[0] == x[0]


def test_divergence_is_a_non_finite_loss_or_k_times_the_best():
  assert S.divergence_index(np.array([3.0, 2, 1, np.inf, 1])) == 3
  losses = np.array([3.0, 1.0, 2.0, 3.9, 4.1, 9.0, 9.0, 9.0])
  assert S.divergence_index(losses, spike_window=1, factor=4.0) == 4
  assert S.divergence_index(losses, spike_window=1, factor=10.0) is None
  # The median of 5 ignores a lone bad batch and sees a rise from its first step:
  assert S.divergence_index(np.r_[np.ones(10), 9.0, np.ones(10)]) is None
  assert S.divergence_index(np.r_[np.ones(10), np.full(5, 9.0)]) == 10
  curve = S.analyse(np.arange(1.0, 7.0), np.array([1.0, 1, 1, np.nan, 1, 1]))
  assert curve.diverged and curve.end == 3 and np.all(np.isnan(curve.smoothed[3:]))


def test_smoothing_has_no_lag():
  """A step down at 49.5 stays there; a one-way EMA moves it ~beta/(1-beta) steps later."""
  x = np.r_[np.full(50, 2.0), np.full(50, 1.0)]
  two_way = S.smooth(x, spike_window=1)
  assert abs(np.argmin(np.abs(two_way - 1.5)) - 49.5) <= 1
  assert np.argmin(np.abs(S.debiased_ema(x, 0.9) - 1.5)) >= 55


def test_early_spikes_neither_stop_nor_move_the_sweep():
  """Two bad batches early: fastai's rule (debiased EMA 0.98 > 4 x best) stops there."""
  lrs = S.lr_ramp(1e-6, 10.0, 100)
  clean = sweeps(lrs)[0]
  spiked = clean.copy()
  spiked[[4, 5]] *= 50.0
  fastai = S.debiased_ema(spiked, 0.98)
  assert np.argmax(fastai > 4 * np.minimum.accumulate(fastai)) in (4, 5)  # fooled at ~1e-6
  ours, reference = S.analyse(lrs, spiked), S.analyse(lrs, clean)
  assert ours.end == reference.end
  step = lrs[1] / lrs[0]
  for name, lr in S.suggest(ours).items():
    assert 1 / step <= lr / S.suggest(reference)[name] <= step, name


def test_spread_reliability_and_recommendation_rule():
  per_seed = [
    dict(steepest=0.1, valley=0.01, minimum=0.02, stable=2.0),
    dict(steepest=0.2, valley=0.1, minimum=0.04, stable=1.0),
    dict(steepest=0.4, valley=0.02, minimum=0.03, stable=4.0),
  ]
  spreads = S.across_seeds(per_seed, max_spread=3.0)
  assert spreads["steepest"].spread == pytest.approx(4.0) and not spreads["steepest"].reliable
  assert spreads["steepest"].lr == pytest.approx(0.2)  # median over seeds
  assert spreads["minimum"].spread == pytest.approx(2.0) and spreads["minimum"].reliable
  rec = S.recommend(spreads)
  assert rec.lr == pytest.approx(np.sqrt(0.2 * 2.0 / 4)) and not rec.capped
  assert not rec.reliable and S.recommend(S.across_seeds(per_seed, max_spread=4.0)).reliable
  capped = S.recommend(S.across_seeds([dict(per_seed[0], stable=0.2)]))
  assert capped.capped and capped.lr == pytest.approx(0.2 * S.STABLE_FRACTION)


# --------------------------------------------------------------------------
# The real path: config -> model -> step on digits.
# --------------------------------------------------------------------------


def small_config(**overrides):
  c = config_lib.base_config()
  c.parallel.num_devices = 1
  c.compilation_cache = ""
  c.tensorboard = False
  c.batch_size = 32
  c.model.hidden = (32,)
  c.optimizer.name = "momentum"
  lf = c.lr_find
  lf.min_lr, lf.max_lr, lf.num_steps, lf.check_every = 1e-4, 1e3, 60, 10
  lf.seeds = (0, 1, 2)
  for key, value in overrides.items():
    config_lib.set_field(c, key, value)
  return c


COMPILED: list[str] = []  # names of the functions XLA compiled during the digits_run fixture


def _count_compiles(event, duration, **kwargs):
  del duration
  if event == "/jax/core/compile/backend_compile_duration":
    COMPILED.append(kwargs.get("fun_name", ""))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  cfg = small_config(**{"lr_find.batch_sizes": (32, 128)})
  workdir = tmp_path_factory.mktemp("lr_find")
  jax.clear_caches()  # every program of the call is compiled (and counted) here
  jax.monitoring.register_event_duration_secs_listener(_count_compiles)
  try:
    result = lr_find(cfg, str(workdir))
  finally:
    jax.monitoring.unregister_event_duration_listener(_count_compiles)
  return cfg, workdir, result


def test_outputs_csv_json_png_and_paste_line(digits_run):
  cfg, workdir, result = digits_run
  with open(workdir / "lr_find.csv") as f:
    rows = list(csv.DictReader(f))
  assert tuple(rows[0]) == lf_results.CSV_FIELDS
  for r in result.results:
    for sweep in r.sweeps:
      mine = [
        row
        for row in rows
        if int(row["seed"]) == sweep.seed and int(row["batch_size"]) == r.batch_size
      ]
      assert [int(row["step"]) for row in mine] == list(range(sweep.curve.end + 1))
      np.testing.assert_allclose(
        [float(row["lr"]) for row in mine], sweep.curve.lrs[: sweep.curve.end + 1], rtol=1e-5
      )
  info = json.loads((workdir / "lr_find.json").read_text())
  assert [b["batch_size"] for b in info["per_batch"]] == [32, 128]
  for b in info["per_batch"]:
    assert set(b["suggestions"]) == set(S.SUGGESTIONS)
    assert b["recommendation"]["lr"] > 0
  fit = info["batch_scaling"]["recommended"]
  lrs = [b["recommendation"]["lr"] for b in info["per_batch"]]
  assert fit["exponent"] == pytest.approx(np.log(lrs[1] / lrs[0]) / np.log(4), rel=1e-6)
  assert fit["linear_rule"]["lr"][1] == pytest.approx(4 * lrs[0])
  assert fit["sqrt_rule"]["lr"][1] == pytest.approx(2 * lrs[0])
  png = (workdir / "lr_find.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
  lines = result.paste.splitlines()
  assert lines[0] == f"--config.batch_size=32 --config.lr={lrs[0]:.3g}"
  assert lines[-1].startswith("--config.scaling.rule=fitted --config.scaling.coef=")


def test_divergence_stops_the_sweep(digits_run):
  cfg, _, result = digits_run
  lf = cfg.lr_find
  for r in result.results:
    for sweep in r.sweeps:
      c = sweep.curve
      assert c.diverged and c.end < lf.num_steps
      assert sweep.steps_run < lf.num_steps  # later device calls never ran
      assert sweep.steps_run <= c.end + lf.spike_window // 2 + lf.check_every
      assert sweep.suggestions["stable"] == c.lrs[c.end - 1] < lf.max_lr


def test_seed_spread_is_measured(digits_run):
  _, _, result = digits_run
  for r in result.results:
    curves = [s.curve.losses[:20] for s in r.sweeps]
    assert not np.allclose(curves[0], curves[1])  # the seeds really differ
    for name, spread in r.spreads.items():
      values = [s.suggestions[name] for s in r.sweeps]
      assert spread.per_seed == tuple(values)
      assert spread.spread == pytest.approx(max(values) / min(values))
      assert spread.reliable == (spread.spread <= 3.0)
  spreads = [s.spread for r in result.results for s in r.spreads.values()]
  assert max(spreads) > 1.0


def test_one_program_per_ladder_vmap_and_vary_match_the_plain_sweep(digits_run):
  """B=128 alone (one plain batch) = B=128 in the (32, 128) program (4 microbatches of 32),
  vmapped seeds = seeds one after another, and ``vary`` seeds what it says."""
  cfg, _, result = digits_run
  plan = lf_config.sweep_plan(cfg, 128)
  setup = RunSetup(plan, registry.load_in_memory(cfg.dataset))
  alone = lf_sweep.RangeTest(setup, [plan], cfg.lr_find, vmap=False)
  assert alone.max_k == 1
  one_by_one = alone.run(128, (0, 1))
  vmapped = lf_sweep.RangeTest(setup, [plan], cfg.lr_find, vmap=True).run(128, (0, 1))
  # The (32, 128) ladder's sweeps, 3 seeds each, ran one compiled segment program.
  assert COMPILED.count("jit(train_segment)") == 1, COMPILED
  in_ladder = result.results[1]
  assert in_ladder.batch_size == 128
  for s, v, g in zip(one_by_one.sweeps, vmapped.sweeps, in_ladder.sweeps):
    end = s.curve.end  # after divergence float differences grow without bound
    assert s.steps_run == v.steps_run == g.steps_run and end == v.curve.end == g.curve.end
    np.testing.assert_allclose(s.curve.losses[:end], v.curve.losses[:end], rtol=2e-5)
    np.testing.assert_allclose(s.curve.losses[:end], g.curve.losses[:end], rtol=2e-5)
  for vary, init_seeds, data_seeds in (
    ("init", [0, 1], [0, 0]),
    ("data", [0, 0], [0, 1]),
    ("both", [0, 1], [0, 1]),
  ):
    test = lf_sweep.RangeTest(setup, [plan], small_config(**{"lr_find.vary": vary}).lr_find)
    init, data = zip(*(test._plans(plan, s) for s in (0, 1)))  # pylint: disable=protected-access
    assert [p.config.seed for p in init] == init_seeds
    assert [p.config.seed for p in data] == data_seeds
  a, b = (
    np.concatenate([np.ravel(x) for x in jax.tree.leaves(alone.initial_state(plan, s))])
    for s in (0, 1)
  )
  assert not np.allclose(a, b)  # another seed, another init


def test_callers_state_bn_statistics_and_rng_are_untouched():
  """A ResNet-8 with BatchNorm; the sweep starts from a copy of the caller's state."""
  cfg = small_config(
    **{
      "model.name": "resnet8",
      "model.bn_group_size": 16,
      "lr_find.num_steps": 8,
      "lr_find.check_every": 0,
      "lr_find.seeds": (0, 1),
      "lr_find.vary": "data",
      "lr_find.min_lr": 1e-3,
      "lr_find.max_lr": 1.0,
    }
  )
  plan = lf_config.sweep_plan(cfg, 32)
  setup = RunSetup(plan, registry.load_in_memory(cfg.dataset))
  state = setup.initial_state(plan)
  state = state._replace(step=state.step + 500)  # mid-training: the sweep restarts its ramp
  assert jax.tree.leaves(state.batch_stats), "the model must have BatchNorm statistics"
  # Device-side copies: a host view (jax.device_get) would pin the buffers and
  # silently keep the segment from donating them, hiding the leak tested here.
  before = jax.tree.map(jnp.copy, state)
  train_x = jnp.copy(setup.train_x)
  np_rng, py_rng = np.random.get_state(), random.getstate()
  result = lf_sweep.RangeTest(setup, [plan], cfg.lr_find).run(32, (0, 1), state=state)
  assert all(s.steps_run == 8 for s in result.sweeps)
  leaves = jax.tree.leaves(state)
  assert not any(x.is_deleted() for x in leaves)  # the donated buffers were copies
  for old, new in zip(jax.tree.leaves(before), leaves):
    np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
  np.testing.assert_array_equal(np.asarray(train_x), np.asarray(setup.train_x))
  assert random.getstate() == py_rng
  after = np.random.get_state()
  assert after[0] == np_rng[0] and np.array_equal(after[1], np_rng[1]) and after[2:] == np_rng[2:]
  with pytest.raises(ValueError, match="vary='init'"):
    lf_sweep.RangeTest(setup, [plan], small_config(**{"lr_find.vary": "init"}).lr_find).run(
      32, (0,), state=state
    )


@pytest.mark.parametrize(
  "field,value",
  [
    ("ramp", "cubic"),
    ("min_lr", 1e4),
    ("spike_window", 4),
    ("seeds", ()),
    ("vary", "weights"),
    ("batch_sizes", (0, 64)),
    ("max_spread", 0.5),
    ("beta", 1.0),
  ],
)
def test_bad_lr_find_config_is_one_clear_error_before_compute(tmp_path, field, value):
  cfg = small_config(**{f"lr_find.{field}": value})
  with pytest.raises(ValueError, match=rf"config\.lr_find\.(min_lr|{field})"):
    lr_find(cfg, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_paste_value_undoes_the_scaling_rule():
  cfg = small_config(**{"scaling.rule": "linear", "scaling.reference_batch": 256})
  assert lf_results.base_lr_for(cfg, 0.1, 64) == ("", pytest.approx(0.4))
  cfg.scaling.rule = "sqrt"
  assert lf_results.base_lr_for(cfg, 0.1, 64)[1] == pytest.approx(0.2)
  cfg.scaling.update(dict(rule="fitted", coef=0.01, exponent=0.5))
  assert lf_results.base_lr_for(cfg, 0.1, 64) == ("--config.scaling.rule=none ", 0.1)


def test_command_line(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", PYTHONPATH=REPO)
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "lrscale.lr_find",
      "--config=configs/lr_find.py",
      f"--workdir={tmp_path}",
      "--config.parallel.num_devices=1",
      "--config.compilation_cache=",
      "--config.model.hidden=(16,)",
      "--config.lr_find.num_steps=30",
      "--config.lr_find.seeds=(0,1)",
    ],
    cwd=REPO,
    env=env,
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  lines = out.splitlines()
  assert lines[-2] == "Paste into python -m lrscale.train:"
  assert lines[-1].startswith("--config.lr=") and float(lines[-1].split("=")[1]) > 0
  assert {"lr_find.csv", "lr_find.json", "lr_find.png"} <= set(os.listdir(tmp_path))
