"""K trials that differ only in learning rate and seed, trained as one vmapped program.

On an accelerator a small model leaves most of the device idle; stacking K
trials' states on a leading axis and ``jax.vmap``-ing the on-device segment
loop runs them in one program. Each member keeps its own loop bound inside
the vmapped ``while_loop``, so a member that diverges (or reaches its target)
simply stops updating while the others go on: its NaNs never touch them,
because vmapped members share no arithmetic. Every member writes the same
files as a separate run (``lrscale.train.RunLoop`` does the bookkeeping), and
SIGTERM / Ctrl-C checkpoint every unfinished member at the next segment
boundary, as a single run does (``lrscale.engine.interrupt``).

On CPU this measured no faster than running the trials one after another
(../shared/REFERENCE.md: 0.9-1.7x the time of 8 sequential runs), so the
study runner uses it only where it pays (``study.vmap``).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrscale import config as config_lib
from lrscale.engine import interrupt, parallel
from lrscale.engine.compiler_options import program_compiler_options
from lrscale.engine.loop import RunLoop
from lrscale.engine.setup import RunSetup


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _group_segment(setup: RunSetup, with_ks: bool):
  """jit(vmap(train_segment)) over members, cached on the setup (one compile)."""
  key = "_vmapped_segment_ks" if with_ks else "_vmapped_segment"
  if not hasattr(setup, key):
    in_axes = (0, None, None, 0, 0, None, 0, 0 if with_ks else None)
    out = parallel.replicated(setup.mesh)  # every process reads the buffers
    opts = program_compiler_options(setup.mesh.devices.flat[0].platform)
    fn = jax.vmap(setup.fns.segment, in_axes=in_axes)
    setattr(setup, key, jax.jit(fn, out_shardings=out, compiler_options=opts))
  return getattr(setup, key)


def train_group(
  plans: Sequence[config_lib.RunPlan], workdirs: Sequence[str], setup: RunSetup
) -> list[dict[str, Any]]:
  """Trains ``plans`` (same batch size and program, any lrs and seeds) together.

  Members must be at the same step (fresh, or resumed from the same step); the
  runner groups only such trials. Reduce-on-plateau changes a member's lr on
  the host and is not supported here.

  Returns:
    Each member's summary, in order.
  """
  if any(p.config.plateau.enabled for p in plans):
    raise ValueError(
      "config.plateau.enabled: plateau runs cannot be vmapped; run the trials "
      "separately (study.vmap='off')."
    )
  loops = [RunLoop(plan, wd, setup) for plan, wd in zip(plans, workdirs)]
  try:
    if len({loop.step for loop in loops}) > 1:
      raise ValueError("vmapped members must start at the same step; resume them separately.")
    with interrupt.catch_stop_signals() as stop:
      _train_stacked(loops, setup, stop)
  finally:
    for loop in loops:
      loop.close()
  return [loop.summary() for loop in loops]


def _train_stacked(loops: Sequence[RunLoop], setup: RunSetup, stop: interrupt.StopRequest) -> None:
  stacked = _stack([loop.state for loop in loops])
  host_state: list[Any] = []

  def member_state(m: int) -> Any:
    if not host_state:  # one transfer of the whole stack, then numpy slicing
      host_state.append(jax.device_get(stacked))
    return jax.tree.map(lambda a: np.asarray(a)[m], host_state[0])

  while not all(loop.finished for loop in loops):
    active = [loop for loop in loops if not loop.finished]
    if stop.signum is not None:
      for m, loop in enumerate(loops):
        if not loop.finished:
          loop.state = parallel.put_replicated(member_state(m), setup.mesh)
          loop.save()
      study_dir = os.path.dirname(os.path.abspath(loops[0].workdir))
      raise stop.interrupted(step=active[0].step, workdir=study_dir)
    # Members share batch size and budget, so they agree on the boundary; each
    # call also sets that member's eval cadence for the segment.
    start, end = active[0].step, max(loop.next_boundary() for loop in active)
    parts = [setup.indices(loop.plan, start, end - start) for loop in loops]
    idx = _stack([p[0] for p in parts])
    ks = None if parts[0][1] is None else _stack([p[1] for p in parts])
    # A finished member gets a zero-length segment: its state stays as it was.
    n = jnp.asarray([0 if loop.finished else end - start for loop in loops], jnp.int32)
    control = _stack([loop.control for loop in loops])
    segment = _group_segment(setup, ks is not None)
    stacked, buf, done, _ = segment(
      stacked, setup.train_x, setup.train_y, idx, n, setup.eval_batches, control, ks
    )
    buf, done = jax.device_get((buf, done))
    host_state.clear()
    for m, loop in enumerate(loops):
      if not loop.finished:
        loop.absorb(
          {k: v[m] for k, v in buf.items()},
          int(done[m]),
          lambda m=m: parallel.put_replicated(member_state(m), setup.mesh),
        )
