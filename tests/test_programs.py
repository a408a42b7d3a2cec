"""program_key: which runs one compiled RunSetup serves, and that sharing changes nothing."""

import numpy as np

from experiments import common
from lrscale import config as config_lib
from lrscale.engine import loop
from lrscale.engine.programs import program_key
from lrscale.engine.setup import RunSetup


def _plan(**fields):
  return config_lib.resolve(common.set_fields(common.digits_base(smoke=True), **fields))


def test_traced_and_host_fields_share_a_program():
  base = program_key(_plan())
  same = _plan(
    lr=0.3,
    seed=4,
    **{"scaling.rule": "linear", "target.value": 0.5, "log_every": "3 steps"},
  )
  assert program_key(same) == base


def test_compiled_fields_do_not_share():
  base = program_key(_plan())
  assert program_key(_plan(**{"warmup.length": "1 epochs"})) != base
  assert program_key(_plan(batch_size=64)) != base
  assert program_key(_plan(budget="3 epochs")) != base  # the schedule's horizon
  assert program_key(_plan(**{"model.hidden": (16,)})) != base
  # Across batch sizes (the range test's ladder) only the batch differs.
  a, b = _plan(batch_size=32), _plan(batch_size=64)
  assert program_key(a, across_batch_sizes=True) == program_key(b, across_batch_sizes=True)
  c = _plan(batch_size=64, **{"optimizer.momentum": 0.5})
  assert program_key(a, across_batch_sizes=True) != program_key(c, across_batch_sizes=True)


def test_a_shared_setup_gives_the_numbers_of_a_fresh_one(tmp_path):
  """Two runs that share a key: training the second on the first's setup is exact."""
  first = _plan(lr=0.05, seed=0, budget="2 epochs")
  second_cfg = common.set_fields(common.digits_base(smoke=True), lr=0.2, seed=3, budget="2 epochs")
  second = config_lib.resolve(second_cfg)
  assert program_key(first) == program_key(second)
  data = loop.registry.load_in_memory(first.config.dataset)
  shared = RunSetup(first, data)
  a = loop.train(second_cfg, str(tmp_path / "shared"), plan=second, setup=shared, data=data)
  b = loop.train(second_cfg, str(tmp_path / "fresh"), plan=second, data=data)
  assert a["final"] == b["final"]
  np.testing.assert_equal(a["steps"], b["steps"])
