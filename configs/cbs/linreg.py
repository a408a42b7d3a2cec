"""Local CBS on linreg, where the exact answer is known (plain SGD, linear lr rule across k).

Reference: linreg (dim 32, h_i = 1/i, teacher 1, noise 0.5), B = 4, lr 0.1
constant, 200 steps; branches from init and from step 200 at 4 x (1 .. 32) for
512 examples each, 4 data-order seeds, tolerance 0.002 in relative excess risk.
Because SGD's expected risk here obeys a closed recursion from the branch's
known starting weights (lrscale.cbs.exact), cbs.json and the figure carry the
exact CBS beside the measured one. About 20 s on 2 CPU cores; the test
tests/test_cbs.py runs this file.

Launch:
  python -m lrscale.cbs --config=configs/cbs/linreg.py --workdir=runs/cbs_linreg
"""

from lrscale.cbs.branch import default_config
from lrscale.config import base_config


def get_config():
  c = default_config()
  r = base_config()
  r.dataset.name = "linreg"
  r.dataset.linreg.dim = 32
  r.model.name = "linear"
  r.optimizer.name = "sgd"
  r.schedule.name = "constant"
  r.parallel.num_devices = 1  # B = 4 does not split over more
  r.batch_size, r.lr, r.budget = 4, 0.1, "200 steps"
  r.eval_every = "10 steps"
  r.log_every = "10 steps"
  r.target.metric, r.target.mode = "eval_relative_excess", "min"
  r.tensorboard = False
  c.reference = r
  c.every, c.num_points = "200 steps", 1
  c.multipliers = (1, 2, 4, 8, 16, 32)  # lr 0.1 k: k = 32 (lr 3.2) is past the edge lr = 2
  c.seeds = (0, 1, 2, 3)
  c.branch_length = "512 examples"
  c.tolerance = 0.002
  c.metric = "eval_relative_excess"
  return c
