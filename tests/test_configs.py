"""Every shipped config validates; the Goyal recipe resolves to the paper's numbers."""

import glob
import math
import os

import numpy as np
import pytest

from experiments import common
from lrscale import config as config_lib
from lrscale.data import registry
from lrscale.data.registry import DatasetMeta

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET = DatasetMeta(
  name="imagenet2012",
  num_train=1_281_167,
  num_eval=50_000,
  num_classes=1000,
  input_shape=(224, 224, 3),
  streamed=True,
)


load = config_lib.load_config_file


RUN_CONFIGS = sorted(
  p for p in glob.glob(os.path.join(REPO, "configs", "*.py")) if not p.endswith("lr_find.py")
)


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=os.path.basename)
def test_run_configs_resolve(path, empty_tfds_dir):
  """Every config resolves fully (TFDS ones against their datasets' published sizes);
  without the prepared data, a TFDS one fails only on that, naming data_dir."""
  cfg = load(path)
  cfg.parallel.num_devices = 1
  meta = common.stand_in_meta(cfg.dataset)
  plan = config_lib.resolve(cfg, dataset_meta=meta)
  assert plan.total_steps > 0 and plan.dataset.num_train == meta.num_train
  assert float(plan.lr_fn()(0, plan.lr)) >= 0.0
  if cfg.dataset.name in registry.OFFLINE:
    return
  with pytest.raises(ValueError, match=r"config\.dataset.*data_dir"):
    config_lib.resolve(cfg)


def test_docstrings_hold_the_launch_command():
  for path in glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True):
    text = open(path).read()
    assert "python -m lrscale." in text, path


@pytest.mark.parametrize("batch", [256, 8192])
def test_goyal_recipe_resolves_to_paper_numbers(batch):
  cfg = load(os.path.join(REPO, "configs", "imagenet_resnet50_goyal.py"))
  cfg.batch_size = batch
  cfg.parallel.num_devices = 1
  plan = config_lib.resolve(cfg, num_devices=1, dataset_meta=IMAGENET)
  assert plan.lr == pytest.approx(0.1 * batch / 256)  # 3.2 at 8k
  assert plan.total_steps == math.ceil(90 * 1_281_167 / batch)
  lr_fn = plan.lr_fn()
  steps_per_epoch = 1_281_167 / batch
  warm = math.ceil(5 * steps_per_epoch)
  lrs = np.array(
    [
      float(lr_fn(s, plan.lr))
      for s in (
        0,
        warm,
        math.ceil(30 * steps_per_epoch) + 1,
        math.ceil(60 * steps_per_epoch) + 1,
        math.ceil(80 * steps_per_epoch) + 1,
      )
    ]
  )
  # Warmup starts at 0.1 (at 256 that is already the target), then /10 at 30, 60, 80.
  np.testing.assert_allclose(
    lrs, [0.1, plan.lr, plan.lr / 10, plan.lr / 100, plan.lr / 1000], rtol=1e-5
  )
