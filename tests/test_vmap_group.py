"""A vmapped group of trials equals the same trials run one by one."""

import os

import numpy as np

from lrscale import config as config_lib
from lrscale.engine import loop as train_lib
from lrscale.study.vmap_group import train_group
from tests.test_train import small_config, train_losses


def test_group_with_a_diverging_member_matches_separate_runs(tmp_path):
  cfgs = [small_config(lr=lr, seed=seed) for lr, seed in ((0.05, 0), (1e4, 0), (0.2, 1))]
  for c in cfgs:
    c.target.value = 0.8  # member 0 and 2 stop at different steps; member 1 diverges
  plans = [config_lib.resolve(c) for c in cfgs]
  data = train_lib.registry.load_in_memory(plans[0].config.dataset)
  setup = train_lib.RunSetup(plans[0], data)
  grouped = train_group(plans, [str(tmp_path / f"g{i}") for i in range(3)], setup)
  assert [s["status"] for s in grouped] == ["complete", "diverged", "complete"]
  for i, (cfg, plan) in enumerate(zip(cfgs, plans)):
    alone = train_lib.train(cfg, str(tmp_path / f"a{i}"), plan=plan, setup=setup, data=data)
    assert alone["status"] == grouped[i]["status"]
    assert alone["steps"] == grouped[i]["steps"]
    assert alone["target"] == grouped[i]["target"]
    np.testing.assert_allclose(
      train_losses(tmp_path / f"g{i}"), train_losses(tmp_path / f"a{i}"), rtol=1e-5
    )
    if alone["status"] == "complete":
      np.testing.assert_allclose(
        alone["final"]["eval_loss"], grouped[i]["final"]["eval_loss"], rtol=1e-5
      )


def test_sigterm_checkpoints_every_member_and_the_group_resumes_exactly(tmp_path):
  import signal

  import pytest

  from lrscale import errors

  cfgs = [small_config(lr=lr, seed=s, sync_every="10 steps") for lr, s in ((0.05, 0), (0.2, 1))]
  plans = [config_lib.resolve(c) for c in cfgs]
  data = train_lib.registry.load_in_memory(plans[0].config.dataset)
  setup = train_lib.RunSetup(plans[0], data)
  indices, calls = setup.indices, []

  def indices_then_sigterm(plan, start, n):
    calls.append(start)
    if len(calls) == 5:  # the third segment's second member: the handler only records it
      signal.raise_signal(signal.SIGTERM)
    return indices(plan, start, n)

  setup.indices = indices_then_sigterm
  dirs = [str(tmp_path / f"g{i}") for i in range(2)]
  with pytest.raises(errors.Interrupted, match="SIGTERM at step 30"):
    train_group(plans, dirs, setup)
  for d in dirs:  # each member saved at the boundary where the signal was seen
    assert max(int(s) for s in os.listdir(os.path.join(d, "checkpoints"))) == 30
  setup.indices = indices
  resumed = train_group(plans, dirs, setup)
  clean = train_group(plans, [str(tmp_path / f"c{i}") for i in range(2)], setup)
  for i in range(2):
    assert resumed[i]["steps"] == clean[i]["steps"] == 60
    np.testing.assert_array_equal(train_losses(dirs[i]), train_losses(tmp_path / f"c{i}"))
    assert resumed[i]["final"]["eval_loss"] == clean[i]["final"]["eval_loss"]
