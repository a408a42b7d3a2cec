"""Cyclic learning-rate schedules: PyTorch's ``OneCycleLR``, ``CyclicLR`` and SGDR.

Numbers in, ``optax.Schedule`` out, with the conventions of
``lrscale.optim.schedules`` (int step counts fixed at build time, a possibly
traced peak lr).
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import optax

from lrscale.optim import powers
from lrscale.optim.schedules import Scalar, ramp_between, step_float, step_int


def onecycle_schedule(
  peak_value: Scalar,
  total_steps: int,
  *,
  pct_start: float = 0.3,
  div_factor: float = 25.0,
  final_div_factor: float = 1e4,
  three_phase: bool = False,
  anneal: str = "cos",
) -> optax.Schedule:
  """PyTorch ``OneCycleLR``, step for step (Smith & Topin 2017).

  ``initial = P / div_factor``, ``min = initial / final_div_factor``. Phases
  end at (float) steps ``e1 = pct_start*T - 1`` (reach P) and ``T - 1`` (reach
  min); with ``three_phase``: ``e1`` (P), ``2 pct_start T - 2`` (initial) and
  ``T - 1`` (min). Within a phase from ``s`` to ``e``, ``pct = (t - s)/(e - s)``
  and the lr anneals start->end by ``cos`` (``end + (start - end)(1 + cos(pi
  pct))/2``) or ``linear``. A step equal to a phase end belongs to that phase.
  Past T - 1 the lr holds ``min`` (PyTorch raises past T).

  Written here because optax's ``cosine_onecycle_schedule`` peaks at
  ``int(pct_start*T)`` and reaches min at T, one step later than PyTorch.

  Args:
    peak_value: max_lr.
    total_steps: T.
    pct_start: fraction of T spent rising.
    div_factor: initial lr = peak / div_factor.
    final_div_factor: min lr = initial / final_div_factor.
    three_phase: add a symmetric descent to ``initial`` before the final one.
    anneal: ``'cos'`` or ``'linear'``.

  Returns:
    The schedule.
  """
  initial = peak_value / div_factor
  minimum = initial / final_div_factor
  e1 = pct_start * total_steps - 1.0
  if three_phase:
    ends = (e1, 2.0 * pct_start * total_steps - 2.0, total_steps - 1.0)
    values = (initial, peak_value, initial, minimum)
  else:
    ends = (e1, total_steps - 1.0)
    values = (initial, peak_value, minimum)
  starts = (0.0,) + ends[:-1]

  def schedule(step):
    t = step_float(step)
    # Evaluate the last phase first, then let earlier phases win where
    # t <= their end (PyTorch picks the first phase with t <= end_step).
    last = len(ends) - 1
    frac = jnp.clip((t - starts[last]) / (ends[last] - starts[last]), 0.0, 1.0)
    lr = ramp_between(values[last], values[last + 1], frac, anneal)
    for i in reversed(range(last)):
      frac = (t - starts[i]) / (ends[i] - starts[i])
      lr = jnp.where(t <= ends[i], ramp_between(values[i], values[i + 1], frac, anneal), lr)
    return lr

  return schedule


def cyclic_schedule(
  peak_value: Scalar,
  base_value: Scalar,
  step_size_up: int,
  step_size_down: Optional[int] = None,
  *,
  mode: str = "triangular",
  gamma: float = 1.0,
) -> optax.Schedule:
  """PyTorch ``CyclicLR`` (Smith 2017, "Cyclical Learning Rates").

  With ``L = up + down``, ``cycle = floor(1 + t/L)``, ``x = 1 + t/L - cycle``,
  ``r = up/L``, ``s = x/r if x <= r else (x - 1)/(r - 1)``:
  ``lr = base + (P - base) * s * f`` with ``f = 1`` (triangular),
  ``1 / 2**(cycle - 1)`` (triangular2) or ``gamma**t`` (exp_range).
  Computed with integer ``t mod L`` (same values, no float error at the
  turning points). Written here: optax has no cyclic schedule.
  """
  down = step_size_up if step_size_down is None else step_size_down
  period = step_size_up + down

  def schedule(step):
    t = step_int(step)
    pos = (t % period).astype(jnp.float32)
    if down == 0:  # Sawtooth: r = 1, the falling branch never applies.
      s = pos / step_size_up
    else:
      s = jnp.where(pos <= step_size_up, pos / step_size_up, (period - pos) / down)
    if mode == "triangular":
      scale = 1.0
    elif mode == "triangular2":
      cycle = (t // period + 1).astype(jnp.float32)
      scale = 0.5 ** (cycle - 1.0)
    elif mode == "exp_range":
      scale = powers.int_power(gamma, t)  # float32 gamma**t drifts
    else:
      raise ValueError(f"unknown cyclic mode {mode!r}")
    return base_value + (peak_value - base_value) * s * scale

  return schedule


def cosine_restarts_schedule(
  peak_value: Scalar, t_0: int, *, t_mult: int = 1, end_value: Scalar = 0.0
) -> optax.Schedule:
  """PyTorch ``CosineAnnealingWarmRestarts`` (SGDR, Loshchilov & Hutter 2017).

  Cycle i lasts ``T_i = t_0 * t_mult**i`` steps; inside it, with ``T_cur``
  steps since the restart, ``lr = E + (P - E)(1 + cos(pi T_cur / T_i))/2``.
  Repeats forever. Written here: ``optax.sgdr_schedule`` takes a finite list
  of cycles and holds the last floor. The cycle index comes from a table of
  restart steps (at most 31 for int32 steps when ``t_mult >= 2``), avoiding
  the float log of the closed form, which misplaces exact restart steps.
  """

  def schedule(step):
    t = step_int(step)
    if t_mult == 1:
      t_cur = (t % t_0).astype(jnp.float32)
      t_i = float(t_0)
    else:
      starts, lengths = [0], [t_0]
      while starts[-1] + lengths[-1] < 2**31 - 1:
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * t_mult)
      starts_arr = jnp.asarray(starts, jnp.int32)  # All < 2**31 - 1.
      index = jnp.sum(t >= starts_arr[1:])
      t_cur = (t - starts_arr[index]).astype(jnp.float32)
      t_i = jnp.asarray(lengths, jnp.float32)[index]
    cos = 0.5 * (1.0 + jnp.cos(jnp.pi * t_cur / t_i))
    return end_value + (peak_value - end_value) * cos

  return schedule
