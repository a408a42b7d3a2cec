"""Full evaluation of a streamed eval split, read through the input pipeline at each evaluation.

A streamed dataset's eval split (imagenet2012's 50k validation images) is not
held on the devices. At every evaluation the host reads the whole split once
through ``lrscale.data.pipeline.eval_stream``: global batches of ``E`` examples
(``config.eval_batch_size``, rounded up to a multiple of the device count),
each host reading its ``E / hosts`` rows, the last batch padded with weight-0
zero images. Each batch crosses to the devices as uint8, is scaled there as
in training (``lrscale.engine.step.as_float_images``), and contributes its
weighted sums ``sum_i w_i m(x_i, y_i)`` and ``sum_i w_i``; the metric is
their ratio, so every example of the split counts exactly once, whatever the
device and host counts (``N`` need not divide by either).

In the training loop the device then never evaluates
(``make_step_fns(device_eval=False)``): segments end on evaluation steps
(``lrscale.engine.loop._next_boundary``), and ``wrap_segment`` writes this
evaluation into the segment's per-step buffer at its last step, with the
target check the device would have made, so the loop's bookkeeping (logs,
target, plateau, early stopping) is unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from lrscale import config as config_lib
from lrscale.engine import parallel


def eval_batch_size(requested: int, num_examples: int, num_devices: int) -> int:
  """The global eval batch: ``min(requested, N)`` rounded up to a multiple of the devices."""
  eb = min(requested, num_examples)
  return eb + -eb % num_devices


class StreamedEvaluator:
  """Evaluates a state on the whole streamed eval split of ``plan`` (see the module docstring)."""

  def __init__(self, plan: config_lib.RunPlan, mesh: Mesh, eval_sums: Callable[..., Any]):
    self.plan, self.mesh, self.eval_sums = plan, mesh, eval_sums
    ds = plan.config.dataset
    n = plan.dataset.num_eval
    self.num_examples = n if ds.eval_examples <= 0 else min(n, ds.eval_examples)
    self.batch_size = eval_batch_size(plan.config.eval_batch_size, self.num_examples, mesh.size)
    self.num_steps = -(-self.num_examples // self.batch_size)
    self.last_count = 0.0  # examples counted by the latest evaluation (a check)

  def __call__(self, state: Any) -> dict[str, float]:
    """The task's eval metrics of ``state``: weighted means over the whole split."""
    from lrscale.data import pipeline  # pylint: disable=g-import-not-at-top

    hosts = jax.process_count()
    steps, batches = pipeline.eval_stream(
      self.plan.config.dataset,
      batch_size=self.batch_size // hosts,
      shard_index=jax.process_index(),
      shard_count=hosts,
    )
    if steps != self.num_steps:  # the split changed under the run
      raise AssertionError(f"eval pass of {steps} batches, expected {self.num_steps}")
    sums = count = None
    for x, y, w in batches:  # dispatch is asynchronous: the device runs while grain reads
      glob = (1, self.batch_size)
      put = (
        lambda a: parallel.put_local(  # noqa: E731
          a[None], self.mesh, axis=1, global_shape=glob + a.shape[1:]
        )
      )
      s, c = self.eval_sums(state, put(x), put(y), put(w))
      sums, count = (s, c) if sums is None else (jax.tree.map(jnp.add, sums, s), count + c)
    self.last_count = float(count)
    total = max(self.last_count, 1.0)
    return {k: float(v) / total for k, v in sums.items()}

  def wrap_segment(self, train_segment: Callable[..., Any]) -> Callable[..., Any]:
    """``train_segment`` followed by this evaluation when the segment ends on an eval step.

    Returns a function with ``train_segment``'s arguments and results; the
    buffer comes back as host numpy arrays, with the eval metrics and
    ``reached`` set at the segment's last step as the device would set them.
    """

    def segment(state, data_x, data_y, idx, n, eval_data, control, ks=None):
      state, buf, done, stop = train_segment(state, data_x, data_y, idx, n, eval_data, control, ks)
      buf, done = jax.device_get(buf), int(done)
      buf = {k: np.array(v) for k, v in buf.items()}  # writable copies
      last = done - 1
      if done == 0 or buf["diverged"][last]:
        return state, buf, done, stop
      step = int(jax.device_get(state.step))
      if (step - int(control.eval_offset)) % int(control.eval_every):
        return state, buf, done, stop
      metrics = self(state)
      names = self.plan.task.metric_names
      for k in names:
        buf[k][last] = metrics[k]
      value = metrics[names[int(control.target_index)]]
      reached = float(control.target_sign) * (value - float(control.target_value)) >= 0
      buf["reached"][last] = bool(reached)  # NaN target (none, or reached before): False
      stop = jnp.logical_or(stop, reached and bool(control.stop_at_target))
      return state, buf, done, stop

    return segment
