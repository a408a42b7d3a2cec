"""config.dataset.classes: a class subset of the offline digits, relabelled 0..k-1."""

import numpy as np
import pytest

from lrscale import config as config_lib
from lrscale.data import offline, registry
from tests.test_train import small_config


def test_subset_is_the_classes_examples_relabelled_in_order():
  images, labels = offline.load_digits_arrays()
  train, test = offline.digits_split_indices()
  (tx, ty), (ex, ey), k = offline.load("digits", (7, 2, 9))
  assert k == 3
  for (x, y), idx in (((tx, ty), train), ((ex, ey), test)):
    want = idx[np.isin(labels[idx], (7, 2, 9))]  # the split's order, kept
    np.testing.assert_array_equal(x, images[want])
    np.testing.assert_array_equal(y, [{7: 0, 2: 1, 9: 2}[int(c)] for c in labels[want]])
    assert set(np.unique(y)) == {0, 1, 2}


def test_two_halves_partition_the_split_and_meta_counts_them():
  whole = registry.check_dataset(config_lib.base_config().dataset)
  assert whole.num_train == 1437 and whole.num_classes == 10
  metas = []
  for classes in ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)):
    cfg = small_config(**{"dataset.classes": classes})
    plan = config_lib.resolve(cfg)
    data = registry.load_in_memory(plan.config.dataset)
    assert plan.dataset.num_classes == 5 == data.num_classes
    assert (plan.dataset.num_train, plan.dataset.num_eval) == (data.num_train, data.num_eval)
    assert set(np.unique(data.train_y)) == set(range(5))
    metas.append(plan.dataset)
  assert sum(m.num_train for m in metas) == 1437 and sum(m.num_eval for m in metas) == 360


@pytest.mark.parametrize(
  "classes, match",
  [
    ((5, 5), "at least 2 distinct class ids"),
    ((3,), "at least 2 distinct class ids"),
    ((0, 10), r"in \[0, 10\)"),
    ((0, "1"), "integer class ids"),
  ],
)
def test_bad_classes_name_the_field(classes, match):
  with pytest.raises(ValueError, match=r"config\.dataset\.classes=.*" + match):
    config_lib.resolve(small_config(**{"dataset.classes": classes}))


def test_classes_on_another_dataset_is_an_error():
  cfg = small_config(**{"dataset.name": "mnist1d", "dataset.classes": (0, 1)})
  with pytest.raises(ValueError, match=r"config\.dataset\.classes=\(0, 1\): a class subset"):
    config_lib.resolve(cfg)
