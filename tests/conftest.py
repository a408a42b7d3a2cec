"""Test set-up: eight fake CPU devices so multi-device code is exercised on CPU.

XLA reads this flag once, when JAX first initialises its backend, so it is set
here, before any test imports JAX. Tests that want one device say so with
``config.parallel.num_devices = 1``.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import pytest  # noqa: E402  (after the XLA flags above)


@pytest.fixture
def empty_tfds_dir(tmp_path, monkeypatch):
  """TFDS's default data_dir (``config.dataset.data_dir=''``) as an empty directory.

  Tests of the missing-dataset path then pass whatever ~/tensorflow_datasets holds.
  """
  from tensorflow_datasets.core import constants
  from tensorflow_datasets.core.utils import file_utils

  empty = tmp_path / "empty_tfds"
  empty.mkdir()
  monkeypatch.setattr(constants, "DATA_DIR", str(empty))
  monkeypatch.setattr(file_utils, "_REGISTERED_DATA_DIRS", set())
  monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
  return str(empty)
