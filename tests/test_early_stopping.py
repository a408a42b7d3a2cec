"""Early stopping: the patience arithmetic by hand, and the stop inside a real run."""

import math
import os

import pytest

from lrscale.analysis import store_reader
from lrscale.analysis.steps_to_result import TrialOutcome
from lrscale.engine import early_stopping as es
from lrscale.engine.outputs import read_jsonl
from tests.test_train import run, small_config


def _cfg(**kw):
  c = es.default_config()
  c.enabled = True
  c.update(kw)
  return c


def _feed(values, cfg):
  state = es.init_early_stopping(cfg)
  for i, v in enumerate(values):
    state = es.update_early_stopping(
      state, {cfg.metric: v, "other": -v}, step=10 * (i + 1), cfg=cfg
    )
    if state.stopped:
      break
  return state


def test_patience_counts_evaluations_without_improvement_max_mode():
  cfg = _cfg(metric="eval_accuracy", mode="max", patience=3, min_delta=0.01)
  # improve, improve (0.6 > 0.51), bad (0.605 <= 0.61), improve (0.62 > 0.61), bad, bad,
  # bad (0.62 is not > 0.62 + 0.01): the third bad one in a row, the 7th eval, stops.
  state = _feed([0.5, 0.6, 0.605, 0.62, 0.61, 0.615, 0.62, 0.99], cfg)
  assert state.stopped_step == 70
  assert state.best == 0.62 and state.best_step == 40
  assert state.best_metrics == {"eval_accuracy": 0.62, "other": -0.62}
  assert state.num_evals == 7 and state.num_bad == 3


def test_min_mode_nan_is_never_better_and_patience_one():
  cfg = _cfg(metric="eval_loss", mode="min", patience=1)
  assert _feed([1.0, 0.5, float("nan")], cfg).stopped_step == 30
  assert _feed([1.0, 0.5, 0.4, 0.3], cfg).stopped_step == -1  # always improving
  # min_delta 0: an equal value is not an improvement (strict, as Keras).
  assert _feed([1.0, 1.0], cfg).stopped_step == 20


def test_state_round_trips_through_json_and_a_stopped_state_stays():
  cfg = _cfg(patience=2)
  state = es.init_early_stopping(cfg)
  assert es.EarlyStoppingState.from_dict(state.to_dict()) == state  # best = inf
  state = _feed([3.0, 2.0, 2.5, 2.5], cfg)
  assert es.EarlyStoppingState.from_dict(state.to_dict()) == state
  assert es.update_early_stopping(state, {"eval_loss": 0.0}, step=99, cfg=cfg) == state


@pytest.mark.parametrize(
  "field,value,needle",
  [
    ("early_stopping.metric", "eval_f1", "config.early_stopping.metric='eval_f1'"),
    ("early_stopping.mode", "max", "set the matching mode to 'min'"),
    ("early_stopping.patience", 0, "config.early_stopping.patience"),
  ],
)
def test_bad_fields_are_named(field, value, needle):
  from lrscale import config as config_lib

  cfg = small_config(**{"early_stopping.enabled": True, field: value})
  with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(".", r"\.")):
    config_lib.resolve(cfg)


def _es_config(**kw):
  overrides = {
    "early_stopping.enabled": True,
    "early_stopping.patience": 2,
    "early_stopping.metric": "eval_accuracy",
    "early_stopping.mode": "max",
    "eval_every": "5 steps",
    "budget": "300 steps",
    "checkpoint_every": "20 steps",
    "lr": 0.5,
  }
  overrides.update(kw)
  return small_config(**overrides)


def test_run_stops_where_its_own_eval_sequence_says_and_restores_best(tmp_path):
  summary = run(_es_config(**{"early_stopping.restore_best": True}), tmp_path / "a")
  assert summary["status"] == "stopped_early"
  evals = [r for r in read_jsonl(os.path.join(tmp_path / "a", "metrics.jsonl")) if "eval_loss" in r]
  evals = [r for r in evals if r["step"] > 0]  # the step-0 eval is no baseline
  # Independent replay of Keras' rule on the recorded eval accuracies.
  best, wait, stop = -math.inf, 0, None
  for r in evals:
    if r["eval_accuracy"] > best:
      best, best_row, wait = r["eval_accuracy"], r, 0
    else:
      wait += 1
      if wait >= 2:
        stop = r["step"]
        break
  assert stop is not None and stop < 300
  assert summary["steps"] == stop == summary["early_stopping"]["stopped_step"]
  assert evals[-1]["step"] == stop  # nothing trained or logged past the stop
  assert summary["early_stopping"]["best_step"] == best_row["step"]
  for k in ("eval_loss", "eval_accuracy"):
    assert summary["early_stopping"]["best"][k] == best_row[k]
    assert summary["final"][k] == best_row[k]  # restore_best: final = best
  # The analysis reads it as finished, like a complete run.
  assert "stopped_early" in store_reader.STATUS_ENDED
  rec = store_reader.TrialRecord("t", 64, 0.5, 0, {}, "stopped_early", summary, [], evals)
  assert TrialOutcome(rec, steps=None, source="none").settled and not rec.diverged


def test_interrupted_and_resumed_stops_at_the_same_eval(tmp_path):
  cfg = _es_config()
  full = run(cfg, tmp_path / "full")
  part = run(cfg, tmp_path / "resumed", stop_after_steps=20)
  assert part["status"] == "interrupted"
  resumed = run(cfg, tmp_path / "resumed")
  assert resumed["status"] == full["status"] == "stopped_early"
  assert resumed["early_stopping"] == full["early_stopping"]
  assert resumed["final"] == full["final"]
