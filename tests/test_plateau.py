"""Tests for lrscale.optim.plateau against a transcription of PyTorch's semantics."""

import json
import math

import numpy as np
import pytest

from lrscale.optim import plateau


class TorchPlateau:
  """PyTorch ReduceLROnPlateau.step(), transcribed, on a single lr."""

  def __init__(
    self,
    lr,
    mode="min",
    factor=0.1,
    patience=10,
    threshold=1e-4,
    threshold_mode="rel",
    cooldown=0,
    min_lr=0.0,
    eps=1e-8,
  ):
    self.lr, self.mode, self.factor, self.patience = lr, mode, factor, patience
    self.threshold, self.threshold_mode = threshold, threshold_mode
    self.cooldown, self.min_lr, self.eps = cooldown, min_lr, eps
    self.best = math.inf if mode == "min" else -math.inf
    self.num_bad_epochs = 0
    self.cooldown_counter = 0

  def is_better(self, a, best):
    if self.mode == "min" and self.threshold_mode == "rel":
      return a < best * (1.0 - self.threshold)
    if self.mode == "min" and self.threshold_mode == "abs":
      return a < best - self.threshold
    if self.mode == "max" and self.threshold_mode == "rel":
      return a > best * (self.threshold + 1.0)
    return a > best + self.threshold

  def step(self, metric):
    current = float(metric)
    if self.is_better(current, self.best):
      self.best = current
      self.num_bad_epochs = 0
    else:
      self.num_bad_epochs += 1
    if self.cooldown_counter > 0:
      self.cooldown_counter -= 1
      self.num_bad_epochs = 0
    if self.num_bad_epochs > self.patience:
      new_lr = max(self.lr * self.factor, self.min_lr)
      if self.lr - new_lr > self.eps:
        self.lr = new_lr
      self.cooldown_counter = self.cooldown
      self.num_bad_epochs = 0
    return self.lr


def make_cfg(**fields):
  cfg = plateau.default_config()
  cfg.enabled = True
  cfg.update(fields)
  plateau.validate_config(cfg)
  return cfg


def run(cfg, metrics, peak_lr):
  state = plateau.init_plateau(cfg)
  lrs = []
  for m in metrics:
    state = plateau.update_plateau(state, m, cfg=cfg, peak_lr=peak_lr)
    lrs.append(peak_lr * state.scale)
  return np.array(lrs), state


SETTINGS = [
  dict(),
  dict(patience=0),
  dict(patience=2, cooldown=3),
  dict(patience=1, factor=0.5, min_lr=0.02),
  dict(patience=3, threshold=0.05, threshold_mode="abs"),
  dict(mode="max", patience=2, cooldown=1),
  dict(mode="max", patience=1, threshold_mode="abs", threshold=0.01),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pytorch_on_positive_metrics(settings, seed):
  rng = np.random.default_rng(seed)
  # A noisy, slowly flattening curve: plenty of plateaus and improvements.
  metrics = 1.0 + 2.0 / np.arange(1, 121) + 0.05 * rng.standard_normal(120)
  metrics = np.round(metrics, 2)  # Ties exercise the threshold.
  ref = TorchPlateau(0.3, **settings)
  want = [ref.step(m) for m in metrics]
  got, _ = run(make_cfg(**settings), metrics, 0.3)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  assert len(set(want)) > 1  # The sequence does reduce: the test can fail.


def test_patience_reduces_on_the_patience_plus_first_bad_eval():
  cfg = make_cfg(patience=3)
  lrs, _ = run(cfg, [1.0] + [1.0] * 4, 1.0)
  # Eval 1 improves on inf; evals 2..4 are bad #1..#3 (= patience, no
  # reduction); eval 5 is bad #4 > patience: reduce.
  np.testing.assert_allclose(lrs, [1.0, 1.0, 1.0, 1.0, 0.1])


def test_cooldown_ignores_bad_evaluations():
  cfg = make_cfg(patience=0, cooldown=2)
  lrs, state = run(cfg, [1.0, 2.0, 2.0, 2.0, 2.0], 1.0)
  # Bad at eval 2 -> reduce, cooldown 2; evals 3, 4 in cooldown; eval 5
  # bad again -> reduce.
  np.testing.assert_allclose(lrs, [1.0, 0.1, 0.1, 0.1, 0.01])
  assert state.num_reductions == 2 and state.cooldown_left == 2


def test_min_lr_floor_and_eps():
  cfg = make_cfg(patience=0, factor=0.5, min_lr=0.3)
  lrs, state = run(cfg, [1.0] + [1.0] * 4, 1.0)
  np.testing.assert_allclose(lrs, [1.0, 0.5, 0.3, 0.3, 0.3])
  assert state.num_reductions == 2  # Reductions below eps are skipped.


@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
def test_negative_metric_flat_is_a_plateau(threshold_mode):
  cfg = make_cfg(patience=2, threshold_mode=threshold_mode)
  metrics = [-5.0] * 4
  lrs, _ = run(cfg, metrics, 1.0)
  np.testing.assert_allclose(lrs, [1.0, 1.0, 1.0, 0.1])
  if threshold_mode == "rel":
    # PyTorch's formula counts the flat negative metric as improving forever.
    ref = TorchPlateau(1.0, patience=2, threshold_mode="rel")
    assert [ref.step(m) for m in metrics * 10][-1] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negative_min_is_mirror_of_positive_max(seed):
  # Minimising m must decide exactly like maximising -m, whatever the sign.
  rng = np.random.default_rng(seed)
  metrics = np.round(-3.0 - 1.0 / np.arange(1, 81) + 0.02 * rng.standard_normal(80), 3)
  lrs_min, _ = run(make_cfg(patience=2, cooldown=1), metrics, 0.5)
  lrs_max, _ = run(make_cfg(mode="max", patience=2, cooldown=1), -metrics, 0.5)
  np.testing.assert_array_equal(lrs_min, lrs_max)
  assert lrs_min[-1] < 0.5


def test_small_improvement_of_negative_metric_within_threshold():
  cfg = make_cfg(patience=0, threshold=0.1)  # rel: needs 10% of |best|.
  lrs, state = run(cfg, [-10.0, -10.5, -12.0], 1.0)
  # -10.5 is within 1.0 of -10: bad -> reduce. -12 beats -10 - 1: improves.
  np.testing.assert_allclose(lrs, [1.0, 0.1, 0.1])
  assert state.best == -12.0


def test_nan_metric_is_bad():
  lrs, _ = run(make_cfg(patience=0), [1.0, float("nan")], 1.0)
  np.testing.assert_allclose(lrs, [1.0, 0.1])


def test_disabled_is_a_no_op():
  cfg = plateau.default_config()
  state = plateau.init_plateau(cfg)
  for m in [1.0, 2.0, 3.0]:
    state = plateau.update_plateau(state, m, cfg=cfg, peak_lr=1.0)
  assert state == plateau.init_plateau(cfg)


def test_state_round_trips_through_strict_json():
  cfg = make_cfg(mode="max", patience=1)
  fresh = plateau.init_plateau(cfg)
  assert fresh.best == -math.inf
  text = json.dumps(fresh.to_dict(), allow_nan=False)
  assert plateau.PlateauState.from_dict(json.loads(text)) == fresh
  _, state = run(cfg, [0.5, 0.4, 0.3, 0.6], 0.1)
  text = json.dumps(state.to_dict(), allow_nan=False)
  restored = plateau.PlateauState.from_dict(json.loads(text))
  assert restored == state
  # Resuming from the restored state continues identically.
  a = plateau.update_plateau(state, 0.2, cfg=cfg, peak_lr=0.1)
  b = plateau.update_plateau(restored, 0.2, cfg=cfg, peak_lr=0.1)
  assert a == b


def test_plateau_reaches_training_through_train_and_survives_a_resume(tmp_path):
  """Logged lrs of a plateau run through train() equal PyTorch's ReduceLROnPlateau fed the
  run's own eval losses (the new scale applies from the step after the eval), also across
  an interruption and resume."""
  from lrscale.engine.outputs import read_jsonl  # pylint: disable=g-import-not-at-top
  from tests.test_train import run, small_config  # pylint: disable=g-import-not-at-top

  fields = {
    "schedule.name": "constant",
    "eval_every": "5 steps",
    "plateau.enabled": True,
    "plateau.metric": "eval_loss",
    "plateau.mode": "min",
    "plateau.patience": 0,
    "plateau.factor": 0.5,
    "plateau.threshold": 0.2,  # a 20% improvement is needed: the lr is cut several times
  }
  cfg = small_config(**fields)
  whole, resumed = tmp_path / "whole", tmp_path / "resumed"
  run(cfg, whole)
  assert run(cfg, resumed, stop_after_steps=25)["status"] == "interrupted"
  run(cfg, resumed)
  for workdir in (whole, resumed):
    rows = read_jsonl(str(workdir / "metrics.jsonl"))
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r and r["step"] > 0]
    torch = TorchPlateau(cfg.lr, mode="min", factor=0.5, patience=0, threshold=0.2)
    expected, lr_after = {}, {0: cfg.lr}
    for step, loss in evals:
      lr_after[step] = torch.step(loss)
    for r in rows:
      if "lr" in r:  # the lr used at step s: the scale after the last eval before s
        expected[r["step"]] = lr_after[max(e for e in lr_after if e < r["step"])]
    logged = {r["step"]: r["lr"] for r in rows if "lr" in r}
    np.testing.assert_allclose(
      [logged[s] for s in sorted(logged)], [expected[s] for s in sorted(logged)], rtol=1e-6
    )
    assert min(logged.values()) < cfg.lr / 2  # the plateau did cut the lr
