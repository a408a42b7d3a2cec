"""Ground truth for the batch-size study: SGD on linreg, where S(B) is known exactly.

Plain SGD (no momentum, constant lr) from w = 0 on ``linreg`` (dim 100, spectrum
h_i = 1/i, teacher w* = 1, label noise 0.5), batch sizes 1 .. 4096, target
exact relative excess risk 0.02. Because the
expected risk of SGD here obeys a closed-form recursion
(``lrscale.analysis.theory``), the measured steps-to-target, the optimal lr per
batch size and the fitted S(B) = S_min (1 + B_crit / B) can be checked against
the exact curve: about 1600 steps at B=1, down to about 45 for B >= 512, the
best lr doubling with B up to ~16 and saturating at ~1.7 (the edge of stability
is lr = 2 / h_max = 2), B_crit 35 on this grid (see README).

The theory is of the EXPECTED risk, so steps are read off the seeds' mean
curve (``analysis.target_from = "seed_mean"``, lrscale.analysis.seed_mean:
first step where the monotone fit of the mean of 8 seeds meets the target),
not as each seed's first passage, which comes up to 1.5x earlier at small B.
For that mean to exist past the target, trials stop at relative excess 0.005
(``target.stop_value``), where the best lrs at B <= 8 never get (their noise
floor is ~0.012: they run the whole budget, cheap at small B); the eight seeds
of each lr train as one vmapped program.

The lr grid is relative to a sqrt rule (lr = 2^-3.25 sqrt(B) x 2^(k/2),
k = -5..3), i.e. a sqrt(2)-spaced grid that moves with B and keeps the exact
best lr interior at every batch size (k = -1 at B = 1, 2 at B = 8..64, -4 at
B = 4096). It is offset by 2^(1/4) so that no trial sits exactly on the
stability edge lr = 2, where a run neither converges nor diverges and would
burn its whole budget.

Launch (936 trials: 5.3 minutes on 2 shared, loaded cores, 229 s of CPU):
  python -m lrscale.study --config=configs/studies/linreg.py --workdir=runs/linreg_study
  python -m lrscale.analyze --workdir=runs/linreg_study
"""

from lrscale.study.space import default_study_config


def get_config():
  s = default_study_config()
  s.name = "linreg_sgd_exact"
  s.base = _base()
  s.batch_sizes = tuple(2**k for k in range(13))  # 1 .. 4096
  s.seeds = tuple(range(8))
  s.lr.mode = "relative"
  s.lr.rule = "sqrt"
  s.lr.base_lr = 2**-3.25
  s.lr.reference_batch = 1
  s.lr.grid = tuple(2 ** (k / 2) for k in range(-5, 4))
  s.target.metric = "eval_relative_excess"
  s.target.value = 0.02
  s.target.mode = "min"
  s.target.stop_value = 0.005  # run on past the target: the seeds' mean curve must cross it
  s.analysis.target_from = "seed_mean"
  s.budget = "2500 steps"  # the best lr at B=1 needs 1607, the next lower one 1894
  s.vmap = "on"  # the 8 seeds of one lr as one program: per-step overhead dominates here
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
