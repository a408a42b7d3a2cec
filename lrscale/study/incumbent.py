"""Exact pruning against the incumbent when the result is steps-to-target.

A point (an lr and any other swept values, over its seeds) has as result the
median over its seeds of the first eval step at which the target is met, an
unreached seed counting as infinity, and the best point is the one with the
fewest steps, ties to the lower lr (Shallue et al. 2018;
``lrscale.analysis.steps_to_result``). Once some point is *resolved* (every
seed has reached the target or ended), its median ``S*`` is the *incumbent*.
A seed still training that has not met the target by step ``x`` needs at least
``x + 1`` steps, so the point's median is at least the median of these lower
bounds; when that exceeds ``S*`` (or equals it at a higher lr) the point cannot
be the best, whatever it would do next. Nothing here is a heuristic: a point
stopped by :func:`beaten` would have lost in the full grid too.
"""

from __future__ import annotations

import bisect
import math
from typing import NamedTuple, Sequence

import numpy as np


class Seed(NamedTuple):
  """What is known of one trial of a point.

  Attributes:
    steps: Optimizer steps it has run.
    reached: First eval step meeting the target, ``None`` if none yet.
    finished: It ended (budget, target, divergence or pruning): no more steps.
    metric: Its last eval of the target metric, sign-flipped so higher is better.
    loss: Its last eval loss.
  """

  steps: int
  reached: int | None
  finished: bool
  metric: float
  loss: float


class Incumbent(NamedTuple):
  """The best resolved point so far: its median steps-to-target and its lr."""

  steps: float
  lr: float


def resolved(seeds: Sequence[Seed]) -> bool:
  """Every seed has reached the target or ended: the point's median is known."""
  return all(s.reached is not None or s.finished for s in seeds)


def lower_bound(seeds: Sequence[Seed], trained_to: int = 0) -> float:
  """The least median steps-to-target the point can still have.

  Args:
    seeds: its seeds.
    trained_to: suppose its running seeds were trained to this step without
      reaching the target (``0``: as they are).

  Returns:
    ``median_i l_i`` with ``l_i`` the reached step, ``inf`` for an ended seed
    short of the target, ``max(steps_i, trained_to) + 1`` for a running one.
    For a resolved point this is its median.
  """
  bounds = []
  for s in seeds:
    if s.reached is not None:
      bounds.append(float(s.reached))
    elif s.finished:
      bounds.append(math.inf)
    else:
      bounds.append(1.0 + max(s.steps, trained_to))
  return float(np.median(bounds))


def beaten(bound: float, lr: float, inc: Incumbent | None) -> bool:
  """Whether a point of this lr whose median is at least ``bound`` cannot be the best.

  Without an incumbent only a point that can never reach the target is
  (``bound = inf``, e.g. one of two seeds diverged short of it).
  """
  if inc is None:
    return math.isinf(bound)
  return bound > inc.steps or (bound == inc.steps and lr > inc.lr)


def proof_step(seeds: Sequence[Seed], lr: float, inc: Incumbent | None, full: int) -> int:
  """The fewest steps the running seeds must run, short of the target, to prove the point
  :func:`beaten` (``full``, the budget, when no number of steps would).

  Example: one seed reached at 36, one running, incumbent ``S* = 42.5`` at a
  higher lr: ``median(36, x + 1) > 42.5`` first holds at ``x = 49``.
  """
  lo = max([s.steps for s in seeds if s.reached is None and not s.finished], default=full)
  return lo + bisect.bisect_left(
    range(lo, full), True, key=lambda x: beaten(lower_bound(seeds, x), lr, inc)
  )
