"""Config -> schedule: every length of ``config.schedule`` / ``config.warmup`` in steps, once.

``resolve_schedule`` checks the sections (``schedule_config.validate``),
converts each length the chosen schedule reads to steps with the run's
``to_steps`` (``lrscale.units``: epochs and examples rescale with the batch
size), makes the checks that need step counts (order, the budget, onecycle's
rise) and returns a ``Schedule``: a frozen value, ``(step, peak_lr) -> lr``,
that ``lrscale.config.resolve`` stores on the run plan. Inside ``jit`` it only
combines the pure pieces of ``lrscale.optim.schedules`` / ``cycles`` with the
(possibly traced) peak lr; no length is read again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Union

import jax.numpy as jnp
import ml_collections
import optax

from lrscale.optim import cycles, ultralytics_warmup
from lrscale.optim import schedule_config as C
from lrscale.optim import schedules as S

Length = Union[str, int]
ToSteps = Callable[[Length], int]
Scalar = S.Scalar

_EPOCH = "steps per epoch"  # ultralytics' staircase: ceil(N / B)
# The smallest number of steps each length field may resolve to.
_MINIMUM = {
  "schedule.decay_length": 1,
  "schedule.step_size": 1,
  "schedule.timescale": 1,
  "schedule.step_size_up": 1,
  "schedule.t_0": 1,
  _EPOCH: 1,
}


def resolve_length(value: Length, field: str, to_steps: ToSteps, *, minimum: int = 0) -> int:
  """Converts a length to steps with ``to_steps``; errors name ``field``."""
  try:
    steps = to_steps(value)
  except (ValueError, TypeError, KeyError) as e:
    raise ValueError(
      f"{field}={value!r} could not be converted to steps ({e});"
      " write e.g. '5 epochs' or '1000 steps'"
    ) from e
  if int(steps) != steps or steps < minimum:
    raise ValueError(
      f"{field}={value!r} resolves to {steps} steps; it must be an integer >= {minimum}"
    )
  return int(steps)


def _lengths(s: ml_collections.ConfigDict, w: ml_collections.ConfigDict) -> dict[str, Any]:
  """``{field: length}`` for every length the schedule ``s.name`` reads, and the warmup's."""
  out: dict[str, Any] = {"warmup.length": w.length}
  if w.min_length not in (0, "0 steps"):
    out["warmup.min_length"] = w.min_length
  used = C.USES[s.name]
  for field in C.LENGTH_FIELDS:
    if field in used and s[field] is not None:
      out[f"schedule.{field}"] = s[field]
  for field in ("milestones", "boundaries"):
    if field in used:
      out.update({f"schedule.{field}[{i}]": m for i, m in enumerate(s[field])})
  if "points" in used:
    out.update({f"schedule.points[{i}][0]": p[0] for i, p in enumerate(s.points)})
  if s.name == "ultralytics":
    out[_EPOCH] = "1 epochs"
  return out


@dataclasses.dataclass(frozen=True)
class _Context:
  """What a builder needs besides its config section: resolved steps and the peak lr."""

  cfg: ml_collections.FrozenConfigDict
  peak_lr: Scalar
  rest: int  # Default horizon: the rest of the run after the main clock starts.
  total_steps: int
  lengths: Mapping[str, int]
  truncated: bool = False  # the budget cuts the schedule short on purpose

  def steps(self, field: str) -> int:
    return self.lengths[f"schedule.{field}"]

  def ordered(self, field: str, *, strict: bool = True, within_budget: bool = True) -> list[int]:
    """The steps of ``milestones`` / ``boundaries`` / ``points``, checked to be in order.

    Raises:
      ValueError: out of order (the message gives the sorted tuple), or, with
        ``within_budget``, at or past the run's last step (it would never apply).
    """
    values = tuple(self.cfg[field])
    key = "points[{}][0]" if field == "points" else field + "[{}]"
    steps = [self.steps(key.format(i)) for i in range(len(values))]
    bad = any(b < a or (strict and b == a) for a, b in zip(steps, steps[1:]))
    if bad:
      order = sorted(range(len(values)), key=lambda i: steps[i])
      fix = tuple(values[i] for i in order)
      raise ValueError(
        f"config.schedule.{field}={values!r} is not in {'strictly ' if strict else ''}"
        f"increasing order (in steps: {steps}); write them sorted: {fix!r}"
      )
    if within_budget and not self.truncated:
      for i, step in enumerate(steps):
        if step >= self.total_steps:
          raise ValueError(
            f"config.schedule.{key.format(i)}={values[i]!r} is step {step}, at or past "
            f"the run's {self.total_steps} steps (config.budget), so it never applies; "
            "remove it or lengthen config.budget (or set config.allow_truncated_schedule=True)"
          )
    return steps

  def horizon(self) -> int:
    if self.cfg.decay_length is None:
      if self.rest < 1:
        raise ValueError(
          f"schedule {self.cfg.name!r} has no steps left after warmup "
          f"(rest of run = {self.rest}); shorten config.warmup.length or set "
          "config.schedule.decay_length"
        )
      return self.rest
    return self.steps("decay_length")

  def floor(self, default: float = 0.0) -> Scalar:
    if self.cfg.min_lr is not None:
      return self.cfg.min_lr
    alpha = default if self.cfg.alpha is None else self.cfg.alpha
    return alpha * self.peak_lr

  def gamma(self) -> float:
    g = self.cfg.gamma
    return C.GAMMA_DEFAULT[self.cfg.name] if g is None else g


def _constant(c: _Context) -> optax.Schedule:
  return optax.constant_schedule(c.peak_lr)


def _step(c: _Context) -> optax.Schedule:
  return S.step_schedule(c.peak_lr, c.steps("step_size"), c.gamma())


def _multistep(c: _Context) -> optax.Schedule:
  # PyTorch counts a repeated milestone twice: non-decreasing, not strictly increasing.
  milestones = c.ordered("milestones", strict=False)
  return S.multistep_schedule(c.peak_lr, milestones, c.gamma())


def _exponential(c: _Context) -> optax.Schedule:
  has_floor = c.cfg.alpha is not None or c.cfg.min_lr is not None
  if c.cfg.gamma is not None:  # PyTorch ExponentialLR, optionally floored.
    return S.exponential_schedule(
      c.peak_lr, c.cfg.gamma, end_value=c.floor() if has_floor else None
    )
  # Geometric decay to the floor over the horizon, then hold.
  return S.geometric_decay_schedule(c.peak_lr, c.horizon(), end_value=c.floor(), alpha=c.cfg.alpha)


def _cosine(c: _Context) -> optax.Schedule:
  return S.cosine_schedule(
    c.peak_lr, c.horizon(), end_value=c.floor(), exponent=c.cfg.exponent, clamp=c.cfg.clamp
  )


def _polynomial(c: _Context, power: Optional[float] = None) -> optax.Schedule:
  return optax.polynomial_schedule(
    init_value=c.cfg.start_factor * c.peak_lr,
    end_value=c.floor(),
    power=c.cfg.power if power is None else power,
    transition_steps=c.horizon(),
  )


def _linear(c: _Context) -> optax.Schedule:
  return _polynomial(c, power=1.0)


def _rsqrt(c: _Context) -> optax.Schedule:
  return S.rsqrt_schedule(c.peak_lr, c.steps("timescale"))


def _onecycle(c: _Context) -> optax.Schedule:
  total = c.horizon()
  pct = c.cfg.pct_start
  if pct * total <= 1.0:
    raise ValueError(
      f"config.schedule.pct_start={pct} gives pct_start*T = {pct * total} "
      f"<= 1 for T={total} steps; the rise would be empty (PyTorch divides "
      "by zero). Increase pct_start or the length"
    )
  if c.cfg.three_phase and 2 * pct * total - 2 >= total - 1:
    raise ValueError(
      f"config.schedule.pct_start={pct} is too large for three_phase with "
      f"T={total}: the second phase ends at {2 * pct * total - 2} >= T-1; "
      "use pct_start < 0.5"
    )
  return cycles.onecycle_schedule(
    c.peak_lr,
    total,
    pct_start=pct,
    div_factor=c.cfg.div_factor,
    final_div_factor=c.cfg.final_div_factor,
    three_phase=c.cfg.three_phase,
    anneal=c.cfg.anneal,
  )


def _cyclic(c: _Context) -> optax.Schedule:
  up = c.steps("step_size_up")
  down = None if c.cfg.step_size_down is None else c.steps("step_size_down")
  return cycles.cyclic_schedule(c.peak_lr, c.floor(), up, down, mode=c.cfg.mode, gamma=c.gamma())


def _cosine_restarts(c: _Context) -> optax.Schedule:
  return cycles.cosine_restarts_schedule(
    c.peak_lr, c.steps("t_0"), t_mult=c.cfg.t_mult, end_value=c.floor()
  )


def _wsd(c: _Context) -> optax.Schedule:
  return S.wsd_schedule(
    c.peak_lr,
    c.horizon(),
    decay_fraction=c.cfg.decay_fraction,
    decay_shape=c.cfg.decay_shape,
    end_value=c.floor(),
  )


def _piecewise_constant(c: _Context) -> optax.Schedule:
  return S.piecewise_constant_schedule(c.peak_lr, c.ordered("boundaries"), c.cfg.factors)


def _piecewise_linear(c: _Context) -> optax.Schedule:
  # Points past the budget are allowed: a line may be cut by the end of the run.
  steps = c.ordered("points", within_budget=False)
  return S.piecewise_linear_schedule(c.peak_lr, steps, [float(p[1]) for p in c.cfg.points])


def _ultralytics(c: _Context) -> optax.Schedule:
  per_epoch = c.lengths[_EPOCH]
  lrf = C.ULTRALYTICS_LRF if c.cfg.alpha is None else c.cfg.alpha
  return S.ultralytics_schedule(
    c.peak_lr, per_epoch, c.horizon() / per_epoch, final_factor=lrf, anneal=c.cfg.anneal
  )


_BUILDERS: Mapping[str, Callable[[_Context], optax.Schedule]] = {
  "constant": _constant,
  "step": _step,
  "multistep": _multistep,
  "exponential": _exponential,
  "cosine": _cosine,
  "polynomial": _polynomial,
  "linear": _linear,
  "rsqrt": _rsqrt,
  "onecycle": _onecycle,
  "cyclic": _cyclic,
  "cosine_restarts": _cosine_restarts,
  "wsd": _wsd,
  "piecewise_constant": _piecewise_constant,
  "piecewise_linear": _piecewise_linear,
  "ultralytics": _ultralytics,
}
assert set(_BUILDERS) == set(C.SCHEDULES) == set(C.USES)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The run's lr schedule, warmup included, with every length resolved to steps.

  Call it as ``schedule(step, peak_lr) -> lr`` (traceable; ``peak_lr`` may be a
  tracer), or ``bind(peak_lr)`` for an ``optax.Schedule``. Made by
  ``resolve_schedule``; hashable, so plans holding it stay comparable.

  Attributes:
    schedule: the ``config.schedule`` section.
    warmup: the ``config.warmup`` section.
    total_steps: optimizer updates in the run.
    lengths: ``(field, steps)`` of every length the schedule reads.
    truncated: the run may stop before parts of the schedule
      (``config.allow_truncated_schedule``, a smoke test of a 90-epoch recipe):
      warmup and milestones past the end are allowed; recorded in config.json.
  """

  schedule: ml_collections.FrozenConfigDict
  warmup: ml_collections.FrozenConfigDict
  total_steps: int
  lengths: tuple[tuple[str, int], ...]
  truncated: bool = False

  @property
  def warmup_steps(self) -> int:
    lengths = dict(self.lengths)
    return max(lengths["warmup.length"], lengths.get("warmup.min_length", 0))

  def bind(self, peak_lr: Scalar) -> optax.Schedule:
    """``schedule(count) -> lr`` for this peak lr (0-based optimizer step count)."""
    w, warmup_steps = self.warmup, self.warmup_steps
    rest = self.total_steps - warmup_steps if w.offset_main else self.total_steps
    context = _Context(
      self.schedule, peak_lr, rest, self.total_steps, dict(self.lengths), self.truncated
    )
    schedule = S.warmup_schedule(
      _BUILDERS[self.schedule.name](context),
      warmup_steps,
      shape=w.shape,
      init_lr=w.init_lr,
      init_factor=w.init_factor,
      offset_main=w.offset_main,
      follow_main=w.target == "current",
    )
    # Always a JAX value (optax's constant schedule returns its Python input).
    return lambda step: jnp.asarray(schedule(step))

  def __call__(self, step: Any, peak_lr: Scalar) -> jnp.ndarray:
    return self.bind(peak_lr)(step)


def resolve_schedule(
  schedule_cfg: ml_collections.ConfigDict,
  warmup_cfg: ml_collections.ConfigDict,
  *,
  total_steps: int,
  to_steps: ToSteps,
  truncated: bool = False,
) -> Schedule:
  """Checks the sections and resolves every length they use; does no compute.

  Args:
    schedule_cfg: the ``config.schedule`` section.
    warmup_cfg: the ``config.warmup`` section.
    total_steps: number of optimizer updates in the run.
    to_steps: converts a length (``"5 epochs"``, int steps) to steps for this
      run's batch size.
    truncated: allow milestones past the run's end (``Schedule.truncated``).

  Returns:
    The ``Schedule``.

  Raises:
    ValueError: naming the config field, for invalid settings (also those that
      need step counts: order, budget, onecycle's ``pct_start``).
  """
  C.validate(schedule_cfg, warmup_cfg)
  lengths = tuple(
    (field, resolve_length(value, f"config.{field}", to_steps, minimum=_MINIMUM.get(field, 0)))
    for field, value in _lengths(schedule_cfg, warmup_cfg).items()
  )
  schedule = Schedule(
    ml_collections.FrozenConfigDict(schedule_cfg),
    ml_collections.FrozenConfigDict(warmup_cfg),
    int(total_steps),
    lengths,
    bool(truncated),
  )
  schedule.bind(1.0)  # the builders' own checks; building makes no arrays
  ultralytics_warmup.from_schedule(schedule)  # its fields need a warmup of > 0 steps
  return schedule


def build_schedule(
  schedule_cfg: ml_collections.ConfigDict,
  warmup_cfg: ml_collections.ConfigDict,
  *,
  peak_lr: Scalar,
  total_steps: int,
  to_steps: ToSteps,
) -> optax.Schedule:
  """``resolve_schedule(...).bind(peak_lr)``: the schedule for one peak lr.

  Raises:
    ValueError: naming the config field, for invalid settings.
  """
  resolved = resolve_schedule(schedule_cfg, warmup_cfg, total_steps=total_steps, to_steps=to_steps)
  return resolved.bind(peak_lr)
