"""Ultralytics YOLO's optimizer recipe on the offline digits: lr0/lrf, warmup in full.

Launch:
  python -m lrscale.train --config=configs/ultralytics_warmup.py --workdir=runs/ultralytics

Ultralytics' defaults (ultralytics/cfg/default.yaml) and where they go here:

  optimizer=SGD, momentum=0.937 -> optimizer.name='nesterov', optimizer.momentum=0.937
  lr0=0.01, lrf=0.01, cos_lr   -> lr=0.01, schedule.name='ultralytics', schedule.alpha=0.01,
                                  schedule.anneal='linear' (cos_lr=True: 'cos')
  epochs=30                    -> budget = schedule.decay_length = '30 epochs'
  warmup_epochs=3              -> warmup.length='3 epochs', warmup.target='current'
                                  (8.3 series: warmup.min_length='100 steps')
  warmup_bias_lr=0.1           -> warmup.bias_init_lr=0.1 (biases fall from 0.1)
  warmup_momentum=0.8          -> warmup.init_momentum=0.8 (momentum rises to 0.937)
  weight_decay=0.0005          -> optimizer.weight_decay=5e-4 (not on biases / norms)

An Ultralytics epoch is ceil(N / B) batches, an lrscale epoch N / B steps: for
the identical per-step values write the lengths in steps (epochs x ceil(N / B));
tests/test_ultralytics_warmup.py checks them step by step that way.
"""

from lrscale.config import base_config


def get_config():
  c = base_config()
  c.dataset.name = "digits"
  c.model.name = "mlp"
  c.model.hidden = (128, 128)
  c.batch_size = 64
  c.lr = 0.01  # lr0
  c.optimizer.name = "nesterov"
  c.optimizer.momentum = 0.937
  c.optimizer.weight_decay = 5e-4
  c.schedule.name = "ultralytics"
  c.schedule.alpha = 0.01  # lrf
  c.schedule.anneal = "linear"
  c.schedule.decay_length = "30 epochs"
  c.budget = "30 epochs"
  c.warmup.length = "3 epochs"
  c.warmup.target = "current"  # np.interp toward lr0 * lf(epoch), as Ultralytics
  c.warmup.bias_init_lr = 0.1  # warmup_bias_lr
  c.warmup.init_momentum = 0.8  # warmup_momentum
  c.eval_every = "1 epochs"
  c.log_every = "10 steps"
  c.checkpoint_every = "10 epochs"
  return c
