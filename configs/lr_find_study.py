"""The range test with short-run prediction on the default study's runs (its validation).

The run is the study's (configs/studies/default.py): its base config, budget
(40 epochs, constant lr), eval cadence and target (eval accuracy >= 95%), at
each of its batch sizes. After the ramp, ``predict = "short_runs"`` trains 7
lrs per batch size in [steepest, 4 x stable] for a quarter of the budget,
3 seeds, and picks the fewest steps to the target (the study's measure).

Launch (then compare with runs/default_study/report.md, docs/lr_find.md):
  python -m lrscale.lr_find --config=configs/lr_find_study.py --workdir=runs/lr_find_study
"""

from configs.studies import default as study


def get_config():
  s = study.get_config()
  c = s.base
  c.budget = s.budget
  c.eval_every = s.eval_every
  c.target.metric, c.target.value, c.target.mode = s.target.metric, s.target.value, s.target.mode
  c.batch_size = s.lr.reference_batch
  c.lr = s.lr.base_lr
  c.noise_scale.enabled = False  # the study's B_simple: not needed here
  lf = c.lr_find
  lf.seeds = (0, 1, 2)
  lf.batch_sizes = tuple(s.batch_sizes)
  lf.predict = "short_runs"
  lf.predict_metric = "target"  # steps to eval accuracy >= 95%, as the study
  lf.predict_fraction = 0.25
  return c
