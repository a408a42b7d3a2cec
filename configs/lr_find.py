"""LR range test of the default run: the digits MLP, SGD with momentum 0.9, B = 64.

Launch (3 seeds, suggestions with their spread, a line to paste into train):
  python -m lrscale.lr_find --config=configs/lr_find.py --workdir=runs/lr_find

How the suggested lr scales with the batch size (fitted exponent beside the
linear and square-root rules):
  python -m lrscale.lr_find --config=configs/lr_find.py --workdir=runs/lr_find_b \
      --config.lr_find.batch_sizes="(64,256,1024)"

Then train with the printed flags, e.g.
  python -m lrscale.train --config=configs/default.py --workdir=runs/found --config.lr=0.05
"""

from configs import default


def get_config():
  c = default.get_config()  # the run whose lr we look for: same model, data, optimizer, B
  lf = c.lr_find
  lf.min_lr = 1e-6
  lf.max_lr = 10.0
  lf.num_steps = 100
  lf.seeds = (0, 1, 2)
  lf.vary = "both"  # each seed changes the init and the data order
  lf.max_spread = 3.0  # flag a suggestion whose seeds disagree by more than 3x
  return c
