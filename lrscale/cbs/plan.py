"""A batch-size warmup (``config.batch_ramp``) planned from a measured CBS(t).

Merrill et al. 2025 grow the batch as the local CBS grows (1024 -> 2048 ->
4096 documents) and reach a lower loss than either fixed batch in 43% fewer
steps. Here the batch of a run that starts at the reference batch B is
multiplied by ``factor`` at the first branch point where the CBS, taken at
the low end of its range over seeds (the cautious choice), reaches the next
batch, B * factor^j. Milestones are positions in examples, as
``config.batch_ramp.milestones`` wants (``lrscale.units.make_batch_ramp``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def plan_batch_ramp(
  points: Sequence[Mapping[str, Any]], *, batch_size: int, factor: int = 2, max_batch: int = 0
) -> dict[str, Any]:
  """``{"milestones": ("N examples", ...), "factor": factor}`` from cbs.json's points.

  Args:
    points: cbs.json ``points`` (``examples`` and ``cbs.lo`` each), any order.
    batch_size: the run's initial batch B.
    factor: the batch multiplier at each milestone (an integer >= 2).
    max_batch: stop growing here (0 = the largest CBS measured).
  """
  if not (isinstance(factor, int) and factor >= 2):
    raise ValueError(f"batch ramp factor must be an integer >= 2, got {factor!r}.")
  milestones, batch = [], batch_size
  cap = max_batch or max(p["cbs"]["lo"] for p in points)
  for p in sorted(points, key=lambda p: p["examples"]):
    while batch * factor <= min(p["cbs"]["lo"], cap) and p["examples"] > 0:
      if milestones and milestones[-1] == f"{p['examples']} examples":
        break  # one step up per branch point: the CBS was measured there, not beyond
      milestones.append(f"{p['examples']} examples")
      batch *= factor
  return dict(milestones=tuple(milestones), factor=factor)
