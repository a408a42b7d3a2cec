"""A reduced linreg study: measured steps-to-target per (B, lr) vs the exact recursion.

The study runner trains every trial to the target; for each batch size and lr
the seeds' mean steps-to-target must match the first step at which the
*expected* relative excess risk (a numpy recursion written here, independent of
``lrscale.analysis.theory``) reaches the target, within a tolerance set by the
seeds' own spread.
"""

import os

import numpy as np

from lrscale.analysis import store_reader
from lrscale.data import linreg
from lrscale.study import runner
from lrscale.study.space import default_study_config


def small_study():
  from lrscale.config import base_config

  c = base_config()
  c.dataset.name = "linreg"
  c.dataset.linreg.dim = 10
  c.model.name = "linear"
  c.optimizer.name = "sgd"
  c.schedule.name = "constant"
  c.parallel.num_devices = 1
  c.compilation_cache = ""
  c.tensorboard = False
  c.log_every = "100 steps"
  c.sync_every = "200 steps"
  c.checkpoint_every = "1000 steps"
  s = default_study_config()
  s.name = "linreg_small"
  s.base = c
  s.batch_sizes = (2, 16, 128)
  s.seeds = (0, 1, 2)
  s.lr.mode = "relative"
  s.lr.rule = "sqrt"
  s.lr.base_lr = 0.15
  s.lr.reference_batch = 2
  s.lr.grid = (0.5, 1.0)
  s.target.metric = "eval_relative_excess"
  s.target.value = 0.1
  s.target.mode = "min"
  s.budget = "400 steps"
  s.eval_every = "1 steps"
  return s


def exact_steps(spec, *, batch_size, lr, target, max_steps):
  """First step at which E[excess] / excess(0) <= target (recursion of tests/test_linreg.py)."""
  h, d = spec.spectrum, spec.teacher**2
  e0 = h @ d / 2
  for step in range(1, max_steps + 1):
    d = (1 - lr * h) ** 2 * d + lr**2 * (h**2 * d + h * (h @ d + spec.noise**2)) / batch_size
    if h @ d / 2 <= target * e0:
      return step
  return None


def test_reduced_study_steps_to_target_match_the_exact_recursion(tmp_path):
  study = small_study()
  workdir = str(tmp_path / "study")
  counts = runner.run_study(study, workdir)
  assert counts["complete"] == 18, counts
  spec = linreg.LinregSpec.from_config(study.base.dataset.linreg)
  by_cell = {}
  for trial_dir in sorted(os.listdir(os.path.join(workdir, "trials"))):
    summary = store_reader.read_json(os.path.join(workdir, "trials", trial_dir, "summary.json"))
    trial = store_reader.read_json(os.path.join(workdir, "trials", trial_dir, "trial.json"))
    assert summary["target"]["reached"], trial_dir
    by_cell.setdefault((trial["batch_size"], trial["lr"]), []).append(summary["target"]["step"])
  assert len(by_cell) == 6
  for (batch_size, lr), steps in sorted(by_cell.items()):
    exact = exact_steps(spec, batch_size=batch_size, lr=lr, target=0.1, max_steps=400)
    steps = np.asarray(steps, float)
    # The seeds' standard error, floored at one step's worth of the seed spread
    # an infinite-B run would still have (first passage of a fluctuating curve).
    stderr = max(steps.std(ddof=1) / np.sqrt(len(steps)), 1.0)
    assert abs(steps.mean() - exact) <= 4 * stderr + 0.05 * exact, (batch_size, lr, steps, exact)
  # At the best lr, steps fall with B and then saturate (no gain 16 -> 128 worth 8x).
  best = {b: min(np.mean(v) for (bb, _), v in by_cell.items() if bb == b) for b in (2, 16, 128)}
  assert best[2] > 2 * best[16] and best[16] >= best[128] > best[16] / 4, best
