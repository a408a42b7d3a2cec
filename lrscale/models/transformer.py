"""A small decoder-only transformer language model (GPT-style, pre-LN) in Flax NNX.

Token embedding, ``depth`` blocks of causal multi-head self-attention and an
MLP, each behind a LayerNorm with a residual (pre-LN: Xiong et al. 2020, GPT-2),
a final LayerNorm and an untied linear readout to the vocabulary. Positions are
rotary (Su et al. 2021, RoFormer: queries and keys rotated pairwise by
position-dependent angles, so attention depends on relative position) or a
learned absolute embedding (GPT-2). Attention is ``jax.nn.dot_product_attention``
with ``is_causal=True``: position t attends to positions <= t only.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["POSITIONS", "Transformer", "rotary"]

POSITIONS = ("rotary", "learned")


def rotary(x: jax.Array, base: float = 10000.0) -> jax.Array:
  """Rotary position embedding of x [b, T, heads, d] (d even), Su et al. 2021.

  Channel pairs (i, i + d/2) at position t are rotated by angle t * base^(-2i/d).
  """
  t, d = x.shape[1], x.shape[-1]
  freqs = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
  angles = jnp.arange(t, dtype=jnp.float32)[:, None] * freqs[None, :]  # [T, d/2]
  cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


class CausalSelfAttention(nnx.Module):
  """Multi-head causal self-attention with optional rotary positions."""

  def __init__(self, width: int, heads: int, *, use_rotary: bool, rngs: nnx.Rngs) -> None:
    self.heads, self.use_rotary = heads, use_rotary
    self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
    self.out = nnx.Linear(width, width, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, w = x.shape
    q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3 * self.heads, w // self.heads), 3, axis=2)
    if self.use_rotary:
      q, k = rotary(q), rotary(k)
    h = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    return self.out(h.reshape(b, t, w))


class Block(nnx.Module):
  """x + attn(LN(x)), then x + MLP(LN(x)) (pre-LN)."""

  def __init__(
    self, width: int, heads: int, mlp_ratio: int, *, use_rotary: bool, rngs: nnx.Rngs
  ) -> None:
    self.ln1 = nnx.LayerNorm(width, rngs=rngs)
    self.attn = CausalSelfAttention(width, heads, use_rotary=use_rotary, rngs=rngs)
    self.ln2 = nnx.LayerNorm(width, rngs=rngs)
    self.fc = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
    self.proj = nnx.Linear(mlp_ratio * width, width, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.ln1(x))
    return x + self.proj(nnx.gelu(self.fc(self.ln2(x))))


class Transformer(nnx.Module):
  """Decoder-only LM: int tokens [B, T] -> float32 next-token logits [B, T, vocab]."""

  def __init__(
    self,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    depth: int = 2,
    width: int = 128,
    heads: int = 4,
    mlp_ratio: int = 4,
    positions: str = "rotary",
    rngs: nnx.Rngs,
  ) -> None:
    """Creates the network.

    Args:
      input_shape: ``(context,)``: the longest sequence the model reads.
      num_classes: vocabulary size V (input ids and output logits).
      depth: number of blocks.
      width: model width (embedding size); must be divisible by ``heads``.
      heads: attention heads; ``width / heads`` must be even with rotary positions.
      mlp_ratio: MLP hidden width / model width.
      positions: ``rotary`` or ``learned`` (absolute embedding of ``context`` positions).
      rngs: key source for the initialisers.

    Raises:
      ValueError: naming the ``config.model`` field that is inconsistent.
    """
    if len(input_shape) != 1:
      raise ValueError(
        f"config.model.name='transformer' reads token sequences [context]; the dataset's "
        f"examples have shape {tuple(input_shape)} (use a sequence dataset, e.g. stdlib_chars)."
      )
    if positions not in POSITIONS:
      raise ValueError(f"config.model.positions={positions!r} must be one of {POSITIONS}.")
    if min(depth, width, heads, mlp_ratio) <= 0 or width % heads:
      raise ValueError(
        f"config.model.width={width} must be a positive multiple of config.model.heads="
        f"{heads}, with depth={depth} and mlp_ratio={mlp_ratio} >= 1."
      )
    if positions == "rotary" and (width // heads) % 2:
      raise ValueError(
        f"config.model.width / heads = {width // heads} must be even for rotary positions."
      )
    context = int(input_shape[0])
    self.embed = nnx.Embed(num_classes, width, rngs=rngs)
    self.pos = nnx.Embed(context, width, rngs=rngs) if positions == "learned" else None
    self.blocks = nnx.List(
      [
        Block(width, heads, mlp_ratio, use_rotary=positions == "rotary", rngs=rngs)
        for _ in range(depth)
      ]
    )
    self.ln_f = nnx.LayerNorm(width, rngs=rngs)
    self.head = nnx.Linear(width, num_classes, rngs=rngs)

  def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
    """Logits [B, T, vocab] in float32; ``train`` is unused (no dropout, no BN)."""
    del train
    h = self.embed(tokens.astype(jnp.int32))
    if self.pos is not None:
      h = h + self.pos(jnp.arange(tokens.shape[1]))[None]
    for block in self.blocks:
      h = block(h)
    return self.head(self.ln_f(h)).astype(jnp.float32)
