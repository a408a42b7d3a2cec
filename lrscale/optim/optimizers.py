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

``config.optimizer`` (names, defaults, validation) is
:mod:`lrscale.optim.optimizer_config`; reading and writing the injected values
is :mod:`lrscale.optim.hyperparams`.

The update functions need ``params`` (weight decay, trust ratios,
schedule-free): always call ``tx.update(grads, opt_state, params)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from optax import contrib as optax_contrib

from lrscale.optim import goyal_momentum as gm
from lrscale.optim import optimizer_config as oc
from lrscale.optim import param_groups
from lrscale.optim import ultralytics_warmup as uw

PyTree = Any
Hparams = oc.Hparams


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
    return gm.goyal_momentum(lr, momentum, nesterov=nesterov, correction=st.momentum_correction)
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
  raise ValueError(f"{oc.field('name')}: unknown optimizer {name!r}.")


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
    if st.name in oc.SCHEDULE_FREE:
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
  oc.validate(optimizer_cfg)
  hp = oc.resolved_hparams(optimizer_cfg)
  spec = optimizer_cfg.lr_multipliers
  multipliers = None
  if param_groups.parse_multipliers(spec):
    unmatched = param_groups.unmatched_patterns(params, spec)
    if unmatched:
      paths = jax.tree_util.tree_leaves(param_groups.param_paths(params))
      raise ValueError(
        f"{oc.field('lr_multipliers')}: {unmatched} match no parameter path "
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
  if optimizer_cfg.name == "rmsprop" and not oc.uses_momentum(hp):
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


def eval_params(optimizer_cfg: ml_collections.ConfigDict, opt_state: Any, params: PyTree) -> PyTree:
  """Parameters to evaluate: schedule-free's average x, else ``params``.

  Schedule-free trains at y = (1 - b1) z + b1 x and evaluates at x
  (Defazio et al. 2024, "The Road Less Scheduled"). BatchNorm statistics
  gathered at y are only approximately right for x.
  """
  if optimizer_cfg.name not in oc.SCHEDULE_FREE:
    return params
  is_sf = lambda x: isinstance(x, optax_contrib.ScheduleFreeState)
  leaves = jax.tree_util.tree_leaves(opt_state, is_leaf=is_sf)
  states = [s for s in leaves if is_sf(s)]
  if not states:
    raise ValueError(
      f"{oc.field('name')}={optimizer_cfg.name!r} but opt_state holds no ScheduleFreeState."
    )
  return optax_contrib.schedule_free_eval_params(states[0], params)
