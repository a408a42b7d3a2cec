"""Learning-rate scaling rules: base hyperparameters at a reference batch -> B.

Applied once, when the run config is resolved; the returned
:class:`ScaledHparams` is logged and its values written into the config, so a
resolved config must not be scaled again. With ``k = B / reference_batch``:

============  ==============================================================
``none``      lr = base_lr
``linear``    lr = base_lr * k                      (Goyal et al. 2017)
``sqrt``      lr = base_lr * sqrt(k)
``adam_sde``  lr = base_lr * sqrt(k); 1 - beta -> k (1 - beta) for the EMA
              betas; eps -> eps / sqrt(k)            (Malladi et al. 2022)
``fitted``    lr = min(coef * B**exponent, max_lr); base_lr ignored
============  ==============================================================

Rules for hyperparameters other than the lr are appended with ``+`` to at most
one of the lr rules above (``"sqrt+beta2_halflife+adamw_timescale"``; alone,
the lr is unchanged): ``beta2_halflife`` (b2 -> b2 ** k, Marek et al. 2025)
and ``adamw_timescale`` (weight_decay -> weight_decay * k * base_lr / lr,
Wang & Aitchison 2024; Bergsma et al. 2025), in
:mod:`lrscale.optim.transfer_rules`.

A fitted rule comes from ``config.scaling.coef``/``exponent`` or from a
study's analysis.json (``config.scaling.fitted_from``) whose key
:data:`LR_RULE_KEY` holds::

    "lr_rule": {"coef": float, "exponent": float, "max_lr": float | null,
                "reference": str}

``reference`` says what the rule was fitted to (free text, e.g. the study and
the target). Use :func:`lr_rule_json` to write it and :func:`read_lr_rule` to
read it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, NamedTuple

import ml_collections
from ml_collections import config_dict

from lrscale.optim import optimizer_config, transfer_rules
from lrscale.optim.transfer_rules import EXTRA_RULES

RULES: tuple[str, ...] = ("none", "linear", "sqrt", "adam_sde", "fitted")
LR_RULE_KEY = "lr_rule"
_F = "config.scaling"


def default_config() -> ml_collections.ConfigDict:
  """Returns ``config.scaling`` with every field typed."""
  return ml_collections.ConfigDict(
    {
      "rule": "none",
      "reference_batch": 256,
      # fitted rule: lr = min(coef * B**exponent, max_lr)
      "coef": config_dict.placeholder(float),
      "exponent": config_dict.placeholder(float),
      "max_lr": config_dict.placeholder(float),
      "fitted_from": "",  # path to an analysis.json with key "lr_rule"
      # adam_sde: where k (1 - beta) >= 1, set beta = 0 with a warning instead
      # of raising.
      "clip_betas": False,
    }
  )


class LrRule(NamedTuple):
  """A fitted rule lr(B) = min(coef * B**exponent, max_lr)."""

  coef: float
  exponent: float
  max_lr: float | None
  reference: str


class ScaledHparams(NamedTuple):
  """Result of :func:`apply_scaling`.

  Attributes:
    lr: the peak/base learning rate to use at this batch size.
    optimizer_overrides: ``config.optimizer`` fields to overwrite (adam_sde).
    k: batch_size / reference_batch (informational for every rule).
    rule: the rule applied.
    description: one human-readable line for the log.
  """

  lr: float
  optimizer_overrides: dict[str, float]
  k: float
  rule: str
  description: str


def lr_rule_json(rule: LrRule) -> dict[str, Any]:
  """The JSON value to store under :data:`LR_RULE_KEY` in analysis.json."""
  return {
    "coef": float(rule.coef),
    "exponent": float(rule.exponent),
    "max_lr": None if rule.max_lr is None else float(rule.max_lr),
    "reference": str(rule.reference),
  }


def _check_rule_values(coef: Any, exponent: Any, max_lr: Any, where: str) -> None:
  if not (isinstance(coef, (int, float)) and math.isfinite(coef) and coef > 0):
    raise ValueError(f"{where}coef must be a finite number > 0, got {coef!r}.")
  if not (isinstance(exponent, (int, float)) and math.isfinite(exponent)):
    raise ValueError(f"{where}exponent must be a finite number, got {exponent!r}.")
  if max_lr is not None and not (
    isinstance(max_lr, (int, float)) and math.isfinite(max_lr) and max_lr > 0
  ):
    raise ValueError(f"{where}max_lr must be null or a finite number > 0, got {max_lr!r}.")


def read_lr_rule(path: str) -> LrRule:
  """Reads and checks the ``"lr_rule"`` entry of an analysis.json.

  Raises:
    ValueError: missing file/key or bad values; names
      ``config.scaling.fitted_from`` and the file.
  """
  where = f"{_F}.fitted_from={path!r}:"
  if not os.path.isfile(path):
    raise ValueError(
      f"{where} no such file; point it at a study's "
      "analysis.json or set config.scaling.coef/exponent."
    )
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{where} not valid JSON ({e}).") from None
  entry = data.get(LR_RULE_KEY) if isinstance(data, dict) else None
  if not isinstance(entry, dict):
    raise ValueError(
      f'{where} has no object under key "{LR_RULE_KEY}"; run '
      "the study analysis that fits the lr rule first."
    )
  missing = {"coef", "exponent"} - set(entry)
  if missing:
    raise ValueError(f'{where} "{LR_RULE_KEY}" lacks {sorted(missing)}.')
  _check_rule_values(
    entry["coef"], entry["exponent"], entry.get("max_lr"), f'{where} "{LR_RULE_KEY}".'
  )
  return LrRule(
    coef=float(entry["coef"]),
    exponent=float(entry["exponent"]),
    max_lr=(None if entry.get("max_lr") is None else float(entry["max_lr"])),
    reference=str(entry.get("reference", "")),
  )


def _fitted_rule(scaling_cfg: ml_collections.ConfigDict) -> LrRule:
  """The fitted rule from the file or the config (never both)."""
  in_cfg = [k for k in ("coef", "exponent") if scaling_cfg.get(k) is not None]
  if scaling_cfg.fitted_from:
    if in_cfg:
      raise ValueError(
        f"{_F}.fitted_from is set, so {_F}.{in_cfg[0]} must be unset: the "
        "coefficients come from one place. Unset one of them."
      )
    rule = read_lr_rule(scaling_cfg.fitted_from)
  else:
    if len(in_cfg) != 2:
      raise ValueError(
        f"{_F}.rule='fitted' needs {_F}.coef and {_F}.exponent, or "
        f"{_F}.fitted_from (a path to an analysis.json)."
      )
    rule = LrRule(
      coef=float(scaling_cfg.coef),
      exponent=float(scaling_cfg.exponent),
      max_lr=None,
      reference="config.scaling",
    )
    _check_rule_values(rule.coef, rule.exponent, None, f"{_F}.")
  if scaling_cfg.max_lr is not None:
    # The config's cap overrides the file's.
    _check_rule_values(rule.coef, rule.exponent, scaling_cfg.max_lr, f"{_F}.")
    rule = rule._replace(max_lr=float(scaling_cfg.max_lr))
  return rule


def parse_rule(rule: Any) -> tuple[str, tuple[str, ...]]:
  """``"sqrt+beta2_halflife"`` -> ``("sqrt", ("beta2_halflife",))``; lr rule 'none' if absent.

  Raises:
    ValueError: naming ``config.scaling.rule`` for unknown, repeated or two lr rules.
  """
  parts = [p.strip() for p in str(rule).split("+")] if isinstance(rule, str) else [repr(rule)]
  unknown = [p for p in parts if p not in RULES + EXTRA_RULES]
  lr_rules = [p for p in parts if p in RULES]
  extras = tuple(p for p in parts if p in EXTRA_RULES)
  if unknown or len(lr_rules) > 1 or len(set(extras)) != len(extras):
    raise ValueError(
      f"{_F}.rule must be one of {RULES} (at most one lr rule), optionally followed by "
      f"'+'-joined rules of {EXTRA_RULES}, each once (e.g. 'sqrt+beta2_halflife'); "
      f"got {rule!r}."
    )
  return (lr_rules[0] if lr_rules else "none"), extras


def validate(
  scaling_cfg: ml_collections.ConfigDict, optimizer_cfg: ml_collections.ConfigDict
) -> None:
  """Checks ``config.scaling`` against ``config.optimizer``.

  Raises:
    ValueError: message names the offending field and the fix.
  """
  rule, extras = parse_rule(scaling_cfg.rule)
  transfer_rules.validate(extras, rule, optimizer_cfg)
  ref = scaling_cfg.reference_batch
  if not (isinstance(ref, int) and ref > 0):
    raise ValueError(f"{_F}.reference_batch must be an integer > 0, got {ref!r}.")
  if rule == "fitted":
    _fitted_rule(scaling_cfg)
  else:
    for key in ("coef", "exponent", "max_lr"):
      if scaling_cfg.get(key) is not None:
        raise ValueError(
          f"{_F}.{key} only applies to {_F}.rule='fitted' (rule is {rule!r}); unset it."
        )
    if scaling_cfg.fitted_from:
      raise ValueError(
        f"{_F}.fitted_from only applies to {_F}.rule='fitted' (rule is {rule!r}); unset it."
      )
  if rule == "adam_sde":
    name = optimizer_cfg.name
    optimizer_config.resolved_hparams(optimizer_cfg)  # checks the name
    if name not in optimizer_config.EMA_BETAS:
      raise ValueError(
        f"{_F}.rule='adam_sde' (Malladi et al. 2022) rescales the EMA betas "
        f"of Adam/RMSProp-type optimizers, but config.optimizer.name={name!r}"
        f" has none; use one of {sorted(optimizer_config.EMA_BETAS)} or rule "
        "'linear'/'sqrt'."
      )


def _sde_beta(beta: float, k: float, field: str, clip: bool) -> float:
  """1 - beta -> k (1 - beta); beta >= 0 needs k (1 - beta) < 1."""
  one_minus = k * (1.0 - beta)
  if one_minus < 1.0:
    return 1.0 - one_minus
  msg = (
    f"{_F}.rule='adam_sde': k * (1 - {field}) = {k:g} * {1 - beta:g} = "
    f"{one_minus:g} >= 1, so the scaled beta would be <= 0; the SDE rule "
    "does not hold this far from the reference batch."
  )
  if not clip:
    raise ValueError(
      msg + f" Lower the batch size, raise {_F}.reference_batch"
      f", or set {_F}.clip_betas=True to use beta = 0."
    )
  warnings.warn(msg + " Clipping to 0 (config.scaling.clip_betas).", stacklevel=2)
  return 0.0


def apply_scaling(
  scaling_cfg: ml_collections.ConfigDict,
  *,
  base_lr: float,
  batch_size: int,
  optimizer_cfg: ml_collections.ConfigDict,
) -> ScaledHparams:
  """Applies ``config.scaling.rule`` for batch size B = ``batch_size``.

  Args:
    scaling_cfg: ``config.scaling``.
    base_lr: the lr tuned at ``reference_batch`` (ignored by 'fitted').
    batch_size: the global batch size B of this run.
    optimizer_cfg: ``config.optimizer`` (betas/eps read for adam_sde).

  Returns:
    :class:`ScaledHparams`.

  Raises:
    ValueError: invalid config or batch size.
  """
  validate(scaling_cfg, optimizer_cfg)
  if not (isinstance(batch_size, int) and batch_size > 0):
    raise ValueError(f"batch size must be an integer > 0, got {batch_size!r}.")
  rule, extras = parse_rule(scaling_cfg.rule)
  scaled = _apply_lr_rule(
    scaling_cfg, rule, base_lr=base_lr, batch_size=batch_size, optimizer_cfg=optimizer_cfg
  )
  return _apply_extras(scaled, extras, base_lr=base_lr, optimizer_cfg=optimizer_cfg)


def _apply_extras(
  scaled: ScaledHparams,
  extras: tuple[str, ...],
  *,
  base_lr: float,
  optimizer_cfg: ml_collections.ConfigDict,
) -> ScaledHparams:
  if not extras:
    return scaled
  extra, parts = transfer_rules.overrides(
    extras, k=scaled.k, base_lr=base_lr, lr=scaled.lr, optimizer_cfg=optimizer_cfg
  )
  overrides = {**scaled.optimizer_overrides, **extra}
  return scaled._replace(
    optimizer_overrides=overrides,
    rule="+".join((scaled.rule,) + extras),
    description="; ".join([scaled.description] + parts),
  )


def _apply_lr_rule(
  scaling_cfg: ml_collections.ConfigDict,
  rule: str,
  *,
  base_lr: float,
  batch_size: int,
  optimizer_cfg: ml_collections.ConfigDict,
) -> ScaledHparams:
  """The lr rule's part of :func:`apply_scaling` (and adam_sde's betas and eps)."""
  ref = scaling_cfg.reference_batch
  k = batch_size / ref
  if rule != "fitted" and not (math.isfinite(base_lr) and base_lr > 0):
    raise ValueError(f"base lr must be a finite number > 0, got {base_lr!r}.")
  overrides: dict[str, float] = {}
  if rule == "none":
    return ScaledHparams(
      float(base_lr), overrides, k, rule, f"none: lr = base_lr = {base_lr:g} (B={batch_size})"
    )
  if rule == "linear":
    lr = base_lr * k
    return ScaledHparams(
      lr,
      overrides,
      k,
      rule,
      f"linear (Goyal et al. 2017): lr = {base_lr:g} * {batch_size}/{ref} = {lr:g}",
    )
  if rule == "sqrt":
    lr = base_lr * math.sqrt(k)
    return ScaledHparams(
      lr, overrides, k, rule, f"sqrt: lr = {base_lr:g} * sqrt({batch_size}/{ref}) = {lr:g}"
    )
  if rule == "adam_sde":
    lr = base_lr * math.sqrt(k)
    hp = optimizer_config.resolved_hparams(optimizer_cfg)
    parts = [f"lr {base_lr:g} -> {lr:g}"]
    for field in optimizer_config.EMA_BETAS[optimizer_cfg.name]:
      overrides[field] = _sde_beta(
        hp[field], k, f"config.optimizer.{field}", bool(scaling_cfg.clip_betas)
      )
      parts.append(f"{field} {hp[field]:g} -> {overrides[field]:g}")
    overrides["eps"] = hp["eps"] / math.sqrt(k)
    parts.append(f"eps {hp['eps']:g} -> {overrides['eps']:g}")
    return ScaledHparams(
      lr,
      overrides,
      k,
      rule,
      f"adam_sde (Malladi et al. 2022), k = {batch_size}/{ref} = {k:g}: " + ", ".join(parts),
    )
  fitted = _fitted_rule(scaling_cfg)
  raw = fitted.coef * batch_size**fitted.exponent
  lr = raw if fitted.max_lr is None else min(raw, fitted.max_lr)
  capped = "" if lr == raw else f" (capped from {raw:g} at max_lr)"
  return ScaledHparams(
    lr,
    overrides,
    k,
    rule,
    f"fitted ({fitted.reference or 'no reference'}): lr = "
    f"{fitted.coef:g} * {batch_size}^{fitted.exponent:g} = "
    f"{lr:g}{capped}; base_lr {base_lr:g} ignored",
  )
