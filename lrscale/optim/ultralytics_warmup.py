"""Ultralytics' warmup in full: biases start high and fall, momentum rises, per step.

Ultralytics YOLO (``ultralytics/engine/trainer.py``, ``BaseTrainer._do_train``;
read at commits ``3c5ac618ec95`` (8.3 series) and ``00016300105e`` (YOLO26
series), both the same formulas) runs, for every batch ``ni < nw`` of the
warmup, before the forward pass::

    xi = [0, nw]
    for x in optimizer.param_groups:
        x["lr"] = np.interp(ni, xi, [warmup_bias_lr if <bias group> else 0.0,
                                     x["initial_lr"] * lf(epoch)])
        if "momentum" in x:
            x["momentum"] = np.interp(ni, xi, [warmup_momentum, momentum])

with ``nw = max(round(warmup_epochs * nb), 100)`` in 8.3 (``round(min(
warmup_epochs, epochs - 1) * nb)`` in the YOLO26 series; ``nb`` batches per
epoch), the bias group every parameter whose name contains ``bias`` (BatchNorm's
beta included) and ``lf(epoch)`` its per-epoch schedule (lrscale's
``schedule.name='ultralytics'``). In lrscale's terms, for ``t < W``:

* weights: ``lr_w(t) = i + (main(t) - i) t / W`` with ``i = 0`` and the
  target ``main(t)`` (``config.warmup.target='current'``);
* biases: ``lr_b(t) = b0 + (main(t) - b0) t / W = lr_w(t) + (b0 - i)(1 - t / W)``
  (``config.warmup.bias_init_lr = b0``); the same difference holds for the
  ``cosine`` shape with ``1 - t/W`` replaced by its cosine ramp, whatever the
  target, so the optimizer adds it to the lr the train step writes;
* momentum: ``m(t) = m0 + (m - m0) t / W`` (``config.warmup.init_momentum =
  m0``), for every optimizer with heavy-ball momentum (Ultralytics: SGD,
  RMSprop, MuSGD). Its Adam groups carry ``betas``, not ``momentum``, so
  Ultralytics does **not** warm Adam's beta1; neither does lrscale, which
  refuses ``init_momentum`` for Adam-type optimizers rather than ignore it.

Both are ``optax.inject_hyperparams`` schedules of the optimizer's own update
count (so they checkpoint and resume with it), and appear in
``current_hparams`` as ``momentum`` and ``bias_lr_offset``.

Not reproduced: the gradient-accumulation warmup (``accumulate`` rises from 1
to ``nbs / batch``, i.e. an effective batch ramp, only when ``batch < nbs``
= 64), and the 8.3 ``nw >= 100`` / YOLO26 ``epochs - 1`` caps, which are
lengths: write ``warmup.min_length='100 steps'`` for the former.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from lrscale.optim import optimizer_config, param_groups
from lrscale.optim import schedules as S

if TYPE_CHECKING:
  from lrscale.optim.schedule_build import Schedule

PyTree = Any
TARGETS = ("end", "current")
# Shapes under which lr_b - lr_w does not depend on the target (a ramp linear in
# its end points); exponential is geometric in them.
BIAS_SHAPES = ("linear", "cosine")
_W = "config.warmup"


def validate_fields(w: ml_collections.ConfigDict) -> None:
  """Checks the Ultralytics fields of ``config.warmup``; raises ValueError naming the field."""
  if w.target not in TARGETS:
    raise ValueError(
      f"{_W}.target must be one of {TARGETS} ('end': ramp to the schedule's value at the end "
      f"of warmup; 'current': to its value now, as Ultralytics), got {w.target!r}"
    )
  if w.target == "current" and w.offset_main:
    raise ValueError(
      f"{_W}.target='current' needs {_W}.offset_main=False: the main schedule's clock must "
      "run during the warmup it is followed by"
    )
  if w.init_momentum is not None and not 0.0 <= w.init_momentum < 1.0:
    raise ValueError(
      f"{_W}.init_momentum must be in [0, 1) (Ultralytics: 0.8), got {w.init_momentum!r}"
    )
  if w.bias_init_lr is not None:
    if not w.bias_init_lr >= 0.0:
      raise ValueError(f"{_W}.bias_init_lr must be >= 0 (Ultralytics: 0.1), got {w.bias_init_lr!r}")
    if w.shape not in BIAS_SHAPES:
      raise ValueError(
        f"{_W}.bias_init_lr needs {_W}.shape in {BIAS_SHAPES}, got {w.shape!r}; "
        "Ultralytics' warmup is linear"
      )
    if w.init_factor is not None:
      raise ValueError(
        f"{_W}.bias_init_lr is set with {_W}.init_factor: give the weights' start as "
        f"{_W}.init_lr (absolute) or leave it unset (0, Ultralytics)"
      )


def validate_with_optimizer(w: ml_collections.ConfigDict, o: ml_collections.ConfigDict) -> None:
  """Checks the fields against ``config.optimizer``; raises ValueError naming the field."""
  if w.init_momentum is not None:
    hp = optimizer_config.resolved_hparams(o)
    if "momentum" not in hp or (o.name == "rmsprop" and hp["momentum"] <= 0):
      raise ValueError(
        f"{_W}.init_momentum={w.init_momentum!r}: optimizer {o.name!r} has no heavy-ball "
        "momentum to warm up (Ultralytics does not warm Adam's beta1 either: its Adam groups "
        "have 'betas', not 'momentum'); unset it, or use momentum/nesterov/lars/muon, or "
        "rmsprop with config.optimizer.momentum > 0"
      )
  if w.bias_init_lr is not None:
    if o.momentum_form == "goyal":
      raise ValueError(
        f"{_W}.bias_init_lr needs config.optimizer.momentum_form='optax' (the Goyal form keeps "
        "the lr inside one velocity for all parameters)"
      )
    if o.name in optimizer_config.SCHEDULE_FREE or o.name == "muon":
      raise ValueError(
        f"{_W}.bias_init_lr is not supported for optimizer {o.name!r} (its lr is applied "
        "inside optax's own transform); unset it or choose another optimizer"
      )


@dataclasses.dataclass(frozen=True)
class GroupWarmup:
  """The resolved per-group warmup an optimizer needs: its length and start values.

  Attributes:
    steps: warmup length W in optimizer steps (> 0).
    shape: ``linear`` | ``cosine`` (the lr ramp's shape; momentum is always linear, as
      Ultralytics' ``np.interp``).
    init_momentum: m0, or None (no momentum warmup).
    bias_offset: ``b0 - i``, the biases' extra lr at step 0, or None (no bias warmup).
  """

  steps: int
  shape: str = "linear"
  init_momentum: Optional[float] = None
  bias_offset: Optional[float] = None


def from_schedule(schedule: Schedule) -> Optional[GroupWarmup]:
  """The ``GroupWarmup`` of a resolved schedule, or None when neither field is set.

  Raises:
    ValueError: a field is set but the warmup resolves to 0 steps (it would be ignored).
  """
  w = schedule.warmup
  if w.init_momentum is None and w.bias_init_lr is None:
    return None
  steps = schedule.warmup_steps
  if steps <= 0:
    field = "init_momentum" if w.init_momentum is not None else "bias_init_lr"
    raise ValueError(
      f"{_W}.{field} is set but {_W}.length={w.length!r} is 0 steps, so it would never "
      f"apply; unset it or give a warmup length (e.g. '3 epochs')"
    )
  offset = None
  if w.bias_init_lr is not None:
    offset = float(w.bias_init_lr) - (0.0 if w.init_lr is None else float(w.init_lr))
  m0 = None if w.init_momentum is None else float(w.init_momentum)
  return GroupWarmup(steps=steps, shape=w.shape, init_momentum=m0, bias_offset=offset)


def momentum_schedule(init: float, final: float, steps: int) -> optax.Schedule:
  """``m(t) = np.interp(t, [0, W], [m0, m])``: linear from m0, held at m from t = W on."""
  return lambda count: jnp.interp(
    S.step_float(count), jnp.asarray([0.0, steps], jnp.float32), jnp.asarray([init, final])
  )


def bias_offset_schedule(offset: float, steps: int, shape: str) -> optax.Schedule:
  """``lr_b(t) - lr_w(t) = (b0 - i)(1 - r(t / W))`` for t < W, then 0 (module docstring)."""

  def schedule(count):
    frac = jnp.clip(S.step_float(count) / steps, 0.0, 1.0)
    return S.ramp_between(jnp.float32(offset), jnp.float32(0.0), frac, shape)

  return schedule


def bias_mask(params: PyTree) -> PyTree:
  """True for the bias group: leaves named ``bias`` (dense/conv biases, BatchNorm's beta).

  Ultralytics' bias group is every parameter whose name contains ``bias``; a
  Flax leaf's name is the last path component.
  """
  paths = param_groups.param_paths(params)
  return jax.tree.map(lambda p: p.rsplit("/", 1)[-1] == "bias", paths)


def scale_by_group_learning_rate(
  learning_rate: jax.typing.ArrayLike,
  bias_learning_rate: jax.typing.ArrayLike,
  mask: Callable[[PyTree], PyTree],
) -> optax.GradientTransformation:
  """``optax.scale_by_learning_rate`` with its own lr for the leaves ``mask`` selects.

  ``u = -bias_learning_rate * g`` where ``mask(g)`` is True, ``u = -learning_rate * g``
  elsewhere: the last step of a chain whose earlier steps (momentum, Adam)
  do not read the lr, so one state serves both groups.
  """

  def update_fn(updates, state, params=None):
    del params
    lrs = jax.tree.map(lambda b: bias_learning_rate if b else learning_rate, mask(updates))
    scaled = jax.tree.map(lambda u, lr: -jnp.asarray(lr, u.dtype) * u, updates, lrs)
    return scaled, state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)
