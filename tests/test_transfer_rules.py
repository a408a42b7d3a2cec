"""Transfer rules beyond the lr (beta2 half-life, AdamW timescale) and the Muon optimizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax import contrib as optax_contrib

from lrscale import config as config_lib
from lrscale.optim import hyperparams, optimizer_config, optimizers, scaling


def _apply(rule, batch, opt="adamw", base_lr=1e-3, weight_decay=0.1, b2=None):
  s = scaling.default_config()
  s.rule = rule
  s.reference_batch = 256
  o = optimizer_config.default_config()
  o.name = opt
  o.weight_decay = weight_decay
  if b2 is not None:
    o.b2 = b2
  return scaling.apply_scaling(s, base_lr=base_lr, batch_size=batch, optimizer_cfg=o)


@pytest.mark.parametrize("batch", [64, 1024, 4096])
def test_beta2_halflife_keeps_the_halflife_in_examples(batch):
  out = _apply("sqrt+beta2_halflife", batch, b2=0.95)
  k = batch / 256
  assert out.optimizer_overrides["b2"] == pytest.approx(0.95**k, rel=1e-12)
  assert out.lr == pytest.approx(1e-3 * math.sqrt(k))
  half_life = lambda b2, b: math.log(0.5) / math.log(b2) * b  # noqa: E731
  assert half_life(out.optimizer_overrides["b2"], batch) == pytest.approx(half_life(0.95, 256))
  assert out.rule == "sqrt+beta2_halflife"
  # alone: the lr is unchanged; the default b2 0.999 -> 0.999**16 at 4096
  alone = _apply("beta2_halflife", 4096)
  assert alone.lr == pytest.approx(1e-3)
  assert alone.optimizer_overrides == {"b2": pytest.approx(0.999**16)}


@pytest.mark.parametrize(
  "rule,expected_wd",
  [
    ("adamw_timescale", 0.1 * 4),  # lr fixed: lambda grows with B
    ("linear+adamw_timescale", 0.1),  # lr grows with B: lambda unchanged
    ("sqrt+adamw_timescale", 0.1 * 2),  # k / sqrt(k)
  ],
)
def test_adamw_timescale_keeps_tau_fixed(rule, expected_wd):
  out = _apply(rule, 1024)
  wd = out.optimizer_overrides["weight_decay"]
  assert wd == pytest.approx(expected_wd)
  tau = lambda b, lr, lam, d=50_000: b / (lr * lam * d)  # noqa: E731  Bergsma et al. 2025
  assert tau(1024, out.lr, wd) == pytest.approx(tau(256, 1e-3, 0.1))


def test_rules_combine_and_reach_the_plan():
  cfg = config_lib.base_config()
  cfg.optimizer.name = "adamw"
  cfg.optimizer.weight_decay = 0.05
  cfg.optimizer.b2 = 0.99
  cfg.lr = 1e-3
  cfg.batch_size = 64
  cfg.scaling.rule = "sqrt+beta2_halflife+adamw_timescale"
  cfg.scaling.reference_batch = 16
  plan = config_lib.resolve(cfg, num_devices=1)
  assert plan.lr == pytest.approx(2e-3)
  assert plan.optimizer.b2 == pytest.approx(0.99**4)
  assert plan.optimizer.weight_decay == pytest.approx(0.05 * 4 / 2)


@pytest.mark.parametrize(
  "rule,opt,wd,match",
  [
    ("sqrt+beta2_halflife", "momentum", 0.0, "does not have"),
    ("adam_sde+beta2_halflife", "adam", 0.0, "already rescales b2"),
    ("adamw_timescale", "adam", 0.1, "decoupled weight decay"),
    ("adamw_timescale", "adamw", 0.0, "which is 0"),
    ("sqrt+linear", "adamw", 0.1, "at most one lr rule"),
    ("sqrt+beta2_halflife+beta2_halflife", "adamw", 0.1, "each once"),
    ("cubic", "adamw", 0.1, "config.scaling.rule"),
  ],
)
def test_bad_rules_are_named(rule, opt, wd, match):
  with pytest.raises(ValueError, match=match):
    _apply(rule, 512, opt=opt, weight_decay=wd)


def _muon_cfg(**fields):
  o = optimizer_config.default_config()
  o.name = "muon"
  for k, v in fields.items():
    o[k] = v
  return o


@pytest.mark.parametrize("decay_mask,adam_wd", [("no_bias_norm", 0.0), ("all", 0.1)])
def test_muon_matches_optax_contrib_muon(decay_mask, adam_wd):
  key = jax.random.key(0)
  params = {
    "dense": {"kernel": jax.random.normal(key, (6, 4)), "bias": jnp.ones(4)},
    "norm": {"scale": jnp.ones(4)},
  }
  ours = optimizers.build_optimizer(
    _muon_cfg(weight_decay=0.1, decay_mask=decay_mask), params=params
  )
  ref = optax_contrib.muon(
    learning_rate=0.02, beta=0.95, weight_decay=0.1, adam_weight_decay=adam_wd, nesterov=True
  )
  s_ours, s_ref = ours.init(params), ref.init(params)
  p_ours = p_ref = params
  for t in range(3):
    grads = jax.tree.map(
      lambda p: jax.random.normal(jax.random.fold_in(key, t + 1), p.shape), params
    )
    s_ours = hyperparams.set_learning_rate(s_ours, 0.02)
    u_ours, s_ours = ours.update(grads, s_ours, p_ours)
    u_ref, s_ref = ref.update(grads, s_ref, p_ref)
    p_ours, p_ref = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_ref, u_ref)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p_ours, p_ref)
  # The matrix update is orthogonalised: 5 Newton-Schulz steps put every singular
  # value in about [0.7, 1.2] (Jordan et al. 2024), whatever the gradient's spread.
  plain = optimizers.build_optimizer(_muon_cfg(), params=params)
  fresh = hyperparams.set_learning_rate(plain.init(params), 0.02)
  g = grads["dense"]["kernel"] * jnp.array([8.0, 4.0, 2.0, 1.0])  # spread its singular values
  first = plain.update(dict(grads, dense=dict(grads["dense"], kernel=g)), fresh, params)[0]
  sv = np.linalg.svd(np.asarray(first["dense"]["kernel"]), compute_uv=False)
  raw = np.linalg.svd(np.asarray(g), compute_uv=False)
  assert raw.max() / raw.min() > 5 and sv.max() / sv.min() < 2.0, (raw, sv)


def _adamw_study(transfer):
  from lrscale.study import space

  s = config_lib.load_config_file("configs/studies/default.py")
  s.base.optimizer.name = "adamw"
  s.base.optimizer.momentum = None
  s.base.optimizer.b2 = 0.99
  s.base.optimizer.weight_decay = 0.05
  s.batch_sizes = (32, 128)
  s.lr.mode, s.lr.rule, s.lr.base_lr, s.lr.reference_batch = "relative", "sqrt", 1e-3, 32
  s.lr.grid = (0.5, 1.0, 2.0)
  s.transfer = transfer
  return s, space


def test_a_study_applies_the_transfer_rules_per_batch_size_and_lr():
  s, space = _adamw_study("beta2_halflife+adamw_timescale")
  trials = space.enumerate_trials(s)
  assert len(trials) == 2 * 3 * len(s.seeds)
  tau = lambda b, lr, lam: b / (lr * lam)  # noqa: E731  Bergsma et al.'s tau, times D
  seen = set()
  for t in trials:
    cfg = space.trial_config(s, t)
    plan = config_lib.resolve(cfg, num_devices=1)  # what the runner trains and records
    k = t.batch_size / 32
    assert plan.optimizer.b2 == pytest.approx(0.99**k, rel=1e-12)
    assert plan.optimizer.weight_decay == pytest.approx(0.05 * k * 1e-3 / t.lr, rel=1e-12)
    assert tau(t.batch_size, plan.lr, plan.optimizer.weight_decay) == pytest.approx(
      tau(32, 1e-3, 0.05)
    )
    assert cfg.to_dict()["optimizer"]["b2"] == plan.optimizer.b2  # in config.json
    seen.add((t.batch_size, round(plan.optimizer.b2, 12)))
  assert seen == {(32, 0.99), (128, round(0.99**4, 12))}
  # at B' = 4 B the rule's own lr point (multiplier 1: sqrt rule, lr 2e-3) keeps wd x 2
  b128 = [t for t in trials if t.batch_size == 128 and t.lr == pytest.approx(2e-3)]
  assert space.trial_config(s, b128[0]).optimizer.weight_decay == pytest.approx(0.1)
  # without transfer the base values stay
  s0, _ = _adamw_study("")
  cfg0 = space.trial_config(s0, space.enumerate_trials(s0)[-1])
  assert (cfg0.optimizer.b2, cfg0.optimizer.weight_decay) == (0.99, 0.05)


@pytest.mark.parametrize(
  "transfer,opt,match",
  [
    ("sqrt", "adamw", "config.transfer must be"),
    ("beta2_halflife+beta2_halflife", "adamw", "each once"),
    ("adamw_timescale", "adam", "config.transfer='adamw_timescale' needs decoupled"),
    ("beta2_halflife", "momentum", "config.transfer='beta2_halflife' rescales"),
  ],
)
def test_a_study_refuses_bad_transfer_rules(transfer, opt, match):
  from lrscale import errors

  s, space = _adamw_study(transfer)
  s.base.optimizer.name = opt
  if opt == "momentum":
    s.base.optimizer.momentum, s.base.optimizer.b2 = 0.9, None
    s.base.optimizer.weight_decay = 0.0
  with pytest.raises((ValueError, errors.UserError), match=match):
    space.enumerate_trials(s)


def test_a_study_written_before_config_transfer_resumes_unless_it_is_set(tmp_path):
  import json

  from lrscale import errors
  from lrscale.study import store

  s, _ = _adamw_study("")
  info = dict(config=json.loads(json.dumps(s.to_dict(), default=str)))
  older = json.loads(json.dumps(info))
  del older["config"]["transfer"]  # as written before the field existed
  (tmp_path / "study.json").write_text(json.dumps(older))
  store.check_study_json(str(tmp_path), info, write=False)  # same study: resumes
  s.transfer = "beta2_halflife"
  changed = dict(config=json.loads(json.dumps(s.to_dict(), default=str)))
  with pytest.raises(errors.UserError, match=r"config\.transfer"):
    store.check_study_json(str(tmp_path), changed, write=False)
