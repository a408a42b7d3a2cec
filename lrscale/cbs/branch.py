"""The CBS config, branch arithmetic, and starting a branch from a reference checkpoint."""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import ml_collections

from lrscale import config as config_lib
from lrscale import errors
from lrscale.engine.step import TrainState
from lrscale.optim import hyperparams, optimizer_config

_F = "config"


def default_config() -> ml_collections.ConfigDict:
  """Every field of a CBS config (``configs/cbs/*.py`` start here)."""
  c = ml_collections.ConfigDict()
  c.reference = config_lib.base_config()  # the reference run at batch B
  c.every = "1 epochs"  # spacing of branch points (the reference checkpoints there)
  c.num_points = 4  # branch points t_i = i * every, i = 1..num_points
  c.include_init = True  # also branch from the initialisation (t = 0)
  c.multipliers = (1, 2, 4, 8)  # k: branch batch k x B; must start at 1
  c.seeds = (0, 1)  # data order of the branches (intervals are over these)
  c.branch_length = "1 epochs"  # examples (or tokens) every branch trains for
  c.rule = ""  # lr rule across k ('' = sqrt for Adam-type, linear for SGD-type)
  c.tolerance = 0.01  # |loss_k - loss_1| allowed, in the metric's units
  c.metric = "eval_loss"
  return c


def default_rule(optimizer_cfg: Any) -> str:
  """sqrt for optimizers with a second-moment EMA (Adam-type), linear otherwise."""
  return "sqrt" if "b2" in optimizer_config.DEFAULTS.get(optimizer_cfg.name, {}) else "linear"


@errors.as_user_errors
def validate(cfg: ml_collections.ConfigDict) -> config_lib.RunPlan:
  """Checks the CBS fields and resolves the reference; returns its plan (no compute).

  Raises:
    ValueError: naming the field and the fix.
  """
  known = default_config()
  for key in cfg.keys():
    if key not in known:
      raise ValueError(f"{_F}.{key} is not a CBS field; known: {sorted(known.keys())}.")
  ks = tuple(cfg.multipliers)
  if (
    not ks
    or ks[0] != 1
    or any(not isinstance(k, int) or k < 1 for k in ks)
    or list(ks) != sorted(set(ks))
  ):
    raise ValueError(
      f"{_F}.multipliers={ks!r} must be increasing integers starting at 1 (e.g. (1, 2, 4, 8))."
    )
  if not (isinstance(cfg.num_points, int) and cfg.num_points >= 1):
    raise ValueError(f"{_F}.num_points must be an integer >= 1, got {cfg.num_points!r}.")
  if not cfg.seeds:
    raise ValueError(f"{_F}.seeds must name at least one seed.")
  if not cfg.tolerance >= 0:
    raise ValueError(f"{_F}.tolerance must be >= 0, got {cfg.tolerance!r}.")
  ref = reference_config(cfg)
  plan = config_lib.resolve(ref)
  if ref.plateau.enabled or ref.batch_ramp.milestones:
    raise ValueError(
      f"{_F}.reference: reduce-on-plateau and batch ramps make the lr at a checkpoint "
      "depend on the run's history; turn them off for a CBS reference."
    )
  if ref.warmup.init_momentum is not None or ref.warmup.bias_init_lr is not None:
    raise ValueError(
      f"{_F}.reference.warmup.init_momentum / bias_init_lr: branches take the reference's "
      "optimizer state, which Ultralytics' per-group warmup changes; unset them for a CBS reference."
    )
  plan.task.check_metric(cfg.metric, None, "metric")
  last = cfg.num_points * plan.checkpoint_every
  if last > plan.total_steps:
    raise ValueError(
      f"{_F}.every x num_points = {last} steps exceeds the reference budget of "
      f"{plan.total_steps} steps; raise config.reference.budget or lower num_points."
    )
  biggest = ks[-1] * plan.batch_size
  if plan.dataset.num_train is not None and biggest > plan.dataset.num_train:
    raise ValueError(
      f"{_F}.multipliers: {ks[-1]} x {plan.batch_size} = {biggest} exceeds the "
      f"{plan.dataset.num_train} training examples; drop the largest multipliers."
    )
  branch_plan(cfg, plan, step=0, k=ks[-1], seed=cfg.seeds[0])  # its errors, before compute
  return plan


def reference_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The reference run: checkpoints at every branch point, all of them kept."""
  ref = ml_collections.ConfigDict(cfg.reference.to_dict())
  ref.checkpoint_every = cfg.every
  ref.checkpoint_keep = cfg.num_points + 1
  ref.target.value = None
  return ref


def branch_points(cfg: ml_collections.ConfigDict, plan: config_lib.RunPlan) -> list[int]:
  """Steps of the reference to branch from: 0 (if include_init), every, 2 every, ..."""
  points = [i * plan.checkpoint_every for i in range(1, cfg.num_points + 1)]
  return ([0] if cfg.include_init else []) + points


def reference_lr(plan: config_lib.RunPlan, step: int) -> float:
  """The reference's scheduled lr at ``step`` (its plan's schedule, exactly)."""
  return float(plan.lr_fn()(jnp.int32(step), jnp.float32(plan.lr)))


def branch_plan(
  cfg: ml_collections.ConfigDict, plan: config_lib.RunPlan, *, step: int, k: int, seed: int
) -> config_lib.RunPlan:
  """The branch at k x B from reference step ``step``: constant lr = rule(lr_ref(t), k).

  The lr rule (and any '+' extras such as beta2_halflife) is applied by the
  usual scaling code with the reference batch as ``reference_batch``, so a
  branch at k = 1 continues the reference at its current lr.
  """
  ref = plan.config
  c = ml_collections.ConfigDict(ref.to_dict())
  c.batch_size = k * plan.batch_size
  c.seed = int(seed)
  c.lr = reference_lr(plan, step)
  c.scaling.rule = cfg.rule or default_rule(ref.optimizer)
  c.scaling.reference_batch = plan.batch_size
  for key in ("coef", "exponent", "max_lr"):
    c.scaling[key] = None
  c.scaling.fitted_from = ""
  c.optimizer = ml_collections.ConfigDict(ref.optimizer.to_dict())
  for key, value in plan.optimizer.items():  # the reference's own resolved values
    if key in optimizer_config.DEFAULTS.get(ref.optimizer.name, {}) or key == "weight_decay":
      c.optimizer[key] = value
  c.schedule.name = "constant"
  c.warmup.length = "0 steps"
  c.warmup.min_length = "0 steps"
  c.budget = cfg.branch_length
  c.eval_every = c.checkpoint_every = c.sync_every = cfg.branch_length
  c.noise_scale.enabled = False
  c.target.value = None
  return config_lib.resolve(c)


def branch_dir(workdir: str, step: int, k: int, seed: int) -> str:
  return os.path.join(workdir, "branches", f"t{step}_k{k}_s{seed}")


def branch_state(fresh: TrainState, restored: TrainState) -> TrainState:
  """The branch's start: the reference's params, statistics and optimizer moments.

  Step, lr and noise state are the branch's own (its constant lr from step 0),
  and so are the injected hyperparameters (b2, weight decay under a '+' rule):
  they live in the optimizer state, so they are copied from the branch's fresh
  state rather than kept from the reference.
  """
  hp = {k: v for k, v in hyperparams.current_hparams(fresh.opt_state).items() if k != "lr"}
  return fresh._replace(
    params=restored.params,
    batch_stats=restored.batch_stats,
    opt_state=hyperparams.set_hyperparams(restored.opt_state, **hp),
  )
