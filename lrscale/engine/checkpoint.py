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
import orbax.checkpoint as ocp
from absl import logging


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
    """Returns (step, state, host) of the newest readable checkpoint, or None."""
    self._manager.reload()
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(
          step,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()
          ),
        )
        return step, restored.state, dict(restored.host)
      except Exception as err:  # pylint: disable=broad-except
        # Any read failure means this step is unusable; an older one may be fine.
        aside = os.path.join(
          os.path.dirname(self.directory), "checkpoints_unreadable", f"{step}-{int(time.time())}"
        )
        logging.warning(
          "Checkpoint at step %d in %s is unreadable (%s: %s); moved it to %s "
          "and falling back to the previous one.",
          step,
          self.directory,
          type(err).__name__,
          err,
          aside,
        )
        # Kept, not deleted: it may matter to whoever investigates; moved so the
        # step can be written again when training passes it.
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)), aside)
        self._manager.reload()
    return None

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding skeleton of ``tree`` for restoring into."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
