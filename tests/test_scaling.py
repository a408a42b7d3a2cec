"""Tests for lrscale.optim.scaling: closed-form values of every rule."""

import json
import math

import pytest

from lrscale.optim import hyperparams, optimizer_config, optimizers, scaling


def _cfgs(rule, opt="adam", **scaling_fields):
  s = scaling.default_config()
  s.rule = rule
  for k, v in scaling_fields.items():
    setattr(s, k, v)
  o = optimizer_config.default_config()
  o.name = opt
  return s, o


def _apply(rule, batch, opt="adam", base_lr=0.1, **fields):
  s, o = _cfgs(rule, opt, **fields)
  return scaling.apply_scaling(s, base_lr=base_lr, batch_size=batch, optimizer_cfg=o)


@pytest.mark.parametrize("batch,k", [(512, 2.0), (64, 0.25)])
def test_simple_rules_closed_form(batch, k):
  assert _apply("none", batch).lr == pytest.approx(0.1)
  assert _apply("linear", batch).lr == pytest.approx(0.1 * k)
  assert _apply("sqrt", batch).lr == pytest.approx(0.1 * math.sqrt(k))
  for rule in ("none", "linear", "sqrt"):
    out = _apply(rule, batch)
    assert out.k == pytest.approx(k)
    assert out.rule == rule
    assert out.optimizer_overrides == {}


def test_goyal_example_8k():
  # Goyal et al.: 0.1 at 256 -> 3.2 at 8k.
  assert _apply("linear", 8192, opt="nesterov").lr == pytest.approx(3.2)


def test_reference_batch_is_used():
  assert _apply("linear", 512, reference_batch=128).lr == pytest.approx(0.4)


@pytest.mark.parametrize("batch,k", [(1024, 4.0), (64, 0.25)])
def test_adam_sde_closed_form(batch, k):
  out = _apply("adam_sde", batch, opt="adamw", base_lr=1e-3)
  assert out.lr == pytest.approx(1e-3 * math.sqrt(k))
  ov = out.optimizer_overrides
  assert set(ov) == {"b1", "b2", "eps"}
  assert ov["b1"] == pytest.approx(1 - k * 0.1)
  assert ov["b2"] == pytest.approx(1 - k * 0.001)
  assert ov["eps"] == pytest.approx(1e-8 / math.sqrt(k))


def test_adam_sde_uses_configured_betas():
  s, o = _cfgs("adam_sde", "adam")
  o.b1, o.b2, o.eps = 0.8, 0.99, 1e-6
  out = scaling.apply_scaling(s, base_lr=0.01, batch_size=512, optimizer_cfg=o)
  assert out.optimizer_overrides == pytest.approx(
    {"b1": 0.6, "b2": 0.98, "eps": 1e-6 / math.sqrt(2)}
  )


def test_adam_sde_betas_per_optimizer():
  # rmsprop: b2 is its decay; schedule-free's b1 is no EMA; lamb has both.
  assert set(_apply("adam_sde", 512, opt="rmsprop").optimizer_overrides) == {"b2", "eps"}
  assert _apply("adam_sde", 512, opt="rmsprop").optimizer_overrides["b2"] == pytest.approx(
    0.8
  )  # optax default decay 0.9
  assert set(_apply("adam_sde", 512, opt="schedule_free_adamw").optimizer_overrides) == {
    "b2",
    "eps",
  }
  assert set(_apply("adam_sde", 512, opt="lamb").optimizer_overrides) == {"b1", "b2", "eps"}


def test_adam_sde_beta_out_of_range_raises_or_clips():
  # k = 16: k * (1 - 0.9) = 1.6 -> b1 would be -0.6.
  with pytest.raises(ValueError, match="config.scaling.clip_betas"):
    _apply("adam_sde", 4096)
  with pytest.warns(UserWarning, match="Clipping"):
    out = _apply("adam_sde", 4096, clip_betas=True)
  assert out.optimizer_overrides["b1"] == 0.0
  assert out.optimizer_overrides["b2"] == pytest.approx(1 - 16 * 0.001)


@pytest.mark.parametrize(
  "opt", ["sgd", "momentum", "nesterov", "lars", "adagrad", "schedule_free_sgd"]
)
def test_adam_sde_rejects_optimizers_without_betas(opt):
  with pytest.raises(
    ValueError,
    match=r"config.scaling.rule='adam_sde'.*"
    rf"config.optimizer.name='{opt}' has none",
  ):
    _apply("adam_sde", 512, opt=opt)


def test_adam_sde_overrides_reach_the_optimizer():
  import jax.numpy as jnp

  s, o = _cfgs("adam_sde", "adam")
  out = scaling.apply_scaling(s, base_lr=1e-3, batch_size=1024, optimizer_cfg=o)
  for key, value in out.optimizer_overrides.items():
    setattr(o, key, value)
  params = {"w": jnp.ones(3)}
  tx = optimizers.build_optimizer(o, params=params, learning_rate=out.lr)
  hp = hyperparams.current_hparams(tx.init(params))
  assert float(hp["b1"]) == pytest.approx(0.6)
  assert float(hp["b2"]) == pytest.approx(0.996)
  assert float(hp["eps"]) == pytest.approx(5e-9)
  assert float(hp["lr"]) == pytest.approx(2e-3)


@pytest.mark.parametrize("batch", [100, 400])
def test_fitted_from_config(batch):
  out = _apply("fitted", batch, base_lr=123.0, coef=0.01, exponent=0.5)
  assert out.lr == pytest.approx(0.01 * math.sqrt(batch))
  assert "base_lr 123 ignored" in out.description


def test_fitted_max_lr_caps():
  assert _apply("fitted", 100, coef=0.01, exponent=0.5, max_lr=0.15).lr == pytest.approx(0.1)
  out = _apply("fitted", 400, coef=0.01, exponent=0.5, max_lr=0.15)
  assert out.lr == pytest.approx(0.15)
  assert "capped" in out.description


def _write_rule(tmp_path, entry, **extra):
  path = tmp_path / "analysis.json"
  path.write_text(json.dumps({scaling.LR_RULE_KEY: entry, **extra}))
  return str(path)


@pytest.mark.parametrize("batch", [128, 2048])
def test_fitted_from_analysis_json(tmp_path, batch):
  rule = scaling.LrRule(
    coef=0.002, exponent=0.75, max_lr=1.0, reference="test study, best lr per batch"
  )
  path = _write_rule(tmp_path, scaling.lr_rule_json(rule), other={"x": 1})
  assert scaling.read_lr_rule(path) == rule
  out = _apply("fitted", batch, fitted_from=path)
  assert out.lr == pytest.approx(min(0.002 * batch**0.75, 1.0))
  assert "test study" in out.description


def test_fitted_from_file_null_max_lr_and_config_cap(tmp_path):
  path = _write_rule(tmp_path, {"coef": 0.01, "exponent": 1.0, "max_lr": None, "reference": "r"})
  assert _apply("fitted", 1000, fitted_from=path).lr == pytest.approx(10.0)
  assert _apply("fitted", 1000, fitted_from=path, max_lr=2.0).lr == pytest.approx(2.0)


def test_fitted_errors(tmp_path):
  with pytest.raises(ValueError, match="config.scaling.coef and config.scaling.exponent"):
    _apply("fitted", 256, coef=0.1)
  with pytest.raises(ValueError, match="config.scaling.fitted_from.*no such"):
    _apply("fitted", 256, fitted_from=str(tmp_path / "missing.json"))
  no_key = tmp_path / "a.json"
  no_key.write_text('{"steps": 3}')
  with pytest.raises(ValueError, match='"lr_rule"'):
    _apply("fitted", 256, fitted_from=str(no_key))
  bad = _write_rule(tmp_path, {"coef": -1.0, "exponent": 1.0})
  with pytest.raises(ValueError, match="coef must be a finite number > 0"):
    _apply("fitted", 256, fitted_from=bad)
  good = _write_rule(tmp_path, {"coef": 1.0, "exponent": 1.0})
  with pytest.raises(ValueError, match="config.scaling.coef must be unset"):
    _apply("fitted", 256, fitted_from=good, coef=0.1)


def test_validate_names_fields():
  o = optimizer_config.default_config()
  s = scaling.default_config()
  s.rule = "cubic"
  with pytest.raises(ValueError, match="config.scaling.rule must be one of"):
    scaling.validate(s, o)
  s = scaling.default_config()
  s.reference_batch = 0
  with pytest.raises(ValueError, match="config.scaling.reference_batch"):
    scaling.validate(s, o)
  s = scaling.default_config()
  s.rule = "linear"
  s.coef = 0.1
  with pytest.raises(ValueError, match="config.scaling.coef only applies"):
    scaling.validate(s, o)
  s = scaling.default_config()
  scaling.validate(s, o)  # defaults are valid
  with pytest.raises(ValueError, match="batch size must be an integer > 0"):
    scaling.apply_scaling(s, base_lr=0.1, batch_size=0, optimizer_cfg=o)


def test_config_overrides_from_command_line_spelling():
  s = scaling.default_config()
  s.update_from_flattened_dict({"coef": 0.5, "exponent": -0.5, "rule": "fitted"})
  o = optimizer_config.default_config()
  assert scaling.apply_scaling(s, base_lr=1.0, batch_size=4, optimizer_cfg=o).lr == pytest.approx(
    0.25
  )
