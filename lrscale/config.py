"""The run configuration: its fields, their validation, and resolution to a plan.

A config file (``configs/*.py``) starts from ``base_config()`` and changes what
it needs. ``resolve(config)`` is the only place where the config is read as a
whole: it rejects unknown fields and impossible values with one error naming
the field and the fix, converts every length to steps for this run's global
batch size (``lrscale.units``), applies the batch-size scaling rule once
(``lrscale.scaling``), and returns a frozen ``RunPlan``. Everything downstream
reads the plan, never the raw config, so a value cannot be interpreted twice.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from lrscale import optimizers, scaling, schedules, units
from lrscale.data import registry
from lrscale.models import CONV_IMPLS, MODEL_NAMES


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
      standardize=True,  # per-channel mean/std of the train split (in-memory data)
      stream=False,  # stream TFDS train batches through grain (imagenet2012 always)
      # Variable-size images (imagenette, imagenet2012) are center-cropped and
      # resized to image_size x image_size; 0 = the dataset's own fixed size.
      image_size=0,
    )
  )
  c.model = ml_collections.ConfigDict(
    dict(
      name="mlp",  # mlp | cnn | resnet8 | resnet20 | resnet18 | resnet50
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
    )
  )
  c.batch_size = 128  # global batch: examples per optimizer step
  c.microbatches = 1  # gradient accumulation: the batch is split into k parts
  c.lr = 0.1  # base learning rate, before the scaling rule
  c.scaling = scaling.default_config()
  c.optimizer = optimizers.default_config()
  c.schedule = schedules.default_config()
  c.warmup = schedules.default_warmup_config()
  c.plateau = schedules.default_plateau_config()

  # Smith et al. 2017: multiply the global batch by `factor` at each milestone
  # (epochs or examples) instead of decaying the lr. Realised as more
  # microbatches of the same size, so one compiled step serves every phase.
  c.batch_ramp = ml_collections.ConfigDict(dict(milestones=(), factor=5))
  c.budget = "30 epochs"  # training length: steps, epochs or examples
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
  c.noise_scale = ml_collections.ConfigDict(
    dict(
      enabled=False,  # log McCandlish et al.'s B_simple during training
      splits=4,  # small batches per step for the two-batch estimator
      decay=0.95,  # EMA of numerator and denominator
    )
  )
  c.parallel = ml_collections.ConfigDict(
    dict(
      num_devices=-1,  # -1 = every visible device
      distributed=False,  # call jax.distributed.initialize (multi-host)
      coordinator_address="",
      num_processes=1,
      process_id=0,
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

  @property
  def steps_per_epoch(self) -> float:
    return self.dataset.num_train / self.batch_size

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
    )
    return phase.start_step, max(1, every)

  def microbatches_at(self, step: int) -> int:
    """Microbatches of step ``step`` (0-based, the step about to run)."""
    return self.microbatches * units.multiplier_at_step(step, self.ramp)

  def lr_fn(self) -> Callable[[Any, Any], Any]:
    """``(step, peak_lr) -> lr``: the schedule, traceable with a traced peak lr."""
    cfg = self.config

    def fn(step, peak_lr):
      sched = schedules.build_schedule(
        cfg.schedule,
        cfg.warmup,
        peak_lr=peak_lr,
        total_steps=self.total_steps,
        to_steps=self.to_steps,
      )
      return sched(step)

    return fn

  def summary(self) -> dict[str, Any]:
    """The resolved numbers, for config.json and the log."""
    return dict(
      batch_size=self.batch_size,
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
    )


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
  check_known_fields(cfg, base_config())
  batch = _positive_int(cfg.batch_size, "batch_size")
  micro = _positive_int(cfg.microbatches, "microbatches")
  if not isinstance(cfg.lr, (int, float)) or not math.isfinite(cfg.lr) or cfg.lr <= 0:
    raise ValueError(f"config.lr must be a positive finite learning rate, got {cfg.lr!r}.")
  if num_devices is None:
    from lrscale import parallel  # pylint: disable=g-import-not-at-top

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
  if cfg.model.conv_impl not in CONV_IMPLS:
    raise ValueError(
      f"config.model.conv_impl={cfg.model.conv_impl!r} is not a convolution "
      f"implementation; choose one of {CONV_IMPLS}."
    )
  per_micro = batch // micro
  bn_group = _resolve_bn_group(cfg, per_micro, num_devices)
  if cfg.target.mode not in ("max", "min"):
    raise ValueError(f"config.target.mode must be 'max' or 'min', got {cfg.target.mode!r}.")
  if not cfg.target.metric.startswith("eval_"):
    raise ValueError(
      f"config.target.metric={cfg.target.metric!r}: targets are eval metrics "
      "(eval_accuracy, eval_loss)."
    )
  ns = cfg.noise_scale
  if ns.enabled and micro == 1 and (ns.splits < 2 or per_micro % ns.splits):
    raise ValueError(
      f"config.noise_scale.splits={ns.splits} must be >= 2 and divide the batch of {per_micro}."
    )
  if not 0.0 <= ns.decay < 1.0:
    raise ValueError(f"config.noise_scale.decay must be in [0, 1), got {ns.decay}.")
  schedules.validate(cfg.schedule, cfg.warmup, cfg.plateau)
  optimizers.validate(cfg.optimizer)
  scaling.validate(cfg.scaling, cfg.optimizer)

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
  if batch > meta.num_train:
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
  )

  def steps(field: str) -> int:
    return units.ramp_to_steps(
      cfg[field], phases=ramp, batch_size=batch, num_train_examples=meta.num_train, field=field
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
  return RunPlan(
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
  )


def to_json(plan: RunPlan) -> str:
  """config.json: the config as given plus the resolved numbers."""
  return json.dumps(
    dict(config=plan.config.to_dict(), resolved=plan.summary()),
    indent=2,
    default=str,
    sort_keys=True,
  )
