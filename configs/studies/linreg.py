"""Ground truth for the batch-size study: SGD on linreg, where S(B) is known exactly.

Plain SGD (no momentum, constant lr) from w = 0 on ``linreg`` (dim 100, spectrum
h_i = 1/i, teacher w* = 1, label noise 0.5), batch sizes 1 .. 4096, stopping
each trial when the exact relative excess risk first reaches 0.02. Because the
expected risk of SGD here obeys a closed-form recursion
(``lrscale.analysis.theory``), the measured steps-to-target, the optimal lr per
batch size and the fitted S(B) = S_min (1 + B_crit / B) can be checked against
the exact curve: about 1600 steps at B=1, down to about 45 for B >= 512, the
best lr doubling with B up to ~16 and saturating at ~1.7 (the edge of stability
is lr = 2 / h_max = 2), B_crit around 25-30 (see README).

The lr grid is relative to a sqrt rule (lr = 2^-3.25 sqrt(B) x 2^(k/2),
k = -6..5), i.e. a sqrt(2)-spaced grid that moves with B and keeps the best lr
interior at every batch size with few wasted trials. It is offset by 2^(1/4)
so that no trial sits exactly on the stability edge lr = 2, where a run
neither converges nor diverges and would burn its whole budget.

Launch (about 5 minutes on 2 CPU cores):
  python -m lrscale.study --config=configs/studies/linreg.py --workdir=runs/linreg_study
  python -m lrscale.analyze --workdir=runs/linreg_study
"""

from lrscale.study.space import default_study_config


def get_config():
  s = default_study_config()
  s.name = "linreg_sgd_exact"
  s.base = _base()
  s.batch_sizes = tuple(2**k for k in range(13))  # 1 .. 4096
  s.seeds = (0, 1, 2)
  s.lr.mode = "relative"
  s.lr.rule = "sqrt"
  s.lr.base_lr = 2**-3.25
  s.lr.reference_batch = 1
  s.lr.grid = tuple(2 ** (k / 2) for k in range(-6, 6))
  s.target.metric = "eval_relative_excess"
  s.target.value = 0.02
  s.target.mode = "min"
  s.budget = "2000 steps"  # the best lr at B=1 needs ~1610
  s.eval_every = "1 steps"  # exact eval is one dim x dim product: every step is cheap
  return s


def _base():
  from lrscale.config import base_config  # pylint: disable=g-import-not-at-top

  c = base_config()
  c.dataset.name = "linreg"
  c.dataset.linreg.dim = 100
  c.dataset.linreg.alpha = 1.0
  c.dataset.linreg.teacher_power = 0.0
  c.dataset.linreg.noise = 0.5
  c.model.name = "linear"
  c.optimizer.name = "sgd"
  c.schedule.name = "constant"
  c.log_every = "50 steps"
  c.sync_every = "500 steps"
  c.checkpoint_every = "2000 steps"  # runs are seconds long: a checkpoint at the end only
  c.tensorboard = False
  c.target.stop = True
  return c
