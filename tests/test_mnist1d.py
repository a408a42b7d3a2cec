"""MNIST-1D: generated locally, cached once, sized by config; the shipped studies validate."""

import importlib.util
import os

import numpy as np
import pytest

from lrscale import config as config_lib
from lrscale.data import mnist1d, registry
from lrscale.study import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small(train=190, eval_=10):
  c = config_lib.base_config()
  c.dataset.name = "mnist1d"
  c.dataset.mnist1d.train_size = train
  c.dataset.mnist1d.eval_size = eval_
  return c


def test_generated_once_then_read_from_the_cache(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  cfg = small()
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  data = registry.load_in_memory(cfg.dataset)
  np.testing.assert_array_equal(np.random.get_state()[1], before)  # global RNG untouched
  assert data.train_x.shape == (190, 40, 1) and data.eval_x.shape == (10, 40, 1)
  assert data.num_classes == 10 and set(np.unique(data.train_y)) <= set(range(10))
  # Every class has 20 examples over train + eval (the generator balances them).
  counts = np.bincount(np.concatenate([data.train_y, data.eval_y]), minlength=10)
  np.testing.assert_array_equal(counts, 20)
  path = mnist1d.cache_path(mnist1d.generator_args(cfg.dataset.mnist1d))
  assert path.startswith(str(tmp_path)) and os.path.exists(path)

  def no_generation(args):
    raise AssertionError("generated again instead of reading the cache")

  monkeypatch.setattr(mnist1d, "_generate", no_generation)
  again = registry.load_in_memory(cfg.dataset)
  np.testing.assert_array_equal(again.train_x, data.train_x)
  # Another size is another cache entry.
  assert mnist1d.cache_path(mnist1d.generator_args(small(380, 20).dataset.mnist1d)) != path


def test_meta_needs_no_generation_and_sizes_are_checked():
  plan = config_lib.resolve(small(200_000, 10_000), num_devices=1)
  assert plan.dataset.num_train == 200_000 and plan.dataset.input_shape == (40, 1)
  with pytest.raises(ValueError, match=r"config\.dataset\.mnist1d"):
    config_lib.resolve(small(195, 10), num_devices=1)
  with pytest.raises(ValueError, match=r"config\.dataset\.mnist1d\.train_size"):
    config_lib.resolve(small(0, 10), num_devices=1)


@pytest.mark.parametrize("name", ["linreg.py", "mnist1d.py"])
def test_study_configs_validate_every_trial(name):
  spec = importlib.util.spec_from_file_location(
    "cfg", os.path.join(REPO, "configs", "studies", name)
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  study = module.get_config()
  study.base.parallel.num_devices = 1
  trials = runner.validate_study(study)
  assert {t.batch_size for t in trials} >= {4096} and len({t.seed for t in trials}) >= 2
