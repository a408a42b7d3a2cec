"""The default study on MNIST-1D: large batches without repeating the data.

MNIST-1D (Greydanus 2020) generated locally by the ``mnist1d`` package with
200k training examples (cached in ~/.cache/lrscale/mnist1d/ after the first
run, a few minutes), so batch sizes up to 8192 reach the target within a few
epochs. Same recipe as configs/studies/default.py: an MLP (40-256-256-10),
momentum SGD at a constant lr, lrs around the linear scaling rule, each trial
stopping at the target eval accuracy. Pass ``--config.target.value=...`` to
move the target (McCandlish et al. 2018: a harder target has a larger B_crit).

Launch:
  python -m lrscale.study --config=configs/studies/mnist1d.py --workdir=runs/mnist1d_study
  python -m lrscale.analyze --workdir=runs/mnist1d_study
"""

from lrscale.study.space import default_study_config


def get_config():
  s = default_study_config()
  s.name = "mnist1d_mlp"
  s.base = _base()
  s.batch_sizes = tuple(2**k for k in range(4, 14))  # 16 .. 8192
  s.seeds = (0, 1)
  s.lr.mode = "relative"
  s.lr.rule = "linear"
  s.lr.base_lr = 0.05
  s.lr.reference_batch = 128
  s.lr.grid = (2**-5, 2**-4, 2**-3, 0.25, 0.5, 1.0, 2.0, 4.0)  # the linear rule overshoots at big B
  s.target.metric = "eval_accuracy"
  s.target.value = 0.8  # B=1024, lr 0.4: 0.80 at ~130 steps, 0.85 after 1 epoch (measured)
  s.target.mode = "max"
  s.budget = "6 epochs"  # 1.2M examples: 146 steps at B=8192
  s.eval_every = "0.005 epochs"  # 1000 examples: every step from B=1024
  return s


def _base():
  from lrscale.config import base_config  # pylint: disable=g-import-not-at-top

  c = base_config()
  c.dataset.name = "mnist1d"
  c.dataset.mnist1d.train_size = 200_000
  c.dataset.mnist1d.eval_size = 10_000
  c.model.name = "mlp"
  c.model.hidden = (256, 256)
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.schedule.name = "constant"
  c.log_every = "50 steps"
  c.checkpoint_every = "2 epochs"
  c.tensorboard = False
  c.target.stop = True
  c.noise_scale.enabled = True  # B_simple beside the fitted B_crit
  c.noise_scale.splits = 2
  return c
