"""Optimizers with an injected (traced) learning rate, built from a config.

Every optimizer is wrapped in ``optax.inject_hyperparams`` so the learning rate
(and momentum/betas/eps/weight decay) live in the optimizer *state*. The train
step writes the scheduled lr with :func:`set_learning_rate` as a traced value,
so one compiled step serves every lr of a sweep and every step of a schedule.

Chain, outermost first::

    clip_by_global_norm(grad_clip_norm)          # if grad_clip_norm > 0
    <optimizer core>(lr, ...)                    # table in docs/optimizers.md
      ... * lr_multipliers                       # per-group lr, last in core

Weight decay: L2 added to the gradient (``optax.add_decayed_weights`` before
the preconditioner/momentum, as PyTorch SGD and Goyal et al.) for sgd,
momentum, nesterov, adam, rmsprop, adagrad, lars and schedule_free_sgd;
decoupled (Loshchilov & Hutter, multiplied by lr as in optax/PyTorch) for
adamw, lamb and schedule_free_adamw.

The update functions need ``params`` (weight decay, trust ratios,
schedule-free): always call ``tx.update(grads, opt_state, params)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from ml_collections import config_dict
from optax import contrib as optax_contrib

from lrscale.optim import param_groups
from lrscale.optim import ultralytics_warmup as uw

PyTree = Any
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


def _field(name: str) -> str:
  return f"config.optimizer.{name}"


def _uses_momentum(hp: Mapping[str, float]) -> bool:
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
    raise ValueError(f"{_field('name')} must be one of {', '.join(OPTIMIZERS)}; got {name!r}.")
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
    raise ValueError(f"{_field(key)} must be in {interval}, got {value}.")


def validate(optimizer_cfg: ml_collections.ConfigDict) -> None:
  """Checks ``config.optimizer``; raises ValueError naming the bad field."""
  name = optimizer_cfg.name
  hp = resolved_hparams(optimizer_cfg)
  for key in _PLACEHOLDERS:
    if optimizer_cfg.get(key) is not None and key not in DEFAULTS[name]:
      uses = [o for o in OPTIMIZERS if key in DEFAULTS[o]]
      raise ValueError(
        f"{_field(key)} is not used by optimizer {name!r}; unset it "
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
      raise ValueError(f"{_field(key)} must be a finite number >= 0, got {value}.")
  if "trust_coefficient" in hp and not hp["trust_coefficient"] > 0:
    raise ValueError(f"{_field('trust_coefficient')} must be > 0, got {hp['trust_coefficient']}.")
  for key, allowed in (
    ("decay_mask", DECAY_MASKS),
    ("trust_mask", TRUST_MASKS),
    ("momentum_form", MOMENTUM_FORMS),
  ):
    if optimizer_cfg.get(key) not in allowed:
      raise ValueError(f"{_field(key)} must be one of {allowed}, got {optimizer_cfg.get(key)!r}.")
  has_momentum = _uses_momentum(hp)
  if optimizer_cfg.nesterov and not has_momentum:
    raise ValueError(
      f"{_field('nesterov')}=True needs heavy-ball momentum; optimizer "
      f"{name!r} has none (use name=nesterov, or momentum/lars, or rmsprop "
      "with momentum > 0)."
    )
  if optimizer_cfg.momentum_form == "goyal" and not has_momentum:
    raise ValueError(
      f"{_field('momentum_form')}='goyal' needs heavy-ball momentum; "
      f"optimizer {name!r} has none. Use momentum_form='optax'."
    )
  param_groups.parse_multipliers(optimizer_cfg.lr_multipliers)


class GoyalMomentumState(NamedTuple):
  """State of :func:`goyal_momentum`: velocity and the lr it was built with."""

  velocity: optax.Updates
  prev_lr: jax.Array


def goyal_momentum(
  learning_rate: jax.typing.ArrayLike,
  momentum: jax.typing.ArrayLike,
  *,
  nesterov: bool = False,
  correction: bool = True,
) -> optax.GradientTransformation:
  r"""Heavy-ball momentum with the lr inside the velocity (Goyal et al. form).

  .. math::
    v_t = m \, c_t \, v_{t-1} + \eta_t g_t, \qquad
    w_t = w_{t-1} - v_t \quad (\text{Nesterov: } - \eta_t g_t - m v_t),

  with momentum correction :math:`c_t = \eta_t / \eta_{t-1}` (1 without
  correction). Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 2.1:
  without :math:`c_t`, a change of lr only reaches the velocity gradually,
  so at warmup ends and step decays the effective step differs from the
  ``optax.sgd`` form :math:`u_t = m u_{t-1} + g_t,\ w_t = w_{t-1}-\eta_t u_t`.
  With the correction the two are identical (:math:`v_t = \eta_t u_t`).

  Args:
    learning_rate: current lr (may be a tracer, e.g. from inject_hyperparams).
    momentum: momentum coefficient m.
    nesterov: use the Nesterov look-ahead update.
    correction: rescale v by lr_t / lr_{t-1} (1 where lr_{t-1} == 0: the
      velocity is then empty or its scale unrecoverable).

  Returns:
    A GradientTransformation producing the (negative) parameter update.
  """

  def init_fn(params):
    return GoyalMomentumState(
      velocity=jax.tree.map(jnp.zeros_like, params),
      prev_lr=jnp.asarray(learning_rate, dtype=jnp.float32),
    )

  def update_fn(updates, state, params=None):
    del params
    lr = jnp.asarray(learning_rate, dtype=jnp.float32)
    if correction:
      ratio = jnp.where(
        state.prev_lr == 0, 1.0, lr / jnp.where(state.prev_lr == 0, 1.0, state.prev_lr)
      )
    else:
      ratio = jnp.ones([], jnp.float32)
    step = jax.tree.map(lambda g: -lr.astype(g.dtype) * g, updates)
    velocity = jax.tree.map(
      lambda v, s: (momentum * ratio * v + s).astype(v.dtype), state.velocity, step
    )
    if nesterov:
      out = jax.tree.map(lambda s, v: (s + momentum * v).astype(v.dtype), step, velocity)
    else:
      out = velocity
    return out, GoyalMomentumState(velocity=velocity, prev_lr=lr)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_per_leaf(
  multipliers: Callable[[optax.Updates], PyTree],
) -> optax.GradientTransformation:
  """Multiplies each update leaf by ``multipliers(updates)``'s leaf.

  Placed after the lr it acts as a per-parameter-group lr (the multiplier is
  constant, so it commutes with momentum and with the Goyal correction).
  """

  def update_fn(updates, state, params=None):
    del params
    mult = multipliers(updates)
    return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, mult), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


class _Static(NamedTuple):
  """Non-numeric build options, closed over by the injected factory."""

  name: str
  nesterov: bool
  momentum_form: str
  momentum_correction: bool
  decay_mask: Any  # bool or callable, as optax masks
  trust_mask: Any
  multipliers: Callable[[optax.Updates], PyTree] | None
  grad_clip_norm: float
  bias_mask: Callable[[optax.Updates], PyTree] | None = None  # Ultralytics' bias group


def _mask(kind: str) -> Any:
  if kind == "all":
    return True
  if kind == "none":
    return False
  return param_groups.bias_norm_mask  # called on params / updates


def _masked(inner: optax.GradientTransformation, mask: Any) -> optax.GradientTransformation:
  if mask is True:
    return inner
  if mask is False:
    return optax.identity()
  return optax.masked(inner, mask)


def _scale_by_lr(lr, hp: Mapping[str, Any], st: _Static) -> optax.GradientTransformation:
  """``-lr * u``; the bias group gets ``lr + bias_lr_offset`` during an Ultralytics warmup."""
  if hp.get("bias_lr_offset") is None:
    return optax.scale_by_learning_rate(lr)
  return uw.scale_by_group_learning_rate(lr, lr + hp["bias_lr_offset"], st.bias_mask)


def _momentum_and_lr(lr, hp: Mapping[str, Any], st: _Static) -> optax.GradientTransformation:
  """Heavy-ball momentum and lr in the configured form (see goyal_momentum)."""
  nesterov = st.nesterov or st.name == "nesterov"
  momentum = hp["momentum"]
  if st.momentum_form == "goyal":
    return goyal_momentum(lr, momentum, nesterov=nesterov, correction=st.momentum_correction)
  return optax.chain(optax.trace(decay=momentum, nesterov=nesterov), _scale_by_lr(lr, hp, st))


def _core(st: _Static, lr, hp: Mapping[str, Any]):
  """The optimizer proper, lr included, before clipping and multipliers."""
  name = st.name
  wd = hp["weight_decay"]
  decay = _masked(optax.add_decayed_weights(wd), st.decay_mask)
  lr_step = _scale_by_lr(lr, hp, st)
  if name == "sgd":
    return optax.chain(decay, lr_step)
  if name in ("momentum", "nesterov"):
    return optax.chain(decay, _momentum_and_lr(lr, hp, st))
  if name in ("adam", "adamw"):
    adam = optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])
    parts = (decay, adam) if name == "adam" else (adam, decay)
    return optax.chain(*parts, lr_step)
  if name == "rmsprop":
    # eps outside the sqrt (PyTorch), so eps means the same as in Adam and
    # the adam_sde rule's eps / sqrt(k) applies unchanged.
    rms = optax.scale_by_rms(decay=hp["b2"], eps=hp["eps"], eps_in_sqrt=False)
    # build_optimizer passes momentum only when it is > 0.
    tail = lr_step if hp["momentum"] is None else _momentum_and_lr(lr, hp, st)
    return optax.chain(decay, rms, tail)
  if name == "adagrad":
    return optax.chain(
      decay, optax.scale_by_rss(initial_accumulator_value=0.1, eps=hp["eps"]), lr_step
    )
  if name == "lars":
    # optax.lars: wd, trust ratio on ||g + wd w||, lr, momentum.
    trust = optax.scale_by_trust_ratio(trust_coefficient=hp["trust_coefficient"], eps=hp["eps"])
    return optax.chain(decay, _masked(trust, st.trust_mask), _momentum_and_lr(lr, hp, st))
  if name == "lamb":
    # optax.lamb, with the trust ratio maskable too.
    return optax.chain(
      optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]),
      decay,
      _masked(optax.scale_by_trust_ratio(), st.trust_mask),
      lr_step,
    )
  if name == "muon":
    return _muon(lr, hp, st)
  if name == "schedule_free_sgd":
    return optax.chain(decay, lr_step)
  if name == "schedule_free_adamw":
    # optax.contrib.schedule_free_adamw's base: Adam without momentum.
    rms = optax.scale_by_rms(decay=hp["b2"], eps=hp["eps"], eps_in_sqrt=False, bias_correction=True)
    return optax.chain(rms, decay, lr_step)
  raise ValueError(f"{_field('name')}: unknown optimizer {name!r}.")


def _muon(lr, hp: Mapping[str, Any], st: _Static) -> optax.GradientTransformation:
  """``optax.contrib.muon``: orthogonalised momentum on 2-D weights, AdamW on the rest.

  Muon (Jordan et al. 2024; Liu et al. 2025 for the weight decay) replaces the
  momentum of each matrix by its nearest semi-orthogonal matrix (5 Newton-Schulz
  steps), with Nesterov momentum as in optax's default. optax sends every
  parameter that is not 2-D (biases, norm scales) to AdamW; with the default
  ``decay_mask='no_bias_norm'`` those get no weight decay, with ``'all'`` the
  same lambda as the matrices. Embedding and readout matrices are 2-D and get
  Muon, as optax's default labelling does.
  """
  matrices_decay = st.decay_mask is not False
  return optax_contrib.muon(
    learning_rate=lr,
    beta=hp["momentum"],
    eps=hp["eps"],
    weight_decay=hp["weight_decay"] if matrices_decay else 0.0,
    adam_b1=hp["b1"],
    adam_b2=hp["b2"],
    adam_weight_decay=hp["weight_decay"] if st.decay_mask is True else 0.0,
    nesterov=True,
  )


def _make_factory(st: _Static) -> Callable[..., optax.GradientTransformation]:
  """A factory whose numeric arguments inject_hyperparams turns into state.

  Arguments left at None are not numeric, so inject_hyperparams passes them
  through and they do not appear in the state (current_hparams stays exact).
  """

  def factory(
    learning_rate,
    momentum=None,
    b1=None,
    b2=None,
    eps=None,
    weight_decay=None,
    trust_coefficient=None,
    bias_lr_offset=None,
  ):
    hp = {
      "momentum": momentum,
      "b1": b1,
      "b2": b2,
      "eps": eps,
      "weight_decay": weight_decay,
      "trust_coefficient": trust_coefficient,
      "bias_lr_offset": bias_lr_offset,
    }
    core = _core(st, learning_rate, hp)
    if st.multipliers is not None:
      core = optax.chain(core, scale_per_leaf(st.multipliers))
    if st.name in SCHEDULE_FREE:
      # Multipliers live inside the base so they scale the z-steps.
      core = optax_contrib.schedule_free(core, learning_rate=learning_rate, b1=b1)
    if st.grad_clip_norm > 0:
      core = optax.chain(optax.clip_by_global_norm(st.grad_clip_norm), core)
    return core

  return factory


def build_optimizer(
  optimizer_cfg: ml_collections.ConfigDict,
  *,
  params: PyTree,
  learning_rate: float = 0.0,
  warmup: uw.GroupWarmup | None = None,
) -> optax.GradientTransformation:
  """Builds the optimizer of ``config.optimizer`` with an injected lr.

  Args:
    optimizer_cfg: ``config.optimizer`` (validated here).
    params: the parameters (``nnx.State`` or nested dict) it will update; used
      for the hyperparameter dtype (at least float32) and to reject
      ``lr_multipliers`` regexes that match nothing.
    learning_rate: initial lr in the state; the train step normally overwrites
      it with :func:`set_learning_rate` before every update.
    warmup: Ultralytics' momentum and bias-lr warmup
      (``lrscale.optim.ultralytics_warmup.from_schedule``), injected as
      schedules of the update count; None: none.

  Returns:
    An ``optax.GradientTransformation`` whose state is an
    ``optax.InjectStatefulHyperparamsState``; call ``update(g, state, params)``.
  """
  validate(optimizer_cfg)
  hp = resolved_hparams(optimizer_cfg)
  spec = optimizer_cfg.lr_multipliers
  multipliers = None
  if param_groups.parse_multipliers(spec):
    unmatched = param_groups.unmatched_patterns(params, spec)
    if unmatched:
      paths = jax.tree_util.tree_leaves(param_groups.param_paths(params))
      raise ValueError(
        f"{_field('lr_multipliers')}: {unmatched} match no parameter path "
        f"(regexes must match the whole path); paths are e.g. {paths[:6]}."
      )
    multipliers = lambda tree: param_groups.multiplier_tree(tree, spec)
  st = _Static(
    name=optimizer_cfg.name,
    nesterov=bool(optimizer_cfg.nesterov),
    momentum_form=optimizer_cfg.momentum_form,
    momentum_correction=bool(optimizer_cfg.momentum_correction),
    decay_mask=_mask(optimizer_cfg.decay_mask),
    trust_mask=_mask(optimizer_cfg.trust_mask),
    multipliers=multipliers,
    grad_clip_norm=float(optimizer_cfg.grad_clip_norm),
    bias_mask=uw.bias_mask if warmup and warmup.bias_offset is not None else None,
  )
  if optimizer_cfg.name == "rmsprop" and not _uses_momentum(hp):
    del hp["momentum"]  # plain RMSProp: nothing to inject or log
  hp.update(_warmup_schedules(warmup, hp))
  dtype = jnp.promote_types(optax.tree.dtype(params, "highest"), jnp.float32)
  return optax.inject_hyperparams(_make_factory(st), hyperparam_dtype=dtype)(
    learning_rate=learning_rate, **hp
  )


def _warmup_schedules(warmup: uw.GroupWarmup | None, hp: Hparams) -> dict[str, Any]:
  """Ultralytics' momentum and bias-lr warmup as inject_hyperparams schedules."""
  if warmup is None:
    return {}
  out: dict[str, Any] = {}
  if warmup.init_momentum is not None:
    if "momentum" not in hp:
      raise ValueError(
        "config.warmup.init_momentum: the optimizer has no heavy-ball momentum; unset it."
      )
    out["momentum"] = uw.momentum_schedule(warmup.init_momentum, hp["momentum"], warmup.steps)
  if warmup.bias_offset is not None:
    out["bias_lr_offset"] = uw.bias_offset_schedule(warmup.bias_offset, warmup.steps, warmup.shape)
  return out


def _unwrap(x: Any) -> jax.Array:
  return jnp.asarray(x.get_value() if isinstance(x, nnx.Variable) else x)


def _is_inject_state(x: Any) -> bool:
  return isinstance(x, optax.InjectStatefulHyperparamsState)


def _inject_states(opt_state: Any) -> list[Any]:
  leaves = jax.tree_util.tree_leaves(opt_state, is_leaf=_is_inject_state)
  found = [s for s in leaves if _is_inject_state(s)]
  if not found:
    raise ValueError(
      "opt_state holds no injected hyperparameters; build the "
      "optimizer with lrscale.optimizers.build_optimizer."
    )
  return found


def set_hyperparams(opt_state: Any, **values: jax.typing.ArrayLike) -> Any:
  """Writes injected hyperparameters (e.g. ``momentum=``) into the state.

  Finds the inject state anywhere inside ``opt_state`` (so wrappers such as
  ``optax.MultiSteps`` are fine). Values keep the stored dtype and may be
  tracers. jit-safe. Works on ``nnx.Optimizer(...).opt_state`` too (the
  OptArray wrappers are kept): assign the result back to ``opt.opt_state``.

  Raises:
    KeyError: a name the optimizer does not inject.
  """
  _inject_states(opt_state)

  def replace(s):
    if not _is_inject_state(s):
      return s
    hparams = dict(s.hyperparams)
    for key, value in values.items():
      if key not in hparams:
        raise KeyError(f"optimizer has no hyperparameter {key!r}; it has {sorted(hparams)}.")
      old = hparams[key]
      new = jnp.asarray(value, dtype=_unwrap(old).dtype)
      # nnx.Optimizer keeps its state leaves in OptArray variables.
      hparams[key] = old.replace(new) if isinstance(old, nnx.Variable) else new
    return s._replace(hyperparams=hparams)

  return jax.tree_util.tree_map(replace, opt_state, is_leaf=_is_inject_state)


def set_learning_rate(opt_state: Any, lr: jax.typing.ArrayLike) -> Any:
  """Returns ``opt_state`` with the learning rate set to ``lr`` (jit-safe)."""
  return set_hyperparams(opt_state, **{_LR: lr})


def current_hparams(opt_state: Any) -> dict[str, jax.Array]:
  """Injected hyperparameters for logging.

  Returns:
    ``{'lr': ..., }`` plus whichever of ``momentum``, ``b1``, ``b2``, ``eps``,
    ``weight_decay``, ``trust_coefficient`` the optimizer uses.
  """
  hparams = _inject_states(opt_state)[0].hyperparams
  return {("lr" if k == _LR else k): _unwrap(v) for k, v in hparams.items()}


def eval_params(optimizer_cfg: ml_collections.ConfigDict, opt_state: Any, params: PyTree) -> PyTree:
  """Parameters to evaluate: schedule-free's average x, else ``params``.

  Schedule-free trains at y = (1 - b1) z + b1 x and evaluates at x
  (Defazio et al. 2024, "The Road Less Scheduled"). BatchNorm statistics
  gathered at y are only approximately right for x.
  """
  if optimizer_cfg.name not in SCHEDULE_FREE:
    return params
  is_sf = lambda x: isinstance(x, optax_contrib.ScheduleFreeState)
  leaves = jax.tree_util.tree_leaves(opt_state, is_leaf=is_sf)
  states = [s for s in leaves if is_sf(s)]
  if not states:
    raise ValueError(
      f"{_field('name')}={optimizer_cfg.name!r} but opt_state holds no ScheduleFreeState."
    )
  return optax_contrib.schedule_free_eval_params(states[0], params)
