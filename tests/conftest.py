"""Test set-up: eight fake CPU devices so multi-device code is exercised on CPU.

XLA reads this flag once, when JAX first initialises its backend, so it is set
here, before any test imports JAX. Tests that want one device say so with
``config.parallel.num_devices = 1``.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
