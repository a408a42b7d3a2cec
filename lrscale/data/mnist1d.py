"""MNIST-1D (Greydanus 2020): 10 classes of 1-D signals of length 40, generated locally.

The ``mnist1d`` package builds each example by transforming one of ten 1-D
digit templates (padding, translation, correlated and i.i.d. noise, shear), so
any number of examples can be made with no download. The original dataset has
4000 training examples; batch-size studies need far more so that B = 8192 does
not repeat the data every step, hence ``config.dataset.mnist1d.train_size``
(default 200k). Generating 200k examples is a Python loop of a few minutes, so
the arrays are cached once in ``~/.cache/lrscale/mnist1d/`` as ``.npz`` keyed by
every generator argument. Only ``mnist1d.data.make_dataset`` is called, never
its download path.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Any

import numpy as np

NAME = "mnist1d"
NUM_CLASSES = 10
LENGTH = 40
SEED = 42  # the generator seed of the published MNIST-1D
_F = "config.dataset.mnist1d"


def _sizes(mnist1d_cfg: Any) -> tuple[int, int]:
  train, eval_ = mnist1d_cfg.train_size, mnist1d_cfg.eval_size
  for field, value in (("train_size", train), ("eval_size", eval_)):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ValueError(f"{_F}.{field} must be a positive integer, got {value!r}.")
  if (train + eval_) % NUM_CLASSES:
    raise ValueError(
      f"{_F}: train_size + eval_size = {train + eval_} must be a multiple of {NUM_CLASSES} "
      "(the generator makes the same number of examples of every class)."
    )
  return train, eval_


def generator_args(mnist1d_cfg: Any) -> dict[str, Any]:
  """The ``mnist1d`` generator's arguments: its defaults with our sample count."""
  from mnist1d.data import get_dataset_args  # pylint: disable=g-import-not-at-top

  train, eval_ = _sizes(mnist1d_cfg)
  args = get_dataset_args(as_dict=True)
  args.pop("url")  # the download path: never used
  args.update(num_samples=train + eval_, train_split=1.0, seed=SEED)
  return args


def cache_path(args: dict[str, Any]) -> str:
  """``~/.cache/lrscale/mnist1d/<hash of args>.npz``."""
  digest = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
  return os.path.join(os.path.expanduser("~/.cache/lrscale/mnist1d"), f"{digest}.npz")


def _generate(args: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """All examples (float32 [N, 40], int32 [N]) in the generator's shuffled order."""
  try:
    from mnist1d.data import make_dataset  # pylint: disable=g-import-not-at-top
    from mnist1d.utils import ObjectView  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError(
      "config.dataset.name='mnist1d' needs the mnist1d package: pip install mnist1d."
    ) from None
  # make_dataset seeds the global numpy and random generators; leave them as they were.
  np_state, py_state = np.random.get_state(), random.getstate()
  try:
    data = make_dataset(ObjectView(dict(args)))
  finally:
    np.random.set_state(np_state)
    random.setstate(py_state)
  return data["x"].astype(np.float32), data["y"].astype(np.int32)


def load(mnist1d_cfg: Any):
  """Returns ``((train_x, train_y), (eval_x, eval_y), 10)``; x is float32 [N, 40, 1].

  The first ``train_size`` examples train and the next ``eval_size`` evaluate
  (the generator has shuffled them). Generated once, then read from the cache.
  """
  train, _ = _sizes(mnist1d_cfg)
  args = generator_args(mnist1d_cfg)
  path = cache_path(args)
  if os.path.exists(path):
    with np.load(path) as f:
      x, y = f["x"], f["y"]
  else:
    x, y = _generate(args)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, x=x, y=y, args=json.dumps(args, sort_keys=True))
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
  x = x[..., None]
  return (x[:train], y[:train]), (x[train:], y[train:]), NUM_CLASSES


def meta(mnist1d_cfg: Any):
  """Size and shape, without generating anything."""
  from lrscale.data.registry import DatasetMeta  # pylint: disable=g-import-not-at-top

  train, eval_ = _sizes(mnist1d_cfg)
  return DatasetMeta(
    name=NAME,
    num_train=train,
    num_eval=eval_,
    num_classes=NUM_CLASSES,
    input_shape=(LENGTH, 1),
    streamed=False,
  )
