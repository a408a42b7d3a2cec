"""The run configuration: files, validation, and resolution to a plan.

A config file (``configs/*.py``) starts from ``base_config()`` (its fields and
defaults: ``lrscale.config_defaults``) and changes what it needs. ``resolve(config)`` is the only place where the config is read as a
whole: it rejects unknown fields and impossible values with one error naming
the field and the fix, converts every length to steps for this run's global
batch size (``lrscale.units``), applies the batch-size scaling rule once
(``lrscale.optim.scaling``), and returns a frozen ``RunPlan`` (``lrscale.plan``). Everything downstream
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
from typing import Any, Mapping

import ml_collections

from lrscale import errors, tasks, units
from lrscale.config_defaults import base_config
from lrscale.data import registry
from lrscale.engine import early_stopping, init_from
from lrscale.models import CONV_IMPLS, MODEL_NAMES
from lrscale.optim import (
  optimizer_config,
  precision,
  scaling,
  schedule_build,
  schedule_config,
)
from lrscale.optim import ultralytics_warmup as group_warmup
from lrscale.plan import RunPlan


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
  optimizer_config.validate(cfg.optimizer)
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
