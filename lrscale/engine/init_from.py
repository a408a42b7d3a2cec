"""Starting a run from another run's parameters: fine-tuning, with reset and frozen parts.

``config.init.checkpoint`` names a run directory (its newest checkpoint is
used), its ``checkpoints/`` folder, or one ``checkpoints/<step>``. Only the
parameters (and, with ``config.init.batch_stats``, the BatchNorm statistics)
are read, by partial Orbax restore into this model's structure; the optimizer
state, step and host state are never taken: a fine-tuning run starts its
optimizer, schedule and step count afresh.

Parameters whose '/'-joined path (``lrscale.optim.param_groups`` spelling,
e.g. ``head/kernel``) fully matches ``config.init.reset`` keep this run's
fresh initialisation (a new head for new classes). Parameters matching
``config.init.freeze`` get zero updates: their gradient is zeroed before the
optimizer (so it neither counts in global-norm clipping nor builds momentum,
like PyTorch's ``requires_grad=False``) and their update is zeroed after it
(so weight decay cannot move them either): ``p + 0 = p`` keeps them bitwise
unchanged. Freezing composes with ``config.optimizer.lr_multipliers``, which
scales the other parameters' updates inside the optimizer.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lrscale.optim import param_groups

PyTree = Any
_FIELD = "config.init"


def default_config() -> ml_collections.ConfigDict:
  """Returns the ``config.init`` section (fresh initialisation)."""
  return ml_collections.ConfigDict(
    dict(
      checkpoint="",  # a run directory or one of its checkpoints/<step> ('' = fresh init)
      batch_stats=False,  # also take its BatchNorm statistics
      reset="",  # regex of parameter paths re-initialised instead (e.g. 'head/.*')
      freeze="",  # regex of parameter paths kept fixed (zero updates), e.g. 'hidden/0/.*'
    )
  )


def validate_config(cfg: ml_collections.ConfigDict, optimizer_name: str = "") -> None:
  """Raises ValueError naming the bad ``config.init`` field (no file is read but a listing)."""
  for field in ("reset", "freeze"):
    try:
      re.compile(cfg[field])
    except re.error as err:
      raise ValueError(
        f"{_FIELD}.{field}={cfg[field]!r} is not a regex ({err}); it must match whole "
        "'/'-joined parameter paths, e.g. 'head/.*'."
      ) from None
  if (cfg.reset or cfg.batch_stats) and not cfg.checkpoint:
    raise ValueError(
      f"{_FIELD}.reset / {_FIELD}.batch_stats need {_FIELD}.checkpoint (the run to start from)."
    )
  if cfg.freeze and optimizer_name.startswith("schedule_free"):
    raise ValueError(
      f"{_FIELD}.freeze with config.optimizer.name={optimizer_name!r}: schedule-free "
      "evaluates at an average that zero updates do not pin; use another optimizer."
    )
  if cfg.checkpoint:
    checkpoint_dir(cfg.checkpoint)


def checkpoint_dir(path: str) -> str:
  """The ``checkpoints/<step>`` directory that ``path`` names (newest step of a run).

  Raises:
    ValueError: naming ``config.init.checkpoint`` when there is none.
  """
  path = os.path.abspath(os.path.expanduser(path))
  for candidate in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(os.path.join(candidate, "state")):
      return candidate
    if os.path.isdir(candidate):
      steps = [d for d in os.listdir(candidate) if d.isdigit()]
      steps = [d for d in steps if os.path.isdir(os.path.join(candidate, d, "state"))]
      if steps:
        return os.path.join(candidate, max(steps, key=int))
  raise ValueError(
    f"{_FIELD}.checkpoint={path!r} holds no checkpoint: give a run directory (with "
    "checkpoints/), its checkpoints/ folder or one checkpoints/<step>."
  )


def _match_tree(tree: PyTree, pattern: str) -> PyTree:
  """Bools like ``tree``: True where the leaf's path fully matches ``pattern``."""
  regex = re.compile(pattern) if pattern else None
  return jax.tree.map(
    lambda path: bool(regex and regex.fullmatch(path)), param_groups.param_paths(tree)
  )


def _check_matches(tree: PyTree, pattern: str, field: str) -> None:
  if pattern and not any(jax.tree.leaves(_match_tree(tree, pattern))):
    paths = jax.tree.leaves(param_groups.param_paths(tree))
    raise ValueError(
      f"{_FIELD}.{field}={pattern!r} matches no parameter (regexes match whole paths); "
      f"this model's paths are {paths}."
    )


def with_frozen(tx: optax.GradientTransformation, params: PyTree, freeze: str):
  """``tx`` with zero updates for the parameters matching ``freeze`` ('' = ``tx``)."""
  if not freeze:
    return tx
  _check_matches(params, freeze, "freeze")
  mask = _match_tree(params, freeze)
  zero = optax.masked(optax.set_to_zero(), mask)
  return optax.chain(zero, tx, zero)


def _restorable(tree: PyTree) -> tuple[dict[str, Any], dict[str, Any]]:
  """(path -> leaf, orbax nested-dict item) for an nnx.State of arrays."""
  flat = {
    param_groups.path_string(kp): leaf for kp, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }
  item: dict[str, Any] = {}
  for path, leaf in flat.items():
    node = item
    *parents, name = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[name] = {"value": jax.ShapeDtypeStruct(np.shape(leaf), np.dtype(leaf.dtype))}
  return flat, item


def _lookup(tree: dict[str, Any], path: str) -> Any:
  node = tree
  for part in path.split("/") + ["value"]:
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def load_initial(
  cfg: ml_collections.ConfigDict, params: PyTree, batch_stats: PyTree
) -> tuple[PyTree, PyTree]:
  """(params, batch_stats) to start from: the checkpoint's, except what ``cfg.reset`` names.

  Args:
    cfg: the ``config.init`` section; ``checkpoint`` must be set.
    params: this run's fresh parameters (nnx.State); the structure restored into.
    batch_stats: this run's fresh BatchNorm statistics (nnx.State, may be empty).

  Raises:
    ValueError: a parameter missing from the checkpoint or of another shape,
      naming it and suggesting ``config.init.reset``.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  state_dir = os.path.join(checkpoint_dir(cfg.checkpoint), "state")
  _check_matches(params, cfg.reset, "reset")
  reset = _match_tree(params, cfg.reset)
  saved = ocp.PyTreeCheckpointer().metadata(state_dir).item_metadata.tree
  parts = {"params": params}
  if cfg.batch_stats:
    parts["batch_stats"] = batch_stats
  item: dict[str, Any] = {}
  keep: dict[str, dict[str, bool]] = {}
  for part, tree in parts.items():
    flat, nested = _restorable(tree)
    reset_flat = (
      dict(zip(flat, jax.tree.leaves(reset))) if part == "params" else dict.fromkeys(flat, False)
    )
    for path, leaf in flat.items():
      if reset_flat[path]:
        continue
      found = _lookup(saved.get(part, {}), path)
      if found is None:
        raise ValueError(
          f"{_FIELD}.checkpoint: {part} {path!r} of this model is not in {state_dir}; "
          f"re-initialise it with {_FIELD}.reset={path!r} (or a regex covering it)."
        )
      if tuple(found.shape) != tuple(np.shape(leaf)):
        raise ValueError(
          f"{_FIELD}.checkpoint: {part} {path!r} has shape {tuple(found.shape)} in {state_dir} "
          f"but {tuple(np.shape(leaf))} in this model; re-initialise it with "
          f"{_FIELD}.reset={path!r} (or e.g. 'head/.*')."
        )
    keep[part] = {p: not reset_flat[p] for p in flat}
    item[part] = _prune(nested, keep[part])
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  restored = ocp.PyTreeCheckpointer().restore(
    state_dir,
    args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
  )
  out = []
  for part, tree in (("params", params), ("batch_stats", batch_stats)):
    if part not in parts:
      out.append(tree)
      continue
    paths = jax.tree.leaves(param_groups.param_paths(tree))
    leaves, treedef = jax.tree.flatten(tree)
    new = [
      jnp.asarray(_lookup(restored[part], p), leaf.dtype) if keep[part][p] else leaf
      for p, leaf in zip(paths, leaves)
    ]
    out.append(jax.tree.unflatten(treedef, new))
  return out[0], out[1]


def _prune(nested: dict[str, Any], keep: dict[str, bool], prefix: str = "") -> dict[str, Any]:
  """``nested`` without the leaves whose path is not kept (reset ones are not read)."""
  out = {}
  for key, node in nested.items():
    path = f"{prefix}/{key}" if prefix else key
    if set(node) == {"value"} and not isinstance(node["value"], dict):
      if keep[path]:
        out[key] = node
    else:
      sub = _prune(node, keep, path)
      if sub:
        out[key] = sub
  return out
