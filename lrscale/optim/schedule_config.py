"""The ``config.schedule`` and ``config.warmup`` sections: fields, defaults, checks.

``validate`` needs no step counts, so it runs before any compute; the checks
that need them (a milestone past the budget, onecycle's ``pct_start * T > 1``)
are made when the lengths are resolved (``lrscale.optim.schedule_build``), also
naming the field. Every *length* field (``"5 epochs"``, ``"1000 steps"``,
``"60000 examples"``; an int is steps) follows ``lrscale.units``' grammar, so a
config written in epochs rescales with the batch size.

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
* Milestones, boundaries and points are given in order (sorted in steps);
  out-of-order values are an error naming the sorted fix, never re-sorted.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import ml_collections
from ml_collections import config_dict

from lrscale import units
from lrscale.optim import plateau as plateau_lib
from lrscale.optim import ultralytics_warmup

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
LENGTH_FIELDS = ("decay_length", "step_size", "timescale", "step_size_up", "step_size_down", "t_0")
# Default used when `gamma` is unset, per schedule (PyTorch's defaults).
GAMMA_DEFAULT = {"step": 0.1, "multistep": 0.1, "cyclic": 1.0}
# Ultralytics' default `lrf` (final lr = lr0 * lrf) when no floor is set.
ULTRALYTICS_LRF = 0.01


def default_config() -> ml_collections.ConfigDict:
  """Returns the ``config.schedule`` section; see docs/schedules.md.

  Every field has a typed default so ``--config.schedule.<field>=...``
  overrides work; ``placeholder`` fields mean "unset". Length fields are
  strings ``"<number> <unit>"`` (unit steps|epochs|examples, ``lrscale.units``);
  tuple-of-length fields may also hold ints (steps).
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
    target: ``end``: ramp to the main schedule's value at the end of warmup;
      ``current``: to its value at each step (Ultralytics' ``np.interp``).
    min_length: the warmup lasts at least this long (Ultralytics 8.3: 100 steps).
    bias_init_lr: biases start at this absolute lr and move to the schedule
      (Ultralytics' ``warmup_bias_lr``); unset: biases warm up like weights.
    init_momentum: momentum rises linearly from this to
      ``config.optimizer.momentum`` (Ultralytics' ``warmup_momentum``).
    The last three: ``lrscale.optim.ultralytics_warmup``.
  """
  ph = config_dict.placeholder
  return ml_collections.ConfigDict(
    {
      "length": "0 steps",
      "shape": "linear",
      "init_lr": ph(float),
      "init_factor": ph(float),
      "offset_main": False,
      "target": "end",
      "min_length": "0 steps",
      "bias_init_lr": ph(float),
      "init_momentum": ph(float),
    }
  )


def default_plateau_config() -> ml_collections.ConfigDict:
  """Returns the ``config.plateau`` section (see ``lrscale.plateau``)."""
  return plateau_lib.default_config()


# Validation (no step counts needed: runs before any compute).


def _check_length(value: Any, field: str) -> None:
  """The one length grammar (``lrscale.units.parse_length``); ``field`` is ``config.<path>``."""
  units.parse_length(value, field=field.removeprefix("config."))


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
  for field in LENGTH_FIELDS:
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
  _check_length(w.min_length, f"{q}.min_length")
  ultralytics_warmup.validate_fields(w)
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
