"""The default study: batch size x learning rate on the offline digits (README's main job).

An MLP (64-128-128-10) trained with momentum SGD at a constant learning rate on
scikit-learn's digits, for 8 batch sizes from 8 to 1024 and 6 learning rates
per batch size placed around the linear scaling rule's prediction. Each trial
stops when eval accuracy first reaches 95%; steps-to-result per batch size,
the fitted S(B) = S_min (1 + B_crit / B), the optimal lr vs B and the
lr-sensitivity map come out of the analysis. About 5 minutes on 2 CPU cores.

Launch:
  python -m lrscale.study --config=configs/studies/default.py --workdir=runs/default_study
Then open runs/default_study/report.md.
"""

from lrscale.study.space import default_study_config


def get_config():
  s = default_study_config()
  s.name = "digits_mlp_default"
  base = _base()
  s.base = base
  s.batch_sizes = (8, 16, 32, 64, 128, 256, 512, 1024)
  s.seeds = (0, 1)
  s.lr.mode = "relative"
  s.lr.rule = "linear"
  s.lr.base_lr = 0.1
  s.lr.reference_batch = 64
  s.lr.grid = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # multipliers of the linear rule
  s.target.metric = "eval_accuracy"
  s.target.value = 0.95
  s.target.mode = "max"
  s.budget = "40 epochs"
  s.eval_every = "0.02 epochs"  # 4 steps at B=8, every step from B=32
  return s


def _base():
  from lrscale.config import base_config  # pylint: disable=g-import-not-at-top

  c = base_config()
  c.dataset.name = "digits"
  c.model.name = "mlp"
  c.model.hidden = (128, 128)
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.schedule.name = "constant"
  c.log_every = "10 steps"
  c.checkpoint_every = "20 epochs"
  c.target.stop = True
  c.noise_scale.enabled = True  # B_simple, reported beside the fitted B_crit
  c.noise_scale.splits = 2
  return c
