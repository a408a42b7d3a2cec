"""Full evaluation of a streamed eval split in the training loop (lrscale.engine.evaluate).

On 8 fake CPU devices with a validation split of 21 examples (divisible by
neither the device count nor the eval batch): every example is counted once,
and the metrics equal a one-device numpy evaluation of the same parameters.
The Goyal and CIFAR configs run end to end on the synthetic ImageNet set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrscale import config as config_lib
from lrscale.data import augment, registry, synthetic_imagenet, tfds_source
from lrscale.engine import loop
from lrscale.engine.outputs import read_jsonl
from lrscale.engine.setup import RunSetup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = synthetic_imagenet.NAME
NUM_CLASSES, EVAL_PER_CLASS = 7, 3  # 21 validation examples
SIZE = 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
  path = str(tmp_path_factory.mktemp("synthetic_eval"))
  synthetic_imagenet.prepare(
    path,
    num_classes=NUM_CLASSES,
    train_per_class=4,
    eval_per_class=EVAL_PER_CLASS,
    min_side=20,
    max_side=40,
  )
  return path


def _goyal(data_dir: str, **changes):
  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "imagenet_resnet50_goyal.py"))
  cfg.dataset.update(dict(name=NAME, data_dir=data_dir, image_size=SIZE, workers=0))
  cfg.model.name = "resnet18"
  cfg.model.bn_group_size = -1
  cfg.batch_size = 8
  cfg.compilation_cache = ""
  cfg.tensorboard = False
  for key, value in changes.items():
    config_lib.set_field(cfg, key, value)
  return cfg


def _numpy_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Mean cross-entropy, top-1 and top-5 accuracy, in float64 numpy."""
  z = logits.astype(np.float64)
  z -= z.max(axis=1, keepdims=True)
  log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  rank = (z > z[np.arange(len(labels)), labels][:, None]).sum(axis=1)  # classes scored above
  return dict(
    eval_loss=float(-log_p[np.arange(len(labels)), labels].mean()),
    eval_accuracy=float((rank == 0).mean()),
    eval_top5_accuracy=float((rank < 5).mean()),
  )


def test_full_eval_counts_each_example_once_and_matches_numpy(data_dir: str) -> None:
  # float32 and random last-BN gammas: per-example outputs differ, so a missed or
  # doubled example would move every metric.
  cfg = _goyal(data_dir, **{"model.dtype": "float32", "model.zero_init_last_bn": False})
  cfg.eval_batch_size = 8  # 21 = 8 + 8 + 5: the last global batch is padded
  plan = config_lib.resolve(cfg)
  assert plan.num_devices == 8 and plan.config.dataset.eval_examples == 0
  data = registry.load_in_memory(plan.config.dataset)
  assert data.num_eval == 0  # nothing of the eval split is held in memory
  setup = RunSetup(plan, data)
  ev = setup.evaluator
  assert (ev.num_examples, ev.batch_size, ev.num_steps) == (21, 8, 3)
  state = setup.initial_state(plan)
  got = setup.evaluate(state)
  assert ev.last_count == 21.0

  source, _ = tfds_source.open_split_encoded(NAME, "validation", data_dir=data_dir)
  view = augment.eval_transform(cfg.dataset.augment, SIZE)
  images = np.stack([view(source[i]["image"]) for i in range(len(source))])
  labels = np.asarray([source[i]["label"] for i in range(len(source))])
  cpu0 = jax.devices()[0]
  params, stats = jax.device_put((state.params, state.batch_stats), cpu0)
  model = nnx.merge(setup.graphdef, params, stats)
  logits = model(jax.device_put(jnp.asarray(images, jnp.float32) / 255.0, cpu0), train=False)
  want = _numpy_metrics(np.asarray(logits), labels)
  assert set(got) == set(want)
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=1e-6, err_msg=key)
  # The same numbers with a batch that splits the split otherwise (3 x 8 -> 1 x 24).
  cfg.eval_batch_size = 1024
  other = RunSetup(config_lib.resolve(cfg), data)
  assert (other.evaluator.batch_size, other.evaluator.num_steps) == (24, 1)
  again = other.evaluate(state)
  for key, value in want.items():
    np.testing.assert_allclose(again[key], value, rtol=2e-5, atol=1e-6, err_msg=key)


def test_goyal_command_trains_and_evaluates_in_the_loop(data_dir: str, tmp_path) -> None:
  """The README's acceptance command at tiny size, as a fresh process with grain workers."""
  workdir = tmp_path / "goyal"
  flags = [
    "--config=configs/imagenet_resnet50_goyal.py",
    f"--config.dataset.name={NAME}",
    f"--config.dataset.data_dir={data_dir}",
    "--config.model.name=resnet18",
    f"--config.dataset.image_size={SIZE}",
    "--config.budget=4 steps",
    "--config.allow_truncated_schedule=True",
    "--config.batch_size=16",
    "--config.model.bn_group_size=2",
    "--config.eval_every=2 steps",
    "--config.checkpoint_every=2 steps",
    "--config.log_every=2 steps",
    "--config.dataset.workers=1",
    "--config.target.value=0.0",  # reached at the first evaluation after step 0
    "--config.compilation_cache=",
    f"--workdir={workdir}",
  ]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-m", "lrscale.train", *flags],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "leaked shared_memory" not in proc.stderr  # the input workers' batches are freed
  assert "eval set (1, 24) streamed, 21 examples" in proc.stderr
  rows = read_jsonl(workdir / "metrics.jsonl")
  evals = [r for r in rows if "eval_loss" in r]
  assert [r["step"] for r in evals] == [0, 2, 4]
  for r in evals:
    assert 0.0 <= r["eval_top5_accuracy"] <= 1.0 and r["eval_accuracy"] <= r["eval_top5_accuracy"]
    assert np.isfinite(r["eval_loss"])
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "complete" and summary["steps"] == 4
  assert summary["target"]["step"] == 2  # the host-side evaluation checks the target
  assert summary["final"]["eval_loss"] == evals[-1]["eval_loss"]


def test_cifar_config_augments_and_runs_on_the_synthetic_set(data_dir: str, tmp_path) -> None:
  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "cifar10_resnet.py"))
  assert cfg.dataset.augment == "cifar_crop_flip" and cfg.dataset.stream
  assert cfg.model.name == "resnet20"
  cfg.dataset.update(
    dict(name=NAME, data_dir=data_dir, image_size=SIZE, eval_split="validation", workers=0)
  )
  for key, value in {
    "batch_size": 8,
    "model.bn_group_size": -1,
    "budget": "2 steps",
    "allow_truncated_schedule": True,
    "eval_every": "2 steps",
    "checkpoint_every": "2 steps",
    "compilation_cache": "",
    "tensorboard": False,
  }.items():
    config_lib.set_field(cfg, key, value)
  summary = loop.train(cfg, str(tmp_path / "cifar"))
  assert summary["status"] == "complete" and summary["steps"] == 2
  assert set(summary["final"]) >= {"eval_loss", "eval_accuracy", "eval_top5_accuracy"}


def test_augmentation_of_in_memory_data_is_an_error() -> None:
  cfg = config_lib.base_config()
  cfg.dataset.augment = "flip"
  with pytest.raises(ValueError, match=r"config\.dataset\.augment='flip'.*stream=True"):
    config_lib.resolve(cfg)
