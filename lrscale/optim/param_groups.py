"""Parameter groups: path strings, bias/norm masks and per-group multipliers.

Every function here maps a parameter pytree (a Flax NNX ``nnx.State`` or a
plain nested dict/list) to a pytree of the *same structure* whose leaves are
path strings, bools or floats. The same structure matters: optax's ``masked``
and our per-leaf scaling zip these trees with the updates leaf by leaf, and the
updates of an ``nnx.State`` are themselves an ``nnx.State`` whose leaves sit
inside ``nnx.Variable`` wrappers.

Path spelling: the keys of the path joined with ``'/'``, e.g.
``'layers/0/kernel'``, ``'block1/bn1/scale'``, ``'head/bias'``. The
``GetAttrKey('value')`` that ``nnx.Variable`` adds at the end of each path is
dropped, so an ``nnx.State`` and its ``nnx.to_pure_dict`` give the same paths.

Multiplier spelling (``config.optimizer.lr_multipliers``), chosen to survive a
command line without quoting tricks::

    "REGEX=FLOAT,REGEX=FLOAT,..."      e.g. "backbone/.*=0.1,head/.*=1.0"

Each REGEX must match the *whole* path (``re.fullmatch``); the first entry that
matches a path wins; unmatched paths get 1.0. Entries are split on ``','`` and
each entry at its last ``'='``, so a REGEX cannot contain ``','`` (write
``{2}{0,}``-style quantifiers as ``(?:..)+`` or character classes instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any
MultiplierSpec = str | Sequence[tuple[str, float]]

#: Leaf names that are never decayed under ``'no_bias_norm'``.
NO_DECAY_LEAF_NAMES = frozenset({"bias", "scale"})

# A path component that names a normalisation layer: contains 'norm'
# (BatchNorm_0, layer_norm, norm1, groupnorm) or is a bn/ln/gn token such as
# 'bn', 'bn1', 'ln_f', 'pre_gn'. A bare substring test for 'bn' would also hit
# names like 'subnet', hence the token boundaries.
_NORM_COMPONENT = re.compile(r"norm|(?:^|_)(?:bn|ln|gn)\d*(?:$|_)")

_FIELD = "config.optimizer.lr_multipliers"


def _key_str(key: Any) -> str | None:
  """One path component as a string; None for the nnx.Variable ``.value``."""
  if isinstance(key, jax.tree_util.DictKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  if isinstance(key, jax.tree_util.GetAttrKey):
    # nnx.Variable flattens to its `.value`; the wrapper is not part of the
    # parameter's name.
    return None if key.name == "value" else key.name
  if isinstance(key, jax.tree_util.FlattenedIndexKey):
    return str(key.key)
  return str(key)


def path_string(key_path: Sequence[Any]) -> str:
  """Joins a jax key path into ``'a/b/0/kernel'`` (dropping ``.value``)."""
  parts = (_key_str(k) for k in key_path)
  return "/".join(p for p in parts if p is not None)


def _map_paths(fn: Callable[[str, Any], Any], params: PyTree) -> PyTree:
  return jax.tree_util.tree_map_with_path(lambda kp, leaf: fn(path_string(kp), leaf), params)


def param_paths(params: PyTree) -> PyTree:
  """Returns a pytree like ``params`` whose leaves are '/'-joined paths."""
  return _map_paths(lambda path, _: path, params)


def is_bias_or_norm(path: str, ndim: int) -> bool:
  """Whether a leaf counts as a bias or normalisation parameter.

  True when any of:

  * the leaf name (last component) is ``'bias'`` or ``'scale'``;
  * any component contains ``'norm'`` or is a ``bn``/``ln``/``gn`` token
    (``bn1``, ``ln_f``), i.e. the leaf belongs to a normalisation layer;
  * the leaf has ``ndim <= 1``: biases, norm gains/offsets and other vectors
    or scalars of any name (as in timm and most large-batch recipes). Conv and
    dense kernels and embeddings are >= 2-D and stay decayed.

  Args:
    path: '/'-joined parameter path.
    ndim: number of dimensions of the leaf.

  Returns:
    True for bias/norm-like leaves.
  """
  components = path.lower().split("/")
  if components[-1] in NO_DECAY_LEAF_NAMES:
    return True
  if any(_NORM_COMPONENT.search(c) for c in components):
    return True
  return ndim <= 1


def bias_norm_mask(params: PyTree) -> PyTree:
  """Mask that is True where weight decay / trust ratio DOES apply.

  Goyal et al. 2017 (sec. 5.1) apply weight decay to weights only, not to
  BatchNorm's gamma and beta; the usual extension also exempts biases. A leaf
  is False exactly when :func:`is_bias_or_norm` holds.

  Args:
    params: ``nnx.State`` or nested dict of arrays (or of ShapeDtypeStructs).

  Returns:
    Pytree of Python bools with the structure of ``params``.
  """
  return _map_paths(lambda path, leaf: not is_bias_or_norm(path, np.ndim(leaf)), params)


def parse_multipliers(spec: MultiplierSpec) -> tuple[tuple[str, float], ...]:
  """Parses ``"REGEX=FLOAT,..."`` (or a sequence of pairs) into pairs.

  Args:
    spec: the string spelling described in the module docstring, ``''`` for
      none, or a sequence of ``(regex, multiplier)`` pairs.

  Returns:
    Tuple of ``(regex, multiplier)`` in priority order.

  Raises:
    ValueError: malformed entry, invalid regex, or a multiplier that is not a
      finite number >= 0; the message names ``config.optimizer.lr_multipliers``.
  """
  if isinstance(spec, str):
    pairs = []
    for entry in (e.strip() for e in spec.split(",")):
      if not entry:
        continue
      pattern, sep, value = entry.rpartition("=")
      if not sep or not pattern:
        raise ValueError(
          f'{_FIELD}: entry {entry!r} is not REGEX=FLOAT; write e.g. "backbone/.*=0.1,head/.*=1.0".'
        )
      try:
        pairs.append((pattern, float(value)))
      except ValueError:
        raise ValueError(
          f"{_FIELD}: multiplier {value!r} in entry {entry!r} is not a "
          'number; write e.g. "head/.*=0.5".'
        ) from None
  else:
    pairs = [(str(p), float(m)) for p, m in spec]
  for pattern, mult in pairs:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(
        f"{_FIELD}: invalid regex {pattern!r} ({e}); regexes must match the "
        "whole '/'-joined parameter path, e.g. 'head/.*'."
      ) from None
    if not np.isfinite(mult) or mult < 0:
      raise ValueError(
        f"{_FIELD}: multiplier for {pattern!r} must be a finite number >= 0, got {mult}."
      )
  return tuple(pairs)


def _multiplier_for(path: str, pairs: Sequence[tuple[str, float]]) -> float:
  for pattern, mult in pairs:
    if re.fullmatch(pattern, path):
      return mult
  return 1.0


def multiplier_tree(params: PyTree, spec: MultiplierSpec) -> PyTree:
  """Per-leaf learning-rate multipliers from a regex spec.

  Args:
    params: ``nnx.State`` or nested dict.
    spec: ``"REGEX=FLOAT,..."`` or pairs; first full match wins, else 1.0.

  Returns:
    Pytree of Python floats with the structure of ``params``.
  """
  pairs = parse_multipliers(spec)
  return _map_paths(lambda path, _: _multiplier_for(path, pairs), params)


def unmatched_patterns(params: PyTree, spec: MultiplierSpec) -> list[str]:
  """Regexes of ``spec`` that match no parameter path (likely typos)."""
  paths = jax.tree_util.tree_leaves(param_paths(params))
  return [p for p, _ in parse_multipliers(spec) if not any(re.fullmatch(p, path) for path in paths)]
