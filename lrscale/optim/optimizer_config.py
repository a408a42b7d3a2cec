"""``config.optimizer``: the optimizers lrscale knows, their defaults, validation.

The fields are documented per optimizer in docs/optimizers.md; the chain each
name builds is in :mod:`lrscale.optim.optimizers`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import ml_collections
from ml_collections import config_dict

from lrscale.optim import param_groups

Hparams = dict[str, float]

# Per-optimizer defaults of the placeholder fields (momentum, b1, b2, eps,
# trust_coefficient). A key present means the optimizer uses that field; an
# explicitly set field that an optimizer does not use is a config error.
# Values follow optax (PyTorch where optax has no opinion).
DEFAULTS: Mapping[str, Mapping[str, float]] = {
  "sgd": {},
  "momentum": {"momentum": 0.9},
  "nesterov": {"momentum": 0.9},
  "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
  "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
  # b2 is RMSProp's squared-gradient decay (optax `decay`), so the adam_sde
  # rule treats it like Adam's b2. momentum 0 = plain RMSProp.
  "rmsprop": {"b2": 0.9, "eps": 1e-8, "momentum": 0.0},
  "adagrad": {"eps": 1e-7},
  "lars": {"momentum": 0.9, "eps": 0.0, "trust_coefficient": 1e-3},
  "lamb": {"b1": 0.9, "b2": 0.999, "eps": 1e-6},
  # b1 here is schedule-free's interpolation weight, not a gradient EMA.
  "schedule_free_sgd": {"b1": 0.9},
  "schedule_free_adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
  # Muon (Jordan et al. 2024): momentum = Muon's beta on 2-D weights; b1, b2
  # and eps are those of the AdamW that updates every other parameter.
  "muon": {"momentum": 0.95, "b1": 0.9, "b2": 0.999, "eps": 1e-8},
}
OPTIMIZERS: tuple[str, ...] = tuple(DEFAULTS)
SCHEDULE_FREE: frozenset[str] = frozenset({"schedule_free_sgd", "schedule_free_adamw"})
DECOUPLED_WEIGHT_DECAY: frozenset[str] = frozenset({"adamw", "lamb", "schedule_free_adamw", "muon"})
# Betas that are EMA decay rates of gradient moments (what Malladi et al.'s
# SDE rule rescales); rmsprop's and lars' `momentum` is heavy-ball, and
# schedule-free's b1 an interpolation weight, so neither is listed.
EMA_BETAS: Mapping[str, tuple[str, ...]] = {
  "adam": ("b1", "b2"),
  "adamw": ("b1", "b2"),
  "lamb": ("b1", "b2"),
  "rmsprop": ("b2",),
  "schedule_free_adamw": ("b2",),
}
DECAY_MASKS = ("no_bias_norm", "all", "none")
TRUST_MASKS = ("all", "no_bias_norm")
MOMENTUM_FORMS = ("optax", "goyal")
_PLACEHOLDERS = ("momentum", "b1", "b2", "eps", "trust_coefficient")
_LR = "learning_rate"


def default_config() -> ml_collections.ConfigDict:
  """Returns ``config.optimizer`` with every field typed.

  Placeholders (``None`` until set) take the per-optimizer default in
  :data:`DEFAULTS`; see docs/optimizers.md for the meaning per optimizer.
  """
  return ml_collections.ConfigDict(
    {
      "name": "momentum",
      "momentum": config_dict.placeholder(float),
      "nesterov": False,
      "b1": config_dict.placeholder(float),
      "b2": config_dict.placeholder(float),
      "eps": config_dict.placeholder(float),
      "weight_decay": 0.0,
      "decay_mask": "no_bias_norm",
      "trust_mask": "all",
      "trust_coefficient": config_dict.placeholder(float),
      "lr_multipliers": "",
      "grad_clip_norm": 0.0,
      "momentum_form": "optax",
      "momentum_correction": True,
    }
  )


def field(name: str) -> str:
  return f"config.optimizer.{name}"


def uses_momentum(hp: Mapping[str, float]) -> bool:
  """Whether resolved config values give heavy-ball momentum."""
  return hp.get("momentum", 0.0) > 0.0


def resolved_hparams(optimizer_cfg: ml_collections.ConfigDict) -> Hparams:
  """Effective numeric hyperparameters (placeholders filled from DEFAULTS).

  Only the fields the optimizer uses are returned, plus ``weight_decay``.

  Raises:
    ValueError: unknown ``config.optimizer.name``.
  """
  name = optimizer_cfg.name
  if name not in DEFAULTS:
    raise ValueError(f"{field('name')} must be one of {', '.join(OPTIMIZERS)}; got {name!r}.")
  hp = {
    k: float(v) if optimizer_cfg.get(k) is None else float(optimizer_cfg.get(k))
    for k, v in DEFAULTS[name].items()
  }
  hp["weight_decay"] = float(optimizer_cfg.weight_decay)
  return hp


def _check_unit_interval(key: str, value: float, *, open_low: bool) -> None:
  low_ok = value > 0 if open_low else value >= 0
  if not (low_ok and value < 1):
    interval = "(0, 1)" if open_low else "[0, 1)"
    raise ValueError(f"{field(key)} must be in {interval}, got {value}.")


def validate(optimizer_cfg: ml_collections.ConfigDict) -> None:
  """Checks ``config.optimizer``; raises ValueError naming the bad field."""
  name = optimizer_cfg.name
  hp = resolved_hparams(optimizer_cfg)
  for key in _PLACEHOLDERS:
    if optimizer_cfg.get(key) is not None and key not in DEFAULTS[name]:
      uses = [o for o in OPTIMIZERS if key in DEFAULTS[o]]
      raise ValueError(
        f"{field(key)} is not used by optimizer {name!r}; unset it "
        f"(it applies to: {', '.join(uses)})."
      )
  if "momentum" in hp:
    _check_unit_interval("momentum", hp["momentum"], open_low=False)
  for key in ("b1", "b2"):
    if key in hp:
      # schedule-free divides by b1 to recover the averaged params.
      _check_unit_interval(key, hp[key], open_low=key == "b1" and name in SCHEDULE_FREE)
  for key in ("eps", "weight_decay", "grad_clip_norm"):
    value = hp[key] if key in hp else optimizer_cfg.get(key)
    if value is not None and not (math.isfinite(value) and value >= 0):
      raise ValueError(f"{field(key)} must be a finite number >= 0, got {value}.")
  if "trust_coefficient" in hp and not hp["trust_coefficient"] > 0:
    raise ValueError(f"{field('trust_coefficient')} must be > 0, got {hp['trust_coefficient']}.")
  for key, allowed in (
    ("decay_mask", DECAY_MASKS),
    ("trust_mask", TRUST_MASKS),
    ("momentum_form", MOMENTUM_FORMS),
  ):
    if optimizer_cfg.get(key) not in allowed:
      raise ValueError(f"{field(key)} must be one of {allowed}, got {optimizer_cfg.get(key)!r}.")
  has_momentum = uses_momentum(hp)
  if optimizer_cfg.nesterov and not has_momentum:
    raise ValueError(
      f"{field('nesterov')}=True needs heavy-ball momentum; optimizer "
      f"{name!r} has none (use name=nesterov, or momentum/lars, or rmsprop "
      "with momentum > 0)."
    )
  if optimizer_cfg.momentum_form == "goyal" and not has_momentum:
    raise ValueError(
      f"{field('momentum_form')}='goyal' needs heavy-ball momentum; "
      f"optimizer {name!r} has none. Use momentum_form='optax'."
    )
  param_groups.parse_multipliers(optimizer_cfg.lr_multipliers)
