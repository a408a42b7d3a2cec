"""The short-run prediction (``config.lr_find.predict``) against a grid of full trainings."""

import json
import math

import numpy as np
import pytest

from lrscale import config as config_lib
from lrscale.data import registry
from lrscale.engine import loop as train_lib
from lrscale.lr_find import predict as P
from lrscale.lr_find.run import lr_find


def test_vertex_finds_the_minimum_of_a_parabola_between_grid_points():
  lrs = np.exp(np.linspace(math.log(1e-3), math.log(1.0), 7))
  best = 0.05
  scores = np.exp((np.log(lrs) - math.log(best)) ** 2)  # log score: a parabola in log lr
  lr, edge = P.vertex(lrs, scores)
  assert lr == pytest.approx(best, rel=1e-6) and not edge
  # Steps-to-target style: an unreached neighbour keeps the grid's argmin, ties go low.
  assert P.vertex([0.1, 0.2, 0.4], [30.0, 20.0, math.inf]) == (0.2, False)
  assert P.vertex([0.1, 0.2, 0.4, 0.8], [30.0, 20.0, 20.0, 25.0])[0] <= 0.4
  assert P.vertex([0.1, 0.2, 0.4], [10.0, 20.0, 30.0]) == (0.1, True)
  assert math.isnan(P.vertex([0.1, 0.2], [math.inf, math.inf])[0])


def test_five_point_fit_is_steadier_than_three_under_noise():
  # Noisy scores around a true optimum at 0.1: the least-squares parabola over five grid
  # points lands nearer (in log lr, mean over draws) than the exact one through three.
  lrs = 0.1 * 2.0 ** np.arange(-3, 4)  # 0.0125 .. 0.8
  rng = np.random.default_rng(0)
  errors = {1: [], 2: []}
  for _ in range(400):
    noisy = np.exp(0.3 * np.log(lrs / 0.1) ** 2 + rng.normal(0, 0.15, len(lrs)))
    for k in errors:
      errors[k].append(abs(math.log(P.vertex(lrs, noisy, neighbours=k)[0] / 0.1)))
  assert np.mean(errors[2]) < 0.8 * np.mean(errors[1]), {k: np.mean(v) for k, v in errors.items()}


def small_config(**overrides):
  """A reduced default run: MLP 32 on digits, momentum 0.9, cosine, 4 epochs at B=64."""
  c = config_lib.base_config()
  c.parallel.num_devices = 1
  c.compilation_cache = ""
  c.tensorboard = False
  c.dataset.name = "digits"
  c.model.name = "mlp"
  c.model.hidden = (32,)
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.schedule.name = "cosine"
  c.batch_size = 64
  c.budget = "4 epochs"
  c.eval_every = "1 epochs"
  c.checkpoint_every = "4 epochs"
  lf = c.lr_find
  lf.min_lr, lf.max_lr, lf.num_steps, lf.check_every = 1e-4, 30.0, 60, 20
  lf.seeds = (0, 1)
  lf.predict = "short_runs"
  lf.predict_points = 5
  lf.predict_fraction = 0.25
  for key, value in overrides.items():
    config_lib.set_field(c, key, value)
  return c


def grid_best(cfg, lrs, tmp_path) -> float:
  """The lr of a grid whose full trainings (every seed) end with the lowest eval loss."""
  data = registry.load_in_memory(config_lib.resolve(cfg).config.dataset)
  setup, losses = None, []
  for lr in lrs:
    per_seed = []
    for seed in cfg.lr_find.seeds:
      c = P.short_config(
        cfg, cfg.batch_size, lr, seed, config_lib.resolve(cfg).total_steps, "eval_loss"
      )
      plan = config_lib.resolve(c)
      setup = setup or train_lib.RunSetup(plan, data)
      s = train_lib.train(c, str(tmp_path / f"lr{lr:.4g}_s{seed}"), plan=plan, setup=setup)
      per_seed.append(P.score(s, "eval_loss"))
    losses.append(float(np.exp(np.mean(np.log(per_seed)))))
  return float(lrs[int(np.argmin(losses))])


def test_prediction_is_within_2x_of_the_best_full_training(tmp_path):
  cfg = small_config()
  result = lr_find(cfg, str(tmp_path / "find"))
  (p,) = result.predictions
  assert p.steps == round(0.25 * config_lib.resolve(cfg).total_steps)
  assert len(p.lrs) == 5 and len(p.per_seed) == 2 and p.low <= p.high
  # The truth: full trainings (the whole budget, its cosine) on a factor-2 grid.
  lrs = 0.0125 * 2.0 ** np.arange(8)  # 0.0125 .. 1.6
  best = grid_best(cfg, lrs, tmp_path / "grid")
  assert best not in (lrs[0], lrs[-1]), "the grid must bracket the optimum"
  print(f"predicted {p.lr:.3g} [{p.low:.3g}, {p.high:.3g}]; best full training {best:.3g}")
  assert best / 2 <= p.lr <= best * 2, (p, best)
  # Outputs: the prediction is in lr_find.json and on the paste line.
  out = json.loads((tmp_path / "find" / "lr_find.json").read_text())
  assert out["predictions"][0]["lr"] == pytest.approx(p.lr)
  assert result.paste == f"--config.lr={p.lr:.3g}"


def test_a_best_lr_at_the_bracket_edge_extends_the_grid(tmp_path):
  # A bracket forced far below the optimum (headroom 1 over a ramp cut at lr 0.02): the
  # best short run sits at the top, so the grid grows past it, 2 lrs a round, same spacing.
  cfg = small_config(
    **{"lr_find.max_lr": 0.02, "lr_find.predict_headroom": 1.0, "lr_find.seeds": (0,)}
  )
  (p,) = lr_find(cfg, str(tmp_path / "find")).predictions
  steps = np.diff(np.log(p.lrs))
  assert len(p.lrs) in (7, 9) and np.allclose(steps, steps[0]), p.lrs
  assert p.lrs[-1] > 0.02 * 1.5
  # Without extension rounds the same bracket stays at 5 lrs and flags the edge.
  cfg.lr_find.predict_extend_rounds = 0
  (q,) = lr_find(cfg, str(tmp_path / "find0")).predictions
  assert len(q.lrs) == 5 and q.at_edge and not q.reliable


@pytest.mark.parametrize(
  "field, value",
  [
    ("predict", "grid"),
    ("predict_extend", -1),
    ("predict_extend_rounds", -2),
    ("predict_points", 2),
    ("predict_headroom", 0.5),
    ("predict_fraction", 0.0),
    ("predict_metric", "accuracy"),
  ],
)
def test_bad_predict_config_is_one_clear_error_before_compute(tmp_path, field, value):
  cfg = small_config(**{f"lr_find.{field}": value})
  with pytest.raises(ValueError, match=rf"config\.lr_find\.{field}"):
    lr_find(cfg, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_prediction_matches_a_reduced_default_study(tmp_path):
  # The validation of docs/lr_find.md, reduced: the default study (configs/studies/
  # default.py) at B = 64 and 256 with 4 seeds, against configs/lr_find_study.py at the
  # same batch sizes (3 seeds). The study's best lr (median steps to 95% over seeds) is
  # the truth; the prediction must be within 2x of it at both.
  from configs import lr_find_study
  from configs.studies import default as default_study
  from lrscale.analysis.run import analyze
  from lrscale.study import runner

  study = default_study.get_config()
  study.batch_sizes, study.seeds = (64, 256), (0, 1, 2, 3)
  study.base.parallel.num_devices = 1
  study.base.compilation_cache = ""
  runner.run_study(study, str(tmp_path / "study"))
  best = {r["batch_size"]: r["best_lr"] for r in analyze(str(tmp_path / "study"))["per_batch"]}
  cfg = lr_find_study.get_config()
  cfg.parallel.num_devices = 1
  cfg.compilation_cache = ""
  cfg.lr_find.batch_sizes = (64, 256)
  predictions = lr_find(cfg, str(tmp_path / "find")).predictions
  for p in predictions:
    print(f"B={p.batch_size}: predicted {p.lr:.3g}, study best {best[p.batch_size]:.3g}")
    assert best[p.batch_size] / 2 <= p.lr <= 2 * best[p.batch_size], (p, best)
