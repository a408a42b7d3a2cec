"""Experiment configs: the offline analogue's base run, the repository's config files,
and the validation of full-scale configs before the missing-dataset error."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from lrscale import config as config_lib
from lrscale.data import registry

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODES = ("analogue", "full")
DIGITS_NUM_TRAIN = 1437  # the offline digits' fixed train split (1797 - 360 test)

# (train, eval, classes, image shape) of the papers' datasets (public facts), so a
# full-scale config can be validated and resolved here, where the data is absent.
PAPER_DATASETS: Mapping[str, tuple[int, int, int, tuple[int, ...]]] = {
  "mnist": (60000, 10000, 10, (28, 28, 1)),
  "fashion_mnist": (60000, 10000, 10, (28, 28, 1)),
  "cifar10": (50000, 10000, 10, (32, 32, 3)),
  "imagenet2012": (1281167, 50000, 1000, (224, 224, 3)),
}


def load_repo_config(relpath: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of a config file of this repository, e.g. ``configs/mnist_cnn.py``."""
  return config_lib.load_config_file(os.path.join(REPO_ROOT, relpath), arg)


def digits_base(*, smoke: bool = False) -> ml_collections.ConfigDict:
  """The analogue's base run: the MLP (64-128-128-10) on the offline digits, one device.

  Args:
    smoke: the test variant: a narrower MLP and no persistent compilation cache.

  Returns:
    A run config the experiments change per run (batch size, lr, schedule, ...).
  """
  c = config_lib.base_config()
  c.dataset.name = "digits"
  c.model.name = "mlp"
  c.model.hidden = (32,) if smoke else (128, 128)
  c.parallel.num_devices = 1  # small model: one device; nothing here assumes a CPU
  c.tensorboard = False
  c.checkpoint_every = "1000 epochs"  # short runs: only the final checkpoint
  c.checkpoint_keep = 1
  c.log_every = "1 steps"
  c.sync_every = "500 steps"
  if smoke:
    c.compilation_cache = ""
  return c


def set_fields(cfg: ml_collections.ConfigDict, **fields: Any) -> ml_collections.ConfigDict:
  """A copy of ``cfg`` with dotted fields set, e.g. ``**{"warmup.length": "5 epochs"}``."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  for key, value in fields.items():
    config_lib.set_field(out, key, value)
  return out


def stand_in_meta(dataset_cfg: Any) -> registry.DatasetMeta:
  """Size and shape of a paper dataset without reading it (for validating full configs)."""
  name = dataset_cfg.name
  if name not in PAPER_DATASETS:
    return registry.check_dataset(dataset_cfg)  # offline datasets need no stand-in
  num_train, num_eval, classes, shape = PAPER_DATASETS[name]
  return registry.DatasetMeta(
    name=name,
    num_train=num_train,
    num_eval=num_eval,
    num_classes=classes,
    input_shape=shape,
    streamed=name in registry.TFDS_STREAMED,
  )


def check_full_runs(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Validates and resolves every full-scale config, then checks its dataset is prepared.

  Every field, length and scaling rule is checked first (against the dataset's
  known size), so a typo surfaces even where the data is missing; then the
  dataset check raises ``DatasetNotFoundError`` with the ``tfds build`` command.
  """
  for cfg in configs:
    config_lib.resolve(cfg, dataset_meta=stand_in_meta(cfg.dataset))
  for name in sorted({cfg.dataset.name for cfg in configs}):
    registry.check_dataset(next(c for c in configs if c.dataset.name == name).dataset)


def check_full_study(study: ml_collections.ConfigDict) -> None:
  """:func:`check_full_runs` for every distinct trial config of a study."""
  from lrscale.study import space  # pylint: disable=g-import-not-at-top

  check_full_runs([space.trial_config(study, t) for t in space.enumerate_trials(study)])
