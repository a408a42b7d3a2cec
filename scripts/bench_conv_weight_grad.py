"""The conv weight gradient on CPU: lrscale's choice against the other ways to compute it.

Usage (from the repo root): python scripts/bench_conv_weight_grad.py [--batch=256]

For the three ResNet stages' 3x3 stride-1 convs (32x32x16, 16x16x32, 8x8x64) it times
dK = d<conv(x, K), dy>/dK alone, inside a 4-step ``lax.scan`` (where lrscale trains), for:

* ``lrscale``: ``canonical_conv``'s weight gradient as shipped (chunks of 8 images,
  im2col's transpose on maps of <= 16x16 pixels, a canonical conv on larger ones);
* ``conv/N``: the canonical conv (channels as its batch, dy as its kernel) summed over
  chunks of N images (N = B: the whole batch in one conv);
* ``im2col/N``: ``patches^T @ dy`` per chunk of N images.

Variants run interleaved (each repetition times all of them, in alternating order) and
the table shows medians in ms per gradient and the ratio to ``lrscale``; every variant
is checked against ``lrscale``'s result first. Bytes: x and dy are read once per
variant (4 * B * H * W * (Cin + Cout) bytes); im2col also writes kh*kw times x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from jax import lax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from lrscale.models import canonical_conv, patches_conv  # noqa: E402

PADS = ((1, 1), (1, 1))
LAYERS = {"32x32x16": (32, 16, 16), "16x16x32": (16, 32, 32), "8x8x64": (8, 64, 64)}


def conv_dk(x, k, dy):
  """The canonical-conv weight gradient of one chunk."""
  lhs, rhs = x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3)
  out = lax.conv_general_dilated(lhs, rhs, (1, 1), PADS, dimension_numbers=canonical_conv._DN)
  return out.transpose(1, 2, 0, 3)


def im2col_dk(x, k, dy):
  """patches^T @ dy of one chunk."""
  p, _ = patches_conv.im2col(x, (3, 3), (1, 1), PADS)
  return (p.T @ dy.reshape(p.shape[0], -1)).reshape(k.shape)


def chunked(fn, chunk):
  """fn summed over chunks of ``chunk`` images by a ``lax.scan``."""

  def g(x, k, dy):
    n = x.shape[0] // chunk
    if n == 1:
      return fn(x, k, dy)

    def split(a):
      return jnp.moveaxis(a.reshape(chunk, n, *a.shape[1:]), 1, 0)

    def body(total, xy):
      return total + fn(xy[0], k, xy[1]), None

    return lax.scan(body, jnp.zeros(k.shape), (split(x), split(dy)))[0]

  return g


def scanned(dk):
  """dk in a 4-step scan whose inputs change per step (nothing is hoisted out)."""

  def run(x, k, dy):
    def body(c, _):
      return c + 1e-9 * jnp.sum(dk(x + c, k, dy + c)), None

    return lax.scan(body, 0.0, None, length=4)[0]

  return jax.jit(run)


def main(argv) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--reps", type=int, default=5)
  args = p.parse_args(argv)
  b = args.batch
  if b < 16 or b % 16:
    print(f"--batch={b}: the chunked variants need a multiple of 16 (e.g. 256).", file=sys.stderr)
    sys.exit(2)
  variants = {
    "lrscale": lambda x, k, dy: canonical_conv._weight_grad(x, k, dy, (1, 1), PADS, None, None),
    f"conv/{b}": chunked(conv_dk, b),
    "conv/16": chunked(conv_dk, 16),
    "conv/8": chunked(conv_dk, 8),
    "im2col/16": chunked(im2col_dk, 16),
    "im2col/8": chunked(im2col_dk, 8),
  }
  print(f"jax {jax.__version__}, {os.cpu_count()} CPU(s), B={b}, ms per weight gradient")
  print(f"{'layer':>9} | " + " | ".join(f"{v:>16}" for v in variants))
  for name, (hw, ci, co) in LAYERS.items():
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (b, hw, hw, ci))
    k = jax.random.normal(keys[1], (3, 3, ci, co))
    dy = jax.random.normal(keys[2], (b, hw, hw, co))
    ref = jax.jit(variants["lrscale"])(x, k, dy)
    fns = {}
    for v, dk in variants.items():
      err = float(jnp.max(jnp.abs(jax.jit(dk)(x, k, dy) - ref)) / jnp.max(jnp.abs(ref)))
      if err > 1e-4:
        raise SystemExit(f"{v} on {name}: relative error {err:.1e} against lrscale")
      fns[v] = scanned(dk)
      jax.block_until_ready(fns[v](x, k, dy))
    times = {v: [] for v in variants}
    for rep in range(args.reps):
      for v in list(variants)[:: 1 if rep % 2 == 0 else -1]:
        t = time.perf_counter()
        jax.block_until_ready(fns[v](x, k, dy))
        times[v].append((time.perf_counter() - t) / 4 * 1e3)
    base = statistics.median(times["lrscale"])
    cells = [
      f"{statistics.median(t):7.1f} ({statistics.median(t) / base:4.2f}x)" for t in times.values()
    ]
    print(f"{name:>9} | " + " | ".join(f"{c:>16}" for c in cells), flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
