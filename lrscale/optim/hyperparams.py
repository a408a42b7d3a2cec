"""Reading and writing the injected hyperparameters of an optimizer state.

Every lrscale optimizer is wrapped in ``optax.inject_hyperparams``
(:mod:`lrscale.optim.optimizers`), so its lr, momentum, betas, eps and weight
decay are arrays in the state: the train step writes the scheduled lr here as a
traced value, and the metrics log what the state holds.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

_LR = "learning_rate"


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
