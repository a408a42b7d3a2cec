"""``RunPlan``: one run's config resolved: every length in steps, every rule applied.

``lrscale.config.resolve`` builds it (the only place a config is read as a
whole); the engine, the study, the range test and the tools read the plan.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections

from lrscale import tasks, units
from lrscale.data import registry
from lrscale.optim import scaling, schedule_build


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """A config resolved for one run: every length in steps, every rule applied."""

  config: ml_collections.FrozenConfigDict
  dataset: registry.DatasetMeta
  batch_size: int
  microbatches: int
  num_devices: int
  bn_group_size: int
  lr: float  # peak lr after the scaling rule
  optimizer: ml_collections.FrozenConfigDict  # with the rule's overrides (adam_sde)
  scaled: scaling.ScaledHparams
  total_steps: int
  ramp: tuple[units.RampPhase, ...]  # one phase (multiplier 1) without a batch ramp
  log_every: int
  sync_every: int
  eval_every: int
  checkpoint_every: int
  max_loss: float
  schedule: schedule_build.Schedule  # (step, peak_lr) -> lr, every length in steps

  @property
  def steps_per_epoch(self) -> float | None:
    """None for a dataset without epochs (generated: every step draws fresh examples)."""
    if self.dataset.num_train is None:
      return None
    return self.dataset.num_train / self.batch_size

  @property
  def task(self) -> tasks.Task:
    """What the outputs are scored by (loss, eval metrics), from the dataset."""
    return tasks.get_task(self.dataset.task)

  @property
  def has_target(self) -> bool:
    return self.config.target.value is not None

  def to_steps(self, length: str | int, field: str = "length") -> int:
    """Resolves any length for this run's batch size (and batch ramp) and dataset."""
    return units.ramp_to_steps(
      length,
      phases=self.ramp,
      batch_size=self.batch_size,
      num_train_examples=self.dataset.num_train,
      field=field,
      tokens_per_example=self.dataset.tokens_per_example,
    )

  @property
  def max_microbatches(self) -> int:
    """Microbatches per step in the last ramp phase (= microbatches without a ramp)."""
    return self.microbatches * self.ramp[-1].multiplier

  def examples_at(self, step: int) -> int:
    """Examples consumed by the first ``step`` steps."""
    return units.examples_at_step(step, self.ramp, self.batch_size)

  def eval_cadence_at(self, step: int) -> tuple[int, int]:
    """(offset, every): evaluate at steps s with (s - offset) % every == 0.

    An interval in epochs or examples is a different number of steps in each
    phase of a batch ramp, so it is resolved per phase, counting from the
    phase's first step; in steps (or without a ramp) it is fixed.
    """
    if len(self.ramp) == 1 or units.parse_length(self.config.eval_every).unit == "steps":
      return 0, self.eval_every
    phase = max((p for p in self.ramp if p.start_step <= step), key=lambda p: p.start_step)
    phase_batch = units.RampPhase(0, 0, phase.multiplier)
    every = units.ramp_to_steps(
      self.config.eval_every,
      phases=(phase_batch,),
      batch_size=self.batch_size,
      num_train_examples=self.dataset.num_train,
      tokens_per_example=self.dataset.tokens_per_example,
    )
    return phase.start_step, max(1, every)

  def microbatches_at(self, step: int) -> int:
    """Microbatches of step ``step`` (0-based, the step about to run)."""
    return self.microbatches * units.multiplier_at_step(step, self.ramp)

  def lr_fn(self) -> Callable[[Any, Any], Any]:
    """``(step, peak_lr) -> lr``: the resolved schedule, traceable with a traced peak lr."""
    return self.schedule

  def summary(self) -> dict[str, Any]:
    """The resolved numbers, for config.json and the log."""
    return dict(
      batch_size=self.batch_size,
      schedule_truncated=self.schedule.truncated,
      microbatches=self.microbatches,
      num_devices=self.num_devices,
      bn_group_size=self.bn_group_size,
      lr=self.lr,
      scaling=dict(self.scaled._asdict()),
      total_steps=self.total_steps,
      steps_per_epoch=self.steps_per_epoch,
      log_every=self.log_every,
      sync_every=self.sync_every,
      eval_every=self.eval_every,
      checkpoint_every=self.checkpoint_every,
      max_loss=self.max_loss,
      num_train_examples=self.dataset.num_train,
      num_eval_examples=self.dataset.num_eval,
      optimizer=self.optimizer.to_dict(),
      batch_ramp=[p._asdict() for p in self.ramp],
      dataset=self.dataset.summary(),
    )
