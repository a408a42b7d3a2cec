"""Datasets that ship inside an installed package, so they work with no network.

``digits`` is scikit-learn's copy of the UCI optical handwritten digits: 1797
grey 8x8 images of 10 classes, values 0..16. It is small enough that a whole
batch-size x learning-rate study runs in minutes on two CPU cores, and hard
enough that steps-to-target curves show the perfect-scaling and
diminishing-returns regions. The train/test split is the one the TFDS builder
``lrscale_digits`` writes, so both read paths see identical data.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from collections.abc import Sequence

import numpy as np

OFFLINE_DATASETS = ("digits",)
DIGITS_NUM_EXAMPLES = 1797
DIGITS_NUM_TEST = 360


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
  """The fixed train/test split of the digits: a seeded permutation, last 360 test.

  Shared by the in-memory loader and the TFDS builder ``lrscale_digits``, so both
  read paths see the same examples in the same order.
  """
  perm = np.random.default_rng(0).permutation(DIGITS_NUM_EXAMPLES)
  return perm[:-DIGITS_NUM_TEST], perm[-DIGITS_NUM_TEST:]


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """All 1797 digits in scikit-learn's order: float32 [N, 8, 8, 1] in [0, 1], int32 labels.

  Reads the CSV that scikit-learn ships rather than calling
  ``sklearn.datasets.load_digits``: importing scikit-learn costs seconds of
  start-up, the file costs milliseconds, and the values are identical (a test
  checks them against ``load_digits``).
  """
  spec = importlib.util.find_spec("sklearn")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(
      "config.dataset.name='digits' needs scikit-learn, which ships the data: "
      "pip install scikit-learn."
    )
  path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.float32)
  images = (table[:, :-1] / 16.0).reshape(-1, 8, 8, 1)
  return images, table[:, -1].astype(np.int32)


def check_classes(classes: Sequence[int], num_classes: int = 10) -> tuple[int, ...]:
  """Validates ``config.dataset.classes``: distinct class ids, at least two.

  Raises:
    ValueError: naming ``config.dataset.classes`` and the fix.
  """
  kept = tuple(classes)
  if not kept:
    return kept
  if any(isinstance(c, bool) or not isinstance(c, int) for c in kept):
    raise ValueError(f"config.dataset.classes={kept!r} must hold integer class ids, e.g. (0, 1, 2)")
  bad = [c for c in kept if not 0 <= c < num_classes]
  if bad or len(set(kept)) != len(kept) or len(kept) < 2:
    raise ValueError(
      f"config.dataset.classes={kept!r} must be at least 2 distinct class ids in "
      f"[0, {num_classes}), e.g. (5, 6, 7, 8, 9); () keeps every class"
    )
  return kept


def select_classes(
  x: np.ndarray, y: np.ndarray, classes: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
  """The examples of ``classes``, in their order, relabelled ``classes[i] -> i``.

  A subset is a new ``len(classes)``-way task (e.g. digits 5-9 as labels 0-4),
  so a model pre-trained on another subset of the same size keeps its shapes.
  """
  keep = np.isin(y, classes)
  relabel = np.full(int(y.max()) + 1, -1, np.int32)
  relabel[list(classes)] = np.arange(len(classes), dtype=np.int32)
  return x[keep], relabel[y[keep]]


def _split(classes: Sequence[int]):
  images, labels = load_digits_arrays()
  train, test = digits_split_indices()
  (tx, ty), (ex, ey) = (images[train], labels[train]), (images[test], labels[test])
  if classes:
    (tx, ty), (ex, ey) = select_classes(tx, ty, classes), select_classes(ex, ey, classes)
  return (tx, ty), (ex, ey), len(classes) or 10


def load(name: str, classes: Sequence[int] = ()):
  """Returns ``((train_x, train_y), (test_x, test_y), num_classes)``, of ``classes`` only if given."""
  if name != "digits":
    raise ValueError(f"config.dataset.name={name!r} is not an offline dataset {OFFLINE_DATASETS}.")
  return _split(check_classes(classes))


def meta(name: str, classes: Sequence[int] = ()):
  """Size and shape of an offline dataset (a class subset reads the labels: milliseconds)."""
  from lrscale.data.registry import DatasetMeta  # pylint: disable=g-import-not-at-top

  if name != "digits":
    raise ValueError(f"config.dataset.name={name!r} is not an offline dataset {OFFLINE_DATASETS}.")
  kept = check_classes(classes)
  num_train, num_eval = DIGITS_NUM_EXAMPLES - DIGITS_NUM_TEST, DIGITS_NUM_TEST
  if kept:
    (_, ty), (_, ey), _ = _split(kept)
    num_train, num_eval = len(ty), len(ey)
  return DatasetMeta(
    name=name,
    num_train=num_train,
    num_eval=num_eval,
    num_classes=len(kept) or 10,
    input_shape=(8, 8, 1),
    streamed=False,
  )
