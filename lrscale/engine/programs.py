"""Which runs share one compiled program: the single rule every tool uses.

A ``RunSetup`` (model graph, optimizer, compiled segment, data on device) can
serve every run whose plan differs only in values the compiled program takes
as *arguments* (the peak lr, the seed's initial state, the target, the
divergence bound, the eval cadence) or that only the host reads (logging,
checkpoints, reduce-on-plateau decisions). ``program_key`` writes everything
else as one string: equal keys, one compile. The study runner groups trials by
it, the experiments reuse set-ups by it, the range test groups batch sizes by
it, and the tests share compiles by it.
"""

from __future__ import annotations

import json

from lrscale import config as config_lib
from lrscale.optim import ultralytics_warmup

# Config fields that never reach the compiled program: traced arguments or
# host-side bookkeeping (see the module docstring). `budget` reaches it only
# through `total_steps`, which the key holds instead.
_NOT_COMPILED = (
  "lr",
  "seed",
  "scaling",
  "target",
  "divergence",
  "log_every",
  "eval_every",
  "checkpoint_every",
  "checkpoint_keep",
  "tensorboard",
  "compilation_cache",
  "parallel",
  "plateau",
  "early_stopping",
  "lr_find",
  "budget",
)
# With across_batch_sizes: a batch of B runs as B / b microbatches of one
# program (the traced microbatch count), so these may differ as well, provided
# the caller's lr function does not depend on them (the range test's ramp).
_BATCH_DEPENDENT = ("batch_size", "microbatches", "schedule", "warmup")


def program_key(plan: config_lib.RunPlan, *, across_batch_sizes: bool = False) -> str:
  """A string equal for exactly the plans one ``RunSetup`` can serve.

  Args:
    plan: a resolved run plan.
    across_batch_sizes: leave out what differs between the batch sizes of a
      microbatch ladder (batch size, microbatches, schedule, run length); for
      callers that supply their own step-indexed lr function.

  Returns:
    A JSON string; compare keys with ``==``.
  """
  drop = _NOT_COMPILED + (_BATCH_DEPENDENT if across_batch_sizes else ())
  cfg = {k: v for k, v in plan.config.to_dict().items() if k not in drop}
  resolved = dict(
    optimizer=plan.optimizer.to_dict(),
    num_devices=plan.num_devices,
    bn_group_size=plan.bn_group_size,
    sync_every=plan.sync_every,
    input_shape=list(plan.dataset.input_shape),
    # Ultralytics' momentum / bias-lr warmup lives in the optimizer (its length in steps).
    group_warmup=repr(ultralytics_warmup.from_schedule(plan.schedule)),
  )
  if not across_batch_sizes:
    resolved.update(total_steps=plan.total_steps, batch_size=plan.batch_size)
  return json.dumps(dict(config=cfg, resolved=resolved), sort_keys=True, default=str)
