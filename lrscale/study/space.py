"""The trials of a study: batch sizes x learning rates x seeds (x other params).

A study config (``configs/studies/*.py``) names a base run config and what to
sweep. ``enumerate_trials`` turns it into a deterministic list of ``Trial``s
with stable ids, so every worker and every rerun agrees on what the study is.

Learning rates per batch size are either absolute (``lr.mode='absolute'``) or
multipliers around a scaling rule's prediction (``lr.mode='relative'``: e.g.
log-spaced multipliers around the linear rule, lr = base_lr * B / ref * m),
which keeps the grid centred where the optimum is expected at every B.
``transfer`` names rules for other hyperparameters
(``"beta2_halflife+adamw_timescale"``, :mod:`lrscale.optim.transfer_rules`)
that each trial applies from the base point (``lr.reference_batch``,
``lr.base_lr``, the base config's optimizer): b2 -> b2^(B / B_ref) and
weight_decay -> weight_decay (B / B_ref) base_lr / lr at the trial's own lr,
so tau = B / (lr lambda D) is the base point's at every grid point; the values
are written into the trial's ``config.optimizer``.
Search types: ``grid`` (all combinations), ``random`` (log-uniform lr
multipliers between the grid's extremes) and ``quasirandom`` (a scrambled
Halton sequence over the same range, as Shallue et al. 2018 used).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from typing import Any

import ml_collections
import numpy as np

from lrscale import config as config_lib
from lrscale import errors
from lrscale.optim import scaling, transfer_rules


def default_study_config() -> ml_collections.ConfigDict:
  """Every field a study config may set."""
  s = ml_collections.ConfigDict()
  s.name = "study"
  s.base = ml_collections.ConfigDict()  # a run config (lrscale.config.base_config())
  s.batch_sizes = (32, 64, 128)
  s.seeds = (0,)
  s.lr = ml_collections.ConfigDict(
    dict(
      mode="relative",  # relative: multipliers of the rule's prediction; absolute
      grid=(0.5, 1.0, 2.0),  # multipliers (relative) or learning rates (absolute)
      rule="linear",  # the scaling rule that centres a relative grid
      base_lr=0.1,  # lr at reference_batch for the rule
      reference_batch=256,
    )
  )
  # Transfer rules for other hyperparameters, applied per trial from the base point
  # (lr.reference_batch, lr.base_lr, base optimizer): '' or '+'-joined names of
  # lrscale.optim.transfer_rules.EXTRA_RULES, e.g. 'beta2_halflife+adamw_timescale'.
  s.transfer = ""
  # Other swept run-config fields: "optimizer.momentum=0.9,0.99; warmup.length=0 steps,1 epoch".
  s.params = ""
  # type: grid | random | quasirandom | halving (successive halving over the grid's lrs,
  # lrscale.study.halving: eta = 1 / fraction kept per rung, min_budget = first rung's
  # length, '' = from the problem: S_ref / eta^R, S_ref the steps-to-target of the lr the
  # scaling rule predicts; at least min_steps steps).
  s.search = ml_collections.ConfigDict(
    dict(type="grid", num_trials=0, seed=0, eta=3, min_budget="", min_steps=20)
  )
  # stop_value: where trials stop (unset = value). Harder than value lets each trial run on
  # past its own first passage, which analysis.target_from='seed_mean' needs.
  s.target = ml_collections.ConfigDict(
    dict(
      metric="eval_accuracy",
      value=0.95,
      mode="max",
      stop_value=ml_collections.config_dict.placeholder(float),
    )
  )
  # How lrscale.analysis reads the results (stored in study.json; training ignores it;
  # lrscale.analysis.options). target_from: per_seed (each seed's first eval at the target,
  # median over seeds) | seed_mean (where the monotone fit of the seeds' mean curve meets it:
  # the expected curve's crossing; set target.stop_value past the target). targets: extra
  # target values read from the same eval rows, each fitted on its own (none harder than
  # where trials stop).
  s.analysis = ml_collections.ConfigDict(dict(target_from="per_seed", targets=()))
  s.budget = "30 epochs"  # per trial, in steps, epochs or examples
  s.eval_every = ""  # per trial ('' = the base config's)
  s.stale_claim_s = 120.0  # a claim whose heartbeat is older is taken over
  # Train up to vmap_size trials of one batch size as one vmapped program:
  # 'auto' = only on accelerators (on CPU it measured no faster), 'on', 'off'.
  s.vmap = "auto"
  s.vmap_size = 8
  return s


@dataclasses.dataclass(frozen=True)
class Trial:
  """One training run of a study."""

  id: str
  batch_size: int
  lr: float
  seed: int
  params: tuple[tuple[str, Any], ...] = ()

  def to_json(self) -> dict[str, Any]:
    return dict(
      id=self.id, batch_size=self.batch_size, lr=self.lr, seed=self.seed, params=dict(self.params)
    )


def parse_params(spec: str) -> list[tuple[str, list[Any]]]:
  """Parses ``"optimizer.momentum=0.9,0.99; warmup.length=0 steps,1 epoch"``."""
  out = []
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    if "=" not in part:
      raise ValueError(f"config.params entry {part!r} must look like 'section.field=v1,v2'.")
    key, values = part.split("=", 1)
    out.append((key.strip(), [_literal(v.strip()) for v in values.split(",")]))
  return out


def _literal(text: str) -> Any:
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def rule_lr(study: ml_collections.ConfigDict, batch_size: int) -> float:
  """The lr the study's scaling rule predicts at ``batch_size``."""
  rule_cfg = scaling.default_config()
  rule_cfg.rule = study.lr.rule
  rule_cfg.reference_batch = study.lr.reference_batch
  base = study.base
  return scaling.apply_scaling(
    rule_cfg, base_lr=study.lr.base_lr, batch_size=batch_size, optimizer_cfg=base.optimizer
  ).lr


def _lr_values(
  study, batch_size: int, rng: np.random.Generator | None, unit: float | None
) -> list[float]:
  values = [float(v) for v in study.lr.grid]
  if any(v <= 0 for v in values):
    raise ValueError(f"config.lr.grid must all be positive, got {values}.")
  scale = rule_lr(study, batch_size) if study.lr.mode == "relative" else 1.0
  if unit is not None:  # random / quasirandom: one log-uniform draw in the grid's range
    lo, hi = math.log(min(values)), math.log(max(values))
    return [scale * math.exp(lo + unit * (hi - lo))]
  return [scale * v for v in values]


def trial_id(batch_size: int, lr: float, seed: int, params: tuple[tuple[str, Any], ...]) -> str:
  tag = ""
  if params:
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    tag = "_p" + digest[:6]
  return f"b{batch_size:06d}_lr{lr:.4e}_s{seed}{tag}"


@errors.as_user_errors
def enumerate_trials(study: ml_collections.ConfigDict) -> list[Trial]:
  """All trials of a study, in a fixed order (batch size, params, lr, seed)."""
  if study.lr.mode not in ("relative", "absolute"):
    raise ValueError(f"config.lr.mode must be 'relative' or 'absolute', got {study.lr.mode!r}.")
  if study.search.type not in ("grid", "random", "quasirandom", "halving"):
    raise ValueError(
      f"config.search.type must be grid, random, quasirandom or halving, got {study.search.type!r}."
    )
  if not study.batch_sizes or any(int(b) <= 0 for b in study.batch_sizes):
    raise ValueError(f"config.batch_sizes must be positive integers, got {study.batch_sizes}.")
  if not study.lr.grid:
    raise ValueError("config.lr.grid is empty: give at least one lr (multiplier), e.g. (1.0,).")
  if not study.seeds or any(not 0 <= int(s) < 2**32 for s in study.seeds):
    raise ValueError(
      f"config.seeds must be a non-empty tuple of integers in [0, 2**32), got {study.seeds!r}."
    )
  _check_target_and_analysis(study)
  transfer_extras(study)
  swept = parse_params(study.params)
  combos = [
    tuple(zip([k for k, _ in swept], vals)) for vals in itertools.product(*[v for _, v in swept])
  ] or [()]
  trials = []
  for b in sorted(int(x) for x in study.batch_sizes):
    for combo in combos:
      if study.search.type in ("grid", "halving"):  # halving prunes the grid's points
        for lr in _lr_values(study, b, None, None):
          for seed in study.seeds:
            trials.append(Trial(trial_id(b, lr, seed, combo), b, lr, int(seed), combo))
      else:
        n = study.search.num_trials
        if n <= 0:
          raise ValueError("config.search.num_trials must be > 0 for random/quasirandom search.")
        units_ = _unit_draws(study.search.type, n, seed=study.search.seed + b)
        for u in units_:
          for seed in study.seeds:
            lr = _lr_values(study, b, None, float(u))[0]
            trials.append(Trial(trial_id(b, lr, seed, combo), b, lr, int(seed), combo))
  return trials


def stop_value(study: ml_collections.ConfigDict) -> float:
  """The target value at which trials stop: ``target.stop_value``, else ``target.value``."""
  value = study.target.get("stop_value")
  return float(study.target.value if value is None else value)


def _check_target_and_analysis(study: ml_collections.ConfigDict) -> None:
  from lrscale.analysis import options  # pylint: disable=g-import-not-at-top

  t = study.target
  if t.get("stop_value") is not None and options._harder(t.value, t.stop_value, t.mode):
    raise ValueError(
      f"config.target.stop_value={t.stop_value}: trials would stop before target.value="
      f"{t.value} (mode {t.mode}); make it at least as hard, or unset it"
    )
  analysis = study.get("analysis")
  options.parse(
    None if analysis is None else analysis.to_dict(), mode=t.mode, stop_value=stop_value(study)
  )


def _unit_draws(kind: str, n: int, *, seed: int) -> np.ndarray:
  if kind == "random":
    return np.random.default_rng(seed).uniform(size=n)
  from scipy.stats import qmc  # pylint: disable=g-import-not-at-top

  return qmc.Halton(d=1, scramble=True, seed=seed).random(n)[:, 0]


def transfer_extras(study: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The rules of ``config.transfer``, checked against the base optimizer.

  Raises:
    ValueError: an unknown or repeated name, or an optimizer without what a rule rescales.
  """
  spec = study.get("transfer", "") or ""
  names = [p.strip() for p in str(spec).split("+")] if spec else []
  bad = [n for n in names if n not in transfer_rules.EXTRA_RULES]
  if bad or len(set(names)) != len(names):
    raise ValueError(
      f"config.transfer must be '' or '+'-joined names of {transfer_rules.EXTRA_RULES}, "
      f"each once (e.g. 'beta2_halflife+adamw_timescale'); got {spec!r}. The lr's rule "
      "is config.lr.rule / config.lr.grid."
    )
  if names:
    transfer_rules.validate(tuple(names), "none", study.base.optimizer, field="config.transfer")
    ref = study.lr.reference_batch
    if not (isinstance(ref, int) and ref > 0) or not float(study.lr.base_lr) > 0:
      raise ValueError(
        "config.transfer scales from (config.lr.reference_batch, config.lr.base_lr): set "
        f"both > 0 (got {ref!r}, {study.lr.base_lr!r})."
      )
  return tuple(names)


def trial_config(study: ml_collections.ConfigDict, trial: Trial) -> ml_collections.ConfigDict:
  """The run config of one trial: the base with this trial's values applied."""
  cfg = ml_collections.ConfigDict(study.base.to_dict())
  cfg.batch_size = trial.batch_size
  cfg.lr = trial.lr
  cfg.scaling.rule = "none"  # the trial's lr is already absolute
  cfg.seed = trial.seed
  cfg.budget = study.budget
  if study.eval_every:
    cfg.eval_every = study.eval_every
  cfg.target.metric = study.target.metric
  cfg.target.value = stop_value(study)
  cfg.target.mode = study.target.mode
  extras = transfer_extras(study)
  if extras:
    values, _ = transfer_rules.overrides(
      extras,
      k=trial.batch_size / study.lr.reference_batch,
      base_lr=float(study.lr.base_lr),
      lr=trial.lr,
      optimizer_cfg=study.base.optimizer,
    )
    for key, value in values.items():
      cfg.optimizer[key] = float(value)
  for key, value in trial.params:
    try:
      config_lib.set_field(cfg, key, value)
    except ValueError:
      raise ValueError(f"config.params names {key!r}, which is not a run-config field.") from None
  return cfg
