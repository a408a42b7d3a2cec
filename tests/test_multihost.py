"""Multi-host data parallelism, for real: 2 JAX processes x 4 CPU devices on 127.0.0.1.

Each multi-process run is the documented launch (the same command on every
process plus ``--coordinator_address/--num_processes/--process_id``, see
tests/multiprocess.py). Its numbers are compared with the same config run in
this pytest process on 8 devices and on 1: one process per host feeding only
its own rows must train exactly like one host feeding all of them.
"""

from __future__ import annotations

import json
import os
import re
import time

import numpy as np
import pytest

from lrscale import config as config_lib
from lrscale.engine import loop as train_lib
from lrscale.engine.outputs import read_jsonl
from tests import multiprocess as mp

TIMEOUT_S = 240  # per multi-process launch; the hard limit of `timeout -k`

# The default run, cut to 120 steps; every step logged, checkpoints every 30.
RUN_FLAGS = {
  "budget": "120 steps",
  "log_every": "1 steps",
  "eval_every": "30 steps",
  "checkpoint_every": "30 steps",
  "noise_scale.enabled": True,  # B_simple: its two-batch estimator sees the batch's order
  "tensorboard": False,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
  """One compilation cache for this module's processes (the reruns compile nothing)."""
  return str(tmp_path_factory.mktemp("xla"))


def _flags(overrides: dict) -> list[str]:
  """``--config.k=v`` for each override (tuples written without spaces)."""
  return [f"--config.{k}={str(v).replace(' ', '')}" for k, v in overrides.items()]


def _config(path: str, overrides: dict, **more):
  import importlib.util

  spec = importlib.util.spec_from_file_location("cfg", os.path.join(mp.REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  for key, value in {**overrides, **more}.items():
    config_lib.set_field(c, key, value)
  return c


def _losses(workdir) -> np.ndarray:
  return np.array(
    [
      r["train_loss"]
      for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
      if "train_loss" in r
    ]
  )


def _summary(workdir) -> dict:
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def _global_batch(log: str) -> tuple[str, str, str]:
  m = re.search(
    r"Global batch \[(\d+), (\d+)\].*process 0 of 2 feeds rows \[(\d+), (\d+)\).*"
    r"eval set \((\d+), (\d+)",
    log,
  )
  assert m, log[-2000:]
  return m.groups()


def _two_process_train(workdir, overrides, cache, log_dir, tag="train"):
  return mp.run(
    "lrscale.train",
    ["--config=configs/default.py", f"--workdir={workdir}"]
    + _flags({**overrides, "compilation_cache": cache}),
    num_processes=2,
    devices=4,
    timeout_s=TIMEOUT_S,
    log_dir=log_dir,
    tag=tag,
  )


def _assert_same_training(multi, reference, *, batch: int):
  np.testing.assert_allclose(_losses(multi), _losses(reference), atol=1e-5, rtol=0)
  assert len(_losses(multi)) == 120
  a, b = _summary(multi), _summary(reference)
  assert a["steps"] == b["steps"] == 120 and a["batch_size"] == batch
  np.testing.assert_allclose(a["final"]["eval_loss"], b["final"]["eval_loss"], atol=1e-5)
  np.testing.assert_allclose(a["noise_scale"]["b_simple"], b["noise_scale"]["b_simple"], rtol=1e-4)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, cache):
  """The uninterrupted 2 x 4 run of RUN_FLAGS (also the kill test's reference)."""
  root = tmp_path_factory.mktemp("mh_train")
  procs = _two_process_train(root / "run", RUN_FLAGS, cache, str(root / "logs"))
  return root / "run", procs


def test_two_processes_train_like_one_in_memory(two_process_run, tmp_path):
  workdir, procs = two_process_run
  # One global batch of 64 (each process feeds 32 rows), one eval set of 360.
  assert _global_batch(procs[0].output()) == ("1", "64", "0", "32", "1", "360")
  assert not os.path.exists(workdir / "metrics.jsonl.tmp")
  for devices in (8, 1):
    ref = tmp_path / f"one_{devices}"
    train_lib.train(
      _config("configs/default.py", RUN_FLAGS, **{"parallel.num_devices": devices}), str(ref)
    )
    _assert_same_training(workdir, ref, batch=64)
  # One writer: every row once (two writers would interleave duplicates).
  steps = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if "train_loss" in r]
  assert steps == list(range(1, 121))


def test_two_processes_stream_like_one(tmp_path, digits_tfds_dir, cache):
  streamed = {
    **RUN_FLAGS,
    "dataset.name": "lrscale_digits",
    "dataset.data_dir": digits_tfds_dir,
    "dataset.stream": True,
    "dataset.standardize": False,
    "sync_every": "25 steps",
  }
  procs = _two_process_train(tmp_path / "multi", streamed, cache, str(tmp_path / "logs"))
  assert _global_batch(procs[0].output()) == ("1", "64", "0", "32", "1", "360")
  for devices in (8, 1):
    ref = tmp_path / f"one_{devices}"
    train_lib.train(
      _config("configs/default.py", streamed, **{"parallel.num_devices": devices}), str(ref)
    )
    _assert_same_training(tmp_path / "multi", ref, batch=64)


def _wait_for_checkpoint(workdir, newer_than: int, procs, timeout_s=120) -> int:
  """The step of the first committed checkpoint after ``newer_than``."""
  deadline = time.monotonic() + timeout_s
  ckpts = os.path.join(workdir, "checkpoints")
  while time.monotonic() < deadline:
    steps = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
    if steps and max(steps) > newer_than:
      return max(steps)
    if any(p.popen.poll() is not None for p in procs):
      raise AssertionError("\n".join(p.output()[-3000:] for p in procs))
    time.sleep(0.05)
  raise AssertionError("no checkpoint appeared")


def _kill_one(procs, victim: int) -> tuple[int, float, str]:
  """kill -9 process ``victim``; (the survivor's exit code, seconds it took, its log)."""
  procs[victim].kill9()
  t0 = time.monotonic()
  survivor = procs[1 - victim]
  code = mp.wait_all([survivor], 90)[0]
  mp.wait_all([procs[victim]], 10)
  return code, time.monotonic() - t0, survivor.output()


def test_kill_either_process_then_corrupt_checkpoint_resumes_identically(
  two_process_run, tmp_path, cache
):
  """kill -9 of process 0, then of process 1, then a corrupt newest checkpoint: the run
  still ends exactly as the uninterrupted 2-process run, and nobody waits minutes."""
  reference, _ = two_process_run
  work, logs = tmp_path / "run", str(tmp_path / "logs")
  args = ["--config=configs/default.py", f"--workdir={work}"] + _flags(
    {**RUN_FLAGS, "compilation_cache": cache}
  )
  last = 0
  for victim in (0, 1):
    procs = mp.spawn(
      "lrscale.train",
      args,
      num_processes=2,
      devices=4,
      timeout_s=TIMEOUT_S,
      log_dir=logs,
      tag=f"kill{victim}",
    )
    last = _wait_for_checkpoint(work, last, procs)
    code, seconds, log = _kill_one(procs, victim)
    assert code != 0 and seconds < 60, (code, seconds, log[-3000:])
    assert f"Task {victim}" in log or "coordination service" in log.lower(), log[-3000:]
  steps = sorted(int(d) for d in os.listdir(work / "checkpoints") if d.isdigit())
  if steps[-1] == 120:  # finished before the kill landed: corrupt the last one instead
    steps = steps[:-1] or steps
  newest = work / "checkpoints" / str(max(steps))
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  procs = mp.run(
    "lrscale.train",
    args,
    num_processes=2,
    devices=4,
    timeout_s=TIMEOUT_S,
    log_dir=logs,
    tag="resume",
  )
  assert "unreadable" in procs[0].output()
  assert os.listdir(work / "checkpoints_unreadable")
  np.testing.assert_array_equal(_losses(work), _losses(reference))
  assert _summary(work)["final"] == _summary(reference)["final"]


STUDY = {  # a 2-trial study: B = 64, two lrs, 60 steps
  "base.model.hidden": (32,),
  "base.tensorboard": False,
  "batch_sizes": (64,),
  "seeds": (0,),
  "lr.grid": (0.5, 2.0),
  "budget": "60 steps",
  "eval_every": "20 steps",
  "target.value": 0.9,
}


def test_two_process_study_worker_matches_one_process(tmp_path, cache):
  from lrscale.study import runner, space

  mp.run(
    "lrscale.study",
    ["--config=configs/studies/default.py", f"--workdir={tmp_path / 'multi'}"]
    + _flags({**STUDY, "base.compilation_cache": cache}),
    num_processes=2,
    devices=4,
    timeout_s=TIMEOUT_S,
    log_dir=str(tmp_path / "logs"),
  )
  study = _config("configs/studies/default.py", STUDY, **{"base.parallel.num_devices": 8})
  runner.run_study(study, str(tmp_path / "one"))
  trials = space.enumerate_trials(study)
  assert len(trials) == 2
  for t in trials:
    a = _summary(tmp_path / "multi" / "trials" / t.id)
    b = _summary(tmp_path / "one" / "trials" / t.id)
    assert a["status"] == b["status"] and a["steps"] == b["steps"]
    np.testing.assert_allclose(a["final"]["eval_loss"], b["final"]["eval_loss"], atol=1e-5)
    np.testing.assert_allclose(
      _losses(tmp_path / "multi" / "trials" / t.id),
      _losses(tmp_path / "one" / "trials" / t.id),
      atol=1e-5,
    )
  # Process 0 wrote the study's files and ran the analysis once every trial was done.
  assert (tmp_path / "multi" / "study.json").exists()
  assert (tmp_path / "multi" / "analysis.json").exists()


def test_two_process_lr_find_matches_one_process(tmp_path, cache):
  from lrscale.lr_find import lr_find

  flags = {"lr_find.num_steps": 30, "lr_find.seeds": (0,), "lr_find.max_lr": 3.0}
  mp.run(
    "lrscale.lr_find",
    ["--config=configs/lr_find.py", f"--workdir={tmp_path / 'multi'}"]
    + _flags({**flags, "compilation_cache": cache}),
    num_processes=2,
    devices=4,
    timeout_s=TIMEOUT_S,
    log_dir=str(tmp_path / "logs"),
  )
  cfg = _config("configs/lr_find.py", flags, **{"parallel.num_devices": 8})
  lr_find(cfg, str(tmp_path / "one"))
  with open(tmp_path / "multi" / "lr_find.json") as f:
    multi = json.load(f)
  with open(tmp_path / "one" / "lr_find.json") as f:
    one = json.load(f)
  rows = lambda d: np.loadtxt(d / "lr_find.csv", delimiter=",", skiprows=1)  # noqa: E731
  np.testing.assert_allclose(rows(tmp_path / "multi"), rows(tmp_path / "one"), atol=1e-5)
  np.testing.assert_allclose(
    multi["per_batch"][0]["recommendation"]["lr"],
    one["per_batch"][0]["recommendation"]["lr"],
    rtol=1e-5,
  )


@pytest.fixture(scope="module")
def digits_tfds_dir(tmp_path_factory):
  from lrscale.data import digits_builder

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  digits_builder.prepare_digits(data_dir)
  return data_dir


def test_identity_flags_are_all_or_none():
  from absl import flags
  from absl.testing import flagsaver

  from lrscale.engine import launch

  if not flags.FLAGS.is_parsed():
    flags.FLAGS(["test"])
  with flagsaver.flagsaver(num_processes=2):
    with pytest.raises(ValueError, match="without --coordinator_address --process_id"):
      launch.validate_flags()
  with flagsaver.flagsaver(coordinator_address="h:1", num_processes=2, process_id=2):
    with pytest.raises(ValueError, match="--process_id=2 must be in"):
      launch.validate_flags()
