"""The exact local CBS on ``linreg``: expected branch losses from the reference's weights.

On the Gaussian linear-regression workload (``lrscale.data.linreg``) the
expected excess risk of SGD obeys a closed recursion in the diagonal second
moments ``m_i = E[(w_i - w*_i)^2]`` (``lrscale.analysis.theory``). A CBS
branch starts from the reference's *known* weights ``w_t``, so
``m_i = (w_{t,i} - w*_i)^2`` exactly, and the branch's expected metric after
its ``n = examples / (k B)`` steps at its lr is a deterministic number. The
exact CBS(t) is the critical multiplier (``measure.critical_multiplier``, the
same rule as for the measured branches) applied to these expectations: what
the branching measurement estimates with finitely many seeds, and what
``tests/test_cbs.py`` checks it against. Plain SGD only (the recursion is for
SGD without momentum or weight decay).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from lrscale import config as config_lib
from lrscale.analysis import theory
from lrscale.cbs import branch, measure
from lrscale.data import linreg

# Metrics with an exact expectation, as multiples of the relative excess R_t / R(w=0).
_SCALE = {
  "eval_relative_excess": lambda problem: 1.0,
  "eval_excess_risk": lambda problem: problem.initial_excess,
}


def applies(cfg: ml_collections.ConfigDict, plan: config_lib.RunPlan) -> bool:
  """Whether the exact CBS exists: plain SGD on linreg, a metric with an exact expectation."""
  opt = plan.optimizer  # with the scaling rule's overrides (e.g. adamw_timescale's wd)
  return (
    plan.dataset.name == linreg.NAME
    and cfg.metric in _SCALE
    and opt.name == "sgd"
    and not opt.weight_decay
  )


def expected_metric(
  cfg: ml_collections.ConfigDict, plan: config_lib.RunPlan, *, step: int, k: int, w: np.ndarray
) -> float:
  """The branch at k x B from weights ``w``: its expected ``cfg.metric`` at the end.

  Args:
    cfg: the CBS config.
    plan: the reference's plan.
    step: the branch point (the branch's lr follows the reference's lr there).
    k: the batch multiplier.
    w: the reference's weights at ``step``, shape ``(dim,)``.

  Returns:
    The expectation over the branch's data; ``inf`` if the branch diverges.
  """
  bplan = branch.branch_plan(cfg, plan, step=step, k=k, seed=cfg.seeds[0])
  problem = theory.LinregSpec.from_mapping(plan.config.dataset.linreg.to_dict())
  m0 = (np.asarray(w, np.float64).reshape(-1) - problem.teacher) ** 2
  rel = theory.risk_curves(problem, [bplan.batch_size], [bplan.lr], bplan.total_steps, initial=m0)[
    0, 0, -1
  ]
  value = float(rel) * _SCALE[cfg.metric](problem)
  return value if np.isfinite(value) and rel < theory.DIVERGED_RELATIVE_EXCESS else float("inf")


def exact_points(
  cfg: ml_collections.ConfigDict, plan: config_lib.RunPlan, weights: Mapping[int, Any]
) -> dict[int, dict[str, Any]]:
  """Per branch point: the expected metric of every k and the exact CBS (examples).

  Args:
    cfg: the CBS config.
    plan: the reference's plan.
    weights: branch step -> the reference's parameters there (a one-leaf tree:
      the linear model's kernel).
  """
  out = {}
  for step, params in weights.items():
    (kernel,) = jax.tree.leaves(params)
    w = np.asarray(jax.device_get(kernel))
    losses = {k: expected_metric(cfg, plan, step=step, k=k, w=w) for k in cfg.multipliers}
    out[step] = dict(
      expected=losses,
      cbs=measure.critical_multiplier(losses, cfg.tolerance) * plan.batch_size,
    )
  return out
