"""Fine-tuning: start from another run's parameters, with reset and frozen parts."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lrscale import config as config_lib
from lrscale.engine import init_from
from lrscale.optim import param_groups
from tests.test_train import _SETUPS, run, small_config


def _saved_params(workdir):
  step_dir = init_from.checkpoint_dir(str(workdir))
  raw = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
  return {
    param_groups.path_string(kp).removesuffix("/value"): np.asarray(v)
    for kp, v in jax.tree_util.tree_leaves_with_path(raw["params"])
  }


def _flat(params):
  return {
    param_groups.path_string(kp): np.asarray(v)
    for kp, v in jax.tree_util.tree_leaves_with_path(params)
  }


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("source")
  run(small_config(budget="40 steps"), workdir)
  return workdir


def _fine_tune_config(source, **kw):
  overrides = {
    "init.checkpoint": str(source),
    "init.reset": "head/.*",
    "init.freeze": "hidden/0/kernel",
    "optimizer.lr_multipliers": "hidden/0/bias=0.5",
    "optimizer.weight_decay": 1e-3,  # decay must not move a frozen parameter either
    "seed": 3,
    "budget": "20 steps",
  }
  overrides.update(kw)
  return small_config(**overrides)


def test_restores_exactly_the_named_parameters_and_freezes(source, tmp_path):
  src = _saved_params(source)
  cfg = _fine_tune_config(source)
  run(cfg, tmp_path / "ft")  # also compiles the setup we inspect below
  plan = config_lib.resolve(cfg)
  setup = next(s for s in _SETUPS.values() if s.plan.config.init.freeze == "hidden/0/kernel")
  start = _flat(setup.initial_state(plan).params)
  fresh = _flat(setup._init_model(3)[1])
  assert set(start) == set(src) == {"head/bias", "head/kernel", "hidden/0/bias", "hidden/0/kernel"}
  for path in ("hidden/0/kernel", "hidden/0/bias"):  # from the checkpoint, bitwise
    np.testing.assert_array_equal(start[path], src[path])
  for path in ("head/kernel", "head/bias"):  # reset: this run's fresh init, not the source's
    np.testing.assert_array_equal(start[path], fresh[path])
    assert not np.array_equal(start[path], src[path])
  end = _saved_params(tmp_path / "ft")
  np.testing.assert_array_equal(end["hidden/0/kernel"], src["hidden/0/kernel"])  # frozen
  for path in ("hidden/0/bias", "head/kernel", "head/bias"):
    assert np.abs(end[path] - start[path]).max() > 1e-6, path


def test_shape_mismatch_names_the_parameter_and_suggests_reset(source, tmp_path):
  cfg = small_config(**{"init.checkpoint": str(source), "model.hidden": (48,)})
  with pytest.raises(ValueError, match=r"'head/kernel' has shape \(32, 10\).*\(48, 10\).*reset"):
    run(cfg, tmp_path / "bad")


@pytest.mark.parametrize(
  "overrides,needle",
  [
    ({"init.checkpoint": "/nonexistent/run"}, "config.init.checkpoint='/nonexistent/run' holds no"),
    ({"init.reset": "head/.*"}, "config.init.reset / config.init.batch_stats need"),
    ({"init.freeze": "("}, r"config.init.freeze='\(' is not a regex"),
    ({"init.freeze": "backbone/.*"}, "config.init.freeze='backbone/.*' matches no parameter"),
  ],
)
def test_bad_init_fields_are_named(overrides, needle, tmp_path):
  cfg = small_config(**overrides)
  with pytest.raises(ValueError, match=needle.replace(".*", r"\.\*").replace("/.", "/.")):
    run(cfg, tmp_path / "x")
