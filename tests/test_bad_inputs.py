"""Every bad input and fault: one line on stderr, exit 2, the field or file named, nothing changed.

Most cases run in this process through ``lrscale.errors.handle`` (what
``run_main`` wraps every absl main in); a handful run as real subprocesses,
started together so their start-up overlaps.
"""

import contextlib
import errno
import importlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from lrscale import config as config_lib
from lrscale import errors
from lrscale.analysis import store_reader
from lrscale.engine import loop as train_lib
from lrscale.engine import outputs
from lrscale.study import runner, space, store
from tests.test_study import small_study
from tests.test_train import REPO, run, small_config

lr_find = importlib.import_module("lrscale.lr_find")  # the package exports a function of that name
_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")


def snapshot(path):
  """{relative path: bytes} of every file under ``path`` (None if it does not exist)."""
  if not os.path.exists(path):
    return None
  if os.path.isfile(path):
    with open(path, "rb") as f:
      return {"": f.read()}
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = f.read()
  return out


def assert_one_line(text, *names, code=2, got=None):
  lines = [line for line in text.splitlines() if line.strip() and not _LOG_LINE.match(line)]
  assert got == code, text
  assert "Traceback" not in text and "internal frames" not in text, text
  assert len(lines) == 1 and lines[0].startswith("error: "), text
  for name in names:
    assert name in lines[0], (name, lines[0])
  return lines[0]


def expect_user_error(fn, *names, keep=()):
  """Runs ``fn`` as an entry point would; checks the one line and that ``keep`` is untouched."""
  before = [snapshot(str(p)) for p in keep]
  err = io.StringIO()
  with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
    errors.handle(fn)()
  line = assert_one_line(err.getvalue(), *names, got=exc.value.code)
  assert [snapshot(str(p)) for p in keep] == before
  return line


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished run (trained once for the module) and its files."""
  workdir = tmp_path_factory.mktemp("finished")
  summary = run(small_config(), workdir)
  return workdir, summary


def _cfg(**overrides):
  return small_config(**overrides)


def _dict_config():
  return small_config().to_dict()


def _unknown_field():
  c = small_config()
  c.schedul = "cosine"
  return c


# (id, config maker, names the line must contain)
CONFIG_CASES = [
  ("lr_negative", lambda: _cfg(lr=-0.1), ["config.lr"]),
  ("lr_nan", lambda: _cfg(lr=float("nan")), ["config.lr"]),
  ("batch_zero", lambda: _cfg(batch_size=0), ["config.batch_size"]),
  ("batch_over_dataset", lambda: _cfg(batch_size=100000), ["config.batch_size"]),
  ("micro_not_dividing", lambda: _cfg(microbatches=3), ["config.batch_size"]),
  ("micro_zero", lambda: _cfg(microbatches=0), ["config.microbatches"]),
  ("eval_batch_zero", lambda: _cfg(eval_batch_size=0), ["config.eval_batch_size"]),
  ("seed_negative", lambda: _cfg(seed=-1), ["config.seed"]),
  ("seed_uint32_overflow", lambda: _cfg(seed=2**32), ["config.seed"]),
  ("log_every_unit", lambda: _cfg(log_every="5 dayz"), ["config.log_every"]),
  ("budget_unit", lambda: _cfg(budget="10 days"), ["config.budget"]),
  ("budget_zero", lambda: _cfg(budget="0 steps"), ["config.budget"]),
  ("warmup_over_budget", lambda: _cfg(**{"warmup.length": "100 steps"}), ["config.warmup.length"]),
  (
    "warmup_offset_eats_run",
    lambda: _cfg(**{"warmup.length": "60 steps", "warmup.offset_main": True}),
    ["config.warmup.length"],
  ),
  (
    "milestone_past_budget",
    lambda: _cfg(**{"schedule.name": "multistep", "schedule.milestones": ("70 steps",)}),
    ["config.schedule.milestones[0]"],
  ),
  (
    "milestone_at_zero",
    lambda: _cfg(**{"schedule.name": "multistep", "schedule.milestones": (0, "30 steps")}),
    ["config.schedule.milestones[0]"],
  ),
  (
    "milestones_empty",
    lambda: _cfg(**{"schedule.name": "multistep", "schedule.milestones": ()}),
    ["config.schedule.milestones"],
  ),
  (
    "onecycle_zero_step_phase",
    lambda: _cfg(**{"schedule.name": "onecycle", "schedule.pct_start": 0.001}),
    ["pct_start"],
  ),
  ("schedule_name", lambda: _cfg(**{"schedule.name": "cosinee"}), ["config.schedule.name"]),
  ("optimizer_name", lambda: _cfg(**{"optimizer.name": "adamm"}), ["config.optimizer.name"]),
  ("scaling_rule", lambda: _cfg(**{"scaling.rule": "cubic"}), ["config.scaling.rule"]),
  ("model_name", lambda: _cfg(**{"model.name": "vgg"}), ["config.model.name"]),
  (
    "bn_group",
    lambda: _cfg(**{"model.bn_group_size": 48, "model.name": "resnet8"}),
    ["config.model.bn_group_size"],
  ),
  ("target_mode", lambda: _cfg(**{"target.mode": "maxx"}), ["config.target.mode"]),
  ("target_metric", lambda: _cfg(**{"target.metric": "eval_acc"}), ["target.metric"]),
  ("dataset_name", lambda: _cfg(**{"dataset.name": "imagenet"}), ["config.dataset.name"]),
  ("noise_decay", lambda: _cfg(**{"noise_scale.decay": 1.5}), ["config.noise_scale.decay"]),
  ("max_loss", lambda: _cfg(**{"divergence.max_loss": -1.0}), ["config.divergence.max_loss"]),
  ("unknown_field", _unknown_field, ["config.schedul", "config.schedule"]),
  (
    "plateau_metric",
    lambda: _cfg(**{"plateau.enabled": True, "plateau.metric": "eval_acc"}),
    ["plateau.metric"],
  ),
  ("config_is_dict", _dict_config, ["ConfigDict"]),
  ("study_config_to_train", small_study, ["python -m lrscale.study"]),
]


@pytest.mark.parametrize(
  "maker,names", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_run_config_is_one_line_and_touches_nothing(finished, maker, names):
  workdir, _ = finished
  expect_user_error(lambda: train_lib.train(maker(), str(workdir)), *names, keep=[workdir])


def test_bad_workdirs(finished, tmp_path):
  workdir, _ = finished
  a_file = tmp_path / "file"
  a_file.write_text("x")
  expect_user_error(lambda: train_lib.train(_cfg(), str(a_file)), "--workdir", keep=[a_file])
  expect_user_error(lambda: train_lib.train(_cfg(), str(a_file / "run")), "--workdir", "file")
  # Another run's finished workdir: refused, the differing field named.
  expect_user_error(
    lambda: train_lib.train(_cfg(lr=0.2), str(workdir)), "--workdir", "config.lr", keep=[workdir]
  )
  # Truncated config.json: the file named.
  torn = tmp_path / "torn"
  shutil.copytree(workdir, torn)
  text = (torn / "config.json").read_text()
  (torn / "config.json").write_text(text[: len(text) // 2])
  expect_user_error(lambda: train_lib.train(_cfg(), str(torn)), "config.json", keep=[torn])
  # Checkpoints without config.json: never resumed silently.
  orphan = tmp_path / "orphan"
  shutil.copytree(workdir, orphan)
  os.remove(orphan / "config.json")
  expect_user_error(
    lambda: train_lib.train(_cfg(**{"model.name": "cnn"}), str(orphan)),
    "config.json",
    "checkpoints",
    keep=[orphan],
  )
  # A workdir held by a live process (this one's pid on this host).
  held = tmp_path / "held"
  held.mkdir()
  (held / "lock").write_text(json.dumps(dict(host=socket.gethostname(), pid=os.getpid())))
  expect_user_error(lambda: train_lib.train(_cfg(), str(held)), "in use", keep=[held])
  # lr_find: an unwritable workdir fails before the sweep, not after it.
  expect_user_error(lambda: lr_find.lr_find(_cfg(), str(a_file)), "--workdir", keep=[a_file])
  expect_user_error(
    lambda: lr_find.lr_find(_cfg(**{"lr_find.beta": 1.5}), str(tmp_path / "lf")),
    "config.lr_find.beta",
  )
  assert not (tmp_path / "lf").exists()


def test_disk_full_is_one_line_naming_the_file(tmp_path, monkeypatch):
  def full(path, text):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

  monkeypatch.setattr(outputs, "atomic_write_text", full)
  line = expect_user_error(lambda: run(_cfg(), tmp_path / "run"), "config.json", "space")
  assert "Traceback" not in line


def test_study_and_analysis_bad_inputs(tmp_path):
  sdir = tmp_path / "study"
  expect_user_error(
    lambda: runner.run_study(small_study(**{"lr.grid": ()}), str(sdir)), "config.lr.grid"
  )
  expect_user_error(lambda: runner.run_study(small_study(seeds=()), str(sdir)), "config.seeds")
  expect_user_error(lambda: runner.run_study(small_study(seeds=(-1,)), str(sdir)), "config.seeds")
  expect_user_error(lambda: runner.run_study(small_config(), str(sdir)), "python -m lrscale.train")
  expect_user_error(lambda: runner.run_study(small_study().to_dict(), str(sdir)), "ConfigDict")
  expect_user_error(
    lambda: runner.run_study(small_study(**{"base.eval_batch_size": 0}), str(sdir)),
    "config.eval_batch_size",
  )
  assert not sdir.exists()
  # A different study in an existing study directory: refused, study.json kept.
  s = small_study()
  meta = config_lib.registry.check_dataset(s.base.dataset)
  store.check_study_json(str(sdir), runner._study_info(s, meta), write=True)
  changed = small_study(**{"lr.grid": (0.5, 1.0)})
  expect_user_error(
    lambda: runner.run_study(changed, str(sdir)), "different study", "config.lr.grid", keep=[sdir]
  )
  (sdir / "study.json").write_text("{")
  expect_user_error(lambda: runner.run_study(s, str(sdir)), "study.json", keep=[sdir])
  empty = tmp_path / "empty"
  empty.mkdir()
  expect_user_error(lambda: store_reader.load_study(str(empty)), "study.json", keep=[empty])


def test_mistyped_study_dir_does_not_start_a_new_study(tmp_path):
  from experiments import mccandlish2018  # pylint: disable=g-import-not-at-top

  typo = tmp_path / "shalue" / "study"
  expect_user_error(
    lambda: mccandlish2018.run(workdir=str(tmp_path / "w"), smoke=True, study_dir=str(typo)),
    "--study_dir",
  )
  assert not typo.exists()


def test_error_raised_while_tracing_is_the_same_one_line():
  def traced(x):
    raise errors.UserError("config.schedule.pct_start=0.001 leaves 0 steps: raise it.")

  line = expect_user_error(lambda: jax.jit(traced)(jnp.ones(2)), "config.schedule.pct_start")
  assert line == "error: config.schedule.pct_start=0.001 leaves 0 steps: raise it."


def test_unexpected_errors_keep_their_traceback():
  with pytest.raises(ZeroDivisionError):
    errors.handle(lambda: 1 / 0)()


def test_corrupt_trial_record_is_repaired_and_never_dropped(finished, tmp_path):
  workdir, summary = finished
  trial = space.Trial("b000064_lr5.0000e-02_s0", 64, 0.05, 0)
  tdir = tmp_path / "trials" / trial.id
  shutil.copytree(workdir, tdir)
  (tdir / "trial.json").write_text('{"id": "b0000')  # torn
  record = store_reader.load_trial(str(tdir))
  assert (record.batch_size, record.lr, record.seed, record.status) == (64, 0.05, 0, "complete")
  store.write_trial_json(str(tmp_path), trial.to_json())  # the runner's repair
  assert json.loads((tdir / "trial.json").read_text()) == trial.to_json()


# -------------------------------------------------------------- real processes


def _write(path, text):
  path.write_text(text)
  return str(path)


def test_real_entry_points_in_subprocesses(tmp_path, finished):
  workdir, _ = finished
  header = f"import sys\nsys.path.insert(0, {REPO!r})\nfrom tests.test_train import small_config\n"
  bad_lr = _write(
    tmp_path / "bad_lr.py", header + "def get_config():\n  return small_config(lr=-1.0)\n"
  )
  as_dict = _write(
    tmp_path / "as_dict.py", header + "def get_config():\n  return small_config().to_dict()\n"
  )
  syntax = _write(tmp_path / "syntax.py", "def get_config(:\n")
  ok = _write(tmp_path / "ok.py", header + "def get_config():\n  return small_config()\n")
  py = [sys.executable, "-m"]
  cases = [
    (py + ["lrscale.train", f"--config={bad_lr}", f"--workdir={workdir}"], 2, ["config.lr"], {}),
    (py + ["lrscale.train", f"--config={as_dict}", f"--workdir={workdir}"], 2, ["ConfigDict"], {}),
    (py + ["lrscale.train", f"--config={syntax}", f"--workdir={workdir}"], 2, ["syntax.py"], {}),
    (py + ["lrscale.train", f"--config={tmp_path}/nope.py", "--workdir=x"], 2, ["nope.py"], {}),
    (
      py + ["lrscale.analyze", f"--workdir={tmp_path}", "--n_bootstrap=-5"],
      2,
      ["--n_bootstrap"],
      {},
    ),
    (
      py + ["lrscale.analyze", f"--workdir={tmp_path}", "--within_pct=-10"],
      2,
      ["--within_pct"],
      {},
    ),
    (py + ["lrscale.study", f"--config={ok}", "--workdir=s", "--worker=3/2"], 2, ["--worker"], {}),
    (py + ["lrscale.study", f"--config={ok}", f"--workdir={tmp_path}/s"], 2, ["lrscale.train"], {}),
    (py + ["lrscale.train", f"--config={ok}", f"--workdir={workdir}"], 0, ["run complete"], {}),
    (
      py + ["lrscale.train", f"--config={bad_lr}", "--workdir=x"],
      2,
      [],
      {"LRSCALE_VERBOSE_ERRORS": "1"},
    ),
  ]
  before = snapshot(str(workdir))
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  procs = [
    subprocess.Popen(
      cmd,
      cwd=REPO,
      env=dict(env, **extra),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for cmd, _, _, extra in cases
  ]
  for proc, (_, code, names, extra) in zip(procs, cases):
    out, err = proc.communicate(timeout=240)
    if extra:  # verbose: the traceback is shown, then the same one line
      assert proc.returncode == 2 and "Traceback" in err and "error: config.lr" in err, err
    elif code == 0:  # the finished run: its summary, no training, no new checkpoint
      assert proc.returncode == 0 and all(n in out for n in names), (out, err)
    else:
      assert_one_line(err, *names, got=proc.returncode)
  assert snapshot(str(workdir)) == before


# -------------------------------------------------------------- faults in a run's life


def _final(workdir):
  summary = json.loads((workdir / "summary.json").read_text())
  return summary["status"], summary["steps"], summary["final"], summary["target"]


@pytest.mark.parametrize("target", [None, 0.5], ids=["budget", "target_stop"])
def test_killed_between_last_checkpoint_and_summary_completes_without_training(
  finished, tmp_path, target
):
  cfg = _cfg(**{"target.value": target})
  clean = tmp_path / "clean"
  workdir = finished[0] if target is None else clean
  if target is not None:
    run(cfg, clean)
  killed = tmp_path / "killed"
  shutil.copytree(workdir, killed)
  os.remove(killed / "summary.json")  # the window: final checkpoint written, summary not
  ckpts = sorted(os.listdir(killed / "checkpoints"))
  metrics = (killed / "metrics.jsonl").read_text()
  run(cfg, killed)
  assert _final(killed) == _final(workdir)
  assert sorted(os.listdir(killed / "checkpoints")) == ckpts  # nothing trained or saved
  assert (killed / "metrics.jsonl").read_text() == metrics
  if target is not None:
    assert _final(killed)[1] < 60  # stopped at its target, not at the budget


def test_second_process_on_a_workdir_is_refused_then_a_dead_ones_lock_is_taken(tmp_path):
  workdir = tmp_path / "run"
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import sys, time; from lrscale.engine import workdir as w\n"
      "with w.hold(sys.argv[1], what='lrscale.train'):\n  print('held', flush=True); time.sleep(600)",
      str(workdir),
    ],
    cwd=REPO,
    env=dict(os.environ, PYTHONPATH=REPO),
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    expect_user_error(lambda: run(_cfg(), workdir), "in use", f"pid {holder.pid}", keep=[workdir])
  finally:
    holder.kill()  # kill -9: the lock stays behind, its owner gone
    holder.wait()
  assert (workdir / "lock").exists()
  assert run(_cfg(), workdir)["status"] == "complete"  # taken over, with a warning
  assert not (workdir / "lock").exists()


def test_sigterm_checkpoints_at_a_boundary_and_resumes_exactly(tmp_path):
  # Long enough that the signal lands mid-run on a quiet machine (~400 steps/s here).
  overrides = {"budget": "3000 steps", "sync_every": "5 steps", "checkpoint_every": "1000 steps"}
  header = f"import sys\nsys.path.insert(0, {REPO!r})\nfrom tests.test_train import small_config\n"
  config = _write(
    tmp_path / "long.py", header + f"def get_config():\n  return small_config(**{overrides!r})\n"
  )
  workdir = tmp_path / "term"
  proc = subprocess.Popen(
    [sys.executable, "-m", "lrscale.train", f"--config={config}", f"--workdir={workdir}"],
    cwd=REPO,
    env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 240
  while time.time() < deadline and not any(
    "train_loss" in r for r in outputs.read_jsonl(str(workdir / "metrics.jsonl"))
  ):
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err
  assert "Traceback" not in err and "Rerun the same command to resume" in err, err
  steps = sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit())
  # The SIGTERM checkpoint is the newest, at a segment boundary; on a fast machine the
  # run may have passed a scheduled checkpoint before the signal came.
  assert steps and 0 < steps[-1] < 3000 and steps[-1] % 5 == 0, steps
  assert all(s % 1000 == 0 for s in steps[:-1]), steps
  assert sorted(os.listdir(workdir / "checkpoints")) == sorted(map(str, steps))  # no leftovers
  assert not (workdir / "lock").exists()
  cfg = _cfg(**overrides)
  run(cfg, workdir)
  run(cfg, tmp_path / "clean")
  assert _final(workdir) == _final(tmp_path / "clean")
