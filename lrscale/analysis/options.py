"""How a study's results are read: the ``analysis`` section of a study config.

Stored in ``study.json`` with the rest of the study config (training ignores
it), so ``python -m lrscale.analyze`` reads a directory the way its study
asked for:

* ``target_from``: ``"per_seed"`` (default; each seed's first evaluation at
  the target, median over seeds, Shallue et al. 2018) or ``"seed_mean"`` (the
  first step at which the monotone fit of the seeds' *mean* metric curve meets
  the target, an estimate of where the expected curve crosses it;
  :mod:`lrscale.analysis.seed_mean`).
* ``targets``: extra target values of the same metric, each read from the
  same eval rows and fitted on its own (:func:`lrscale.analysis.run.targets_section`).
  Trials stop at the study's stopping target, so none may be harder.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

PER_SEED = "per_seed"
SEED_MEAN = "seed_mean"
TARGET_FROM = (PER_SEED, SEED_MEAN)


@dataclasses.dataclass(frozen=True)
class AnalysisOptions:
  """Parsed ``config.analysis``."""

  target_from: str = PER_SEED
  targets: tuple[float, ...] = ()


def _harder(a: float, b: float, mode: str) -> bool:
  """Whether target value ``a`` is strictly harder to reach than ``b``."""
  return a < b if mode == "min" else a > b


def parse(
  analysis: Mapping[str, Any] | None,
  *,
  mode: str = "max",
  stop_value: float | None = None,
) -> AnalysisOptions:
  """Checked options from a study config's ``analysis`` mapping (absent = defaults).

  Args:
    analysis: ``config.analysis`` as a mapping, or ``None``.
    mode: The target's mode (``"max"`` or ``"min"``).
    stop_value: The value at which trials stop (``target.stop_value`` or
      ``target.value``); ``None`` skips the check of ``targets`` against it.

  Raises:
    ValueError: ``config.analysis.<field>=...: <fix>`` on a bad field.
  """
  analysis = dict(analysis or {})
  target_from = str(analysis.get("target_from", PER_SEED))
  if target_from not in TARGET_FROM:
    raise ValueError(
      f"config.analysis.target_from={target_from!r}: must be one of {list(TARGET_FROM)}"
    )
  raw = analysis.get("targets") or ()
  try:
    targets = tuple(float(v) for v in raw)
  except (TypeError, ValueError):
    raise ValueError(
      f"config.analysis.targets={raw!r}: must be a tuple of numbers, e.g. (0.75, 0.8)"
    ) from None
  if not all(math.isfinite(v) for v in targets):
    raise ValueError(f"config.analysis.targets={raw!r}: every value must be finite")
  if stop_value is not None and any(_harder(v, stop_value, mode) for v in targets):
    raise ValueError(
      f"config.analysis.targets={raw!r}: trials stop at {stop_value} (mode {mode}), so no "
      "target may be harder; raise target.value (or target.stop_value) to the hardest one"
    )
  return AnalysisOptions(target_from=target_from, targets=targets)


def from_study_json(raw: Mapping[str, Any]) -> AnalysisOptions:
  """Options of a study directory (``study.json``'s ``config.analysis``; none = defaults)."""
  config = raw.get("config") if isinstance(raw.get("config"), Mapping) else {}
  return parse(config.get("analysis") if isinstance(config.get("analysis"), Mapping) else None)
