"""Ultralytics' warmup (lrscale.optim.ultralytics_warmup) against a numpy transcription.

The reference below is written from Ultralytics' trainer (``_do_train``) and its
SGD (PyTorch, nesterov, dampening 0) in float64; lrscale is driven through the
resolved config, the plan's schedule and the optimizer the run set-up builds.
At every step the weights' lr, the biases' lr and the momentum must match, and
so must the parameters after each update.
"""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lrscale import config as config_lib
from lrscale.data import registry
from lrscale.engine import setup as setup_lib
from lrscale.optim import hyperparams, optimizers, ultralytics_warmup
from tests.test_train import run, small_config, train_losses

N_TRAIN = 1437  # the offline digits' train split


def ultralytics_reference(*, nb, epochs, nw, lr0, lrf, cos, bias_lr, m0, m, total):
  """Per step ni: (weight lr, bias lr, momentum), as Ultralytics sets them before step ni."""
  if cos:  # ultralytics.utils.torch_utils.one_cycle(1, lrf, epochs)
    lf = lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1) + 1  # noqa: E731
  else:
    lf = lambda x: max(1 - x / epochs, 0) * (1.0 - lrf) + lrf  # noqa: E731
  rows = []
  for ni in range(total):
    epoch = ni // nb  # LambdaLR.step() once per epoch: initial_lr * lf(epoch)
    lr_w = lr_b = lr0 * lf(epoch)
    mom = m
    if ni < nw:
      xi = [0, nw]
      lr_b = np.interp(ni, xi, [bias_lr, lr0 * lf(epoch)])
      lr_w = np.interp(ni, xi, [0.0, lr0 * lf(epoch)])
      mom = np.interp(ni, xi, [m0, m])
    rows.append((lr_w, lr_b, mom))
  return np.asarray(rows)


def sgd_nesterov_reference(params, grads, rows, bias):
  """PyTorch SGD(nesterov=True): buf = m buf + g; p -= lr (g + m buf); per-group lr."""
  p = {k: v.astype(np.float64).copy() for k, v in params.items()}
  buf = {k: np.zeros_like(v) for k, v in p.items()}
  out = []
  for g, (lr_w, lr_b, mom) in zip(grads, rows):
    for k in p:
      buf[k] = mom * buf[k] + g[k]
      p[k] = p[k] - (lr_b if bias[k] else lr_w) * (g[k] + mom * buf[k])
    out.append({k: v.copy() for k, v in p.items()})
  return out


def ultra_config(**fields):
  # Ultralytics' epoch is ceil(N / B) batches (12 at B = 128), lrscale's N / B
  # steps, so its 15 epochs are written in steps: 15 * 12.
  c = small_config(batch_size=128, lr=0.01, budget="180 steps")
  c.optimizer.name = "nesterov"
  c.optimizer.momentum = 0.937
  c.schedule.name = "ultralytics"
  c.schedule.alpha = 0.01  # lrf
  c.schedule.decay_length = "180 steps"
  c.warmup.length = "3 epochs"
  c.warmup.min_length = "100 steps"  # Ultralytics 8.3: nw = max(round(3 nb), 100)
  c.warmup.target = "current"
  c.warmup.bias_init_lr = 0.1
  c.warmup.init_momentum = 0.8
  for key, value in fields.items():
    config_lib.set_field(c, key, value)
  return c


@pytest.mark.parametrize("anneal", ["linear", "cos"])
def test_every_step_matches_ultralytics(anneal):
  plan = config_lib.resolve(ultra_config(**{"schedule.anneal": anneal}))
  nb = math.ceil(N_TRAIN / plan.batch_size)  # len(train_loader)
  nw = max(round(3 * nb), 100)
  assert plan.schedule.warmup_steps == nw == 100
  total = plan.total_steps
  rows = ultralytics_reference(
    nb=nb, epochs=15, nw=nw, lr0=0.01, lrf=0.01, cos=anneal == "cos", bias_lr=0.1, m0=0.8,
    m=0.937, total=total,
  )  # fmt: skip
  rng = np.random.default_rng(0)
  params = {
    "hidden/kernel": rng.normal(size=(4, 3)),
    "hidden/bias": rng.normal(size=(3,)),
    "bn/scale": rng.normal(size=(3,)),
    "bn/bias": rng.normal(size=(3,)),
  }
  bias = {k: k.endswith("/bias") for k in params}
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(total)]
  expected = sgd_nesterov_reference(params, grads, rows, bias)

  # Leaf names stay 'bias' / 'kernel' / 'scale', nested as Flax modules nest them.
  nest = lambda d: {  # noqa: E731
    a: {
      b: jnp.asarray(d[f"{a}/{b}"], jnp.float32)
      for b in ("kernel", "bias", "scale")
      if f"{a}/{b}" in d
    }
    for a in ("hidden", "bn")
  }
  p = nest(params)
  tx = optimizers.build_optimizer(
    plan.optimizer, params=p, warmup=ultralytics_warmup.from_schedule(plan.schedule)
  )
  state = tx.init(p)
  lr_fn = plan.lr_fn()
  for t in range(total):
    lr = lr_fn(jnp.int32(t), jnp.float32(plan.lr))
    state = hyperparams.set_learning_rate(state, lr)
    updates, state = tx.update(nest(grads[t]), state, p)
    p = optax.apply_updates(p, updates)
    hp = hyperparams.current_hparams(state)  # the values this update used
    lr_w, lr_b, mom = rows[t]
    np.testing.assert_allclose(float(hp["lr"]), lr_w, rtol=1e-6, atol=1e-9, err_msg=f"step {t}")
    np.testing.assert_allclose(
      float(hp["lr"] + hp["bias_lr_offset"]), lr_b, rtol=1e-6, atol=1e-8, err_msg=f"step {t}"
    )
    np.testing.assert_allclose(float(hp["momentum"]), mom, rtol=1e-6, err_msg=f"step {t}")
    for key, want in expected[t].items():
      a, b = key.split("/")
      np.testing.assert_allclose(
        np.asarray(p[a][b]), want, rtol=2e-5, atol=2e-6, err_msg=f"{key} at step {t}"
      )
  # The warmup really differs between the groups and ends: biases fall from 0.1,
  # weights rise from 0, momentum rises from 0.8; all three are constant-in-epoch after.
  assert rows[0, 1] == 0.1 and rows[0, 0] == 0.0 and rows[0, 2] == 0.8
  assert np.all(rows[nw:, 0] == rows[nw:, 1]) and np.all(rows[nw:, 2] == 0.937)


def test_target_current_differs_from_end():
  """'current' follows the per-epoch decay during warmup; 'end' ramps to its value at W."""
  cur = config_lib.resolve(ultra_config(**{"schedule.anneal": "linear"}))
  end = config_lib.resolve(ultra_config(**{"schedule.anneal": "linear", "warmup.target": "end"}))
  t = jnp.arange(cur.total_steps)
  a = np.asarray(cur.lr_fn()(t, 0.01))
  b = np.asarray(end.lr_fn()(t, 0.01))
  w = cur.schedule.warmup_steps
  np.testing.assert_allclose(a[w:], b[w:])
  main_at_w = 0.01 * ((1 - (w // 12) / 15) * 0.99 + 0.01)
  np.testing.assert_allclose(b[:w], main_at_w * np.arange(w) / w, rtol=1e-5)
  last = (w // 12) * 12  # first step of the epoch the warmup ends in
  assert np.all(a[1:last] > b[1:last])  # lf(epoch) > lf(W's epoch) in earlier epochs
  np.testing.assert_allclose(a[last:w], b[last:w], rtol=1e-6)


def test_run_setup_builds_the_warmup():
  """The run's own optimizer (RunSetup) carries the schedules, from step 0; a plain run not."""
  plan = config_lib.resolve(ultra_config(**{"model.hidden": (8,)}))
  setup = setup_lib.RunSetup(plan, registry.load_in_memory(plan.config.dataset))
  hp = hyperparams.current_hparams(setup.initial_state(plan).opt_state)
  assert float(hp["momentum"]) == pytest.approx(0.8)
  assert float(hp["bias_lr_offset"]) == pytest.approx(0.1)
  plain = config_lib.resolve(
    ultra_config(
      **{"model.hidden": (8,), "warmup.init_momentum": None, "warmup.bias_init_lr": None}
    )
  )
  hp = hyperparams.current_hparams(
    plain.schedule
    and setup_lib.RunSetup(plain, registry.load_in_memory(plain.config.dataset))
    .initial_state(plain)
    .opt_state
  )  # noqa: E501
  assert float(hp["momentum"]) == pytest.approx(0.937) and "bias_lr_offset" not in hp


BAD = [
  ({"warmup.init_momentum": 1.2}, r"config\.warmup\.init_momentum must be in \[0, 1\)"),
  ({"warmup.bias_init_lr": -0.1}, r"config\.warmup\.bias_init_lr must be >= 0"),
  ({"warmup.target": "later"}, r"config\.warmup\.target must be one of"),
  ({"warmup.offset_main": True}, r"config\.warmup\.target='current' needs"),
  (
    {"warmup.shape": "exponential", "warmup.init_lr": 1e-4},
    r"config\.warmup\.bias_init_lr needs config\.warmup\.shape",
  ),
  (
    {"warmup.init_factor": 0.1},
    r"config\.warmup\.bias_init_lr is set with config\.warmup\.init_factor",
  ),
  (
    {"optimizer.name": "adam", "optimizer.momentum": None},
    r"config\.warmup\.init_momentum=0\.8: optimizer 'adam' has no heavy-ball momentum",
  ),
  (
    {"optimizer.momentum_form": "goyal"},
    r"config\.warmup\.bias_init_lr needs config\.optimizer\.momentum_form='optax'",
  ),
  (
    {"optimizer.name": "muon", "warmup.init_momentum": None},
    r"config\.warmup\.bias_init_lr is not supported for optimizer 'muon'",
  ),
  (
    {"warmup.length": "0 steps", "warmup.min_length": "0 steps"},
    r"config\.warmup\.init_momentum is set but config\.warmup\.length='0 steps' is 0 steps",
  ),
  ({"warmup.min_length": "ten steps"}, r"config\.warmup\.min_length"),
  (
    {"warmup.min_length": "200 steps"},
    r"config\.warmup\.min_length='200 steps' is 200 steps, longer than the budget",
  ),
]


@pytest.mark.parametrize("fields, match", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_values_are_field_errors(fields, match):
  """One line naming the field, raised by resolve (before any compute)."""
  with pytest.raises(ValueError, match=match) as err:
    config_lib.resolve(ultra_config(**fields))
  assert "\n" not in str(err.value)


def test_run_resumes_mid_warmup_to_the_same_end(tmp_path):
  """A run stopped inside the warmup resumes (the schedules' counts are checkpointed)."""
  cfg = ultra_config(
    **{"model.hidden": (8,), "budget": "40 steps", "schedule.decay_length": "40 steps"},
    checkpoint_every="10 steps",
    eval_every="20 steps",
    **{"warmup.min_length": "0 steps", "warmup.length": "30 steps"},
  )
  full = run(cfg, tmp_path / "full")
  assert full["status"] == "complete"
  run(cfg, tmp_path / "resumed", stop_after_steps=15)
  resumed = run(cfg, tmp_path / "resumed")
  assert resumed["final"] == full["final"]
  assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "full")
  plain = run(
    ultra_config(
      **{"model.hidden": (8,), "budget": "40 steps", "schedule.decay_length": "40 steps"},
      checkpoint_every="10 steps",
      eval_every="20 steps",
      **{"warmup.length": "30 steps", "warmup.min_length": "0 steps"},
      **{"warmup.init_momentum": None, "warmup.bias_init_lr": None},
    ),
    tmp_path / "plain",
  )
  assert plain["final"] != full["final"]  # the warmup changed the run
