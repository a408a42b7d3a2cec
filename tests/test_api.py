"""The public API: every name resolves, and it is the engine's own object."""

import subprocess
import sys

import lrscale
from lrscale.engine import loop


def test_every_public_name_resolves():
  for name in lrscale.__all__:
    assert getattr(lrscale, name) is not None, name
  assert lrscale.train is loop.train


def test_import_lrscale_loads_no_jax():
  code = "import sys, lrscale; assert 'jax' not in sys.modules, sorted(sys.modules)"
  subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
