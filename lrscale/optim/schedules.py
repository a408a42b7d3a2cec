"""Learning-rate schedules: numbers in, ``optax.Schedule`` out.

Every schedule maps the optimizer step count ``t`` (an int32 scalar, 0-based,
the number of updates already applied) to a learning rate. They are pure
``jax.numpy`` functions of ``t`` meant to be called inside ``jax.jit``.
``peak_value`` may be a tracer (a sweep over learning rates must not
recompile), so no Python control flow looks at it; every *step count* is a
Python int fixed at build time. Building a schedule does no compute (arrays are
made when it is traced). Where optax has the piece they wrap it; otherwise they
are written here and the docstring says why. Powers ``gamma ** t`` go through
``lrscale.optim.powers`` (exact to float32, where ``jnp.power`` drifts).

Cyclic schedules (onecycle, cyclic, cosine restarts) are in
``lrscale.optim.cycles``; the config sections and their checks in
``lrscale.optim.schedule_config``; config -> schedule in
``lrscale.optim.schedule_build``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import jax.numpy as jnp
import optax

from lrscale.optim import powers

Scalar = Any  # A Python float or a JAX scalar (possibly a tracer).


def step_float(step: Any) -> jnp.ndarray:
  """The step count as float32 (for fractions of a length)."""
  return jnp.asarray(step, jnp.float32)


def step_int(step: Any) -> jnp.ndarray:
  """The step count as int32 (for exact modular arithmetic and table look-ups)."""
  return jnp.asarray(step).astype(jnp.int32)


def geometric(start: Scalar, end: Scalar, frac: Any) -> jnp.ndarray:
  """``start * (end / start) ** frac``: a straight line in log(lr)."""
  return start * (end / start) ** frac


def ramp_between(start: Scalar, end: Scalar, frac: Any, shape: str) -> jnp.ndarray:
  """Moves from start (frac=0) to end (frac=1); PyTorch OneCycleLR's shapes."""
  if shape == "linear":
    return start + (end - start) * frac
  if shape in ("cos", "cosine"):
    return end + (start - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  if shape == "exponential":
    return geometric(start, end, frac)
  raise ValueError(f"unknown anneal shape {shape!r}")


def step_schedule(peak_value: Scalar, step_size: int, gamma: float) -> optax.Schedule:
  """PyTorch ``StepLR``: ``P * gamma ** floor(t / step_size)``.

  Written here rather than with ``optax.exponential_decay(staircase=True)``,
  whose float32 ``gamma ** k`` drifts from the closed form (``powers.int_power``).
  """
  return lambda step: peak_value * powers.int_power(gamma, step_int(step) // step_size)


def multistep_schedule(
  peak_value: Scalar, milestones: Sequence[int], gamma: float
) -> optax.Schedule:
  """PyTorch ``MultiStepLR``: ``P * gamma ** (number of milestones <= t)``.

  ``milestones`` must be sorted; a repeated milestone counts twice (as in
  PyTorch). The factors ``gamma ** k`` are computed in float64 on the host.
  """
  factors = [gamma**k for k in range(len(milestones) + 1)]
  return piecewise_constant_schedule(peak_value, milestones, factors)


def exponential_schedule(
  peak_value: Scalar, gamma: float, *, end_value: Optional[Scalar] = None
) -> optax.Schedule:
  """PyTorch ``ExponentialLR``: ``P * gamma ** t``, optionally held at ``end_value``.

  The floor is a lower bound for ``gamma < 1`` and an upper bound for
  ``gamma > 1`` (as optax ``exponential_decay``'s ``end_value``). Written here:
  optax's float32 ``gamma ** t`` is off by 3e-4 relative at t = 20000 for
  gamma = 0.999; ``powers.int_power`` is within 1e-6.
  """

  def schedule(step):
    lr = peak_value * powers.int_power(gamma, step_int(step))
    if end_value is None:
      return lr
    return jnp.maximum(lr, end_value) if gamma < 1.0 else jnp.minimum(lr, end_value)

  return schedule


def geometric_decay_schedule(
  peak_value: Scalar, decay_steps: int, *, end_value: Scalar, alpha: Optional[float] = None
) -> optax.Schedule:
  """``P * (E / P) ** (min(t, H) / H)``: a straight line in log(lr) to ``E`` at ``t = H``.

  With the floor given as a fraction ``alpha = E / P`` (a host float) this is
  ``P * g ** min(t, H)`` with ``g = alpha ** (1/H)`` in float64 and
  ``powers.int_power``; an absolute floor with a traced ``P`` has a traced ratio
  and uses float32 ``pow``. Hand-written: optax's decay rate must be a Python float.
  """
  if alpha is not None:
    per_step = alpha ** (1.0 / decay_steps)
    return lambda step: (
      peak_value * powers.int_power(per_step, jnp.minimum(step_int(step), decay_steps))
    )
  return lambda step: geometric(
    peak_value, end_value, jnp.clip(step_float(step) / decay_steps, 0.0, 1.0)
  )


def cosine_schedule(
  peak_value: Scalar,
  decay_steps: int,
  *,
  end_value: Scalar = 0.0,
  exponent: float = 1.0,
  clamp: bool = True,
) -> optax.Schedule:
  """Cosine decay from ``peak_value`` to ``end_value`` over ``decay_steps``.

  ``lr(t) = E + (P - E) * [(1 + cos(pi t / T)) / 2] ** exponent``
  (Loshchilov & Hutter 2017; PyTorch CosineAnnealingLR with ``E = eta_min``).

  Args:
    peak_value: lr at t = 0.
    decay_steps: T, steps until ``end_value`` is reached.
    end_value: floor, absolute (may be ``alpha * peak_value``).
    exponent: optax's exponent on the cosine factor.
    clamp: True holds ``end_value`` after T (optax ``cosine_decay_schedule``,
      which this wraps). False follows PyTorch's closed form, which is
      periodic: past T the lr rises again (period 2T).

  Returns:
    The schedule.
  """
  if clamp:
    factor = optax.cosine_decay_schedule(1.0, decay_steps, alpha=0.0, exponent=exponent)
  else:  # optax has no unclamped cosine.

    def factor(step):
      return (0.5 * (1.0 + jnp.cos(jnp.pi * step_float(step) / decay_steps))) ** exponent

  return lambda step: end_value + (peak_value - end_value) * factor(step)


def rsqrt_schedule(peak_value: Scalar, timescale: int) -> optax.Schedule:
  """Inverse square root decay, constant for the first ``timescale`` steps.

  ``lr(t) = P * sqrt(tau / max(t, tau))``: the T5 / big_vision "rsqrt" shape
  ``1 / sqrt(max(t, tau))`` normalised so its maximum is ``peak_value``. With a
  warmup of length tau (``offset_main=False``) this is Vaswani et al. 2017's
  ``min(t^-0.5, t tau^-1.5)`` up to the 0- vs 1-based count. Written here:
  optax has no rsqrt schedule.
  """

  def schedule(step):
    t = step_float(step)
    return peak_value * jnp.sqrt(timescale / jnp.maximum(t, timescale))

  return schedule


def wsd_schedule(
  peak_value: Scalar,
  total_steps: int,
  *,
  decay_fraction: float = 0.2,
  decay_shape: str = "linear",
  end_value: Scalar = 0.0,
) -> optax.Schedule:
  """Warmup-stable-decay's stable and decay parts (warmup composes on top).

  ``D = max(1, floor(decay_fraction * T + 1/2))`` decay steps start at
  ``S = T - D``; with ``s = clip((t - S)/D, 0, 1)``:
  ``lr = E + (P - E) g(s)``, ``g = 1 - s`` (linear), ``(1 + cos(pi s))/2``
  (cosine) or ``1 - sqrt(s)`` (1-sqrt, Hägele et al. 2024, "Scaling Laws and
  Compute-Optimal Training Beyond Fixed Training Durations"). WSD itself: Hu
  et al. 2024 (MiniCPM). Written here: optax has no WSD.
  """
  decay_steps = max(1, int(math.floor(decay_fraction * total_steps + 0.5)))
  start = total_steps - decay_steps

  def schedule(step):
    s = jnp.clip((step_float(step) - start) / decay_steps, 0.0, 1.0)
    if decay_shape == "linear":
      g = 1.0 - s
    elif decay_shape == "cosine":
      g = 0.5 * (1.0 + jnp.cos(jnp.pi * s))
    elif decay_shape == "1-sqrt":
      g = 1.0 - jnp.sqrt(s)
    else:
      raise ValueError(f"unknown wsd decay shape {decay_shape!r}")
    return end_value + (peak_value - end_value) * g

  return schedule


def piecewise_constant_schedule(
  peak_value: Scalar, boundaries: Sequence[int], factors: Sequence[float]
) -> optax.Schedule:
  """``factors[i] * P`` for ``boundaries[i-1] <= t < boundaries[i]``.

  Written here rather than with ``optax.piecewise_constant_schedule``, which
  takes ratios between consecutive values and so cannot express a value
  following a zero.
  """
  bounds, values = tuple(boundaries), tuple(factors)

  def schedule(step):  # arrays made here, when traced: building a schedule does no compute
    # [..., None] against the boundaries: any shape of steps (also a vector of them).
    index = jnp.sum(step_int(step)[..., None] >= jnp.asarray(bounds, jnp.int32), axis=-1)
    return peak_value * jnp.asarray(values, jnp.float32)[index]

  return schedule


def piecewise_linear_schedule(
  peak_value: Scalar, steps: Sequence[int], factors: Sequence[float]
) -> optax.Schedule:
  """``P * interp(t, steps, factors)``, held flat before/after the ends.

  Written with ``jnp.interp`` rather than ``optax.piecewise_interpolate_
  schedule``, which interpolates cumulative products of ratios (no zeros).
  """
  xs, ys = tuple(steps), tuple(factors)
  return lambda step: (
    peak_value
    * jnp.interp(step_float(step), jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32))
  )


def ultralytics_schedule(
  peak_value: Scalar,
  steps_per_epoch: int,
  epochs: float,
  *,
  final_factor: float = 0.01,
  anneal: str = "linear",
) -> optax.Schedule:
  """Ultralytics YOLO's ``lr0 * lf(epoch)``, updated once per epoch.

  ``e = floor(t / steps_per_epoch)`` (Ultralytics calls ``scheduler.step()``
  once per epoch), ``x = min(e, epochs)``; ``lrf = final_factor``:
  linear ``lf = (1 - x/E)(1 - lrf) + lrf``; cos ``lf = 1 + (lrf - 1)(1 -
  cos(pi x / E))/2`` (Ultralytics ``one_cycle``). The final ``lr0 * lrf`` is
  reached at epoch E. Written here: optax has no per-epoch staircase of these.
  """

  def schedule(step):
    epoch = jnp.floor(step_float(step) / steps_per_epoch)
    return peak_value * ramp_between(1.0, final_factor, jnp.minimum(epoch, epochs) / epochs, anneal)

  return schedule


def warmup_schedule(
  main: optax.Schedule,
  warmup_steps: int,
  *,
  shape: str = "linear",
  init_lr: Optional[float] = None,
  init_factor: Optional[float] = None,
  offset_main: bool = False,
  follow_main: bool = False,
) -> optax.Schedule:
  """Prepends a warmup of ``warmup_steps`` steps to any schedule.

  For ``t < W`` the lr moves from ``init`` to ``target``, the value ``main``
  takes at the end of warmup, so the join is continuous:
  linear ``i + (g - i) t/W``; cosine ``i + (g - i)(1 - cos(pi t/W))/2``;
  exponential ``i (g/i)**(t/W)``. ``init`` is ``init_lr`` (absolute),
  ``init_factor * target`` or 0. For ``t >= W`` the lr is ``main(t)``
  (``offset_main=False``: Goyal et al. 2017, the main schedule counts from
  step 0 and warmup overrides its first steps; ``target = main(W)``) or
  ``main(t - W)`` (``offset_main=True``: optax ``warmup_cosine_decay_schedule``
  style; ``target = main(0)``). With ``follow_main`` the target is the main
  schedule's value at the current step, ``target = main(t)``: Ultralytics'
  ``np.interp(ni, [0, nw], [init, lr0 * lf(epoch)])`` (needs
  ``offset_main=False``), so a per-epoch decay already acts during warmup.
  """
  if warmup_steps <= 0:
    return main
  if follow_main and offset_main:
    raise ValueError("follow_main needs offset_main=False (the main clock must run during warmup)")
  clock_at_end = 0 if offset_main else warmup_steps

  def schedule(step):
    target = main(step if follow_main else jnp.asarray(clock_at_end, jnp.int32))
    if init_lr is not None:
      init = init_lr
    elif init_factor is not None:
      init = init_factor * target
    else:
      init = 0.0
    frac = jnp.clip(step_float(step) / warmup_steps, 0.0, 1.0)
    # Shapes run from init (frac=0) to target (frac=1); `cosine` here is the
    # rising half-cosine, i.e. ramp_between's 'cos' with the ends as given.
    warm = ramp_between(init, target, frac, shape)
    clock = jnp.maximum(step - warmup_steps, 0) if offset_main else step
    return jnp.where(step < warmup_steps, warm, main(clock))

  return schedule
