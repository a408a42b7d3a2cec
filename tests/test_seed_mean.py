"""The seed-mean steps policy and extra analysis targets (no training: synthetic curves)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from lrscale.analysis import options, run, seed_mean
from lrscale.analysis import steps_to_result as st
from lrscale.analysis.store_reader import Study, Target, TrialRecord
from tests.synthetic_study import TARGET, make_study


def noisy_trial(seed: int, *, rho: float, sigma: float, steps: int = 400) -> TrialRecord:
  """Relative excess ``exp(-t / 100)`` times AR(1) log-noise: the expected-ish curve crosses
  0.1 at ``t* = 100 ln 10 = 230.3``, so the first step at or below it is 231."""
  rng = np.random.default_rng(seed)
  z, rows = 0.0, []
  for t in range(steps + 1):
    z = rho * z + math.sqrt(1 - rho**2) * rng.standard_normal()
    rows.append({"step": t, "eval_rel": math.exp(-t / 100.0) * (1.0 + sigma * z)})
  return TrialRecord(f"s{seed}", 4, 0.1, seed, {}, "complete", {}, [], rows)


TARGET_MIN = Target(metric="eval_rel", value=0.1, mode="min")


def test_monotone_fit_of_the_mean_finds_the_crossing_the_raw_first_passage_misses():
  members = [
    st.TrialOutcome(noisy_trial(s, rho=0.8, sigma=0.15), None, "metrics") for s in range(8)
  ]
  steps, values = seed_mean.seed_curves(members, "eval_rel")
  assert values.shape == (8, 401) and steps[-1] == 400
  raw, fitted = [], []
  for k in range(8):  # 8 independent groups of 8 seeds
    group = [
      st.TrialOutcome(noisy_trial(100 * k + s, rho=0.8, sigma=0.15), None, "") for s in range(8)
    ]
    steps, values = seed_mean.seed_curves(group, "eval_rel")
    mean = values.mean(axis=0)
    raw.append(steps[np.argmax(mean <= 0.1)])
    fitted.append(seed_mean.monotone_crossing(steps, mean, TARGET_MIN))
  # The dip of the raw mean decides its first passage: biased early by several steps.
  assert np.mean(raw) < 231 - 2.5, raw
  assert abs(np.mean(fitted) - 231) < 3, fitted


def test_point_steps_resamples_seeds_and_a_curve_that_never_meets_the_target_is_inf():
  members = [st.TrialOutcome(noisy_trial(s, rho=0.5, sigma=0.05), None, "") for s in range(4)]
  f = seed_mean.point_steps(TARGET_MIN)
  point = f(members, np.arange(4)[None])
  assert point.shape == (1,) and abs(point[0] - 231) <= 3
  draws = np.random.default_rng(0).integers(0, 4, size=(50, 4))
  boot = f(members, draws)
  assert boot.shape == (50,) and np.all(np.abs(boot - 231) <= 8) and boot.std() > 0
  # One identical draw of every seed is the point itself.
  assert f(members, np.array([[0, 1, 2, 3]]))[0] == point[0]
  hard = seed_mean.point_steps(Target(metric="eval_rel", value=1e-4, mode="min"))
  assert math.isinf(hard(members, np.arange(4)[None])[0])


def test_mean_curve_ends_where_a_seed_ends_or_goes_non_finite():
  a, b = noisy_trial(0, rho=0.5, sigma=0.05), noisy_trial(1, rho=0.5, sigma=0.05, steps=200)
  a.eval_rows[150]["eval_rel"] = math.nan
  steps, values = seed_mean.seed_curves(
    [st.TrialOutcome(a, None, ""), st.TrialOutcome(b, None, "")], "eval_rel"
  )
  assert steps[-1] == 149 and values.shape == (2, 150)
  # The crossing at ~231 lies beyond the common range: not reached.
  f = seed_mean.point_steps(TARGET_MIN)
  assert math.isinf(
    f([st.TrialOutcome(a, None, ""), st.TrialOutcome(b, None, "")], np.arange(2)[None])[0]
  )


def with_analysis(study, **analysis):
  raw = dict(study.study, config={"analysis": analysis})
  return Study(type(study.spec())(**{**study.spec().__dict__, "raw": raw}), study.records())


def test_seed_mean_needs_trials_that_run_past_the_target():
  # The synthetic trials stop at their own first passage of 0.95, so at 0.95 the seeds' mean
  # curve ends (with the fastest seed) before it crosses: no point is reached. At an easier
  # target that every seed passes before stopping, the mean's crossing matches the per-seed
  # median (the curves are smooth, seeds differ only by a 5% scale).
  study = make_study(seed=1)
  easy = TARGET["value"] * math.sqrt(0.5)
  per_seed = run.build_analysis(with_analysis(study, targets=[easy]))
  mean = run.build_analysis(with_analysis(study, target_from="seed_mean", targets=[easy]))
  assert mean["settings"]["target_from"] == "seed_mean" and "MEAN" in mean["policy"]
  # Where a point is read at all, it is a slower lr's (the faster ones are undetermined).
  for p_row, m_row in zip(per_seed["per_batch"], mean["per_batch"]):
    assert m_row["best_steps"] is None or m_row["best_steps"] > p_row["best_steps"]
  flagged = {p["batch_size"] for p in mean["seed_mean_undetermined"]}
  assert flagged == {r["batch_size"] for r in mean["per_batch"]}
  assert per_seed["seed_mean_undetermined"] == []
  assert not mean["fit"]["ok"] and "reached the target" in mean["fit"]["reason"]
  (p,), (m,) = per_seed["targets"], mean["targets"]
  assert m["fit_ok"] and p["fit_ok"]
  for bp, bm in zip(p["best_steps"], m["best_steps"]):
    assert bm == pytest.approx(bp, rel=0.1), (p["best_steps"], m["best_steps"])
  assert m["b_crit"] == pytest.approx(p["b_crit"], rel=0.2)


def test_extra_targets_scale_s_min_and_keep_b_crit_on_the_synthetic_study():
  # Accuracy rises as target * sqrt(step / need): reaching target * sqrt(q) takes q * need,
  # so the easier target's S(B) is the same curve times q: S_min x q, B_crit unchanged.
  study = make_study(seed=2, noise_sigma=0.0)
  q = 0.5
  easy = TARGET["value"] * math.sqrt(q)
  out = run.build_analysis(with_analysis(study, targets=[easy, TARGET["value"]]))
  easy_row, hard_row = out["targets"]
  assert easy_row["value"] == easy and hard_row["fit_ok"] and easy_row["fit_ok"]
  assert hard_row["s_min"] == pytest.approx(out["fit"]["s_min"])
  assert easy_row["s_min"] / hard_row["s_min"] == pytest.approx(q, rel=0.1)
  assert easy_row["b_crit"] == pytest.approx(hard_row["b_crit"], rel=0.15)
  assert easy_row["ci"]["b_crit"][0] < hard_row["b_crit"] < easy_row["ci"]["b_crit"][1]


@pytest.mark.parametrize(
  "analysis, fix",
  [
    ({"target_from": "mean"}, "target_from='mean': must be one of"),
    ({"targets": ["x"]}, "targets=['x']: must be a tuple of numbers"),
    ({"targets": [0.99]}, "no target may be harder"),
  ],
)
def test_bad_analysis_options_name_the_field(analysis, fix):
  with pytest.raises(ValueError, match=re.escape(fix)) as err:
    options.parse(analysis, mode="max", stop_value=0.95)
  assert str(err.value).startswith("config.analysis.")


def small_study_config():
  from lrscale.config import base_config
  from lrscale.study.space import default_study_config

  s = default_study_config()
  s.base = base_config()
  s.target.value = 0.9
  return s


@pytest.mark.parametrize(
  "field, value, fix",
  [
    ("target.stop_value", 0.8, "config.target.stop_value=0.8: trials would stop before"),
    ("analysis.target_from", "median", "config.analysis.target_from='median'"),
    ("analysis.targets", (0.95,), "no target may be harder"),
  ],
)
def test_study_rejects_bad_stop_value_and_analysis_before_any_trial(field, value, fix):
  from lrscale.config import set_field
  from lrscale.errors import UserError
  from lrscale.study import space

  s = small_study_config()
  set_field(s, field, value)
  with pytest.raises((ValueError, UserError), match=re.escape(fix)):
    space.enumerate_trials(s)


def test_trials_stop_at_stop_value_and_analysis_options_do_not_change_the_study(tmp_path):
  from lrscale.study import space, store

  s = small_study_config()
  s.target.stop_value = 0.95
  s.analysis.targets = (0.8, 0.9)
  trial = space.enumerate_trials(s)[0]
  cfg = space.trial_config(s, trial)
  assert cfg.target.value == 0.95  # trials run on to the stopping target
  info = {"config": s.to_dict()}
  store.check_study_json(str(tmp_path), info, write=True)
  s.analysis.target_from = "seed_mean"  # read differently: the same study
  store.check_study_json(str(tmp_path), {"config": s.to_dict()}, write=False)
  s.target.stop_value = 0.97  # trains differently: refused
  with pytest.raises(Exception, match="holds a different study"):
    store.check_study_json(str(tmp_path), {"config": s.to_dict()}, write=False)
