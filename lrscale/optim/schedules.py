"""Learning-rate schedule catalogue: config sections, validation and builders.

Every schedule here maps the optimizer step count ``t`` (an int32 scalar,
0-based, the number of updates already applied) to a learning rate. They are
pure ``jax.numpy`` functions of ``t`` and are meant to be called inside
``jax.jit``. ``peak_lr`` may be a tracer (a sweep over learning rates must not
recompile), so no Python control flow ever looks at it; every *step count* is a
Python int fixed at build time.

Two layers:

* ``*_schedule`` functions take numbers (optax style) and return an
  ``optax.Schedule``. Where optax has the piece they wrap it; otherwise they are
  written here, and the docstring says so.
* ``default_config`` / ``default_warmup_config`` / ``validate`` /
  ``build_schedule`` read the ``config.schedule`` and ``config.warmup``
  sections. Every *length* field (``"5 epochs"``, ``"1000 steps"``,
  ``"60000 examples"`` or a plain number of steps) goes through the caller's
  ``to_steps`` so a config written in epochs rescales with the batch size.

Conventions shared by the catalogue:

* ``peak_lr`` is the schedule's maximum / initial lr (PyTorch's ``lr0``,
  OneCycle's ``max_lr``).
* The floor (end value) of every decaying schedule is either ``alpha`` (a
  fraction of ``peak_lr``) or ``min_lr`` (an absolute lr), never both.
* ``decay_length`` (the horizon ``H``) defaults to the rest of the run: the
  whole run with ``warmup.offset_main=False``, the run minus the warmup with
  ``offset_main=True``. Decaying schedules reach their floor at ``t = H`` (as in
  optax and PyTorch), i.e. one step after the last update when ``H`` is the
  whole run, and hold it afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax.numpy as jnp
import ml_collections
import optax
from ml_collections import config_dict

from lrscale.optim import plateau as plateau_lib

Length = Union[str, int]
ToSteps = Callable[[Length], int]
Scalar = Any  # A Python float or a JAX scalar (possibly a tracer).

SCHEDULES = (
  "constant",
  "step",
  "multistep",
  "exponential",
  "cosine",
  "polynomial",
  "linear",
  "rsqrt",
  "onecycle",
  "cyclic",
  "cosine_restarts",
  "wsd",
  "piecewise_constant",
  "piecewise_linear",
  "ultralytics",
)
WARMUP_SHAPES = ("linear", "cosine", "exponential")
ANNEAL_SHAPES = ("cos", "linear")
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
WSD_DECAY_SHAPES = ("linear", "cosine", "1-sqrt")

# Which config.schedule fields each schedule reads. `validate` rejects a field
# that differs from its default but is not read by the chosen schedule, so a
# setting can never be silently ignored.
_FLOOR = ("alpha", "min_lr")
USES: Mapping[str, tuple[str, ...]] = {
  "constant": (),
  "step": ("step_size", "gamma"),
  "multistep": ("milestones", "gamma"),
  "exponential": ("gamma", "decay_length") + _FLOOR,
  "cosine": ("decay_length", "exponent", "clamp") + _FLOOR,
  "polynomial": ("decay_length", "start_factor", "power") + _FLOOR,
  "linear": ("decay_length", "start_factor") + _FLOOR,
  "rsqrt": ("timescale",),
  "onecycle": (
    "decay_length",
    "pct_start",
    "div_factor",
    "final_div_factor",
    "three_phase",
    "anneal",
  ),
  "cyclic": ("mode", "step_size_up", "step_size_down", "gamma") + _FLOOR,
  "cosine_restarts": ("t_0", "t_mult") + _FLOOR,
  "wsd": ("decay_length", "decay_fraction", "decay_shape") + _FLOOR,
  "piecewise_constant": ("boundaries", "factors"),
  "piecewise_linear": ("points",),
  "ultralytics": ("decay_length", "anneal", "alpha"),  # alpha = lrf.
}
_LENGTH_FIELDS = ("decay_length", "step_size", "timescale", "step_size_up", "step_size_down", "t_0")
# Default used when `gamma` is unset, per schedule (PyTorch's defaults).
_GAMMA_DEFAULT = {"step": 0.1, "multistep": 0.1, "cyclic": 1.0}
# Ultralytics' default `lrf` (final lr = lr0 * lrf) when no floor is set.
_ULTRALYTICS_LRF = 0.01


# --------------------------------------------------------------------------
# Config sections.
# --------------------------------------------------------------------------


def default_config() -> ml_collections.ConfigDict:
  """Returns the ``config.schedule`` section; see docs/schedules.md.

  Every field has a typed default so ``--config.schedule.<field>=...``
  overrides work; ``placeholder`` fields mean "unset". Length fields are
  strings ``"<number> <unit>"`` (unit steps|epochs|examples) or a bare number
  of steps (``"1000"``); tuple-of-length fields may also hold ints.
  """
  ph = config_dict.placeholder
  return ml_collections.ConfigDict(
    {
      "name": "constant",
      # Horizon of the decay (cosine, polynomial, linear, exponential to a
      # floor, onecycle, wsd, ultralytics). Unset: the rest of the run.
      "decay_length": ph(str),
      # Floor / end value: a fraction of peak_lr or an absolute lr.
      "alpha": ph(float),
      "min_lr": ph(float),
      # polynomial / linear: lr goes from start_factor*peak to the floor.
      "start_factor": 1.0,
      "power": 1.0,
      # cosine.
      "exponent": 1.0,
      "clamp": True,
      # step / multistep / exponential (per step) / cyclic exp_range.
      "gamma": ph(float),
      "step_size": ph(str),
      "milestones": (),
      # rsqrt.
      "timescale": ph(str),
      # onecycle (PyTorch OneCycleLR) and ultralytics ('cos' | 'linear').
      "pct_start": 0.3,
      "div_factor": 25.0,
      "final_div_factor": 1e4,
      "three_phase": False,
      "anneal": "cos",
      # cyclic (PyTorch CyclicLR).
      "mode": "triangular",
      "step_size_up": "2000 steps",
      "step_size_down": ph(str),
      # cosine_restarts (PyTorch CosineAnnealingWarmRestarts).
      "t_0": ph(str),
      "t_mult": 1,
      # wsd (warmup-stable-decay).
      "decay_fraction": 0.2,
      "decay_shape": "linear",
      # piecewise_constant: factors[i] * peak on [bounds[i-1], bounds[i]).
      "boundaries": (),
      "factors": (),
      # piecewise_linear: ((length, factor), ...) linearly interpolated.
      "points": (),
    }
  )


def default_warmup_config() -> ml_collections.ConfigDict:
  """Returns the ``config.warmup`` section.

  Fields:
    length: warmup length (``"5 epochs"``, ``"500 steps"``); "0 steps": none.
    shape: ``linear`` | ``cosine`` | ``exponential``.
    init_lr: absolute lr at step 0 (Goyal et al. 2017 start from 0.1).
    init_factor: lr at step 0 as a fraction of the warmup target.
      Neither set: start from 0 (not allowed for ``exponential``).
    offset_main: False (Goyal style): the main schedule counts from step 0 and
      warmup overrides its first steps. True (optax ``warmup_*`` style): the
      main schedule's clock starts at the end of warmup.
  """
  ph = config_dict.placeholder
  return ml_collections.ConfigDict(
    {
      "length": "0 steps",
      "shape": "linear",
      "init_lr": ph(float),
      "init_factor": ph(float),
      "offset_main": False,
    }
  )


def default_plateau_config() -> ml_collections.ConfigDict:
  """Returns the ``config.plateau`` section (see ``lrscale.plateau``)."""
  return plateau_lib.default_config()


# --------------------------------------------------------------------------
# Validation (no step counts needed: runs before any compute).
# --------------------------------------------------------------------------

_LENGTH_RE = re.compile(
  r"^\s*[0-9]*\.?[0-9]+(e[+-]?[0-9]+)?\s*(steps?|epochs?|examples?|tokens?)?\s*$", re.IGNORECASE
)


def _check_length(value: Any, field: str) -> None:
  if isinstance(value, bool) or not (
    (isinstance(value, int) and value >= 0) or (isinstance(value, str) and _LENGTH_RE.match(value))
  ):
    raise ValueError(
      f"{field} must be a length like '5 epochs', '1000 steps', "
      f"'60000 examples' or a number of steps, got {value!r}"
    )


def _fail(field: str, must: str, got: Any) -> None:
  raise ValueError(f"{field} must {must}, got {got!r}")


def validate(
  schedule_cfg: ml_collections.ConfigDict,
  warmup_cfg: ml_collections.ConfigDict,
  plateau_cfg: Optional[ml_collections.ConfigDict] = None,
) -> None:
  """Checks the three sections; raises ValueError naming the bad field.

  Checks that need step counts (e.g. onecycle needing ``pct_start * T > 1``)
  happen in ``build_schedule``, also naming the field.
  """
  s, p = schedule_cfg, "config.schedule"
  if s.name not in SCHEDULES:
    _fail(f"{p}.name", f"be one of {', '.join(SCHEDULES)}", s.name)
  defaults = default_config()
  for field in defaults:
    if field == "name" or field in USES[s.name]:
      continue
    if s[field] != defaults[field]:
      users = [n for n, used in USES.items() if field in used]
      raise ValueError(
        f"{p}.{field}={s[field]!r} is not used by schedule {s.name!r}; "
        f"remove it (it is read by: {', '.join(users)})"
      )
  for field in _LENGTH_FIELDS:
    if s[field] is not None:
      _check_length(s[field], f"{p}.{field}")

  if s.alpha is not None and s.min_lr is not None:
    raise ValueError(
      f"{p}.alpha and {p}.min_lr are both set; set only one "
      "(alpha: fraction of peak_lr, min_lr: absolute lr)"
    )
  if s.alpha is not None and not 0.0 <= s.alpha <= 1.0:
    _fail(f"{p}.alpha", "be in [0, 1] (a fraction of peak_lr)", s.alpha)
  if s.min_lr is not None and s.min_lr < 0.0:
    _fail(f"{p}.min_lr", "be >= 0", s.min_lr)
  if s.gamma is not None and s.gamma <= 0.0:
    _fail(f"{p}.gamma", "be > 0", s.gamma)

  name = s.name
  if name == "step" and s.step_size is None:
    raise ValueError(f"{p}.step_size must be set for schedule 'step', e.g. '30 epochs'")
  if name == "multistep":
    if not s.milestones:
      raise ValueError(
        f"{p}.milestones must be a non-empty tuple of lengths "
        "for schedule 'multistep', e.g. ('30 epochs', '60 epochs')"
      )
    for i, m in enumerate(s.milestones):
      _check_length(m, f"{p}.milestones[{i}]")
  if name == "exponential":
    if s.gamma is None and s.alpha is None and s.min_lr is None:
      raise ValueError(
        f"schedule 'exponential' needs {p}.gamma (per-step "
        f"factor) or a final value {p}.alpha / {p}.min_lr"
      )
    if s.gamma is None and (s.alpha == 0.0 or s.min_lr == 0.0):
      raise ValueError(
        f"{p}.alpha / {p}.min_lr must be > 0 for an "
        "exponential decay to a final value (0 is never reached)"
      )
  if name == "cosine" and s.exponent <= 0.0:
    _fail(f"{p}.exponent", "be > 0", s.exponent)
  if name in ("polynomial", "linear") and s.start_factor < 0.0:
    _fail(f"{p}.start_factor", "be >= 0", s.start_factor)
  if name == "polynomial" and s.power <= 0.0:
    _fail(f"{p}.power", "be > 0", s.power)
  if name == "rsqrt" and s.timescale is None:
    raise ValueError(f"{p}.timescale must be set for schedule 'rsqrt', e.g. '10000 steps'")
  if name == "onecycle":
    if not 0.0 < s.pct_start < 1.0:
      _fail(f"{p}.pct_start", "be in (0, 1)", s.pct_start)
    if s.div_factor <= 0.0:
      _fail(f"{p}.div_factor", "be > 0", s.div_factor)
    if s.final_div_factor <= 0.0:
      _fail(f"{p}.final_div_factor", "be > 0", s.final_div_factor)
  if name in ("onecycle", "ultralytics") and s.anneal not in ANNEAL_SHAPES:
    _fail(f"{p}.anneal", f"be one of {ANNEAL_SHAPES}", s.anneal)
  if name == "cyclic" and s.mode not in CYCLIC_MODES:
    _fail(f"{p}.mode", f"be one of {CYCLIC_MODES}", s.mode)
  if name == "cosine_restarts":
    if s.t_0 is None:
      raise ValueError(f"{p}.t_0 must be set for schedule 'cosine_restarts', e.g. '10 epochs'")
    if not isinstance(s.t_mult, int) or s.t_mult < 1:
      _fail(f"{p}.t_mult", "be an integer >= 1", s.t_mult)
  if name == "wsd":
    if not 0.0 < s.decay_fraction <= 1.0:
      _fail(f"{p}.decay_fraction", "be in (0, 1]", s.decay_fraction)
    if s.decay_shape not in WSD_DECAY_SHAPES:
      _fail(f"{p}.decay_shape", f"be one of {WSD_DECAY_SHAPES}", s.decay_shape)
  if name == "piecewise_constant":
    if len(s.factors) != len(s.boundaries) + 1:
      raise ValueError(
        f"{p}.factors must have one more entry than {p}.boundaries "
        f"(got {len(s.factors)} factors, {len(s.boundaries)} boundaries)"
      )
    for i, b in enumerate(s.boundaries):
      _check_length(b, f"{p}.boundaries[{i}]")
    if any(v < 0 for v in s.factors):
      _fail(f"{p}.factors", "be factors >= 0 of peak_lr", s.factors)
  if name == "piecewise_linear":
    if not s.points:
      raise ValueError(
        f"{p}.points must be a non-empty tuple of "
        "(length, factor) pairs, e.g. ((0, 0.0), ('5 epochs', 1.0))"
      )
    for i, point in enumerate(s.points):
      if not isinstance(point, (tuple, list)) or len(point) != 2:
        _fail(f"{p}.points[{i}]", "be a (length, factor) pair", point)
      _check_length(point[0], f"{p}.points[{i}][0]")
      if point[1] < 0:
        _fail(f"{p}.points[{i}][1]", "be a factor >= 0 of peak_lr", point[1])

  w, q = warmup_cfg, "config.warmup"
  _check_length(w.length, f"{q}.length")
  if w.shape not in WARMUP_SHAPES:
    _fail(f"{q}.shape", f"be one of {WARMUP_SHAPES}", w.shape)
  if w.init_lr is not None and w.init_factor is not None:
    raise ValueError(
      f"{q}.init_lr and {q}.init_factor are both set; set only "
      "one (init_lr: absolute, init_factor: fraction of target)"
    )
  if w.init_lr is not None and w.init_lr < 0.0:
    _fail(f"{q}.init_lr", "be >= 0", w.init_lr)
  if w.init_factor is not None and w.init_factor < 0.0:
    _fail(f"{q}.init_factor", "be >= 0", w.init_factor)
  if w.shape == "exponential" and not (w.init_lr or w.init_factor):
    raise ValueError(
      f"{q}.shape='exponential' needs {q}.init_lr > 0 or "
      f"{q}.init_factor > 0 (a geometric ramp cannot start at 0)"
    )

  if plateau_cfg is not None:
    plateau_lib.validate_config(plateau_cfg)


# --------------------------------------------------------------------------
# Building blocks (numbers in, optax.Schedule out).
# --------------------------------------------------------------------------


def _as_float(step: Any) -> jnp.ndarray:
  return jnp.asarray(step, jnp.float32)


def _as_int(step: Any) -> jnp.ndarray:
  return jnp.asarray(step).astype(jnp.int32)


def _geometric(start: Scalar, end: Scalar, frac: Any) -> jnp.ndarray:
  """``start * (end / start) ** frac``: a straight line in log(lr)."""
  return start * (end / start) ** frac


def _anneal(start: Scalar, end: Scalar, frac: Any, shape: str) -> jnp.ndarray:
  """Moves from start (frac=0) to end (frac=1); PyTorch OneCycleLR's shapes."""
  if shape == "linear":
    return start + (end - start) * frac
  if shape in ("cos", "cosine"):
    return end + (start - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  if shape == "exponential":
    return _geometric(start, end, frac)
  raise ValueError(f"unknown anneal shape {shape!r}")


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
      return (0.5 * (1.0 + jnp.cos(jnp.pi * _as_float(step) / decay_steps))) ** exponent

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
    t = _as_float(step)
    return peak_value * jnp.sqrt(timescale / jnp.maximum(t, timescale))

  return schedule


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
    t = _as_float(step)
    # Evaluate the last phase first, then let earlier phases win where
    # t <= their end (PyTorch picks the first phase with t <= end_step).
    last = len(ends) - 1
    frac = jnp.clip((t - starts[last]) / (ends[last] - starts[last]), 0.0, 1.0)
    lr = _anneal(values[last], values[last + 1], frac, anneal)
    for i in reversed(range(last)):
      frac = (t - starts[i]) / (ends[i] - starts[i])
      lr = jnp.where(t <= ends[i], _anneal(values[i], values[i + 1], frac, anneal), lr)
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
    t = _as_int(step)
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
      scale = gamma ** t.astype(jnp.float32)
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
    t = _as_int(step)
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
    s = jnp.clip((_as_float(step) - start) / decay_steps, 0.0, 1.0)
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
  bounds = jnp.asarray(boundaries, jnp.int32).reshape(-1)
  table = jnp.asarray(factors, jnp.float32)

  def schedule(step):
    index = jnp.sum(_as_int(step) >= bounds)
    return peak_value * table[index]

  return schedule


def piecewise_linear_schedule(
  peak_value: Scalar, steps: Sequence[int], factors: Sequence[float]
) -> optax.Schedule:
  """``P * interp(t, steps, factors)``, held flat before/after the ends.

  Written with ``jnp.interp`` rather than ``optax.piecewise_interpolate_
  schedule``, which interpolates cumulative products of ratios (no zeros).
  """
  xs = jnp.asarray(steps, jnp.float32)
  ys = jnp.asarray(factors, jnp.float32)
  return lambda step: peak_value * jnp.interp(_as_float(step), xs, ys)


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
    epoch = jnp.floor(_as_float(step) / steps_per_epoch)
    return peak_value * _anneal(1.0, final_factor, jnp.minimum(epoch, epochs) / epochs, anneal)

  return schedule


def warmup_schedule(
  main: optax.Schedule,
  warmup_steps: int,
  *,
  shape: str = "linear",
  init_lr: Optional[float] = None,
  init_factor: Optional[float] = None,
  offset_main: bool = False,
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
  style; ``target = main(0)``).
  """
  if warmup_steps <= 0:
    return main
  clock_at_end = 0 if offset_main else warmup_steps

  def schedule(step):
    target = main(jnp.asarray(clock_at_end, jnp.int32))
    if init_lr is not None:
      init = init_lr
    elif init_factor is not None:
      init = init_factor * target
    else:
      init = 0.0
    frac = jnp.clip(_as_float(step) / warmup_steps, 0.0, 1.0)
    # Shapes run from init (frac=0) to target (frac=1); `cosine` here is the
    # rising half-cosine, i.e. _anneal's 'cos' with the ends as given.
    warm = _anneal(init, target, frac, shape)
    clock = jnp.maximum(step - warmup_steps, 0) if offset_main else step
    return jnp.where(step < warmup_steps, warm, main(clock))

  return schedule


# --------------------------------------------------------------------------
# Config -> schedule.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Context:
  """What a builder needs besides its config section."""

  cfg: ml_collections.ConfigDict
  peak_lr: Scalar
  rest: int  # Default horizon: the rest of the run after the main clock starts.
  to_steps: ToSteps

  def steps(self, field: str, value: Any = None, minimum: int = 0) -> int:
    """Resolves a length field to steps; errors name ``config.schedule.field``."""
    return resolve_length(
      self.cfg[field] if value is None else value,
      f"config.schedule.{field}",
      self.to_steps,
      minimum=minimum,
    )

  def horizon(self) -> int:
    if self.cfg.decay_length is None:
      if self.rest < 1:
        raise ValueError(
          f"schedule {self.cfg.name!r} has no steps left after warmup "
          f"(rest of run = {self.rest}); shorten config.warmup.length or set "
          "config.schedule.decay_length"
        )
      return self.rest
    return self.steps("decay_length", minimum=1)

  def floor(self, default: float = 0.0) -> Scalar:
    if self.cfg.min_lr is not None:
      return self.cfg.min_lr
    alpha = default if self.cfg.alpha is None else self.cfg.alpha
    return alpha * self.peak_lr

  def gamma(self) -> float:
    g = self.cfg.gamma
    return _GAMMA_DEFAULT[self.cfg.name] if g is None else g


def resolve_length(value: Length, field: str, to_steps: ToSteps, *, minimum: int = 0) -> int:
  """Converts a length to steps with ``to_steps``; errors name ``field``.

  A string holding a bare number (``"1000"``, as a command-line override of a
  string field gives) is passed on as an int number of steps.
  """
  if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
    value = int(value)
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


def _constant(c: _Context) -> optax.Schedule:
  return optax.constant_schedule(c.peak_lr)


def _step(c: _Context) -> optax.Schedule:
  return optax.exponential_decay(
    c.peak_lr, c.steps("step_size", minimum=1), c.gamma(), staircase=True
  )


def _multistep(c: _Context) -> optax.Schedule:
  scales: dict[int, float] = {}
  for i, m in enumerate(c.cfg.milestones):
    step = c.steps(f"milestones[{i}]", value=m)
    # PyTorch counts a repeated milestone twice; optax takes a dict.
    scales[step] = scales.get(step, 1.0) * c.gamma()
  return optax.piecewise_constant_schedule(c.peak_lr, scales)


def _exponential(c: _Context) -> optax.Schedule:
  if c.cfg.gamma is not None:  # PyTorch ExponentialLR, optionally floored.
    has_floor = c.cfg.alpha is not None or c.cfg.min_lr is not None
    return optax.exponential_decay(
      c.peak_lr, 1, c.cfg.gamma, end_value=c.floor() if has_floor else None
    )
  # Geometric decay to the floor over the horizon, then hold. Hand-written:
  # optax's decay_rate must be a Python float, and min_lr / peak_lr is traced.
  horizon, end = c.horizon(), c.floor()
  return lambda step: _geometric(c.peak_lr, end, jnp.clip(_as_float(step) / horizon, 0.0, 1.0))


def _cosine(c: _Context) -> optax.Schedule:
  return cosine_schedule(
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
  return rsqrt_schedule(c.peak_lr, c.steps("timescale", minimum=1))


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
  return onecycle_schedule(
    c.peak_lr,
    total,
    pct_start=pct,
    div_factor=c.cfg.div_factor,
    final_div_factor=c.cfg.final_div_factor,
    three_phase=c.cfg.three_phase,
    anneal=c.cfg.anneal,
  )


def _cyclic(c: _Context) -> optax.Schedule:
  up = c.steps("step_size_up", minimum=1)
  down = None if c.cfg.step_size_down is None else c.steps("step_size_down", minimum=0)
  return cyclic_schedule(c.peak_lr, c.floor(), up, down, mode=c.cfg.mode, gamma=c.gamma())


def _cosine_restarts(c: _Context) -> optax.Schedule:
  return cosine_restarts_schedule(
    c.peak_lr, c.steps("t_0", minimum=1), t_mult=c.cfg.t_mult, end_value=c.floor()
  )


def _wsd(c: _Context) -> optax.Schedule:
  return wsd_schedule(
    c.peak_lr,
    c.horizon(),
    decay_fraction=c.cfg.decay_fraction,
    decay_shape=c.cfg.decay_shape,
    end_value=c.floor(),
  )


def _piecewise_constant(c: _Context) -> optax.Schedule:
  bounds = [c.steps(f"boundaries[{i}]", value=b) for i, b in enumerate(c.cfg.boundaries)]
  if any(b1 <= b0 for b0, b1 in zip(bounds, bounds[1:])):
    raise ValueError(
      f"config.schedule.boundaries must be strictly increasing in steps, got {bounds}"
    )
  return piecewise_constant_schedule(c.peak_lr, bounds, c.cfg.factors)


def _piecewise_linear(c: _Context) -> optax.Schedule:
  steps = [c.steps(f"points[{i}][0]", value=p[0]) for i, p in enumerate(c.cfg.points)]
  if any(s1 <= s0 for s0, s1 in zip(steps, steps[1:])):
    raise ValueError(f"config.schedule.points must be strictly increasing in steps, got {steps}")
  return piecewise_linear_schedule(c.peak_lr, steps, [float(p[1]) for p in c.cfg.points])


def _ultralytics(c: _Context) -> optax.Schedule:
  per_epoch = resolve_length("1 epochs", "steps per epoch", c.to_steps, minimum=1)
  lrf = _ULTRALYTICS_LRF if c.cfg.alpha is None else c.cfg.alpha
  return ultralytics_schedule(
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
assert set(_BUILDERS) == set(SCHEDULES) == set(USES)


def build_schedule(
  schedule_cfg: ml_collections.ConfigDict,
  warmup_cfg: ml_collections.ConfigDict,
  *,
  peak_lr: Scalar,
  total_steps: int,
  to_steps: ToSteps,
) -> optax.Schedule:
  """Builds the run's lr schedule, warmup included.

  Args:
    schedule_cfg: the ``config.schedule`` section.
    warmup_cfg: the ``config.warmup`` section.
    peak_lr: the schedule's maximum / initial lr; may be a JAX tracer.
    total_steps: number of optimizer updates in the run.
    to_steps: converts a length (``"5 epochs"``, int steps) to steps for this
      run's batch size.

  Returns:
    ``schedule(count) -> lr`` for the 0-based optimizer step count.

  Raises:
    ValueError: naming the config field, for invalid settings.
  """
  validate(schedule_cfg, warmup_cfg)
  warmup_steps = resolve_length(warmup_cfg.length, "config.warmup.length", to_steps)
  rest = total_steps - warmup_steps if warmup_cfg.offset_main else total_steps
  context = _Context(cfg=schedule_cfg, peak_lr=peak_lr, rest=rest, to_steps=to_steps)
  main = _BUILDERS[schedule_cfg.name](context)
  schedule = warmup_schedule(
    main,
    warmup_steps,
    shape=warmup_cfg.shape,
    init_lr=warmup_cfg.init_lr,
    init_factor=warmup_cfg.init_factor,
    offset_main=warmup_cfg.offset_main,
  )
  # Always a JAX value (optax's constant schedule returns its Python input).
  return lambda step: jnp.asarray(schedule(step))
