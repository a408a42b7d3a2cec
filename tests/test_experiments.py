"""The paper reproductions in experiments/: smoke runs, full-mode validation, their pieces.

Each smoke test runs an experiment's seconds-long variant end to end (training,
tables, figures, report) and checks what the report must contain; the full
analogues are run once by hand and their outputs committed under docs/images.
"""

import json
import math
import os

import numpy as np
import pytest

from experiments import (
  common,
  finetune_lr,
  goyal2017,
  goyal2017_report,
  lars_lamb,
  malladi2022,
  malladi2022_report,
  mccandlish2018,
  shallue2018,
  smith2017,
  transfer_rules,
)
from lrscale import config as config_lib
from lrscale.data.tfds_source import DatasetNotFoundError


def _check_outputs(outdir, figures):
  report = (outdir / "report.md").read_text()
  assert report.startswith("# ")
  assert "**Held**" in report or "**Did not hold**" in report
  assert "Runtime:" in report
  for name in figures:
    path = outdir / name
    assert path.exists(), name
    assert os.path.getsize(path) < common.MAX_FIGURE_BYTES, name
    assert f"({name})" in report, f"{name} is not linked from the report"
  results = json.loads((outdir / "results.json").read_text())
  assert results["smoke"] is True and results["runtime_s"] > 0
  return report, results


# ----------------------------------------------------------------------------- common


def test_md_table_and_cells():
  table = common.md_table(["a", "b"], [[1, 0.123456], [None, float("nan")]])
  assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| - | - |"]
  assert common.fmt_mean_std([1.0, 3.0]) == "2.00 ± 1.41"
  assert common.fmt_mean_std([2.0]) == "2.00"
  assert common.verdict(True, "x.", "y.") == "**Held**: x. y."


def test_error_counts_a_blown_up_run_as_chance():
  assert common.error_pct({"status": "complete", "final": {"eval_accuracy": 0.75}}) == 25.0
  assert common.error_pct({"status": "diverged", "final": {"eval_accuracy": 0.99}}) == 90.0


def test_save_figure_stays_under_the_size_limit(tmp_path):
  fig, axes = common.figure(1, 1, width=12, height=9)
  rng = np.random.default_rng(0)
  axes[0, 0].imshow(rng.random((400, 400)))  # incompressible noise
  name = common.save_figure(fig, str(tmp_path / "noise.png"), max_bytes=150_000)
  assert name == "noise.png"
  assert os.path.getsize(tmp_path / "noise.png") <= 150_000


def test_binned_mean():
  x = np.array([0.1, 0.4, 1.2, 2.5])
  y = np.array([1.0, 3.0, 5.0, 7.0])
  np.testing.assert_allclose(
    common.binned_mean(x, y, np.array([0.0, 1.0, 2.0, 3.0])), [2.0, 5.0, 7.0]
  )


def test_full_mode_validates_every_config_before_the_missing_dataset(tmp_path, empty_tfds_dir):
  setting = goyal2017.full_setting()
  configs = [r.config for r in goyal2017.build_runs(setting)]
  assert {c.batch_size for c in configs} == set(goyal2017_report.PAPER_ERROR_BY_BATCH)
  bad = common.set_fields(configs[-1], **{"schedule.milestones": ("30 epochz",)})
  with pytest.raises(ValueError, match="milestones"):
    common.check_full_runs(configs[:3] + [bad])  # a typo wins over the missing dataset
  with pytest.raises(DatasetNotFoundError, match="tfds build imagenet2012"):
    common.check_full_runs(configs)
  for module in (goyal2017, malladi2022, lars_lamb):
    with pytest.raises(DatasetNotFoundError, match="tfds build"):
      module.run(mode="full", workdir=str(tmp_path / module.NAME))
    assert not (tmp_path / module.NAME).exists()  # failed before any compute
  with pytest.raises(DatasetNotFoundError, match="tfds build mnist"):
    shallue2018.run(mode="full", workdir=str(tmp_path / "shallue"))


# ----------------------------------------------------------------------------- Goyal et al.


def test_goyal_warmup_variants_follow_their_definitions():
  setting = goyal2017.analogue_setting()
  ref_lr, b = setting.ref_lr, 512
  k = b // setting.ref_batch
  lrs = {}
  for method in goyal2017_report.METHODS:
    plan = config_lib.resolve(goyal2017.method_config(setting.base, method, b, 0))
    fn = plan.lr_fn()
    warm = plan.to_steps("5 epochs")
    lrs[method.key] = [float(fn(t, plan.lr)) for t in (0, warm // 2, warm, plan.total_steps - 1)]
  # Linear rule: peak lr_ref * k; gradual warmup climbs from lr_ref; constant warmup holds
  # lr_ref for 5 epochs and then jumps; no warmup starts at the peak; all decay to 1e-3 x peak.
  assert lrs["gradual_warmup"][0] == pytest.approx(ref_lr)
  assert ref_lr < lrs["gradual_warmup"][1] < ref_lr * k
  assert lrs["gradual_warmup"][2] == pytest.approx(ref_lr * k)
  assert lrs["constant_warmup"][:2] == pytest.approx([ref_lr, ref_lr])
  assert lrs["constant_warmup"][2] == pytest.approx(ref_lr * k)
  assert lrs["no_warmup"][0] == pytest.approx(ref_lr * k)
  assert lrs["sqrt"][2] == pytest.approx(ref_lr * math.sqrt(k))
  assert lrs["no_scaling"] == pytest.approx([ref_lr] * 3 + [ref_lr * 1e-3])
  for key in ("gradual_warmup", "no_warmup", "constant_warmup"):
    assert lrs[key][3] == pytest.approx(ref_lr * k * 1e-3)


def test_goyal_smoke(tmp_path):
  out = tmp_path / "out"
  first = goyal2017.run(workdir=str(tmp_path / "w"), outdir=str(out), smoke=True)
  report, results = _check_outputs(out, ["error_vs_batch.png", "curves_large_batch.png"])
  for paper_number in ("23.74", "24.84", "25.88", "26.22", "41.67", "23.60"):
    assert paper_number in report  # the paper's column, labelled as the paper's
  assert "Table 1 form" in report and "Table 2a form" in report
  cells = results["cells"]
  assert {c["method"] for c in cells.values()} == {m.key for m in goyal2017_report.METHODS}
  assert all(0 <= e <= 100 for c in cells.values() for e in c["errors"])
  # A second invocation reuses every finished run and reproduces the same table.
  again = goyal2017.run(workdir=str(tmp_path / "w"), outdir=str(tmp_path / "out2"), smoke=True)
  assert again["results"]["cells"] == first["results"]["cells"]
  assert "were not rerun" in (tmp_path / "out2" / "report.md").read_text()


# ----------------------------------------------------------------------------- Shallue, McCandlish


def test_shallue_analogue_study_is_the_promised_grid():
  s = shallue2018.analogue_study()
  from lrscale.study import runner, space

  trials = runner.validate_study(s)  # every trial config resolves
  assert len(trials) == 10 * 11 * 2 * 2
  assert max(s.batch_sizes) <= common.DIGITS_NUM_TRAIN
  assert {t.params for t in trials} == {
    (("optimizer.momentum", 0.9),),
    (("optimizer.momentum", 0.99),),
  }
  assert s.base.noise_scale.enabled
  assert round(s.target.value * 360) != s.target.value * 360  # no accuracy sits on the target
  assert space.trial_config(s, trials[0]).optimizer.name == "nesterov"
  cnn = shallue2018.analogue_study(model="cnn")
  trials = runner.validate_study(cnn)
  assert len(trials) == 9 * 10 * 2 and cnn.target.value == s.target.value
  assert space.trial_config(cnn, trials[0]).model.name == "cnn"


def test_shallue_and_mccandlish_smoke_share_one_study(tmp_path):
  study_dir = tmp_path / "shallue" / shallue2018.STUDY_SUBDIR
  shallue2018.run(workdir=str(tmp_path / "shallue"), outdir=str(tmp_path / "s_out"), smoke=True)
  report, results = _check_outputs(
    tmp_path / "s_out",
    ["steps_to_result.png", "optimal_lr.png", "cnn_steps_to_result.png", "cnn_optimal_lr.png"],
  )
  for workload in ("digits MLP", "digits simple CNN"):
    per_batch = results["workloads"][workload]["per_batch"]
    assert [r["batch_size"] for r in per_batch] == [16, 64, 256]
  assert "## digits simple CNN" in report
  assert "perfect scaling" in report and "maximal data parallelism" in report

  out = tmp_path / "m_out"
  result = mccandlish2018.run(
    workdir=str(tmp_path / "mcc"), outdir=str(out), smoke=True, study_dir=str(study_dir)
  )
  report, results = _check_outputs(out, ["tradeoff.png", "noise_scale.png"])
  assert "were not rerun" in report  # every trial came from the Shallue study
  assert not (tmp_path / "mcc" / "study").exists()
  rows = results["workloads"]["digits MLP"]["targets"]
  assert [r["target"] for r in rows] == list(mccandlish2018.SMOKE_TARGETS)
  fitted = [r for r in rows if r["fit_ok"]]
  assert fitted, f"no target's steps/examples trade-off was fitted: {rows}"
  for r in fitted:
    assert r["e_min"] == pytest.approx(r["s_min"] * r["b_crit"], rel=1e-6)
    assert r["b_simple"] is None or r["b_simple"] > 0
  assert result["report"].endswith("report.md")


def test_mccandlish_finds_the_shared_study(tmp_path):
  w = str(tmp_path)
  assert mccandlish2018.default_study_dir("full", w, smoke=False) == w
  assert mccandlish2018.default_study_dir("analogue", w, smoke=True) == os.path.join(w, "study")


def test_mccandlish_refuses_a_directory_of_another_study(tmp_path):
  (tmp_path / "trials" / "b000007_lr1.0000e-01_s0").mkdir(parents=True)
  with pytest.raises(ValueError, match="does not have"):
    common.run_study(shallue2018.analogue_study(smoke=True), str(tmp_path))


# ----------------------------------------------------------------------------- Malladi et al.


def test_malladi_rules_scale_adam_as_published():
  setting = malladi2022.analogue_settings()[1]  # B_ref = 32
  runs = {r.name: r for r in malladi2022.build_runs(setting)}
  hp = malladi2022.scaled_hparams(runs["large_batch_adam_sde_b128_s0"].config)  # k = 4
  assert hp["lr"] == pytest.approx(2e-3)
  assert hp["b1"] == pytest.approx(0.6) and hp["b2"] == pytest.approx(0.996)
  assert hp["eps"] == pytest.approx(5e-9) and not hp["clipped"]
  hp = malladi2022.scaled_hparams(runs["large_batch_adam_sde_b512_s0"].config)  # k = 16
  assert hp["clipped"] and hp["b1"] == 0.0
  hp = malladi2022.scaled_hparams(runs["large_batch_linear_b128_s0"].config)
  assert hp["lr"] == pytest.approx(4e-3) and hp["b1"] == pytest.approx(0.9)


def test_malladi_mismatch_measures_the_log_ratio():
  x = np.linspace(0, 10, 21)
  y = np.exp(-x)
  assert malladi2022.mismatch(x, y, x, y, start=1.0) == pytest.approx(0.0)
  assert malladi2022.mismatch(x, y, x, y * math.exp(0.1), start=1.0) == pytest.approx(0.1)
  coarse = x[::4]  # interpolated in log space: exact for an exponential
  assert malladi2022.mismatch(x, y, coarse, np.exp(-coarse), start=1.0) == pytest.approx(
    0.0, abs=1e-12
  )


def test_malladi_smoke(tmp_path):
  out = tmp_path / "out"
  malladi2022.run(workdir=str(tmp_path / "w"), outdir=str(out), smoke=True)
  _, results = _check_outputs(out, ["curves_large_batch.png", "mismatch.png"])
  cells = results["regimes"]["large_batch"]["cells"]
  assert cells["reference@32"]["train_mismatch"] == 0.0
  assert set(results["regimes"]["large_batch"]["per_rule"]) == set(malladi2022_report.RULES)


# ----------------------------------------------------------------------------- LARS / LAMB


def test_lars_lamb_smoke(tmp_path):
  out = tmp_path / "out"
  lars_lamb.run(workdir=str(tmp_path / "w"), outdir=str(out), smoke=True)
  report, results = _check_outputs(out, ["error_vs_lr.png"])
  assert {v["optimizer"] for v in results["best"].values()} == {"reference", *lars_lamb.OPTIMIZERS}
  for name in ("LARS", "LAMB", "AdamW", "momentum SGD"):
    assert name in report
  assert set(results["findings"]["by_batch"]["256"]) == {"lars", "lamb"}


def test_smith_smoke(tmp_path):
  out = tmp_path / "out"
  smith2017.run(mode="analogue", workdir=str(tmp_path / "w"), outdir=str(out), smoke=True)
  _, results = _check_outputs(out, ["curves_per_epoch.png"])
  ramp, decay = results["batch ramp"], results["lr decay"]
  assert ramp["total_steps"] < decay["total_steps"]
  assert sum(ramp["steps_per_phase"]) == ramp["total_steps"]
  assert len(ramp["steps_per_phase"]) == 3 and len(decay["steps_per_phase"]) == 1


def test_smith_full_validates_then_names_the_missing_dataset(tmp_path, empty_tfds_dir):
  with pytest.raises(DatasetNotFoundError, match="cifar10"):
    smith2017.run(mode="full", workdir=str(tmp_path / "w"))


@pytest.mark.parametrize("lead", [True, False])
def test_only_the_lead_process_writes_the_report(tmp_path, monkeypatch, lead):
  from experiments.common import template
  from lrscale.engine import parallel

  monkeypatch.setattr(parallel, "is_lead", lambda: lead)
  seen = []

  def execute(outdir):
    seen.append(outdir)
    with open(os.path.join(outdir, "fig.png"), "wb") as f:
      f.write(b"x")
    return template.Outcome(sections=lambda runtime: ["**Held**"], results=dict(x=1))

  out = tmp_path / "out"
  out.mkdir()
  got = template.run_experiment(
    "t", "T", execute, mode="analogue", workdir=str(tmp_path), outdir=str(out), smoke=True
  )
  assert got["results"] == dict(x=1)
  names = sorted(os.listdir(out))
  if lead:
    assert seen == [str(out)] and names == ["fig.png", "report.md", "results.json"]
  else:  # a follower wrote into a private directory, since removed
    assert seen[0] != str(out) and names == [] and not os.path.exists(seen[0])


# ----------------------------------------------------------------------------- fine-tuning lr


def test_finetune_refined_lr_is_the_parabola_vertex():
  lrs = [0.01, 0.02, 0.04, 0.08]
  # loss = (log2 lr - log2 0.03)^2 + 1: the vertex is 0.03 exactly.
  losses = [(np.log2(x) - np.log2(0.03)) ** 2 + 1 for x in lrs]
  grid, refined, why = finetune_lr.refine_best(lrs, losses)
  assert grid == 0.04 and why == "" and refined == pytest.approx(0.03)
  assert finetune_lr.refine_best(lrs, [4, 3, 2, 1]) == (0.08, 0.08, "edge")
  assert finetune_lr.refine_best(lrs, [3, 1, math.inf, 4]) == (0.02, 0.02, "diverged")
  assert finetune_lr.slope([8, 16, 64], [0.1, 0.2, 0.8]) == pytest.approx(1.0)
  assert finetune_lr.final_loss({"status": "diverged", "final": {"eval_loss": 0.1}}) == math.inf


def test_finetune_lr_smoke(tmp_path):
  out = tmp_path / "out"
  result = finetune_lr.run(workdir=str(tmp_path / "w"), outdir=str(out), smoke=True)
  report, results = _check_outputs(out, ["loss_vs_lr.png"])
  assert "fine-tune best lr" in report and "slope of log2(best lr)" in report
  setting = finetune_lr.analogue_setting(smoke=True)
  (table,) = result["tables"].values()
  for arm in finetune_lr.ARMS:
    for b in setting.batch_sizes:
      row = table[arm][b]
      assert row["best_lr"] in setting.lrs and len(row["losses"]) == len(setting.lrs)
      assert row["best_loss"] == min(row["losses"])
  # The fine-tuned runs started from the pre-trained parameters, the scratch ones did not.
  cfg = json.loads((tmp_path / "w/runs/e1_fine-tune_b16_lr0.01_s0/config.json").read_text())
  assert cfg["config"]["init"]["checkpoint"].endswith("runs/pretrain")
  assert cfg["config"]["dataset"]["classes"] == [5, 6, 7, 8, 9]
  found = results["budgets"]["1 epochs"]["findings"]
  assert set(found) >= {"smaller_at", "slope_fine_tune", "slope_scratch"}
  with pytest.raises(ValueError, match="--mode=full: finetune_lr has only the offline analogue"):
    finetune_lr.run(mode="full", workdir=str(tmp_path / "full"))


# ----------------------------------------------------------------------------- transfer rules


def test_transfer_rules_scale_each_hyperparameter_as_named():
  lm = transfer_rules.lm_workload("default", smoke=False)
  runs = {r.name: r for r in transfer_rules.build_runs(lm)}
  assert len(runs) == len(lm.seeds) * (2 + 3 * len(transfer_rules.RULES))
  assert lm.rules == tuple(transfer_rules.RULES) and "muon" not in lm.adamw_rules
  hp = lambda name: transfer_rules.scaled_hparams(runs[name].config)  # noqa: E731
  k = 64 / 8
  assert hp("lm_linear_b64_s0")["lr"] == pytest.approx(3e-3 * k)
  sde = hp("lm_adam_sde_b64_s0")
  assert (sde["b1"], sde["b2"]) == (pytest.approx(1 - k * 0.1), pytest.approx(1 - k * 0.01))
  assert sde["eps"] == pytest.approx(1e-8 / math.sqrt(k))
  full = hp("lm_sqrt-beta2_halflife-adamw_timescale_b64_s0")
  assert full["lr"] == pytest.approx(3e-3 * math.sqrt(k))
  assert full["b2"] == pytest.approx(0.99**k)
  # tau = B / (lr lambda D) of the reference
  assert 64 / (full["lr"] * full["weight_decay"]) == pytest.approx(8 / (3e-3 * 0.5))
  assert hp("lm_sqrt-beta2_halflife_b64_s0")["weight_decay"] == 0.5
  muon = runs["lm_muon_b64_s0"].config
  assert muon.optimizer.name == "muon" and hp("lm_muon_b64_s0")["lr"] == pytest.approx(
    0.02 * 2.828427, rel=1e-6
  )


def test_transfer_rules_steps_to_the_first_point_at_the_target():
  x = np.array([0.25, 0.5, 0.75, 1.0])
  y = np.array([3.0, 2.0, 1.5, 1.0])
  assert transfer_rules.steps_to(x, y, 2.0, batch=10, budget=1000) == 50  # 0.5 * 1000 / 10
  assert transfer_rules.steps_to(x, y, 1.2, batch=10, budget=1000) == 100
  assert transfer_rules.steps_to(x, y, 0.5, batch=10, budget=1000) == math.inf


def test_transfer_rules_smoke(tmp_path):
  out = tmp_path / "out"
  result = transfer_rules.run(workdir=str(tmp_path / "w"), outdir=str(out), smoke=True)
  report, results = _check_outputs(out, ["scores.png"])
  assert "Muon" in report and "b2 half-life" in report
  for key, w in results["workloads"].items():
    found = w["findings"]
    assert set(found["per_rule"]) == set(transfer_rules.SMOKE_RULES)
    adamw = {r: found["per_rule"][r]["mismatch"] for r in transfer_rules.SMOKE_RULES[:2]}
    assert found["best_mismatch_rule"] == min(adamw, key=adamw.get)
    ref = w["cells"]["reference@" + str(min(int(c.split("@")[1]) for c in w["cells"]))]
    assert ref["mismatch"] == 0.0  # the reference against itself
    # the target is the reference's eval loss at half its budget: reached there
    budget = {"lm": 10_000 // 32, "digits": 3 * common.DIGITS_NUM_TRAIN}[key]
    assert ref["steps"] * ref["batch_size"] / budget == pytest.approx(0.5, abs=0.06)
    assert all(math.isfinite(c["final_eval_loss"]) for c in w["cells"].values())
  # what trained is what the rule says: the run's recorded optimizer at k = 4
  cfg = json.loads(
    (tmp_path / "w/runs/lm_sqrt-beta2_halflife-adamw_timescale_b32_s0/config.json").read_text()
  )
  assert cfg["resolved"]["optimizer"]["b2"] == pytest.approx(0.99**4)
  assert cfg["resolved"]["optimizer"]["weight_decay"] == pytest.approx(0.5 * 4 / 2)
  assert result["findings"].keys() == {"lm", "digits"}


def test_transfer_rules_refuses_a_mode_it_does_not_have(tmp_path):
  from lrscale import errors

  with pytest.raises(errors.UserError, match="--mode=full"):
    transfer_rules.run(mode="full", workdir=str(tmp_path))
  with pytest.raises(errors.UserError, match="--size"):
    transfer_rules.run(workdir=str(tmp_path), size="huge")
  assert not (tmp_path / "runs").exists()
