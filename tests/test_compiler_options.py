"""lrscale's CPU programs send convs to XLA's own conv, not YNNPACK, with equal results."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lrscale.engine.compiler_options import YNN_FUSION_OPTION, program_compiler_options


def _scanned_conv(x: jax.Array, k: jax.Array) -> jax.Array:
  # A ResNet stage's conv in a loop body, as in lrscale's train segment.
  def body(c, _):
    y = lax.conv_general_dilated(
      c, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jnp.maximum(y, 0.0), None

  return lax.scan(body, x, None, length=2)[0]


def _convs_in_ynn_fusions(hlo: str) -> int:
  """How many fused computations called by a YNNPACK fusion hold a convolution."""
  called = re.findall(r"ynn_fusion[.\d]* = .*?calls=(%[\w.\-]+)", hlo)
  count = 0
  for name in called:
    body = re.search(re.escape(name) + r" .*?\{\n(.*?)\n\}", hlo, re.S)
    count += bool(body and "convolution(" in body.group(1))
  return count


def test_options_per_platform_and_user_flags(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert program_compiler_options("gpu") == {}
  assert program_compiler_options("tpu") == {}
  cpu = program_compiler_options("cpu")
  assert set(cpu) == {YNN_FUSION_OPTION}
  assert "INDIVIDUAL_CONVOLUTION" not in cpu[YNN_FUSION_OPTION]
  assert "INDIVIDUAL_DOT" in cpu[YNN_FUSION_OPTION]
  # A user's own XLA_FLAGS choice wins.
  monkeypatch.setenv("XLA_FLAGS", f"--{YNN_FUSION_OPTION}=+individual_convolution")
  assert program_compiler_options("cpu") == {}


def test_cpu_options_move_convs_out_of_ynnpack_and_keep_results(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(256, 16, 16, 32)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 32, 32)) * 0.05, jnp.float32)
  default = jax.jit(_scanned_conv).lower(x, k).compile()
  ours = jax.jit(_scanned_conv, compiler_options=program_compiler_options("cpu"))
  ours = ours.lower(x, k).compile()
  # jaxlib's default gives this conv to YNNPACK (2x slower here); lrscale's options do not.
  # If a jaxlib changes its default, the first assertion says so.
  assert _convs_in_ynn_fusions(default.as_text()) >= 1
  assert _convs_in_ynn_fusions(ours.as_text()) == 0
  assert re.search(r"= \S+ convolution\(", ours.as_text())
  np.testing.assert_allclose(
    np.asarray(ours(x, k)), np.asarray(default(x, k)), rtol=2e-5, atol=2e-5
  )
