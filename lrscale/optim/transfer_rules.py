"""Transfer rules for hyperparameters other than the lr, appended to an lr rule with ``+``.

==================  ========================================================
``beta2_halflife``  b2 -> b2 ** k: the EMA of squared gradients keeps its
                    half-life in examples, ln(1/2) / ln(b2) * B, fixed
                    (Marek et al. 2025, "Small batch size training for LMs")
``adamw_timescale`` weight_decay -> weight_decay * k * base_lr / lr: the AdamW
                    timescale tau = B / (lr * lambda * D) in epochs stays fixed
                    (Wang & Aitchison 2024; Bergsma et al. 2025 "Power Lines");
                    lr is the lr used at B, base_lr the one at the reference
==================  ========================================================

With k = B / reference_batch. :func:`overrides` is the one place both rules are
computed: ``lrscale.optim.scaling`` applies them after an lr rule (single runs,
CBS branches), ``lrscale.study.space`` per trial of a study (``config.transfer``),
where the lr at B is the trial's own grid point.
"""

from __future__ import annotations

import ml_collections

from lrscale.optim import optimizer_config

EXTRA_RULES: tuple[str, ...] = ("beta2_halflife", "adamw_timescale")
# Optimizers whose weight decay is decoupled and multiplied by the lr (the
# AdamW form, timescale 1 / (lr * lambda) steps).
LR_COUPLED_DECAY: frozenset[str] = optimizer_config.DECOUPLED_WEIGHT_DECAY


def beta2_halflife(b2: float, k: float) -> float:
  """b2 ** k: the same half-life in examples at k times the batch (Marek et al. 2025).

  An EMA with decay b2 per step halves a gradient's weight after
  ln(1/2) / ln(b2) steps, i.e. B ln(1/2) / ln(b2) examples; b2' = b2 ** (B'/B)
  keeps that number fixed.
  """
  return b2**k


def adamw_timescale_decay(weight_decay: float, k: float, base_lr: float, lr: float) -> float:
  """lambda' = lambda * k * base_lr / lr: constant tau = B / (lr * lambda * D).

  AdamW's weights are an EMA of updates over 1 / (lr * lambda) steps (Wang &
  Aitchison 2024), i.e. B / (lr * lambda) examples or tau = B / (lr lambda D)
  epochs; Bergsma et al. 2025 tune tau, not lambda.
  """
  return weight_decay * k * base_lr / lr


def validate(
  extras: tuple[str, ...],
  lr_rule: str,
  optimizer_cfg: ml_collections.ConfigDict,
  *,
  field: str = "config.scaling.rule",
) -> None:
  """Checks that the optimizer has what each rule rescales.

  Raises:
    ValueError: naming ``field`` and the fix.
  """
  name = optimizer_cfg.name
  hp = optimizer_config.resolved_hparams(optimizer_cfg)
  if "beta2_halflife" in extras:
    if "b2" not in hp:
      with_b2 = [o for o in optimizer_config.OPTIMIZERS if "b2" in optimizer_config.DEFAULTS[o]]
      raise ValueError(
        f"{field}='beta2_halflife' rescales config.optimizer.b2, which optimizer {name!r} "
        f"does not have; use one of {with_b2}."
      )
    if lr_rule == "adam_sde":
      raise ValueError(
        f"{field}: 'adam_sde' already rescales b2 (1 - b2 -> k (1 - b2)); drop "
        "'beta2_halflife' or use the 'sqrt' lr rule with it."
      )
  if "adamw_timescale" in extras:
    if name not in LR_COUPLED_DECAY:
      raise ValueError(
        f"{field}='adamw_timescale' needs decoupled weight decay scaled by the lr; "
        f"config.optimizer.name={name!r} is not one of {sorted(LR_COUPLED_DECAY)}."
      )
    if not hp["weight_decay"] > 0:
      raise ValueError(
        f"{field}='adamw_timescale' rescales config.optimizer.weight_decay, which is 0; "
        "set it > 0 (its value at the reference batch) or drop the rule."
      )


def overrides(
  extras: tuple[str, ...],
  *,
  k: float,
  base_lr: float,
  lr: float,
  optimizer_cfg: ml_collections.ConfigDict,
) -> tuple[dict[str, float], list[str]]:
  """``config.optimizer`` fields the rules set at k = B / reference_batch, and log lines.

  Args:
    extras: rule names of :data:`EXTRA_RULES`.
    k: batch size over the reference batch.
    base_lr: the lr at the reference batch.
    lr: the lr used at B.
    optimizer_cfg: ``config.optimizer`` at the reference batch (b2, weight_decay read).
  """
  hp = optimizer_config.resolved_hparams(optimizer_cfg)
  out, parts = {}, []
  if "beta2_halflife" in extras:
    out["b2"] = beta2_halflife(hp["b2"], k)
    parts.append(f"beta2_halflife (Marek et al. 2025): b2 {hp['b2']:g} -> {out['b2']:.6g}")
  if "adamw_timescale" in extras:
    out["weight_decay"] = adamw_timescale_decay(hp["weight_decay"], k, base_lr, lr)
    parts.append(
      f"adamw_timescale (Bergsma et al. 2025): weight_decay {hp['weight_decay']:g} -> "
      f"{out['weight_decay']:.6g}"
    )
  return out, parts
