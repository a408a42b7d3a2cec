"""``gamma ** t`` in float32 to the precision of its closed form, for int step counts ``t``.

Exponential-type schedules (PyTorch ``ExponentialLR``, ``StepLR``, ``CyclicLR``'s
``exp_range``) multiply the lr by ``gamma ** t``. In float32, ``jnp.power(gamma, t)``
is ``exp2(t * log2(gamma))`` with both the rounded ``gamma`` and the rounded product
carrying a relative error of ~6e-8 into an exponent that grows with ``t``: at
``gamma = 0.999`` the lr is off by 1.4e-6 (relative) at step 85 and 3e-4 at step
20000 (the float32 ``gamma`` alone is ``0.999 + 1.3e-8``).

``int_power`` keeps the exponent ``e = t * log2(gamma)`` exact to ~2e-7 absolute
instead: ``log2(gamma)`` is taken in float64 on the host and split into
``PIECES`` float32 pieces of ``PIECE_BITS`` significant bits, ``t`` into two
16-bit halves, so every partial product is a float32 with at most 24 significant
bits, i.e. exact (no FMA contraction or rounding can change it). Each product is
split exactly into an integer and a fraction (``x - round(x)`` is exact); the
integers add up to ``n`` and the fractions, re-centred after every addition, to
``f`` in [-1/2, 1/2]. Then ``gamma ** t = ldexp(exp2(f), n)``: the only
roundings left are the fraction sum and ``exp2`` on [-1/2, 1/2], well under
1e-6 relative for every ``t < 2**31`` (tests/test_schedules.py checks 10**6 steps
against numpy float64).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

PIECES = 4  # 4 x 8 bits: log2(gamma) to 2**-33 relative
PIECE_BITS = 8  # 8 bits x a 16-bit half of t = 24 bits: exact in float32


def split_float(x: float, pieces: int = PIECES, bits: int = PIECE_BITS) -> tuple[float, ...]:
  """``x ~= sum(parts)``, each part with at most ``bits`` significant bits.

  The parts shrink by ``2**bits`` each; what is left over is below
  ``|x| * 2**-(pieces * bits)``.
  """
  parts, rest = [], x
  for _ in range(pieces):
    if rest == 0.0:
      parts.append(0.0)
      continue
    quantum = 2.0 ** (math.floor(math.log2(abs(rest))) - bits + 1)
    part = round(rest / quantum) * quantum  # an integer <= 2**bits times a power of two
    parts.append(part)
    rest -= part
  return tuple(parts)


def int_power(gamma: float, t) -> jnp.ndarray:
  """``gamma ** t`` for a Python float ``gamma > 0`` and int steps ``t >= 0`` (traced).

  Args:
    gamma: the base, known on the host (a config value).
    t: integer step counts (any shape; int32 or a Python int).

  Returns:
    float32 ``gamma ** t``, within ~5e-7 relative of the float64 closed form
    (0 or inf where that is outside float32's range).
  """
  if not gamma > 0.0:
    raise ValueError(f"int_power needs gamma > 0, got {gamma!r}")
  t = jnp.asarray(t).astype(jnp.int32)
  halves = (
    ((t >> 16).astype(jnp.float32), 65536.0),  # t = high * 2**16 + low, each exact in float32
    ((t & 0xFFFF).astype(jnp.float32), 1.0),
  )
  whole = jnp.zeros(t.shape, jnp.float32)  # sum of the integer parts (exact below 2**24)
  frac = jnp.zeros(t.shape, jnp.float32)  # sum of the fractions, kept in [-1/2, 1/2]
  for piece in split_float(math.log2(gamma)):
    for half, scale in halves:
      term = half * jnp.float32(piece * scale)  # <= 24 significant bits: exact
      n = jnp.round(term)
      frac = frac + (term - n)  # term - n: exact
      carry = jnp.round(frac)
      whole, frac = whole + n + carry, frac - carry
  # Past +-300 the result is 0 or inf in float32 anyway; clipping keeps the int32 cast safe.
  exponent = jnp.clip(whole, -300.0, 300.0).astype(jnp.int32)
  return jnp.ldexp(jnp.exp2(frac), exponent)
