"""The default run: an MLP on the offline digits dataset (no network needed).

Launch:
  python -m lrscale.train --config=configs/default.py --workdir=runs/default

Change anything from the command line, e.g. a bigger batch with the linear
scaling rule and a 5-epoch warmup:
  python -m lrscale.train --config=configs/default.py --workdir=runs/b512 \
      --config.batch_size=512 --config.scaling.rule=linear --config.warmup.length="5 epochs"
"""

from lrscale.config import base_config


def get_config():
  c = base_config()
  c.dataset.name = "digits"  # scikit-learn's 1797 8x8 digits, ships offline
  c.model.name = "mlp"
  c.model.hidden = (128, 128)
  c.batch_size = 64
  c.lr = 0.05
  c.optimizer.name = "momentum"
  c.optimizer.momentum = 0.9
  c.schedule.name = "cosine"
  c.budget = "20 epochs"
  c.eval_every = "1 epochs"
  c.log_every = "10 steps"
  c.checkpoint_every = "5 epochs"
  c.target.value = 0.95  # record steps-to-target (eval accuracy >= 95%)
  c.target.stop = False
  return c
