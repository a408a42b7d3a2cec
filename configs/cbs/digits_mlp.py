"""Local CBS over training for the digits MLP (momentum SGD, linear lr rule across k).

Reference: B = 16, lr 0.05 constant, 6 epochs, B_simple logged; branch points
every epoch and at init; branches at 16 x (1, 2, 4, 8, 16) for 1 epoch each,
2 data-order seeds, tolerance 0.01 nats of eval loss. About 5-10 minutes on
2 CPU cores.

Launch:
  python -m lrscale.cbs --config=configs/cbs/digits_mlp.py --workdir=runs/cbs_digits
GPU-sized LM variant: configs/cbs/lm_char.py.
"""

from lrscale.cbs.branch import default_config
from lrscale.config import base_config


def get_config():
  c = default_config()
  r = base_config()
  r.model.hidden = (128, 128)
  r.optimizer.name = "momentum"
  r.schedule.name = "constant"
  r.batch_size = 16
  r.lr = 0.05
  r.budget = "6 epochs"
  r.eval_every = "1 epochs"
  r.log_every = "10 steps"
  r.noise_scale.enabled = True
  r.noise_scale.splits = 2
  r.tensorboard = False
  c.reference = r
  c.every = "1 epochs"
  c.num_points = 5
  c.multipliers = (1, 2, 4, 8, 16)
  c.seeds = (0, 1)
  c.branch_length = "1 epochs"
  c.tolerance = 0.01
  return c
