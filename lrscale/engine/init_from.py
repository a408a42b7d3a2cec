"""Starting a run from another run's parameters: fine-tuning, with reset and frozen parts."""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """Returns the ``config.init`` section (fresh initialisation)."""
  return ml_collections.ConfigDict(
    dict(
      checkpoint="",  # a run directory or one of its checkpoints/<step> ('' = fresh init)
      batch_stats=False,  # also take its BatchNorm statistics
      reset="",  # regex of parameter paths re-initialised instead (e.g. the head)
      freeze="",  # regex of parameter paths kept fixed (zero updates)
    )
  )


def validate_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad ``config.init`` field."""
