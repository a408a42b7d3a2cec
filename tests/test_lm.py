"""Language modelling: the task's loss, token lengths, the stdlib corpus, the transformer."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrscale import config as config_lib
from lrscale import units
from lrscale.data import registry, stdlib_chars
from lrscale.engine import loop as train_lib
from lrscale.engine.outputs import read_jsonl
from lrscale.models import build_model
from lrscale.tasks import get_task


def test_token_cross_entropy_matches_hand_computation():
  logits = np.array(
    [[[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], [[0.0, 3.0, 1.0], [1.0, -2.0, 0.0]]], np.float32
  )
  targets = np.array([[0, 2], [1, 0]], np.int32)
  expected = []
  for b in range(2):
    per_token = []
    for t in range(2):
      z = logits[b, t]
      per_token.append(math.log(sum(math.exp(v) for v in z)) - z[targets[b, t]])
    expected.append(sum(per_token) / 2)
  task = get_task("language_modelling")
  np.testing.assert_allclose(task.loss(jnp.asarray(logits), jnp.asarray(targets)), expected, 1e-6)
  # argmax hits: (0 yes, 2 tie->index 0 no), (1 yes, 0 yes)
  np.testing.assert_allclose(task.metrics["eval_accuracy"](logits, targets), [0.5, 1.0])


def test_lengths_in_tokens_resolve_through_the_context():
  steps = units.to_steps(
    "6400 tokens", batch_size=10, num_train_examples=1000, tokens_per_example=64
  )
  assert steps == 10  # 6400 / 64 = 100 sequences = 10 steps of 10
  with pytest.raises(ValueError, match="config.budget=.*not token sequences"):
    units.to_steps("6400 tokens", batch_size=10, num_train_examples=1000, field="budget")
  cfg = _cfg(**{"budget": "1e5 tokens", "warmup.length": "3200 tokens"})
  plan = config_lib.resolve(cfg)
  assert plan.total_steps == math.ceil(1e5 / 16 / 8)
  assert plan.to_steps("3200 tokens") == 25
  digits = config_lib.base_config()
  digits.budget = "1000 tokens"
  with pytest.raises(ValueError, match="config.budget"):
    config_lib.resolve(digits)


def test_stdlib_corpus_windows_split_and_fingerprint():
  train, val, sha = stdlib_chars.corpus()
  assert len(val) > 0.03 * len(train) and len(sha) == 64
  files = stdlib_chars.corpus_files()
  names_val = {os.path.basename(f) for f in files if stdlib_chars.is_validation(f)}
  assert 0 < len(names_val) < len(files)
  x, y = stdlib_chars.windows(train, 16)
  assert x.dtype == np.int32 and x.shape == y.shape == ((len(train) - 1) // 16, 16)
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # target = input shifted by one
  np.testing.assert_array_equal(y[:-1, -1], x[1:, 0])  # windows overlap by one token
  np.testing.assert_array_equal(x[3], train[48:64])
  meta = registry.check_dataset(_cfg().dataset)
  assert meta.tokens_per_example == 8 and meta.task == "language_modelling"
  assert meta.fingerprint.startswith(f"sha256:{sha}")


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_causal_masking(positions):
  model = build_model(
    "transformer",
    input_shape=(12,),
    num_classes=256,
    bn_group_size=0,
    rngs=nnx.Rngs(0),
    depth=2,
    width=32,
    heads=4,
    mlp_ratio=2,
    positions=positions,
  )
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 256)
  changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % 256)
  a, b = model(tokens, train=False), model(changed, train=False)
  assert a.shape == (2, 12, 256) and a.dtype == jnp.float32
  np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)  # the past ignores the future
  assert float(jnp.max(jnp.abs(a[:, 7:] - b[:, 7:]))) > 1e-4  # the change is seen


def test_bad_transformer_shape_is_named():
  with pytest.raises(ValueError, match="config.model.width"):
    build_model(
      "transformer",
      input_shape=(8,),
      num_classes=256,
      bn_group_size=0,
      rngs=nnx.Rngs(0),
      width=32,
      heads=3,
    )


def _cfg(**overrides):
  c = config_lib.base_config()
  c.dataset.name = "stdlib_chars"
  c.dataset.context = 8
  c.dataset.eval_examples = 64
  c.model.name = "transformer"
  c.model.depth, c.model.width, c.model.heads, c.model.mlp_ratio = 1, 32, 2, 2
  c.optimizer.name = "adamw"
  c.schedule.name = "constant"
  c.lr = 1e-2
  c.batch_size = 16
  c.parallel.num_devices = 1
  c.compilation_cache = ""
  c.tensorboard = False
  c.target.metric, c.target.mode = "eval_loss", "min"
  c.budget = "60 steps"
  c.log_every = c.eval_every = c.checkpoint_every = c.sync_every = "30 steps"
  for key, value in overrides.items():
    config_lib.set_field(c, key, value)
  return c


def test_tiny_transformer_learns_bytes(tmp_path):
  """Int token data end to end (with the noise-scale split): held-out loss falls by > 30%."""
  cfg = _cfg(**{"noise_scale.enabled": True, "noise_scale.splits": 2, "lr": 3e-3})
  summary = train_lib.train(cfg, tmp_path)
  rows = [r for r in read_jsonl(os.path.join(tmp_path, "metrics.jsonl")) if "eval_loss" in r]
  assert rows[0]["eval_loss"] > math.log(256) - 0.3  # about chance (6.2 measured)
  assert summary["status"] == "complete"
  assert summary["final"]["eval_loss"] < 0.7 * rows[0]["eval_loss"], rows  # 0.59 measured
  assert summary["final"]["train_loss"] < 3.3  # 2.8 measured
  resolved = json.load(open(os.path.join(tmp_path, "config.json")))["resolved"]
  assert resolved["dataset"]["fingerprint"].startswith("sha256:")
