"""Lengths in steps, epochs and examples resolve to the right number of steps."""

import math

import pytest

from lrscale import units


@pytest.mark.parametrize(
  "text,expected",
  [
    ("5 epochs", units.Length(5.0, "epochs")),
    ("1 epoch", units.Length(1.0, "epochs")),
    ("1000 steps", units.Length(1000.0, "steps")),
    ("1e6 examples", units.Length(1e6, "examples")),
    ("2.5epochs", units.Length(2.5, "epochs")),
    (300, units.Length(300.0, "steps")),
  ],
)
def test_parse(text, expected):
  assert units.parse_length(text) == expected


@pytest.mark.parametrize("bad", ["5 days", "epochs", "-3 steps", "", 2.5, True, "nan steps"])
def test_parse_rejects_with_field_name(bad):
  with pytest.raises(ValueError, match=r"config\.warmup\.length"):
    units.parse_length(bad, field="warmup.length")


@pytest.mark.parametrize("batch", [256, 8192])
def test_epochs_rescale_with_batch(batch):
  n = 1_281_167  # ImageNet train size
  # Goyal et al.: 5 warmup epochs = ceil(5 N / B) steps at any batch size.
  assert units.to_steps("5 epochs", batch_size=batch, num_train_examples=n) == math.ceil(
    5 * n / batch
  )
  assert units.to_steps("1000 steps", batch_size=batch, num_train_examples=n) == 1000
  assert units.to_steps("640000 examples", batch_size=batch, num_train_examples=n) == math.ceil(
    640000 / batch
  )


def test_exact_division_does_not_round_up():
  assert units.to_steps("0.1 epochs", batch_size=30, num_train_examples=3000) == 10


def test_a_string_must_name_its_unit():
  """One grammar: ``"1000"`` is no length anywhere; the error gives the fix."""
  with pytest.raises(ValueError, match=r"config\.budget='1000' has no unit: write '1000 steps'"):
    units.parse_length("1000", field="budget")
  assert units.parse_length(1000) == units.Length(1000.0, "steps")  # an int is steps
