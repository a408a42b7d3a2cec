"""Character-level language modelling on the Python standard library (offline).

A 2-block, width-128 pre-LN decoder-only transformer (rotary positions) reads
the bytes of the stdlib's top-level modules (``stdlib_chars``, 256-byte
vocabulary, split by file) in windows of 64 tokens, trained with AdamW and a
warmup + cosine schedule for 1M tokens. Batch size is counted in sequences
(32 x 64 = 2048 tokens per step). eval_loss is nats per token; a unigram model
scores ~3.0, a uniform one ln 256 = 5.55. About 3-5 minutes on 2 CPU cores.

Launch:
  python -m lrscale.train --config=configs/lm_char.py --workdir=runs/lm_char

GPU-sized variant (one H100/H200; ~4M parameters, 256-token context, 100M tokens):
  python -m lrscale.train --config=configs/lm_char.py:gpu --workdir=runs/lm_char_gpu
"""

from lrscale.config import base_config


def get_config(arg: str = "cpu"):
  c = base_config()
  c.dataset.name = "stdlib_chars"
  c.model.name = "transformer"
  c.model.positions = "rotary"
  c.optimizer.name = "adamw"
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.schedule.name = "cosine"
  c.warmup.length = "5e4 tokens"
  c.target.metric = "eval_loss"
  c.target.mode = "min"
  c.noise_scale.enabled = True  # B_simple(t) for lrscale.cbs to compare against
  c.noise_scale.splits = 2
  c.eval_batch_size = 256
  if arg == "gpu":
    c.dataset.context = 256
    c.model.depth, c.model.width, c.model.heads = 4, 256, 8
    c.batch_size = 64
    c.lr = 1e-3
    c.budget = "1e8 tokens"
    c.warmup.length = "2e6 tokens"
    c.log_every, c.eval_every, c.checkpoint_every = "50 steps", "2e6 tokens", "1e7 tokens"
    return c
  c.dataset.context = 64
  c.dataset.eval_examples = 1024  # 65k validation tokens
  c.model.depth, c.model.width, c.model.heads = 2, 128, 4
  c.batch_size = 32
  c.lr = 3e-3
  c.budget = "1e6 tokens"
  c.log_every = "10 steps"
  c.eval_every = "1e5 tokens"
  c.checkpoint_every = "2e5 tokens"
  c.checkpoint_keep = 10
  return c
