"""XLA compiler options for lrscale's jitted train and eval programs, per backend.

On CPU, XLA hands dots, reductions and single convolutions to YNNPACK by default
(``xla_cpu_experimental_ynn_fusion_type`` = individual dot, individual convolution,
reduce in jaxlib 0.10.2). For the 3x3 convs of a ResNet stage YNNPACK's conv is about 2x
slower than XLA's own (Eigen) conv: a 16x16x32 conv at B=256 in a 4-step scan took
22 ms against 11 ms per conv on the team's 2-core machine, and a ResNet-8 train segment
at B=256 ran 7-8% faster without it (docs/benchmarks.md, "Convolutions on CPU"). The
programs are compiled with YNNPACK kept for dots and reductions only. Results agree with
the default to float32 rounding (both compute the same conv).

The options go to ``jax.jit(..., compiler_options=...)`` rather than ``XLA_FLAGS``, which a
library cannot set once JAX has started. A user who names the option in ``XLA_FLAGS`` keeps
their own choice.
"""

from __future__ import annotations

import os

import jax

__all__ = ["YNN_FUSION_OPTION", "program_compiler_options"]

YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"

# jaxlib 0.10.2's default list without LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
_CPU_YNN_FUSIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def program_compiler_options(platform: str | None = None) -> dict[str, str]:
  """``compiler_options`` for a jitted lrscale program running on ``platform``.

  Args:
    platform: ``"cpu"``, ``"gpu"``, ``"tpu"``...; default ``jax.default_backend()``.

  Returns:
    On CPU, YNNPACK fusions for dots and reductions only (XLA's own conv for convs),
    unless ``XLA_FLAGS`` sets ``--xla_cpu_experimental_ynn_fusion_type`` itself; elsewhere
    no options.

  Examples:
    >>> program_compiler_options("gpu")
    {}
  """
  if (platform or jax.default_backend()) != "cpu":
    return {}
  if YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
    return {}
  return {YNN_FUSION_OPTION: _CPU_YNN_FUSIONS}
