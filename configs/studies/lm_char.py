"""Batch size x learning rate for a character-level transformer LM (AdamW, budget in tokens).

A 2-block, width-64 pre-LN transformer (rotary positions) on ``stdlib_chars``
(bytes of the Python stdlib, split by file) at context 32, AdamW at a constant
lr after a 1e4-token warmup, for batch sizes 8-64 sequences and an absolute lr
grid. Each trial stops when the held-out loss first reaches 2.8 nats per token
(uniform over bytes: 5.55; unigram: ~3.1), within 2e5 tokens; the analysis
gives steps-to-target per B, the fitted S(B) = S_min (1 + B_crit / B) and the
best lr per B. Sized for 2 CPU cores: 12 trials, 1 min 21 s wall end to end
(72 s of CPU) on the shared 2-core machine, study and analysis; every trial
reached the target. Result: B_crit = 15.7 sequences (90% profile interval
10.8-29.4), S_min = 22.4 steps (15.0-24.3); the best lr sat at the grid's top
(1e-2) for B = 16-64, so those steps, and the fit, are this grid's.

Launch:
  python -m lrscale.study --config=configs/studies/lm_char.py --workdir=runs/lm_char_study
GPU-sized variant (context 256, width 256, depth 4, B 16-512, 2e7 tokens):
  python -m lrscale.study --config=configs/studies/lm_char.py:gpu --workdir=runs/lm_char_gpu
"""

from lrscale.study.space import default_study_config


def get_config(arg: str = "cpu"):
  s = default_study_config()
  s.name = f"stdlib_chars_transformer_{arg}"
  s.base = _base(arg)
  s.seeds = (0,)
  s.lr.mode = "absolute"
  s.target.metric = "eval_loss"
  s.target.mode = "min"
  if arg == "gpu":
    s.batch_sizes = (16, 32, 64, 128, 256, 512)
    s.lr.grid = (3e-4, 1e-3, 3e-3)
    s.target.value = 1.6
    s.budget = "2e7 tokens"
    s.eval_every = "2.5e5 tokens"
    s.seeds = (0, 1)
    return s
  s.batch_sizes = (8, 16, 32, 64)
  s.lr.grid = (1e-3, 3e-3, 1e-2)
  s.target.value = 2.8
  s.budget = "2e5 tokens"
  s.eval_every = "8192 tokens"
  return s


def _base(arg: str):
  from lrscale.config import base_config  # pylint: disable=g-import-not-at-top

  c = base_config()
  c.dataset.name = "stdlib_chars"
  c.model.name = "transformer"
  c.optimizer.name = "adamw"
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.schedule.name = "constant"
  c.warmup.length = "1e4 tokens"
  c.eval_batch_size = 256
  c.tensorboard = False
  c.target.stop = True
  c.checkpoint_every = "1e6 tokens"
  if arg == "gpu":
    c.dataset.context = 256
    c.model.depth, c.model.width, c.model.heads = 4, 256, 8
    c.warmup.length = "2e5 tokens"
    return c
  c.dataset.context = 32
  c.dataset.eval_examples = 512  # 16k held-out tokens
  c.model.depth, c.model.width, c.model.heads = 2, 64, 4
  c.log_every = "10 steps"
  return c
