"""What is learned, separate from the engine that learns it (algoperf's workload split).

A ``Task`` says how a model's outputs are scored: the training loss per
example, the evaluation metrics per example (the engine takes their weighted
means over the whole eval split, so padding never counts), which of them a
target or a plateau controller may name, and which direction is better. The
engine (``lrscale.engine``) never looks inside: a new task is a new ``Task``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax

# outputs [b, ...], labels [b, ...] -> per-example values [b]
PerExample = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """The loss and metrics of one kind of learning problem.

  Attributes:
    name: the name in ``lrscale.tasks.TASK_NAMES``.
    loss: per-example training loss; the step minimises its mean over the
      global batch.
    metrics: eval metric name -> per-example value. Must contain ``eval_loss``
      (the same function as ``loss``). Their order is the order the on-device
      loop stacks them in (a target is an index into it).
    modes: metric name -> ``"min"`` or ``"max"`` (which direction is better).
    exact_metrics: metrics with no per-example form, computed only by a
      dataset's exact evaluator (``registry.GeneratedSource.exact_metrics``);
      they follow ``metrics`` in ``metric_names``.
    divergence_factor: the automatic divergence bound is this many times the
      initial eval loss (see ``auto_max_loss``).
  """

  name: str
  loss: PerExample
  metrics: Mapping[str, PerExample]
  modes: Mapping[str, str]
  divergence_factor: float = 4.0
  exact_metrics: tuple[str, ...] = ()
  loss_floor: Callable[[int], float] = lambda output_dim: 0.0

  @property
  def metric_names(self) -> tuple[str, ...]:
    return tuple(self.metrics) + self.exact_metrics

  def metric_index(self, name: str) -> int:
    return self.metric_names.index(name)

  def auto_max_loss(self, initial_loss: float, output_dim: int) -> float:
    """Divergence bound when ``config.divergence.max_loss`` is 0 (automatic)."""
    return self.divergence_factor * max(initial_loss, self.loss_floor(output_dim))

  def check_metric(self, metric: str, mode: str | None, field: str) -> None:
    """Rejects a metric this task does not compute (or the wrong direction for it).

    Raises:
      ValueError: naming ``field``, the task's metrics and the fix.
    """
    if metric not in self.metric_names:
      raise ValueError(
        f"config.{field}={metric!r} is not a metric of the {self.name} task; choose one of "
        f"{list(self.metric_names)}."
      )
    if mode is not None and mode != self.modes[metric]:
      raise ValueError(
        f"config.{field}={metric!r} improves when it goes "
        f"{'up' if self.modes[metric] == 'max' else 'down'}: set the matching mode to "
        f"{self.modes[metric]!r} (got {mode!r})."
      )
