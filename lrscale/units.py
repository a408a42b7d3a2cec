"""Training lengths in steps, epochs or examples, resolved to optimizer steps.

A length in a config is written as ``"<number> <unit>"`` with unit ``steps``,
``epochs`` or ``examples`` (singular forms allowed), or as a Python int (or an
integral float) meaning steps. A *string* must name its unit: ``"1000"`` is
rejected with the fix (``'1000 steps'``), because a bare number in a string is
ambiguous between steps and epochs, and a command-line override of a string
field (``--config.budget=1000``) gives exactly that string. This is the one
grammar of every length field (``budget``, ``warmup.length``, the schedule's
lengths, milestones, boundaries, ...; ``lrscale.optim.schedule_config`` checks
with ``parse_length``). Writing the warmup in epochs (Goyal et al. 2017: 5 epochs) or the budget
in examples keeps a config correct when the global batch size changes: the same
file gives 5 * N / 256 warmup steps at B=256 and 5 * N / 8192 at B=8192. A length
in steps stays fixed in steps. This module is the one place where that
conversion happens (big_vision's ``steps(...)`` idea).

A dataset without a finite training set (generated: ``linreg``) has no epochs;
its ``num_train_examples`` is None and a length in epochs is an error naming
the field.

For sequence data (language modelling) a length may also be given in
``tokens``: an example is one sequence of ``tokens_per_example`` (the context)
target tokens, so ``T tokens`` is ``T / tokens_per_example`` examples, the unit
in which LM papers state budgets (Merrill et al. 2025; Bergsma et al. 2025).
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple, Sequence

UNITS = ("steps", "epochs", "examples", "tokens")
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)"
_LENGTH_RE = re.compile(rf"^\s*{_NUMBER}\s*([a-zA-Z]+)\s*$")
_NUMBER_RE = re.compile(rf"^\s*{_NUMBER}\s*$")


class Length(NamedTuple):
  """A parsed length: ``value`` in ``unit`` (one of ``UNITS``)."""

  value: float
  unit: str


def parse_length(length: str | int | float, *, field: str = "length") -> Length:
  """Parses ``"5 epochs"``, ``"1000 steps"``, ``"1e6 examples"`` or an int (steps).

  Args:
    length: the config value.
    field: the config field name, used in the error message.

  Returns:
    The parsed ``Length``.

  Raises:
    ValueError: naming ``field`` when the value is not a length.
  """
  if isinstance(length, bool):
    raise ValueError(f"config.{field} must be a length such as '5 epochs', got {length!r}.")
  if isinstance(length, (int, float)):
    if isinstance(length, float) and not length.is_integer():
      raise ValueError(
        f"config.{field}={length!r}: a bare number means steps and must be an integer; "
        "write e.g. '2.5 epochs' for a fractional length in another unit."
      )
    value, unit = float(length), "steps"
  else:
    match = _LENGTH_RE.match(str(length))
    if not match and _NUMBER_RE.match(str(length)):
      raise ValueError(
        f"config.{field}={length!r} has no unit: write {str(length).strip() + ' steps'!r} "
        "(or epochs / examples), or give the int for steps."
      )
    if not match:
      raise ValueError(
        f"config.{field}={length!r} is not a length: write '<number> <unit>' with unit "
        f"one of {UNITS}, e.g. '5 epochs', '1000 steps' or '50000 examples'."
      )
    value = float(match.group(1))
    unit = match.group(2).lower()
    if not unit.endswith("s"):
      unit += "s"
    if unit not in UNITS:
      raise ValueError(
        f"config.{field}={length!r}: unknown unit {match.group(2)!r}; use one of {UNITS}."
      )
  if value < 0 or not math.isfinite(value):
    raise ValueError(f"config.{field}={length!r} must be a finite length >= 0.")
  return Length(value, unit)


def to_examples(
  parsed: Length,
  *,
  num_train_examples: int | None,
  tokens_per_example: int = 0,
  field: str = "length",
) -> float:
  """Examples named by a length in epochs (x N), examples, or tokens (/ context).

  Raises:
    ValueError: a length in tokens for a dataset whose examples are not sequences.
  """
  if parsed.unit == "epochs":
    if num_train_examples is None:
      raise ValueError(
        f"config.{field}={parsed.value:g} epochs: this dataset has no epochs (every step draws "
        "fresh examples); give the length in steps or examples, e.g. '1000 steps'."
      )
    return parsed.value * num_train_examples
  if parsed.unit == "tokens":
    if tokens_per_example <= 0:
      raise ValueError(
        f"config.{field}={parsed.value:g} tokens: this dataset's examples are not token "
        "sequences; give the length in steps, epochs or examples."
      )
    return parsed.value / tokens_per_example
  return parsed.value


def to_steps(
  length: str | int | float | Length,
  *,
  batch_size: int,
  num_train_examples: int | None,
  field: str = "length",
  tokens_per_example: int = 0,
) -> int:
  """Converts a length to optimizer steps for a global batch of ``batch_size``.

  steps = value for steps; ceil(value * N / B) for epochs; ceil(value / B) for
  examples (N = training-set size, B = global batch size). Rounding up means an
  epoch-based length always covers at least the data it names.

  Args:
    length: a length as accepted by ``parse_length`` or a parsed ``Length``.
    batch_size: the global batch size B (examples per optimizer step).
    num_train_examples: N, the number of training examples (one epoch); None
      when the data has no epochs.
    field: the config field name, for error messages.

  Returns:
    The number of optimizer steps (>= 0).
  """
  if batch_size <= 0:
    raise ValueError(f"batch size must be positive to resolve config.{field}, got {batch_size}.")
  # A fixed batch is a ramp of one phase.
  return ramp_to_steps(
    length,
    phases=(RampPhase(0, 0, 1),),
    batch_size=batch_size,
    num_train_examples=num_train_examples,
    field=field,
    tokens_per_example=tokens_per_example,
  )


class RampPhase(NamedTuple):
  """A phase of a batch-size ramp: from ``start_step`` (= ``start_example``) on,
  the global batch is ``multiplier`` x the initial batch."""

  start_step: int
  start_example: int
  multiplier: int


def make_batch_ramp(
  milestones: Sequence[str | int],
  *,
  factor: int,
  batch_size: int,
  num_train_examples: int | None,
  tokens_per_example: int = 0,
) -> tuple[RampPhase, ...]:
  """Phases of Smith et al. 2017's "increase the batch size instead of decaying the lr".

  At each milestone (a length in epochs or examples) the global batch is
  multiplied by ``factor``. Milestones are positions in the data, not in steps,
  because the steps per epoch change at every phase; a phase starts at the
  first step whose first example is at or past its milestone.
  """
  phases = [RampPhase(0, 0, 1)]
  for i, length in enumerate(milestones):
    parsed = parse_length(length, field=f"batch_ramp.milestones[{i}]")
    if parsed.unit == "steps":
      raise ValueError(
        f"config.batch_ramp.milestones[{i}]={length!r}: give batch-ramp "
        "milestones in epochs, examples or tokens (the steps per epoch change with "
        "the batch)."
      )
    examples = to_examples(
      parsed,
      num_train_examples=num_train_examples,
      tokens_per_example=tokens_per_example,
      field=f"batch_ramp.milestones[{i}]",
    )
    prev = phases[-1]
    if examples <= prev.start_example:
      raise ValueError(f"config.batch_ramp.milestones must increase; {length!r} does not.")
    batch = batch_size * prev.multiplier
    steps = int(math.ceil((examples - prev.start_example) / batch - 1e-9))
    phases.append(
      RampPhase(
        prev.start_step + steps, prev.start_example + steps * batch, prev.multiplier * factor
      )
    )
  return tuple(phases)


def _phase_at_step(step: int, phases: Sequence[RampPhase]) -> RampPhase:
  return max((p for p in phases if p.start_step <= step), key=lambda p: p.start_step)


def examples_at_step(step: int, phases: Sequence[RampPhase], batch_size: int) -> int:
  """Examples consumed by the first ``step`` steps under a ramp."""
  phase = _phase_at_step(step, phases)
  return phase.start_example + (step - phase.start_step) * batch_size * phase.multiplier


def multiplier_at_step(step: int, phases: Sequence[RampPhase]) -> int:
  """The batch multiplier of step ``step`` (0-based: the step that is about to run)."""
  return _phase_at_step(step, phases).multiplier


def ramp_to_steps(
  length: str | int | float | Length,
  *,
  phases: Sequence[RampPhase],
  batch_size: int,
  num_train_examples: int | None,
  field: str = "length",
  tokens_per_example: int = 0,
) -> int:
  """Like ``to_steps`` for a run whose batch follows ``phases``: a length in epochs
  or examples becomes the first step at which that many examples are consumed."""
  parsed = length if isinstance(length, Length) else parse_length(length, field=field)
  if parsed.unit == "steps":
    return int(round(parsed.value))
  examples = to_examples(
    parsed,
    num_train_examples=num_train_examples,
    tokens_per_example=tokens_per_example,
    field=field,
  )
  # A tiny tolerance keeps e.g. 0.1 * 3000 / 30 from rounding up to 11 by float error.
  phase = max((p for p in phases if p.start_example <= examples + 1e-9), key=lambda p: p.start_step)
  return phase.start_step + int(
    math.ceil((examples - phase.start_example) / (batch_size * phase.multiplier) - 1e-9)
  )
