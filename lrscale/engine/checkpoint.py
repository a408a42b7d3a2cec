"""Orbax checkpoints of the train state plus the loop's host-side state.

Each checkpoint holds the ``TrainState`` arrays and a JSON item with what the
Python loop needs to continue exactly (plateau controller, target bookkeeping).
Restoring tries the newest step first; if it cannot be read (a process killed
mid-write, a truncated file) it warns, moves that step to
``checkpoints_unreadable/`` and falls back to the previous one, so a
corrupt newest checkpoint costs progress, never the run.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from lrscale.engine import parallel


class Checkpointer:
  """Saves and restores (train state, host state) under ``workdir/checkpoints``."""

  def __init__(self, workdir: str, *, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max(1, keep), create=True, enable_async_checkpointing=False
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=("state", "host")
    )

  def save(self, step: int, state: Any, host: dict[str, Any]) -> None:
    self._manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), host=ocp.args.JsonSave(host)),
      force=True,
    )
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """(state, host) of the checkpoint at ``step``, read-only (another run's, to branch from).

    Raises:
      ValueError: no checkpoint at ``step``; the message lists the steps there are.
    """
    self._manager.reload()
    if step not in self._manager.all_steps():
      raise ValueError(
        f"no checkpoint at step {step} in {self.directory}; it has {sorted(self._manager.all_steps())}."
      )
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()
      ),
    )
    return restored.state, dict(restored.host)

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """Returns (step, state, host) of the newest readable checkpoint, or None.

    On several processes the restore is collective, and process 0 decides:
    it names the step to try, every process tries it, and if any could not
    read it process 0 alone moves it aside while the others wait at a barrier,
    so no two processes race on the directory and all fall back together.
    """
    tried = 0
    while True:
      self._manager.reload()
      steps = sorted(self._manager.all_steps(), reverse=True)
      step = int(parallel.broadcast_from_lead(np.int64(steps[0] if steps else -1)))
      if step < 0:
        return None
      error = None
      try:
        restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()
          ),
        )
      except Exception as err:  # pylint: disable=broad-except
        # Any read failure means this step is unusable; an older one may be fine.
        error = err
      if parallel.all_true(error is None):
        return step, restored.state, dict(restored.host)
      aside = os.path.join(
        os.path.dirname(self.directory), "checkpoints_unreadable", f"{step}-{int(time.time())}"
      )
      logging.warning(
        "Checkpoint at step %d in %s is unreadable (%s); %s and falling back to the previous one.",
        step,
        self.directory,
        f"{type(error).__name__}: {error}" if error else "by another process",
        f"moved it to {aside}" if parallel.is_lead() else "process 0 moves it aside",
      )
      if parallel.is_lead():
        # Kept, not deleted: it may matter to whoever investigates; moved so the
        # step can be written again when training passes it.
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)), aside)
      parallel.barrier(f"lrscale-checkpoint-fallback-{step}-{tried}")
      tried += 1

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding skeleton of ``tree`` for restoring into."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
