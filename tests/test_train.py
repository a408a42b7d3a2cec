"""The training run: device-count invariance, resume, accumulation, outputs, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lrscale import config as config_lib
from lrscale.engine import loop as train_lib
from lrscale.engine.outputs import read_jsonl
from lrscale.engine.programs import program_key

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(**overrides):
  c = config_lib.base_config()
  c.parallel.num_devices = 1
  c.compilation_cache = ""
  c.tensorboard = False
  c.batch_size = 64
  c.lr = 0.05
  c.budget = "60 steps"
  c.log_every = "5 steps"
  c.eval_every = "20 steps"
  c.checkpoint_every = "20 steps"
  c.schedule.name = "cosine"
  c.model.hidden = (32,)
  for key, value in overrides.items():
    config_lib.set_field(c, key, value)
  return c


_SETUPS = {}


def run(cfg, workdir, **kwargs):
  """train() with one compiled RunSetup per distinct program, shared across tests.

  Runs that differ only in lr or seed reuse the compile (as a study does);
  what a fresh process does is covered by the subprocess tests.
  """
  plan = config_lib.resolve(cfg)
  key = program_key(plan)
  if key not in _SETUPS:
    data = train_lib.registry.load_in_memory(plan.config.dataset)
    _SETUPS[key] = train_lib.RunSetup(plan, data)
  setup = _SETUPS[key]
  return train_lib.train(cfg, str(workdir), plan=plan, setup=setup, data=setup.data, **kwargs)


def train_losses(workdir):
  return [
    r["train_loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "train_loss" in r
  ]


def test_outputs_and_accuracy(tmp_path):
  """The default config's model learns digits well above chance within its budget."""
  cfg = small_config(budget="8 epochs", eval_every="2 epochs", **{"model.hidden": (128, 128)})
  cfg.target.value = 0.9
  cfg.target.stop = False
  cfg.tensorboard = True
  summary = train_lib.train(cfg, str(tmp_path))
  assert summary["status"] == "complete"
  assert summary["final"]["eval_accuracy"] > 0.9  # chance is 0.1
  assert summary["target"]["reached"] and summary["target"]["step"] > 0
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  train_rows = [r for r in rows if "train_loss" in r]
  eval_rows = [r for r in rows if "eval_loss" in r]
  assert {"step", "examples_seen", "lr", "train_loss"} <= set(train_rows[0])
  assert all(r["examples_seen"] == r["step"] * 64 for r in rows)
  assert train_rows[-1]["train_loss"] < train_rows[0]["train_loss"]
  assert eval_rows[0]["step"] == 0 and eval_rows[-1]["step"] == summary["steps"]
  resolved = json.loads((tmp_path / "config.json").read_text())["resolved"]
  assert resolved["total_steps"] == int(np.ceil(8 * 1437 / 64))
  assert os.listdir(tmp_path / "tensorboard")
  assert json.loads((tmp_path / "summary.json").read_text())["status"] == "complete"


def test_one_vs_eight_devices_same_losses(tmp_path):
  runs = {}
  for n in (1, 8):
    cfg = small_config(**{"parallel.num_devices": n})
    train_lib.train(cfg, str(tmp_path / f"d{n}"))
    runs[n] = train_losses(tmp_path / f"d{n}")
  np.testing.assert_allclose(runs[1], runs[8], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv_impl", ["auto", "canonical"])
def test_ghost_batchnorm_resnet_is_device_count_invariant(tmp_path, conv_impl):
  """BN statistics over groups of 16 examples: 1 and 8 devices see the same groups.

  ``canonical`` at B=64 sums its weight gradients over chunks of the batch that is
  sharded over the 8 devices (lrscale.models.canonical_conv).
  """
  runs = {}
  for n in (1, 8):
    cfg = small_config(
      budget="6 steps",
      log_every="2 steps",
      eval_every="6 steps",
      checkpoint_every="6 steps",
      **{
        "parallel.num_devices": n,
        "model.name": "resnet8",
        "model.bn_group_size": 16,
        "model.conv_impl": conv_impl,
      },
    )
    summary = train_lib.train(cfg, str(tmp_path / f"d{n}"))
    runs[n] = train_losses(tmp_path / f"d{n}") + [summary["final"]["eval_loss"]]
  np.testing.assert_allclose(runs[1], runs[8], rtol=2e-5, atol=1e-6)


def test_microbatch_accumulation_equals_one_big_batch(tmp_path):
  one = small_config()
  four = small_config(microbatches=4)
  run(one, str(tmp_path / "k1"))
  run(four, str(tmp_path / "k4"))
  np.testing.assert_allclose(
    train_losses(tmp_path / "k1"), train_losses(tmp_path / "k4"), rtol=1e-5, atol=1e-6
  )


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
  cfg = small_config()
  full = run(cfg, str(tmp_path / "full"))
  part = run(cfg, str(tmp_path / "resumed"), stop_after_steps=25)
  assert part["status"] == "interrupted"
  resumed = run(cfg, str(tmp_path / "resumed"))
  assert resumed["final"] == full["final"]
  assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "full")


def test_kill9_mid_run_then_resume_matches(tmp_path):
  """A process killed with SIGKILL resumes from its last checkpoint to the same end."""
  overrides = [
    "--config.parallel.num_devices=1",
    "--config.compilation_cache=",
    "--config.budget=1500 steps",
    "--config.checkpoint_every=100 steps",
    "--config.eval_every=500 steps",
    "--config.log_every=50 steps",
    "--config.tensorboard=False",
    "--config.model.hidden=(32,)",
  ]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", PYTHONPATH=REPO)

  def cmd(workdir):
    return [
      sys.executable,
      "-m",
      "lrscale.train",
      "--config=configs/default.py",
      f"--workdir={workdir}",
      *overrides,
    ]

  killed = tmp_path / "killed"
  proc = subprocess.Popen(
    cmd(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  ckpt_dir = killed / "checkpoints"
  deadline = time.time() + 120
  while time.time() < deadline:
    steps = [d for d in os.listdir(ckpt_dir) if d.isdigit()] if ckpt_dir.exists() else []
    if steps:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
  subprocess.run(cmd(killed), cwd=REPO, env=env, check=True, capture_output=True)
  subprocess.run(cmd(tmp_path / "clean"), cwd=REPO, env=env, check=True, capture_output=True)
  a = json.loads((killed / "summary.json").read_text())
  b = json.loads((tmp_path / "clean" / "summary.json").read_text())
  assert a["final"] == b["final"] and a["steps"] == b["steps"] == 1500
  assert train_losses(killed) == train_losses(tmp_path / "clean")


def test_corrupt_newest_checkpoint_falls_back(tmp_path):
  cfg = small_config()
  full = run(cfg, str(tmp_path / "full"))
  work = tmp_path / "run"
  run(cfg, str(work), stop_after_steps=40)
  ckpts = sorted(int(d) for d in os.listdir(work / "checkpoints") if d.isdigit())
  assert ckpts == [20, 40]
  newest = work / "checkpoints" / "40"
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  resumed = run(cfg, str(work))
  assert resumed["final"] == full["final"]
  assert train_losses(work) == train_losses(tmp_path / "full")


def test_divergence_is_recorded_not_raised(tmp_path):
  cfg = small_config(lr=1e4)
  summary = run(cfg, str(tmp_path))
  assert summary["status"] == "diverged"
  assert summary["steps"] < 60
  assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_tfds_read_path_trains_like_the_offline_copy(tmp_path, digits_tfds_dir):
  """lrscale_digits prepared as array_record and read via tfds.data_source = offline digits."""
  data_dir = digits_tfds_dir
  offline = small_config()
  via_tfds = small_config(**{"dataset.name": "lrscale_digits", "dataset.data_dir": data_dir})
  train_lib.train(offline, str(tmp_path / "offline"))
  train_lib.train(via_tfds, str(tmp_path / "tfds_run"))
  np.testing.assert_allclose(
    train_losses(tmp_path / "offline"), train_losses(tmp_path / "tfds_run"), rtol=1e-6
  )


@pytest.mark.parametrize(
  "overrides,field",
  [
    ({"schedule.name": "cosinee"}, "config.schedule.name"),
    ({"batch_size": 60, "parallel.num_devices": 8}, "config.batch_size"),
    ({"batch_size": 64, "microbatches": 3}, "config.batch_size"),
    ({"dataset.name": "mnist", "dataset.data_dir": "/nonexistent"}, "config.dataset"),
    ({"dataset.name": "imagenet"}, "config.dataset.name"),
    ({"lr": -0.1}, "config.lr"),
    ({"budget": "10 days"}, "config.budget"),
    ({"optimizer.name": "adamm"}, "config.optimizer.name"),
    ({"scaling.rule": "cubic"}, "config.scaling.rule"),
    ({"model.name": "vgg"}, "config.model.name"),
    ({"model.bn_group_size": 48, "model.name": "resnet8"}, "config.model.bn_group_size"),
  ],
)
def test_bad_input_is_one_clear_error_before_compute(tmp_path, overrides, field):
  cfg = small_config(**overrides)
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    train_lib.train(cfg, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()  # nothing was written


def test_unknown_field_is_named_with_a_suggestion():
  cfg = small_config()
  cfg.schedul = "cosine"
  with pytest.raises(ValueError, match=r"config\.schedul .*Did you mean config\.schedule"):
    config_lib.resolve(cfg)


def test_workdir_of_another_run_is_refused_and_kept(tmp_path):
  run(small_config(), str(tmp_path))
  before = (tmp_path / "summary.json").read_text()
  with pytest.raises(ValueError, match="--workdir"):
    run(small_config(lr=0.2), str(tmp_path))
  assert (tmp_path / "summary.json").read_text() == before


def test_same_config_and_seed_same_numbers(tmp_path):
  a = run(small_config(), str(tmp_path / "a"))
  b = run(small_config(), str(tmp_path / "b"))
  c = run(small_config(seed=1), str(tmp_path / "c"))
  assert a["final"] == b["final"]
  assert a["final"] != c["final"]


@pytest.fixture(scope="module")
def digits_tfds_dir(tmp_path_factory):
  from lrscale.data import digits_builder

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  digits_builder.prepare_digits(data_dir)
  return data_dir


def test_streamed_tfds_training_learns_resumes_and_is_device_invariant(tmp_path, digits_tfds_dir):
  """Train batches streamed through grain: learns; resume and 8 devices change nothing."""

  def cfg(**kw):
    return small_config(
      budget="150 steps",
      eval_every="50 steps",
      checkpoint_every="50 steps",
      sync_every="25 steps",
      **{
        "dataset.name": "lrscale_digits",
        "dataset.data_dir": digits_tfds_dir,
        "dataset.stream": True,
        "dataset.standardize": False,
      },
      **kw,
    )

  full = train_lib.train(cfg(), str(tmp_path / "full"))
  assert full["final"]["eval_accuracy"] > 0.8
  train_lib.train(cfg(), str(tmp_path / "resumed"), stop_after_steps=60)
  resumed = train_lib.train(cfg(), str(tmp_path / "resumed"))
  assert resumed["final"] == full["final"]
  train_lib.train(cfg(**{"parallel.num_devices": 8}), str(tmp_path / "eight"))
  np.testing.assert_allclose(
    train_losses(tmp_path / "eight"), train_losses(tmp_path / "full"), rtol=1e-5
  )


@pytest.mark.parametrize(
  "name,lr",
  [
    ("sgd", 0.1),
    ("momentum", 0.05),
    ("nesterov", 0.05),
    ("adam", 3e-3),
    ("adamw", 3e-3),
    ("rmsprop", 1e-3),
    ("adagrad", 0.05),
    ("lars", 1.0),
    ("lamb", 0.03),
    ("schedule_free_sgd", 0.5),
    ("schedule_free_adamw", 3e-3),
    ("muon", 0.02),
  ],
)
def test_every_optimizer_trains_end_to_end(tmp_path, name, lr):
  """Through the real loop (injected lr, masks, eval params): the loss goes down."""
  cfg = small_config(
    lr=lr,
    budget="40 steps",
    eval_every="40 steps",
    sync_every="40 steps",
    checkpoint_every="40 steps",
    **{"optimizer.name": name, "schedule.name": "constant"},
  )
  if name in ("adamw", "lamb", "lars", "sgd"):
    cfg.optimizer.weight_decay = 1e-4
  summary = run(cfg, tmp_path)
  losses = train_losses(tmp_path)
  assert summary["status"] == "complete"
  assert losses[-1] < 0.6 * losses[0], losses
  assert summary["final"]["eval_accuracy"] > 0.5


def test_variable_size_images_are_cropped_resized_and_train(tmp_path, monkeypatch):
  """imagenet-like data (variable-size PNGs in TFDS): streamed, center-cropped, trained."""
  from lrscale.data import preprocess, registry
  from tests.test_tfds_data import VARIABLE_UINT8, LrscaleTestVariablePng

  data_dir = str(tmp_path / "png")
  LrscaleTestVariablePng(data_dir=data_dir, file_format="array_record").prepare()
  name = LrscaleTestVariablePng.name
  monkeypatch.setattr(registry, "TFDS_STREAMED", registry.TFDS_STREAMED + (name,))
  monkeypatch.setattr(registry, "DATASET_NAMES", registry.DATASET_NAMES + (name,))
  cfg = small_config(
    batch_size=4,
    budget="6 steps",
    eval_every="3 steps",
    sync_every="3 steps",
    checkpoint_every="6 steps",
    **{"dataset.name": name, "dataset.data_dir": data_dir, "dataset.eval_split": "train"},
  )
  with pytest.raises(ValueError, match=r"config\.dataset\.image_size"):
    config_lib.resolve(cfg)
  cfg.dataset.image_size = 3
  plan = config_lib.resolve(cfg)
  assert plan.dataset.input_shape == (3, 3, 1)
  summary = train_lib.train(cfg, str(tmp_path / "run"))
  assert summary["status"] == "complete" and summary["steps"] == 6
  # The transform itself: central square, then a resize (identity when sizes match).
  image = VARIABLE_UINT8[1]  # 6 x 5
  out = preprocess.center_crop_resize(5)(image[..., None])
  np.testing.assert_allclose(out[..., 0], image[0:5, 0:5] / 255.0, atol=1e-6)
