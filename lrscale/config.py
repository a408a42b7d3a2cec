"""The run configuration: its fields, their validation, and resolution to a plan.

A config file (``configs/*.py``) starts from ``base_config()`` and changes what
it needs. ``resolve(config)`` is the only place where the config is read as a
whole: it rejects unknown fields and impossible values with one error naming
the field and the fix, converts every length to steps for this run's global
batch size (``lrscale.units``), applies the batch-size scaling rule once
(``lrscale.optim.scaling``), and returns a frozen ``RunPlan``. Everything downstream
reads the plan, never the raw config, so a value cannot be interpreted twice.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import json
import math
import os
from typing import Any, Callable, Mapping

import ml_collections
from ml_collections import config_dict

from lrscale import errors, tasks, units
from lrscale.data import registry
from lrscale.engine import early_stopping, init_from
from lrscale.models import CONV_IMPLS, MODEL_NAMES
from lrscale.optim import optimizers, precision, scaling, schedule_build, schedule_config
from lrscale.optim import ultralytics_warmup as group_warmup


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
      # cnn/resnet convolutions: auto (CPU: im2col + matmul, fast inside the train
      # loop's scan where XLA's CPU conv is ~15x slower; GPU/TPU: XLA) | xla |
      # patches. Same parameters and results; only speed differs.
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
  c.optimizer = optimizers.default_config()
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
      predict_fraction=0.25,  # short-run budget as a fraction of the run's
      predict_metric="eval_loss",  # eval_loss (at the short run's end) | target (steps)
    )
  )
  return c


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """A config resolved for one run: every length in steps, every rule applied."""

  config: ml_collections.FrozenConfigDict
  dataset: registry.DatasetMeta
  batch_size: int
  microbatches: int
  num_devices: int
  bn_group_size: int
  lr: float  # peak lr after the scaling rule
  optimizer: ml_collections.FrozenConfigDict  # with the rule's overrides (adam_sde)
  scaled: scaling.ScaledHparams
  total_steps: int
  ramp: tuple[units.RampPhase, ...]  # one phase (multiplier 1) without a batch ramp
  log_every: int
  sync_every: int
  eval_every: int
  checkpoint_every: int
  max_loss: float
  schedule: schedule_build.Schedule  # (step, peak_lr) -> lr, every length in steps

  @property
  def steps_per_epoch(self) -> float | None:
    """None for a dataset without epochs (generated: every step draws fresh examples)."""
    if self.dataset.num_train is None:
      return None
    return self.dataset.num_train / self.batch_size

  @property
  def task(self) -> tasks.Task:
    """What the outputs are scored by (loss, eval metrics), from the dataset."""
    return tasks.get_task(self.dataset.task)

  @property
  def has_target(self) -> bool:
    return self.config.target.value is not None

  def to_steps(self, length: str | int, field: str = "length") -> int:
    """Resolves any length for this run's batch size (and batch ramp) and dataset."""
    return units.ramp_to_steps(
      length,
      phases=self.ramp,
      batch_size=self.batch_size,
      num_train_examples=self.dataset.num_train,
      field=field,
      tokens_per_example=self.dataset.tokens_per_example,
    )

  @property
  def max_microbatches(self) -> int:
    """Microbatches per step in the last ramp phase (= microbatches without a ramp)."""
    return self.microbatches * self.ramp[-1].multiplier

  def examples_at(self, step: int) -> int:
    """Examples consumed by the first ``step`` steps."""
    return units.examples_at_step(step, self.ramp, self.batch_size)

  def eval_cadence_at(self, step: int) -> tuple[int, int]:
    """(offset, every): evaluate at steps s with (s - offset) % every == 0.

    An interval in epochs or examples is a different number of steps in each
    phase of a batch ramp, so it is resolved per phase, counting from the
    phase's first step; in steps (or without a ramp) it is fixed.
    """
    if len(self.ramp) == 1 or units.parse_length(self.config.eval_every).unit == "steps":
      return 0, self.eval_every
    phase = max((p for p in self.ramp if p.start_step <= step), key=lambda p: p.start_step)
    phase_batch = units.RampPhase(0, 0, phase.multiplier)
    every = units.ramp_to_steps(
      self.config.eval_every,
      phases=(phase_batch,),
      batch_size=self.batch_size,
      num_train_examples=self.dataset.num_train,
      tokens_per_example=self.dataset.tokens_per_example,
    )
    return phase.start_step, max(1, every)

  def microbatches_at(self, step: int) -> int:
    """Microbatches of step ``step`` (0-based, the step about to run)."""
    return self.microbatches * units.multiplier_at_step(step, self.ramp)

  def lr_fn(self) -> Callable[[Any, Any], Any]:
    """``(step, peak_lr) -> lr``: the resolved schedule, traceable with a traced peak lr."""
    return self.schedule

  def summary(self) -> dict[str, Any]:
    """The resolved numbers, for config.json and the log."""
    return dict(
      batch_size=self.batch_size,
      schedule_truncated=self.schedule.truncated,
      microbatches=self.microbatches,
      num_devices=self.num_devices,
      bn_group_size=self.bn_group_size,
      lr=self.lr,
      scaling=dict(self.scaled._asdict()),
      total_steps=self.total_steps,
      steps_per_epoch=self.steps_per_epoch,
      log_every=self.log_every,
      sync_every=self.sync_every,
      eval_every=self.eval_every,
      checkpoint_every=self.checkpoint_every,
      max_loss=self.max_loss,
      num_train_examples=self.dataset.num_train,
      num_eval_examples=self.dataset.num_eval,
      optimizer=self.optimizer.to_dict(),
      batch_ramp=[p._asdict() for p in self.ramp],
      dataset=self.dataset.summary(),
    )


@errors.as_user_errors
def set_field(cfg: ml_collections.ConfigDict, path: str, value: Any) -> None:
  """Sets ``cfg.a.b.c = value`` for ``path='a.b.c'`` (sweeps, tests, experiments).

  Raises:
    ValueError: naming the path when a section or field does not exist.
  """
  node = cfg
  *sections, leaf = path.split(".")
  for part in sections:
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise ValueError(f"config.{path}: {part!r} is not a config section.")
    node = node[part]
  if leaf not in node:
    raise ValueError(f"config.{path} is not a known field.")
  node[leaf] = value


def load_config_file(
  path: str, arg: str | None = None, overrides: Mapping[str, Any] | None = None
) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of a config file (``configs/*.py``), then dotted ``overrides``.

  What ``--config=PATH:ARG --config.a.b=VALUE`` gives the absl mains
  (ml_collections' ``config_flags``), for tests, experiments and scripts.

  Raises:
    ValueError: naming the path when the file has no ``get_config``, or an
      override names an unknown field (``set_field``).
  """
  name = "_lrscale_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ValueError(f"{path}: not a Python config file; give a configs/*.py path.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} defines no get_config(); a config file must.")
  cfg = module.get_config() if arg is None else module.get_config(arg)
  for key, value in (overrides or {}).items():
    set_field(cfg, key, value)
  return cfg


@errors.as_user_errors
def check_known_fields(
  cfg: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, prefix: str = "config"
) -> None:
  """Rejects fields that ``base_config()`` does not define (typos, stale names)."""
  for key in cfg.keys():
    path = f"{prefix}.{key}"
    if key not in reference:
      close = difflib.get_close_matches(key, list(reference.keys()), n=1)
      hint = f" Did you mean {prefix}.{close[0]}?" if close else ""
      raise ValueError(
        f"{path} is not a known field.{hint} Known fields here: {sorted(reference.keys())}."
      )
    value, ref = cfg[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ValueError(f"{path} must be a section (ConfigDict), got {value!r}.")
      if ref.keys():  # an empty reference section is free-form (a study's base config)
        check_known_fields(value, ref, path)


def _positive_int(value: Any, field: str) -> int:
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"config.{field} must be a positive integer, got {value!r}.")
  return value


def _resolve_bn_group(cfg, per_microbatch: int, num_devices: int) -> int:
  group = cfg.model.bn_group_size
  if group == -1:
    return per_microbatch
  if group == 0:
    return per_microbatch // num_devices
  if group < -1:
    raise ValueError(
      f"config.model.bn_group_size={group}: use N > 0 (ghost batch of N), "
      "0 (per device) or -1 (whole batch)."
    )
  if per_microbatch % group and cfg.model.name.startswith("resnet"):  # only ResNets have BN
    raise ValueError(
      f"config.model.bn_group_size={group} must divide the per-step microbatch of "
      f"{per_microbatch} examples (batch_size {cfg.batch_size} / microbatches "
      f"{cfg.microbatches}); pick a divisor, or -1 for whole-batch statistics."
    )
  return group


_STUDY_FIELDS = ("base", "batch_sizes", "seeds", "search")


def check_run_config(cfg: Any) -> None:
  """Rejects what is not a run config at all (a dict, a study config) in one line."""
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise errors.UserError(
      f"the config is a {type(cfg).__name__}, not an ml_collections.ConfigDict: the config "
      "file's get_config() must return one; start from lrscale.config.base_config()."
    )
  if all(f in cfg for f in _STUDY_FIELDS):
    raise errors.UserError(
      "the config is a study config (it has config.base, config.batch_sizes, config.seeds): "
      "run it with python -m lrscale.study --config=... --workdir=..."
    )


def _check_seed(seed: Any) -> None:
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
    raise ValueError(f"config.seed must be an integer in [0, 2**32), got {seed!r}.")


def _check_schedule(plan: RunPlan) -> None:
  """Builds the schedule once at a concrete peak lr, so that every check needing
  step counts fires here, before any data is loaded or anything is written."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  cfg, total = plan.config, plan.total_steps
  warmup = plan.schedule.warmup_steps
  field = "length" if warmup == dict(plan.schedule.lengths)["warmup.length"] else "min_length"
  if warmup > total and not plan.schedule.truncated:
    raise ValueError(
      f"config.warmup.{field}={cfg.warmup[field]!r} is {warmup} steps, longer than the budget "
      f"of {total} steps (config.budget={cfg.budget!r}): shorten the warmup or raise the budget "
      "(or set config.allow_truncated_schedule=True for a smoke test)."
    )
  horizon = total - warmup if cfg.warmup.offset_main else total
  if cfg.schedule.name == "multistep":
    for i, m in enumerate(cfg.schedule.milestones):
      step = plan.to_steps(m, f"schedule.milestones[{i}]")
      if step <= 0 or (step >= horizon and not plan.schedule.truncated):
        raise ValueError(
          f"config.schedule.milestones[{i}]={m!r} is step {step}, outside the run's schedule "
          f"(steps 1..{horizon - 1} of config.budget={cfg.budget!r}): move it inside the budget "
          "(or set config.allow_truncated_schedule=True for a smoke test)."
        )
  steps = np.unique(np.linspace(0, total, num=min(total + 1, 513)).astype(np.int64))
  lrs = np.asarray(plan.lr_fn()(steps, plan.lr), np.float64)
  if not np.all(np.isfinite(lrs)) or np.any(lrs < 0) or not np.any(lrs > 0):
    bad = int(steps[np.argmax(~np.isfinite(lrs) | (lrs < 0))]) if np.any(lrs != 0) else 0
    raise ValueError(
      f"config.schedule: the lr schedule {cfg.schedule.name!r} gives lr={lrs.min():.3g}.."
      f"{lrs.max():.3g} (step {bad}); it must be finite, >= 0 and not 0 everywhere: "
      "check config.schedule and config.warmup."
    )


@errors.as_user_errors
def resolve(
  cfg: ml_collections.ConfigDict,
  *,
  num_devices: int | None = None,
  dataset_meta: registry.DatasetMeta | None = None,
) -> RunPlan:
  """Validates ``cfg`` and resolves it into a ``RunPlan``; does no compute.

  Args:
    cfg: a run config (``base_config()`` plus changes).
    num_devices: devices to shard over; default ``config.parallel.num_devices``.
    dataset_meta: skip the dataset check (the study runner checks once).

  Raises:
    ValueError: naming the offending field and the fix.
  """
  check_run_config(cfg)
  check_known_fields(cfg, base_config())
  _check_seed(cfg.seed)
  _positive_int(cfg.eval_batch_size, "eval_batch_size")
  batch = _positive_int(cfg.batch_size, "batch_size")
  micro = _positive_int(cfg.microbatches, "microbatches")
  if not isinstance(cfg.lr, (int, float)) or not math.isfinite(cfg.lr) or cfg.lr <= 0:
    raise ValueError(f"config.lr must be a positive finite learning rate, got {cfg.lr!r}.")
  if num_devices is None:
    from lrscale.engine import parallel  # pylint: disable=g-import-not-at-top

    num_devices = parallel.num_devices_for(cfg.parallel)
  if batch % (num_devices * micro):
    raise ValueError(
      f"config.batch_size={batch} must be divisible by devices x microbatches = "
      f"{num_devices} x {micro} = {num_devices * micro}; change config.batch_size, "
      "config.microbatches or config.parallel.num_devices."
    )
  if cfg.model.name not in MODEL_NAMES:
    raise ValueError(
      f"config.model.name={cfg.model.name!r} is not a known model; choose one of {MODEL_NAMES}."
    )
  precision.compute_dtype(cfg.model.dtype)  # raises on an unknown dtype
  if not cfg.model.loss_scale_init >= 1.0:
    raise ValueError(
      f"config.model.loss_scale_init={cfg.model.loss_scale_init!r} must be >= 1 (e.g. 2**15)."
    )
  if cfg.model.conv_impl not in CONV_IMPLS:
    raise ValueError(
      f"config.model.conv_impl={cfg.model.conv_impl!r} is not a convolution "
      f"implementation; choose one of {CONV_IMPLS}."
    )
  per_micro = batch // micro
  bn_group = _resolve_bn_group(cfg, per_micro, num_devices)
  if cfg.target.mode not in ("max", "min"):
    raise ValueError(f"config.target.mode must be 'max' or 'min', got {cfg.target.mode!r}.")
  ns = cfg.noise_scale
  if ns.enabled and micro == 1 and (ns.splits < 2 or per_micro % ns.splits):
    raise ValueError(
      f"config.noise_scale.splits={ns.splits} must be >= 2 and divide the batch of {per_micro}."
    )
  if not 0.0 <= ns.decay < 1.0:
    raise ValueError(f"config.noise_scale.decay must be in [0, 1), got {ns.decay}.")
  schedule_config.validate(cfg.schedule, cfg.warmup, cfg.plateau)
  optimizers.validate(cfg.optimizer)
  group_warmup.validate_with_optimizer(cfg.warmup, cfg.optimizer)
  scaling.validate(cfg.scaling, cfg.optimizer)

  from lrscale.data import augment, pipeline  # pylint: disable=g-import-not-at-top

  augment.validate(cfg.dataset.augment, cfg.dataset.image_size)
  pipeline.resolve_workers(cfg.dataset.workers)
  meta = dataset_meta or registry.check_dataset(cfg.dataset)
  if cfg.dataset.stream and cfg.dataset.name in registry.OFFLINE:
    raise ValueError(
      f"config.dataset.stream=True needs a TFDS dataset; {cfg.dataset.name!r} is "
      "offline and in memory (use lrscale_digits to stream the digits)."
    )
  if (meta.streamed or cfg.dataset.stream) and cfg.batch_ramp.milestones:
    raise ValueError(
      "config.batch_ramp with a streamed dataset is not supported; use an "
      "in-memory dataset or drop the ramp."
    )
  if any(d is None for d in meta.input_shape):
    size = cfg.dataset.image_size
    if size <= 0:
      raise ValueError(
        f"config.dataset.name={meta.name!r} has variable-size images {meta.input_shape}; set "
        "config.dataset.image_size (e.g. 224) to center-crop and resize them."
      )
    if not (meta.streamed or cfg.dataset.stream):
      raise ValueError(
        f"config.dataset.image_size: {meta.name!r} has variable-size images, "
        "which are read through the stream: set config.dataset.stream=True."
      )
    meta = dataclasses.replace(meta, input_shape=(size, size, meta.input_shape[-1]))
  if meta.model and cfg.model.name != meta.model:
    raise ValueError(
      f"config.model.name={cfg.model.name!r}: dataset {meta.name!r} is evaluated exactly "
      f"for one model; set config.model.name={meta.model!r}."
    )
  task = tasks.get_task(meta.task)
  task.check_metric(cfg.target.metric, cfg.target.mode, "target.metric")
  if cfg.plateau.enabled:
    task.check_metric(cfg.plateau.metric, cfg.plateau.mode, "plateau.metric")
  if cfg.early_stopping.enabled:
    early_stopping.validate_config(cfg.early_stopping)
    task.check_metric(cfg.early_stopping.metric, cfg.early_stopping.mode, "early_stopping.metric")
  init_from.validate_config(cfg.init, cfg.optimizer.name)
  if meta.num_train is not None and batch > meta.num_train:
    raise ValueError(
      f"config.batch_size={batch} exceeds the {meta.num_train} training "
      f"examples of {meta.name}; use at most the full training set."
    )

  ramp_cfg = cfg.batch_ramp
  if ramp_cfg.milestones and (not isinstance(ramp_cfg.factor, int) or ramp_cfg.factor < 2):
    raise ValueError(
      f"config.batch_ramp.factor must be an integer >= 2 (the batch grows by "
      f"whole microbatches), got {ramp_cfg.factor!r}."
    )
  if ramp_cfg.milestones and ns.enabled:
    raise ValueError(
      "config.noise_scale.enabled with config.batch_ramp: the noise-scale "
      "estimator needs a fixed batch; turn one of them off."
    )
  ramp = units.make_batch_ramp(
    tuple(ramp_cfg.milestones),
    factor=int(ramp_cfg.factor),
    batch_size=batch,
    num_train_examples=meta.num_train,
    tokens_per_example=meta.tokens_per_example,
  )

  def steps(field: str) -> int:
    return units.ramp_to_steps(
      cfg[field],
      phases=ramp,
      batch_size=batch,
      num_train_examples=meta.num_train,
      field=field,
      tokens_per_example=meta.tokens_per_example,
    )

  total = steps("budget")
  if total <= 0:
    raise ValueError(f"config.budget={cfg.budget!r} resolves to 0 steps at batch {batch}.")
  scaled = scaling.apply_scaling(
    cfg.scaling, base_lr=float(cfg.lr), batch_size=batch, optimizer_cfg=cfg.optimizer
  )
  opt_cfg = ml_collections.ConfigDict(cfg.optimizer.to_dict())
  for key, value in scaled.optimizer_overrides.items():
    opt_cfg[key] = value
  max_loss = float(cfg.divergence.max_loss)
  if max_loss < 0:
    raise ValueError("config.divergence.max_loss must be >= 0 (0 = automatic).")
  resolved = ml_collections.ConfigDict(cfg.to_dict())
  to_steps = functools.partial(
    units.ramp_to_steps,
    phases=ramp,
    batch_size=batch,
    num_train_examples=meta.num_train,
    tokens_per_example=meta.tokens_per_example,
  )
  truncated = bool(cfg.allow_truncated_schedule)  # a bool field: ConfigDict checks the type
  schedule = schedule_build.resolve_schedule(
    cfg.schedule, cfg.warmup, total_steps=total, to_steps=to_steps, truncated=truncated
  )
  plan = RunPlan(
    config=ml_collections.FrozenConfigDict(resolved),
    dataset=meta,
    batch_size=batch,
    microbatches=micro,
    num_devices=num_devices,
    bn_group_size=bn_group,
    lr=float(scaled.lr),
    optimizer=ml_collections.FrozenConfigDict(opt_cfg),
    scaled=scaled,
    total_steps=total,
    ramp=ramp,
    log_every=max(1, steps("log_every")),
    sync_every=max(1, steps("sync_every")),
    eval_every=max(1, steps("eval_every")),
    checkpoint_every=max(1, steps("checkpoint_every")),
    max_loss=max_loss,
    schedule=schedule,
  )
  _check_schedule(plan)
  return plan


def to_json(plan: RunPlan) -> str:
  """config.json: the config as given plus the resolved numbers."""
  return json.dumps(
    dict(config=plan.config.to_dict(), resolved=plan.summary()),
    indent=2,
    default=str,
    sort_keys=True,
  )
