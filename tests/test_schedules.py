"""Tests for lrscale.optim.schedules against independent closed forms.

Every reference below is written from PyTorch's (or the paper's) formula in
numpy / plain Python, never from lrscale's output.
"""

import bisect
import importlib.util
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrscale import config as config_lib
from lrscale.optim import schedule_build, schedule_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
PEAK = 0.4
TOTAL = 20
STEPS = np.arange(TOTAL + 4)  # 0..T+3: every step, boundaries and beyond.


def fake_to_steps(steps_per_epoch, batch_size=32):
  """Stand-in for the lead's length conversion: epochs * steps_per_epoch."""

  def to_steps(length):
    if isinstance(length, int):
      return length
    number, unit = length.split()
    number = float(number)
    if unit.startswith("step"):
      return int(number)
    if unit.startswith("epoch"):
      return int(round(number * steps_per_epoch))
    if unit.startswith("example"):
      return int(number // batch_size)
    raise ValueError(f"unknown unit {unit!r}")

  return to_steps


TO_STEPS = fake_to_steps(steps_per_epoch=4)


def config(name, **fields):
  cfg = schedule_config.default_config()
  cfg.name = name
  cfg.update(fields)
  return cfg


def evaluate(
  schedule_cfg, warmup_cfg=None, *, peak=PEAK, total=TOTAL, to_steps=TO_STEPS, steps=STEPS
):
  warmup_cfg = warmup_cfg or schedule_config.default_warmup_config()
  fn = schedule_build.build_schedule(
    schedule_cfg, warmup_cfg, peak_lr=peak, total_steps=total, to_steps=to_steps
  )
  return np.asarray(jax.vmap(fn)(jnp.asarray(steps, jnp.int32)))


# ---------------------------------------------------------------------------
# Closed-form references (t = 0-based scheduler step; P = peak; T = horizon).
# ---------------------------------------------------------------------------


def torch_step(t, P, s, g):  # StepLR
  return P * g ** math.floor(t / s)


def torch_multistep(t, P, milestones, g):  # MultiStepLR (repeats count twice)
  return P * g ** bisect.bisect_right(sorted(milestones), t)


def torch_cosine(t, P, T, eta_min, clamp=True):  # CosineAnnealingLR
  t = min(t, T) if clamp else t
  return eta_min + (P - eta_min) * (1 + math.cos(math.pi * t / T)) / 2


def torch_polynomial(t, P, T, p):  # PolynomialLR
  return P * (1 - min(t, T) / T) ** p


def torch_linear(t, P, T, s, e):  # LinearLR
  return P * (s + (e - s) * min(t, T) / T)


def torch_onecycle(t, P, T, pct=0.3, div=25.0, final_div=1e4, three_phase=False, anneal="cos"):
  """OneCycleLR.get_lr, transcribed; past T-1 held at min (PyTorch raises)."""
  initial = P / div
  low = initial / final_div
  if three_phase:
    phases = [(pct * T - 1, initial, P), (2 * pct * T - 2, P, initial), (T - 1, initial, low)]
  else:
    phases = [(pct * T - 1, initial, P), (T - 1, P, low)]
  if t >= T - 1:
    return low
  start_step = 0.0
  for i, (end_step, a, b) in enumerate(phases):
    if t <= end_step or i == len(phases) - 1:
      frac = (t - start_step) / (end_step - start_step)
      if anneal == "cos":
        return b + (a - b) / 2.0 * (math.cos(math.pi * frac) + 1)
      return (b - a) * frac + a
    start_step = end_step


def torch_cyclic(t, P, base, up, down, mode="triangular", gamma=1.0):
  total = float(up + down)
  ratio = up / total
  cycle = math.floor(1 + t / total)
  x = 1.0 + t / total - cycle
  s = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
  f = {"triangular": 1.0, "triangular2": 1 / 2.0 ** (cycle - 1), "exp_range": gamma**t}[mode]
  return base + (P - base) * s * f


def torch_warm_restarts(n, P, T_0, T_mult, eta_min):
  """CosineAnnealingWarmRestarts driven by n calls of step()."""
  out, T_cur, T_i = [], 0, T_0
  for _ in range(n):
    out.append(eta_min + (P - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2)
    T_cur += 1
    if T_cur >= T_i:
      T_cur -= T_i
      T_i *= T_mult
  return out


def wsd_reference(t, P, T, frac, shape, floor):
  d = max(1, int(math.floor(frac * T + 0.5)))
  s = min(max((t - (T - d)) / d, 0.0), 1.0)
  g = {"linear": 1 - s, "cosine": (1 + math.cos(math.pi * s)) / 2, "1-sqrt": 1 - math.sqrt(s)}[
    shape
  ]
  return floor + (P - floor) * g


def ultralytics_reference(t, P, spe, epochs, lrf, cos):
  x = t // spe  # Ultralytics steps its LambdaLR once per epoch.
  x = min(x, epochs)
  if cos:  # ultralytics.utils.one_cycle(1, lrf, epochs)
    lf = max((1 - math.cos(x * math.pi / epochs)) / 2, 0) * (lrf - 1) + 1
  else:
    lf = (1 - x / epochs) * (1.0 - lrf) + lrf
  return P * lf


P, T = PEAK, TOTAL
CASES = {
  "constant": (config("constant"), lambda t: P),
  "step_epochs": (
    config("step", step_size="1 epochs", gamma=0.5),
    lambda t: torch_step(t, P, 4, 0.5),
  ),
  "step_default_gamma": (config("step", step_size="7 steps"), lambda t: torch_step(t, P, 7, 0.1)),
  "multistep_repeat": (
    config("multistep", milestones=("1 epochs", 10, 10, "17 steps"), gamma=0.5),
    lambda t: torch_multistep(t, P, [4, 10, 10, 17], 0.5),
  ),
  "exponential_gamma": (config("exponential", gamma=0.8), lambda t: P * 0.8**t),
  "exponential_gamma_floor": (
    config("exponential", gamma=0.8, alpha=0.05),
    lambda t: max(P * 0.8**t, 0.05 * P),
  ),
  "exponential_to_final": (
    config("exponential", alpha=0.01, decay_length="4 epochs"),
    lambda t: P * 0.01 ** (min(t, 16) / 16),
  ),
  "cosine": (config("cosine"), lambda t: torch_cosine(t, P, T, 0.0)),
  "cosine_alpha": (
    config("cosine", alpha=0.1, decay_length="3 epochs"),
    lambda t: torch_cosine(t, P, 12, 0.1 * P),
  ),
  "cosine_min_lr_unclamped": (
    config("cosine", min_lr=0.01, decay_length="12 steps", clamp=False),
    lambda t: torch_cosine(t, P, 12, 0.01, clamp=False),
  ),
  "cosine_exponent": (  # optax's exponent: floor + (P-floor) * c**p.
    config("cosine", exponent=2.0, alpha=0.1),
    lambda t: 0.1 * P + 0.9 * P * ((1 + math.cos(math.pi * min(t, T) / T)) / 2) ** 2,
  ),
  "polynomial": (
    config("polynomial", power=2.0, decay_length="15 steps"),
    lambda t: torch_polynomial(t, P, 15, 2.0),
  ),
  "linear_torch": (
    config("linear", start_factor=0.5, alpha=0.1, decay_length="10 steps"),
    lambda t: torch_linear(t, P, 10, 0.5, 0.1),
  ),
  "rsqrt": (
    config("rsqrt", timescale="5 steps"),
    lambda t: P / math.sqrt(max(t, 5)) * math.sqrt(5),
  ),
  "onecycle_cos": (config("onecycle"), lambda t: torch_onecycle(t, P, T)),
  "onecycle_linear_3phase": (
    config(
      "onecycle",
      anneal="linear",
      three_phase=True,
      pct_start=0.25,
      div_factor=10.0,
      final_div_factor=100.0,
    ),
    lambda t: torch_onecycle(t, P, T, 0.25, 10.0, 100.0, True, "linear"),
  ),
  "onecycle_fractional_peak": (  # pct*T - 1 = 3.5: no step sits on the peak.
    config("onecycle", pct_start=0.3, decay_length="15 steps"),
    lambda t: torch_onecycle(t, P, 15, 0.3),
  ),
  "cyclic_triangular": (
    config("cyclic", alpha=0.1, step_size_up="3 steps"),
    lambda t: torch_cyclic(t, P, 0.1 * P, 3, 3),
  ),
  "cyclic_triangular2_asym": (
    config(
      "cyclic", mode="triangular2", min_lr=0.02, step_size_up="2 steps", step_size_down="1 epochs"
    ),
    lambda t: torch_cyclic(t, P, 0.02, 2, 4, "triangular2"),
  ),
  "cyclic_exp_range": (
    config(
      "cyclic", mode="exp_range", gamma=0.95, step_size_up="4 steps", step_size_down="2 steps"
    ),
    lambda t: torch_cyclic(t, P, 0.0, 4, 2, "exp_range", 0.95),
  ),
  "wsd_linear": (config("wsd"), lambda t: wsd_reference(t, P, T, 0.2, "linear", 0.0)),
  "wsd_cosine": (
    config("wsd", decay_shape="cosine", decay_fraction=0.3, alpha=0.1),
    lambda t: wsd_reference(t, P, T, 0.3, "cosine", 0.1 * P),
  ),
  "wsd_sqrt": (
    config("wsd", decay_shape="1-sqrt", decay_fraction=0.25, min_lr=0.01, decay_length="4 epochs"),
    lambda t: wsd_reference(t, P, 16, 0.25, "1-sqrt", 0.01),
  ),
  "piecewise_constant": (
    config("piecewise_constant", boundaries=("1 epochs", 9), factors=(1.0, 0.0, 0.3)),
    lambda t: P * (1.0 if t < 4 else 0.0 if t < 9 else 0.3),
  ),
  "piecewise_linear": (
    config("piecewise_linear", points=((2, 0.0), ("1 epochs", 1.0), ("4 epochs", 0.1))),
    lambda t: P * float(np.interp(t, [2, 4, 16], [0.0, 1.0, 0.1])),
  ),
  "ultralytics_linear": (
    config("ultralytics", anneal="linear"),
    lambda t: ultralytics_reference(t, P, 4, 5, 0.01, cos=False),
  ),
  "ultralytics_cos": (
    config("ultralytics", alpha=0.2, decay_length="4 epochs"),
    lambda t: ultralytics_reference(t, P, 4, 4, 0.2, cos=True),
  ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_schedule_matches_closed_form(case):
  cfg, reference = CASES[case]
  want = np.array([reference(int(t)) for t in STEPS])
  got = evaluate(cfg)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("t_mult,eta", [(1, 0.0), (2, 0.05)])
def test_cosine_restarts_matches_pytorch_stepping(t_mult, eta):
  cfg = config("cosine_restarts", t_0="3 steps", t_mult=t_mult, min_lr=eta)
  steps = np.arange(100)
  want = torch_warm_restarts(len(steps), PEAK, 3, t_mult, eta)
  np.testing.assert_allclose(evaluate(cfg, steps=steps), want, rtol=2e-5, atol=1e-7)


def test_every_schedule_has_a_closed_form_case():
  covered = {cfg.name for cfg, _ in CASES.values()} | {"cosine_restarts"}
  assert covered == set(schedule_config.SCHEDULES)


def test_onecycle_is_one_step_ahead_of_optax():
  # PyTorch / lrscale peak at pct*T - 1 and reach min at T - 1; optax's
  # cosine_onecycle_schedule peaks at int(pct*T) and reaches min at T.
  ours = evaluate(config("onecycle"))
  theirs = np.asarray(jax.vmap(optax.cosine_onecycle_schedule(T, PEAK))(jnp.asarray(STEPS)))
  assert np.argmax(ours) == 0.3 * T - 1
  assert np.argmax(theirs) == int(0.3 * T)
  low = PEAK / 25.0 / 1e4
  assert ours[T - 1] == pytest.approx(low) and theirs[T - 1] > 10 * low
  assert theirs[T] == pytest.approx(low)


def test_cosine_unclamped_is_periodic_and_clamped_holds():
  steps = np.arange(0, 4 * 12)
  unclamped = evaluate(config("cosine", decay_length="12 steps", clamp=False), steps=steps)
  np.testing.assert_allclose(unclamped[:24], unclamped[24:], rtol=1e-5, atol=1e-7)
  clamped = evaluate(config("cosine", decay_length="12 steps"), steps=steps)
  np.testing.assert_allclose(clamped[12:], 0.0, atol=1e-7)


# ---------------------------------------------------------------------------
# Lengths: the same config gives different step boundaries per batch size.
# ---------------------------------------------------------------------------

EPOCH_CONFIGS = [
  config("step", step_size="2 epochs", gamma=0.5),
  config("multistep", milestones=("1 epochs", "3 epochs")),
  config("cosine", decay_length="3 epochs"),
  config("cyclic", step_size_up="1 epochs"),
  config("cosine_restarts", t_0="1 epochs", t_mult=2),
  config("wsd", decay_length="4 epochs"),
  config("piecewise_constant", boundaries=("2 epochs",), factors=(1.0, 0.1)),
  config("piecewise_linear", points=((0, 0.0), ("2 epochs", 1.0))),
  config("ultralytics", decay_length="3 epochs"),
  config("rsqrt", timescale="1 epochs"),
  config("exponential", alpha=0.1, decay_length="2 epochs"),
]


@pytest.mark.parametrize("cfg", EPOCH_CONFIGS, ids=lambda c: c.name)
def test_lengths_rescale_with_batch_size(cfg):
  # Batch B: 8 steps per epoch; batch 2B: 4. Same curve per epoch, so the
  # value at step 2k with B equals the value at step k with 2B.
  small = fake_to_steps(steps_per_epoch=8, batch_size=32)
  large = fake_to_steps(steps_per_epoch=4, batch_size=64)
  steps = np.arange(24)
  at_small = evaluate(cfg, total=48, to_steps=small, steps=2 * steps)
  at_large = evaluate(cfg, total=24, to_steps=large, steps=steps)
  np.testing.assert_allclose(at_small, at_large, rtol=1e-5, atol=1e-8)
  assert not np.allclose(evaluate(cfg, total=48, to_steps=small, steps=steps), at_large)


def test_examples_unit_and_the_one_length_grammar():
  a = evaluate(config("step", step_size="256 examples"), to_steps=fake_to_steps(4, batch_size=64))
  b = evaluate(config("step", step_size="4 steps"))
  np.testing.assert_allclose(a, b)
  # A string names its unit, as budget (lrscale.units): "4" is rejected with the fix.
  with pytest.raises(
    ValueError, match=r"config\.schedule\.step_size='4' has no unit: write '4 steps'"
  ):
    evaluate(config("step", step_size="4"))
  np.testing.assert_allclose(b, [torch_step(t, PEAK, 4, 0.1) for t in STEPS], rtol=1e-6)


# ---------------------------------------------------------------------------
# Warmup composition.
# ---------------------------------------------------------------------------


def warmup_config(**fields):
  cfg = schedule_config.default_warmup_config()
  cfg.update(fields)
  return cfg


def ramp(shape, init, target, frac):
  if shape == "linear":
    return init + (target - init) * frac
  if shape == "cosine":
    return init + (target - init) * (1 - math.cos(math.pi * frac)) / 2
  return init * (target / init) ** frac


# A geometric ramp cannot start at 0 (validate rejects it; tested below).
WARMUPS = [
  (shape, init)
  for shape in schedule_config.WARMUP_SHAPES
  for init in ("zero", "init_lr", "init_factor")
  if (shape, init) != ("exponential", "zero")
]


@pytest.mark.parametrize("shape,init", WARMUPS)
@pytest.mark.parametrize("offset_main", [False, True])
def test_warmup_composes_with_cosine(shape, offset_main, init):
  w_steps = 5
  fields = {"init_lr": dict(init_lr=0.01), "init_factor": dict(init_factor=0.1), "zero": {}}[init]
  warm = warmup_config(length="5 steps", shape=shape, offset_main=offset_main, **fields)
  got = evaluate(config("cosine", alpha=0.1), warm)

  # Goyal (offset_main=False): cosine over the whole run from step 0.
  # optax style (True): cosine over T - W steps, clock starting at W.
  horizon = T - w_steps if offset_main else T

  def main(t):
    return torch_cosine(t - w_steps if offset_main else t, PEAK, horizon, 0.1 * PEAK)

  target = main(w_steps)
  init_value = {"zero": 0.0, "init_lr": 0.01, "init_factor": 0.1 * target}[init]
  want = [ramp(shape, init_value, target, t / w_steps) if t < w_steps else main(t) for t in STEPS]
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-8)


def test_warmup_matches_optax_warmup_cosine_with_offset():
  warm = warmup_config(length="1 epochs", offset_main=True)
  got = evaluate(config("cosine", alpha=0.05), warm)
  want = optax.warmup_cosine_decay_schedule(0.0, PEAK, 4, T, end_value=0.05 * PEAK)
  np.testing.assert_allclose(got, [float(want(t)) for t in STEPS], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("cfg", [c for c, _ in CASES.values()], ids=list(CASES))
def test_warmup_composes_with_every_schedule(cfg):
  # Goyal style: identical to the bare schedule from W on; a linear ramp from
  # init_lr to the schedule's value at W before.
  bare = evaluate(cfg)
  warm = evaluate(cfg, warmup_config(length="6 steps", init_lr=0.001))
  np.testing.assert_allclose(warm[6:], bare[6:], rtol=1e-6)
  want = [0.001 + (bare[6] - 0.001) * t / 6 for t in range(6)]
  np.testing.assert_allclose(warm[:6], want, rtol=1e-5, atol=1e-8)


def test_goyal_recipe():
  # Goyal et al. 2017 scaled: warmup 0.1 -> 3.2 over 5 epochs, /10 at 30, 60,
  # 80 epochs counted from the start of training (offset_main=False).
  spe = 2
  cfg = config("multistep", milestones=("30 epochs", "60 epochs", "80 epochs"))
  warm = warmup_config(length="5 epochs", init_lr=0.1)
  got = evaluate(
    cfg, warm, peak=3.2, total=90 * spe, to_steps=fake_to_steps(spe), steps=np.arange(90 * spe)
  )
  epoch = np.arange(90 * spe) / spe
  want = np.where(
    epoch < 5,
    0.1 + (3.2 - 0.1) * epoch / 5,
    3.2 * 0.1 ** np.searchsorted([30, 60, 80], epoch, "right"),
  )
  np.testing.assert_allclose(got, want, rtol=1e-5)


# ---------------------------------------------------------------------------
# jit with a traced peak lr: one compilation serves every lr.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_traced_peak_lr_one_compilation(case):
  cfg, _ = CASES[case]
  warm = warmup_config(length="3 steps", shape="cosine", init_factor=0.1)
  traces = []

  @jax.jit
  def lrs(peak, steps):
    traces.append(1)  # Python side effect: runs once per trace.
    fn = schedule_build.build_schedule(
      cfg, warm, peak_lr=peak, total_steps=TOTAL, to_steps=TO_STEPS
    )
    return jax.vmap(fn)(steps)

  steps = jnp.asarray(STEPS, jnp.int32)
  a = np.asarray(lrs(jnp.float32(0.1), steps))
  b = np.asarray(lrs(jnp.float32(0.3), steps))
  assert len(traces) == 1
  if cfg.min_lr is None:  # Everything scales with peak unless a floor is absolute.
    np.testing.assert_allclose(b, 3 * a, rtol=1e-5, atol=1e-9)
  else:
    assert not np.allclose(a, b)
  np.testing.assert_allclose(b, evaluate(cfg, warm, peak=0.3), rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------------------
# Validation: every error names the field.
# ---------------------------------------------------------------------------

BAD = [
  (dict(name="cosine_annealing"), "config.schedule.name"),
  (dict(name="step"), "config.schedule.step_size"),
  (dict(name="step", step_size="3 fortnights"), "config.schedule.step_size"),
  (dict(name="multistep"), "config.schedule.milestones"),
  (dict(name="multistep", milestones=("ten epochs",)), r"config.schedule.milestones\[0\]"),
  (dict(name="exponential"), "config.schedule.gamma"),
  (dict(name="exponential", alpha=0.0), "config.schedule.alpha"),
  (dict(name="cosine", alpha=1.5), "config.schedule.alpha"),
  (dict(name="cosine", alpha=0.1, min_lr=1e-4), "config.schedule.alpha"),
  (dict(name="cosine", min_lr=-1.0), "config.schedule.min_lr"),
  (dict(name="cosine", exponent=0.0), "config.schedule.exponent"),
  (dict(name="cosine", decay_length="-5 steps"), "config.schedule.decay_length"),
  (dict(name="step", step_size="2 steps", gamma=-0.1), "config.schedule.gamma"),
  (
    dict(name="step", step_size="2 steps", alpha=0.1),
    "config.schedule.alpha",
  ),  # Set but unused by 'step'.
  (dict(name="cosine", pct_start=0.5), "config.schedule.pct_start"),
  (dict(name="polynomial", power=0.0), "config.schedule.power"),
  (dict(name="rsqrt"), "config.schedule.timescale"),
  (dict(name="onecycle", pct_start=1.0), "config.schedule.pct_start"),
  (dict(name="onecycle", div_factor=0.0), "config.schedule.div_factor"),
  (dict(name="onecycle", anneal="cosine"), "config.schedule.anneal"),
  (dict(name="cyclic", mode="sine"), "config.schedule.mode"),
  (dict(name="cosine_restarts"), "config.schedule.t_0"),
  (dict(name="cosine_restarts", t_0="2 steps", t_mult=0), "config.schedule.t_mult"),
  (dict(name="wsd", decay_fraction=1.5), "config.schedule.decay_fraction"),
  (dict(name="wsd", decay_shape="sqrt"), "config.schedule.decay_shape"),
  (dict(name="piecewise_constant", boundaries=(5,), factors=(1.0,)), "config.schedule.factors"),
  (dict(name="piecewise_linear"), "config.schedule.points"),
  (dict(name="piecewise_linear", points=((0, 1.0, 2.0),)), r"config.schedule.points\[0\]"),
]


@pytest.mark.parametrize("fields,field", BAD, ids=[f for _, f in BAD])
def test_validate_names_the_field(fields, field):
  cfg = schedule_config.default_config()
  cfg.update(fields)
  with pytest.raises(ValueError, match=field):
    schedule_config.validate(
      cfg, schedule_config.default_warmup_config(), schedule_config.default_plateau_config()
    )


BAD_WARMUP = [
  (dict(length="five epochs"), "config.warmup.length"),
  (dict(shape="quadratic"), "config.warmup.shape"),
  (dict(shape="exponential"), "config.warmup.shape"),
  (dict(init_lr=0.1, init_factor=0.1), "config.warmup.init_lr"),
  (dict(init_factor=-1.0), "config.warmup.init_factor"),
]


@pytest.mark.parametrize("fields,field", BAD_WARMUP, ids=[f for _, f in BAD_WARMUP])
def test_validate_names_the_warmup_field(fields, field):
  with pytest.raises(ValueError, match=field):
    schedule_config.validate(
      schedule_config.default_config(),
      warmup_config(**fields),
      schedule_config.default_plateau_config(),
    )


@pytest.mark.parametrize(
  "fields,field",
  [
    (dict(factor=1.0), "config.plateau.factor"),
    (dict(metric="loss"), "config.plateau.metric"),
    (dict(mode="lowest"), "config.plateau.mode"),
    (dict(threshold_mode="relative"), "config.plateau.threshold_mode"),
    (dict(patience=-1), "config.plateau.patience"),
    (dict(cooldown=-2), "config.plateau.cooldown"),
    (dict(min_lr=-1.0), "config.plateau.min_lr"),
  ],
)
def test_validate_names_the_plateau_field(fields, field):
  cfg = schedule_config.default_plateau_config()
  cfg.update(fields)
  with pytest.raises(ValueError, match=field):
    schedule_config.validate(
      schedule_config.default_config(), schedule_config.default_warmup_config(), cfg
    )


@pytest.mark.parametrize(
  "cfg,total,field",
  [
    (config("onecycle", decay_length="3 steps"), TOTAL, "config.schedule.pct_start"),
    (config("onecycle", three_phase=True, pct_start=0.6), TOTAL, "config.schedule.pct_start"),
    (config("step", step_size="0 steps"), TOTAL, "config.schedule.step_size"),
    (
      config("piecewise_constant", boundaries=(8, "1 epochs"), factors=(1.0, 0.5, 0.1)),
      TOTAL,
      "config.schedule.boundaries",
    ),
    (config("cosine"), 0, "config.schedule.decay_length"),
  ],
)
def test_build_errors_name_the_field(cfg, total, field):
  with pytest.raises(ValueError, match=re.escape(field)):
    evaluate(cfg, total=total)


def test_build_wraps_to_steps_errors_with_the_field():
  with pytest.raises(ValueError, match=re.escape("config.warmup.length")):
    evaluate(config("constant"), warmup_config(length="2 fortnights"))


def test_default_configs_are_valid_and_typed():
  schedule_config.validate(
    schedule_config.default_config(),
    schedule_config.default_warmup_config(),
    schedule_config.default_plateau_config(),
  )
  cfg = schedule_config.default_config()
  cfg.alpha = 0.1  # placeholder(float) accepts floats ...
  with pytest.raises(TypeError):
    cfg.alpha = "0.1"  # ... and rejects other types.
  cfg.decay_length = "5 epochs"
  assert schedule_config.default_plateau_config().enabled is False


# ---------------------------------------------------------------------------
# Plotting core and docs.
# ---------------------------------------------------------------------------


def load_plot_script():
  spec = importlib.util.spec_from_file_location(
    "plot_schedule", ROOT / "scripts" / "plot_schedule.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_plot_schedule_writes_png(tmp_path):
  plot = load_plot_script()
  fn = schedule_build.build_schedule(
    config("onecycle"),
    schedule_config.default_warmup_config(),
    peak_lr=PEAK,
    total_steps=T,
    to_steps=TO_STEPS,
  )
  out = tmp_path / "schedule.png"
  lrs = plot.plot_schedule(
    fn, total_steps=T, steps_per_epoch=4, out_path=str(out), title="onecycle"
  )
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  np.testing.assert_allclose(
    lrs, [torch_onecycle(t, PEAK, T) for t in range(T)], rtol=2e-5, atol=1e-8
  )


def test_docs_list_every_schedule_and_pytorch_scheduler():
  text = (ROOT / "docs" / "schedules.md").read_text()
  for name in schedule_config.SCHEDULES:
    assert f"`{name}`" in text, name
  for torch_name in (
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "OneCycleLR",
    "PolynomialLR",
    "LinearLR",
    "ReduceLROnPlateau",
  ):
    assert torch_name in text, torch_name


# ---------------------------------------------------------------------------
# gamma ** t at float32 precision over 10**6 steps; milestones in order and in budget.
# ---------------------------------------------------------------------------

MILLION = np.unique(np.r_[np.arange(0, 2000), np.linspace(0, 10**6, 20001).astype(np.int64)])


def _rel_err(got, want):
  ok = (want > 1e-30) & (want < 1e30)  # inside float32's normal range
  return np.max(np.abs(np.asarray(got, np.float64)[ok] / want[ok] - 1.0))


@pytest.mark.parametrize("gamma", [0.999, 0.9999, 0.99999, 0.95, 1.00001])
def test_exponential_step_exp_range_match_float64_over_a_million_steps(gamma):
  t = MILLION.astype(np.float64)
  run = dict(total=10**6 + 1, steps=MILLION)
  exp = evaluate(config("exponential", gamma=gamma), **run)
  assert _rel_err(exp, PEAK * np.exp(t * np.log(gamma))) < 1e-6
  step = evaluate(config("step", step_size="7 steps", gamma=gamma), **run)
  assert _rel_err(step, PEAK * np.exp(np.floor(t / 7) * np.log(gamma))) < 1e-6
  cyc = evaluate(
    config("cyclic", mode="exp_range", step_size_up="50 steps", gamma=gamma, alpha=0.0), **run
  )
  tri = 1.0 - np.abs((t % 100) / 50 - 1.0)
  want = PEAK * tri * np.exp(t * np.log(gamma))
  assert _rel_err(cyc[tri > 0], want[tri > 0]) < 1e-6
  # The float32 pow it replaces drifts (the bug this guards against).
  naive = PEAK * np.float32(gamma) ** MILLION.astype(np.float32)
  assert _rel_err(naive, PEAK * np.exp(t * np.log(gamma))) > 1e-5


def test_geometric_decay_to_alpha_is_exact_at_the_horizon():
  h = 10**6
  steps = np.array([0, 1, 85, 20000, h // 2, h - 1, h, h + 5])
  got = evaluate(config("exponential", alpha=1e-4, decay_length=f"{h} steps"), total=h, steps=steps)
  want = PEAK * 1e-4 ** (np.minimum(steps, h) / h)
  np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
  "cfg,fix",
  [
    (
      config("multistep", milestones=("3 epochs", "1 epochs")),
      "write them sorted: ('1 epochs', '3 epochs')",
    ),
    (
      config("piecewise_constant", boundaries=(9, 4), factors=(1.0, 0.5, 0.1)),
      "write them sorted: (4, 9)",
    ),
    (
      config("piecewise_linear", points=((8, 1.0), (2, 0.0))),
      "write them sorted: ((2, 0.0), (8, 1.0))",
    ),
  ],
)
def test_out_of_order_milestones_are_rejected_with_the_sorted_fix(cfg, fix):
  with pytest.raises(ValueError, match=re.escape(fix)):
    evaluate(cfg)


def test_a_repeated_multistep_milestone_still_counts_twice():
  got = evaluate(config("multistep", milestones=(4, 4), gamma=0.5), steps=np.arange(6))
  np.testing.assert_allclose(got, [PEAK] * 4 + [PEAK / 4] * 2, rtol=1e-6)


@pytest.mark.parametrize(
  "cfg,field",
  [
    (config("multistep", milestones=("1 epochs", "5 epochs")), "config.schedule.milestones[1]"),
    (
      config("piecewise_constant", boundaries=(4, TOTAL), factors=(1.0, 0.5, 0.1)),
      "config.schedule.boundaries[1]",
    ),
  ],
)
def test_milestones_past_the_budget_are_field_errors(cfg, field):
  with pytest.raises(ValueError, match=re.escape(field) + ".*lengthen config.budget"):
    evaluate(cfg)  # TOTAL = 20 steps = 5 epochs of 4 steps


def test_the_plan_holds_the_resolved_schedule():
  cfg = config_lib.base_config()
  cfg.schedule.name, cfg.schedule.milestones = "multistep", ("1 epochs",)
  plan = config_lib.resolve(cfg, num_devices=1)
  spe = math.ceil(plan.dataset.num_train / plan.batch_size)
  assert dict(plan.schedule.lengths)["schedule.milestones[0]"] == spe
  got = np.asarray(jax.vmap(lambda t: plan.lr_fn()(t, plan.lr))(jnp.arange(spe + 1)))
  np.testing.assert_allclose(got, [plan.lr] * spe + [plan.lr * 0.1], rtol=1e-6)
  cfg.budget = "1 epochs"  # the milestone would never apply: a resolve-time field error
  with pytest.raises(ValueError, match=re.escape("config.schedule.milestones[0]")):
    config_lib.resolve(cfg, num_devices=1)


def test_a_truncated_schedule_is_only_accepted_when_asked_for():
  # A smoke test of Goyal's recipe in 20 steps: the warmup (5 epochs) and every
  # milestone lie past the budget. Without the flag that is an error naming the
  # field and the flag; with it the run follows the recipe's first 20 steps.
  cfg = config_lib.base_config()
  cfg.schedule.name, cfg.schedule.milestones = "multistep", ("30 epochs", "60 epochs")
  cfg.warmup.length, cfg.budget = "5 epochs", "20 steps"
  with pytest.raises(
    ValueError, match=r"config.schedule.milestones\[0\].*allow_truncated_schedule"
  ):
    config_lib.resolve(cfg, num_devices=1)
  cfg.allow_truncated_schedule = True
  plan = config_lib.resolve(cfg, num_devices=1)
  assert plan.summary()["schedule_truncated"] is True
  warmup = plan.schedule.warmup_steps
  got = np.asarray(jax.vmap(lambda t: plan.lr_fn()(t, plan.lr))(jnp.arange(20)))
  np.testing.assert_allclose(got, plan.lr * np.arange(20) / warmup, rtol=1e-5, atol=1e-9)
