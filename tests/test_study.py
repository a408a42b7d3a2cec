"""Studies: trial enumeration, shared workers, crash recovery, end to end with analysis."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lrscale import config as config_lib
from lrscale.study import runner, space, store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_FILE = os.path.join(REPO, "configs", "studies", "default.py")


def small_study(**overrides):
  s = config_lib.load_config_file(STUDY_FILE)
  s.base.parallel.num_devices = 1
  s.base.compilation_cache = ""
  s.base.tensorboard = False
  s.base.model.hidden = (32,)
  s.base.noise_scale.enabled = False
  s.batch_sizes = (32, 128)
  s.seeds = (0,)
  s.lr.grid = (0.5, 2.0)
  s.budget = "4 epochs"
  s.target.value = 0.9
  s.stale_claim_s = 600.0
  for key, value in overrides.items():
    config_lib.set_field(s, key, value)
  return s


def test_enumeration_is_deterministic_and_centred_on_the_rule():
  s = small_study()
  trials = space.enumerate_trials(s)
  assert [t.id for t in trials] == [t.id for t in space.enumerate_trials(small_study())]
  assert len({t.id for t in trials}) == len(trials) == 4
  for t in trials:  # relative grid: multipliers of the linear rule lr = 0.1 * B / 64
    assert t.lr / (0.1 * t.batch_size / 64) in (pytest.approx(0.5), pytest.approx(2.0))


def test_random_and_quasirandom_search_stay_in_the_grid_range():
  for kind in ("random", "quasirandom"):
    s = small_study(**{"search.type": kind, "search.num_trials": 5})
    trials = space.enumerate_trials(s)
    assert len(trials) == 10
    for t in trials:
      m = t.lr / (0.1 * t.batch_size / 64)
      assert 0.5 - 1e-9 <= m <= 2.0 + 1e-9
    assert len({round(t.lr, 12) for t in trials}) == 10


def test_swept_params_reach_the_trial_config():
  s = small_study(params="optimizer.momentum=0.0,0.9; warmup.length=0 steps,1 epochs")
  trials = space.enumerate_trials(s)
  assert len(trials) == 2 * 2 * 2 * 2
  cfg = space.trial_config(s, trials[-1])
  assert cfg.optimizer.momentum == 0.9 and cfg.warmup.length == "1 epochs"
  assert cfg.batch_size == trials[-1].batch_size and cfg.lr == trials[-1].lr
  bad = small_study(params="optimizer.momentun=0.9")
  with pytest.raises(ValueError, match="momentun"):
    runner.validate_study(bad)


def test_bad_study_fails_before_any_trial_runs(tmp_path):
  s = small_study(**{"batch_sizes": (32, 100)})
  s.base.parallel.num_devices = 8  # 100 is not divisible by 8 devices
  with pytest.raises(ValueError, match=r"config\.batch_size"):
    runner.run_study(s, str(tmp_path))
  assert not (tmp_path / "trials").exists()


def test_end_to_end_with_analysis(tmp_path):
  from lrscale.analysis.run import analyze

  s = small_study()
  counts = runner.run_study(s, str(tmp_path))
  assert counts["complete"] + counts["diverged"] == 4
  again = runner.run_study(s, str(tmp_path))  # rerun: everything is skipped
  assert again["skipped"] == 4
  result = analyze(str(tmp_path), n_bootstrap=20)
  for name in (
    "results.csv",
    "analysis.json",
    "report.md",
    "steps_to_result.png",
    "optimal_lr.png",
    "lr_sensitivity.png",
    "examples_to_result.png",
  ):
    assert (tmp_path / name).exists(), name
  assert {row["batch_size"] for row in result["per_batch"]} == {32, 128}
  for t in space.enumerate_trials(s):
    assert len(store.read_attempts(str(tmp_path), t.id)) == 1


def _worker_cmd(workdir, worker, extra=()):
  return [
    sys.executable,
    "-m",
    "lrscale.study",
    f"--config={STUDY_FILE}",
    f"--workdir={workdir}",
    f"--worker={worker}",
    "--analyze=false",
    "--config.base.parallel.num_devices=1",
    "--config.base.compilation_cache=",
    "--config.base.tensorboard=false",
    "--config.base.model.hidden=(32,)",
    "--config.base.noise_scale.enabled=false",
    "--config.seeds=(0,)",
    "--config.lr.grid=(0.5,2.0)",
    "--config.target.value=0.9",
    *extra,
  ]


ENV = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", PYTHONPATH=REPO)


def test_two_concurrent_workers_run_every_trial_exactly_once(tmp_path):
  extra = ["--config.batch_sizes=(16,32,64,128)", "--config.budget=4 epochs"]
  procs = [
    subprocess.Popen(
      _worker_cmd(tmp_path, f"{i}/2", extra),
      cwd=REPO,
      env=ENV,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
    )
    for i in range(2)
  ]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-2000:]
  s = small_study(**{"batch_sizes": (16, 32, 64, 128)})
  trials = space.enumerate_trials(s)
  workers = set()
  for t in trials:
    attempts = store.read_attempts(str(tmp_path), t.id)
    assert len(attempts) == 1, (t.id, attempts)
    workers.add(attempts[0]["worker"])
    assert store.is_finished(str(tmp_path), t.id)
  assert workers == {"worker0of2", "worker1of2"}  # both did work


def test_killed_worker_restarts_and_finishes_nothing_lost_or_repeated(tmp_path):
  extra = [
    "--config.batch_sizes=(16,)",
    "--config.lr.grid=(0.5,)",
    "--config.budget=3000 steps",
    "--config.target.value=1.1",
    "--config.base.checkpoint_every=100 steps",
    "--config.base.sync_every=100 steps",
  ]
  killed, clean = tmp_path / "killed", tmp_path / "clean"
  proc = subprocess.Popen(
    _worker_cmd(killed, "0/1", extra),
    cwd=REPO,
    env=ENV,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 180
  ckpts = []
  while time.time() < deadline and not ckpts:
    for root, dirs, _ in os.walk(killed):
      if root.endswith("checkpoints"):
        ckpts = [d for d in dirs if d.isdigit()]
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  (trial_id,) = os.listdir(killed / "trials")
  assert not store.is_finished(str(killed), trial_id), "finished before it was killed"
  assert (killed / "trials" / trial_id / "claim").exists()  # the dead worker's claim
  subprocess.run(
    _worker_cmd(killed, "0/1", extra),
    cwd=REPO,
    env=ENV,
    check=True,
    capture_output=True,
    timeout=300,
  )
  subprocess.run(
    _worker_cmd(clean, "0/1", extra),
    cwd=REPO,
    env=ENV,
    check=True,
    capture_output=True,
    timeout=300,
  )
  a = json.loads((killed / "trials" / trial_id / "summary.json").read_text())
  b = json.loads((clean / "trials" / trial_id / "summary.json").read_text())
  assert a["final"] == b["final"] and a["steps"] == b["steps"] == 3000
  assert len(store.read_attempts(str(killed), trial_id)) == 2  # first try + one resume


def test_stale_claim_is_taken_over_once(tmp_path):
  workdir = str(tmp_path)
  first = store.try_claim(workdir, "t1", worker="a", stale_s=0.2)
  assert first is not None
  assert store.try_claim(workdir, "t1", worker="b", stale_s=60) is None  # live: refused
  first._stop.set()  # its heartbeat stops, as if the worker hung
  first._thread.join()
  time.sleep(0.3)
  second = store.try_claim(workdir, "t1", worker="b", stale_s=0.2)
  assert second is not None
  second.release()
  assert not os.path.exists(os.path.join(workdir, "trials", "t1", "claim"))


def test_vmapped_study_matches_sequential_study(tmp_path):
  seq = small_study(**{"batch_sizes": (64,), "seeds": (0, 1)})
  vm = small_study(**{"batch_sizes": (64,), "seeds": (0, 1), "vmap": "on", "vmap_size": 4})
  runner.run_study(seq, str(tmp_path / "seq"))
  runner.run_study(vm, str(tmp_path / "vm"))
  for t in space.enumerate_trials(seq):
    a = store.read_json(os.path.join(store.trial_dir(str(tmp_path / "seq"), t.id), "summary.json"))
    b = store.read_json(os.path.join(store.trial_dir(str(tmp_path / "vm"), t.id), "summary.json"))
    assert a["status"] == b["status"] and a["target"]["step"] == b["target"]["step"]
    assert a["final"]["eval_loss"] == pytest.approx(b["final"]["eval_loss"], rel=1e-5)
