"""Mixed precision: bfloat16 compute with float32 state; float16 with dynamic loss scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lrscale import config as config_lib
from lrscale.engine import loop
from lrscale.engine.outputs import read_jsonl
from lrscale.engine.setup import RunSetup
from lrscale.optim import precision


def test_loss_scale_skips_overflow_and_grows_back():
  tx = precision.dynamic_loss_scale(optax.sgd(0.1), init_scale=8.0, growth_interval=2)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  bad = {"w": jnp.array([1.0, jnp.inf, 0.0])}
  updates, state = tx.update(bad, state, params)
  np.testing.assert_array_equal(updates["w"], 0.0)  # skipped
  assert float(state.scale) == 4.0 and int(state.skipped) == 1
  good = {"w": jnp.ones(3)}
  updates, state = tx.update(good, state, params)
  np.testing.assert_allclose(updates["w"], -0.1)
  assert float(state.scale) == 4.0 and int(state.good_steps) == 1
  _, state = tx.update(good, state, params)  # second finite step in a row: grows
  assert float(state.scale) == 8.0 and int(state.good_steps) == 0
  assert precision.loss_scale_state({"a": (state,)}) is state


def test_cast_to_compute_leaves_integers():
  tree = {"x": jnp.ones(2, jnp.float32), "i": jnp.ones(2, jnp.int32)}
  out = precision.cast_to_compute(tree, jnp.bfloat16)
  assert out["x"].dtype == jnp.bfloat16 and out["i"].dtype == jnp.int32


def _cfg(**fields):
  c = config_lib.base_config()
  c.batch_size, c.lr, c.budget = 64, 0.05, "40 steps"
  c.optimizer.name, c.optimizer.momentum = "momentum", 0.9
  c.eval_every = c.checkpoint_every = c.log_every = "10 steps"
  c.tensorboard = False
  for k, v in fields.items():
    config_lib.set_field(c, k, v)
  return c


def _float32_leaves(tree):
  return {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def test_bfloat16_resnet18_trains_with_float32_state(tmp_path):
  cfg = _cfg(
    **{
      "model.name": "resnet18",
      "model.dtype": "bfloat16",
      "model.bn_group_size": 8,
      "budget": "24 steps",
      "eval_every": "12 steps",
      "checkpoint_every": "12 steps",
    }
  )
  plan = config_lib.resolve(cfg)
  assert plan.num_devices == 8
  summary = loop.train(cfg, str(tmp_path))
  losses = [r["train_loss"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train_loss" in r]
  assert summary["status"] == "complete"
  assert losses[-1] < 0.7 * losses[0], losses
  setup = RunSetup(plan, loop.registry.load_in_memory(plan.config.dataset))
  state = setup.initial_state(plan)
  # The master copy stays float32: parameters, optimizer state, BN statistics.
  assert _float32_leaves(state.params) == {jnp.dtype("float32")}
  assert _float32_leaves(state.opt_state) == {jnp.dtype("float32")}
  assert _float32_leaves(state.batch_stats) == {jnp.dtype("float32")}
  # ... while the forward pass really runs in bfloat16.
  x = jnp.zeros((8, 8, 8, 1), jnp.bfloat16)
  model = jax.tree.map(lambda a: a, setup._model(0))
  jaxpr = jax.make_jaxpr(lambda x: model(x, train=False))(x)
  assert "bf16" in str(jaxpr)


def test_float16_overflow_is_skipped_and_training_recovers(tmp_path):
  # A scale of 2^24 overflows float16 at once: steps are skipped and the scale
  # halves until the scaled gradients fit, then training proceeds.
  cfg = _cfg(
    **{
      "model.dtype": "float16",
      "model.loss_scale_init": 2.0**24,
      "budget": "60 steps",
      "log_every": "1 steps",
    }
  )
  loop.train(cfg, str(tmp_path))
  rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "train_loss" in r]
  scales = [r["loss_scale"] for r in rows]
  assert scales[0] == 2.0**24 and scales[1] == 2.0**23  # the first step overflowed
  settled = scales.index(scales[-1])
  assert 1 <= settled < len(scales) - 10, scales  # it stops halving, then holds
  assert max(scales[settled:]) == min(scales[settled:])
  # Skipped steps leave the parameters alone: the loss of the steps before the
  # scale settles is the initial loss; afterwards it falls.
  np.testing.assert_allclose([r["train_loss"] for r in rows[:2]], rows[0]["train_loss"], rtol=0.3)
  assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
