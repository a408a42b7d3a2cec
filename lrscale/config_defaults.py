"""Every field a run config may set, with its default: ``base_config()``.

A config file (``configs/*.py``) starts from ``base_config()`` (re-exported as
``lrscale.config.base_config``) and changes what it needs; ``lrscale.config``
validates the result and resolves it into a plan. The sections owned by one
module (optimizer, schedule, warmup, plateau, scaling, early stopping, init)
take their defaults from that module.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from lrscale.engine import early_stopping, init_from
from lrscale.optim import optimizer_config, scaling, schedule_config


def base_config() -> ml_collections.ConfigDict:
  """Every field a run config may set, with its default."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.dataset = ml_collections.ConfigDict(
    dict(
      name="digits",  # see lrscale.data.registry.DATASET_NAMES
      data_dir="",  # TFDS data_dir ('' = TFDS default ~/tensorflow_datasets)
      train_split="train",
      eval_split="test",
      eval_examples=0,  # evaluate on the first N eval examples (0 = all)
      classes=(),  # digits: keep these classes, relabelled 0..k-1 (() = all)
      standardize=True,  # per-channel mean/std of the train split (in-memory data)
      stream=False,  # stream TFDS train batches through grain (imagenet2012 always)
      # Variable-size images (imagenette, imagenet2012) are center-cropped and
      # resized to image_size x image_size; 0 = the dataset's own fixed size.
      image_size=0,
      # dataset.name='linreg': synthetic single-pass regression with an exact
      # answer (lrscale.data.linreg): x ~ N(0, diag(i^-alpha)), i = 1..dim,
      # y = w*.x + noise * eps with w*_i = i^-teacher_power; needs model 'linear'.
      linreg=ml_collections.ConfigDict(dict(dim=100, alpha=1.0, teacher_power=0.0, noise=0.5)),
      # dataset.name='mnist1d': Greydanus's MNIST-1D generated locally (lrscale.data.mnist1d);
      # train_size + eval_size must be a multiple of 10.
      mnist1d=ml_collections.ConfigDict(dict(train_size=200_000, eval_size=10_000)),
      # Sequence datasets (stdlib_chars): tokens per example; lengths may then
      # be given in tokens (examples = tokens / context).
      context=128,
      # Streamed-image augmentation (lrscale.data.augment.AUGMENT_NAMES):
      # none | flip | inception_crop_flip | cifar_crop_flip.
      augment="none",
      workers=-1,  # input pipeline worker processes per host (-1 = one per core, 0 = inline)
    )
  )
  c.model = ml_collections.ConfigDict(
    dict(
      name="mlp",  # linear | mlp | cnn | resnet8 | resnet20 | resnet18 | resnet50
      hidden=(128, 128),  # mlp widths
      channels=(32, 64),  # cnn conv widths
      dense=128,  # cnn dense width
      zero_init_last_bn=True,  # resnet: last BN gamma of each block = 0 (Goyal et al.)
      # cnn/resnet convolutions: auto (CPU: per conv, canonical or patches, fast inside
      # the train loop's scan where autodiff of XLA's CPU conv is 15-30x slower;
      # GPU/TPU: xla) | xla | patches (im2col + matmul) | canonical (XLA's conv with
      # canonical-form gradients). Same parameters and results; only speed differs.
      conv_impl="auto",
      # BatchNorm statistics group, in examples, so results do not depend on the
      # number of devices: N > 0 = ghost batches of N examples (Goyal: 32);
      # 0 = per device (B / devices / microbatches); -1 = the whole (micro)batch.
      bn_group_size=32,
      # transformer (decoder-only, pre-LN; lrscale.models.transformer)
      depth=2,
      width=128,
      heads=4,
      mlp_ratio=4,
      positions="rotary",  # rotary | learned
      # Mixed precision: activations and matmuls/convs in this dtype (float32 |
      # bfloat16 | float16); parameters, optimizer state, loss and BatchNorm
      # statistics stay float32. float16 adds dynamic loss scaling.
      dtype="float32",
      loss_scale_init=2.0**15,  # float16: initial loss scale (halves on overflow)
    )
  )
  c.batch_size = 128  # global batch: examples per optimizer step
  c.microbatches = 1  # gradient accumulation: the batch is split into k parts
  c.lr = 0.1  # base learning rate, before the scaling rule
  c.scaling = scaling.default_config()
  c.optimizer = optimizer_config.default_config()
  c.schedule = schedule_config.default_config()
  c.warmup = schedule_config.default_warmup_config()
  c.plateau = schedule_config.default_plateau_config()

  # Smith et al. 2017: multiply the global batch by `factor` at each milestone
  # (epochs or examples) instead of decaying the lr. Realised as more
  # microbatches of the same size, so one compiled step serves every phase.
  c.batch_ramp = ml_collections.ConfigDict(dict(milestones=(), factor=5))
  c.budget = "30 epochs"  # training length: steps, epochs or examples
  # True lets the budget stop a run before parts of its schedule (a warmup or
  # milestones past the end): a short smoke test of a long recipe. Otherwise
  # such a schedule is an error, since it would never reach what it describes.
  c.allow_truncated_schedule = False
  c.log_every = "10 steps"
  # How often the host syncs with the device (progress line, checkpoint checks).
  # Logging, evaluation, target and divergence checks see every step regardless:
  # they run inside the compiled loop.
  c.sync_every = "200 steps"
  c.eval_every = "1 epochs"
  c.eval_batch_size = 1024
  c.checkpoint_every = "5 epochs"
  c.checkpoint_keep = 2

  c.target = ml_collections.ConfigDict(
    dict(
      metric="eval_accuracy",  # any eval_* metric
      value=config_dict.placeholder(float),  # unset = no target
      mode="max",  # max: reached when metric >= value; min: <=
      stop=True,  # stop the run when the target is reached
    )
  )
  # A run whose train loss is non-finite or above max_loss is stopped and
  # recorded as diverged (0 = automatic: 4 x the initial loss, at least 4 ln C).
  c.divergence = ml_collections.ConfigDict(dict(max_loss=0.0))
  # Stop when an eval metric has not improved for `patience` evaluations.
  c.early_stopping = early_stopping.default_config()
  # Start from another run's parameters (fine-tuning); see lrscale.engine.init_from.
  c.init = init_from.default_config()
  c.noise_scale = ml_collections.ConfigDict(
    dict(
      enabled=False,  # log McCandlish et al.'s B_simple during training
      splits=4,  # small batches per step for the two-batch estimator
      decay=0.95,  # EMA of numerator and denominator
    )
  )
  c.parallel = ml_collections.ConfigDict(
    dict(
      # -1 = every visible device (on several processes: all of every process's).
      # Process identity is not config: see lrscale/engine/launch.py's flags.
      num_devices=-1,
    )
  )
  c.compilation_cache = "~/.cache/lrscale/xla"  # '' = off
  c.tensorboard = True
  # The LR range test (python -m lrscale.lr_find); see docs/lr_find.md.
  c.lr_find = ml_collections.ConfigDict(
    dict(
      min_lr=1e-6,  # first lr of the sweep
      max_lr=10.0,  # last lr (the sweep stops earlier if it diverges)
      num_steps=100,  # N steps, both ends of the range included
      ramp="exponential",  # exponential (evenly spaced in log lr) | linear
      beta=0.9,  # bias-corrected EMA of the loss, run both ways (no lag)
      spike_window=5,  # running median over this many steps first (1 = off)
      diverge_factor=4.0,  # diverged: smoothed loss > factor x best, or non-finite
      skip_start=0.1,  # fractions of the sweep the suggestions ignore (fastai)
      skip_end=0.05,
      seeds=(0, 1, 2),  # one sweep per seed
      vary="both",  # what a seed changes: both | init | data (order)
      max_spread=3.0,  # unreliable: max/min of a suggestion over seeds above this
      batch_sizes=(),  # () = config.batch_size; several = scaling exponent
      check_every=10,  # steps per device call between divergence checks (0 = N)
      vmap="auto",  # seeds in one vmapped call: auto (not on CPU) | on | off
      predict="",  # "" = ramp only | short_runs: K short trainings in the bracket
      predict_points=7,  # K log-spaced lrs in [steepest, predict_headroom x stable]
      predict_headroom=4.0,  # top of the bracket over the largest stable lr
      predict_extend=2,  # best lr at a bracket end: this many more lrs past it ...
      predict_extend_rounds=2,  # ... at most this many times (0 = never extend)
      predict_fraction=0.25,  # short-run budget as a fraction of the run's
      predict_metric="eval_loss",  # eval_loss (at the short run's end) | target (steps)
    )
  )
  return c
