"""lrscale: learning rate vs batch size, measured.

The public API. Names load lazily (PEP 562), so ``import lrscale`` and the
analysis of a copied study directory pull in no JAX until a training name is
used.

Examples:
  >>> import lrscale
  >>> cfg = lrscale.base_config()            # or a configs/*.py get_config()
  >>> cfg.batch_size, cfg.lr = 256, 0.4
  >>> plan = lrscale.resolve(cfg)            # validated; every length in steps
  >>> summary = lrscale.train(cfg, "runs/b256")
  >>> lrscale.run_study(study_cfg, "runs/study"); lrscale.analyze("runs/study")
  >>> result = lrscale.lr_find(cfg, "runs/lr_find")
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, attribute)
_API = {
  # configuration
  "base_config": ("lrscale.config_defaults", "base_config"),
  "resolve": ("lrscale.config", "resolve"),
  "RunPlan": ("lrscale.plan", "RunPlan"),
  "default_study_config": ("lrscale.study.space", "default_study_config"),
  # the engine and the tools over it
  "train": ("lrscale.engine.loop", "train"),
  "RunSetup": ("lrscale.engine.setup", "RunSetup"),
  "program_key": ("lrscale.engine.programs", "program_key"),
  "run_study": ("lrscale.study.runner", "run_study"),
  "lr_find": ("lrscale.lr_find", "lr_find"),
  "analyze": ("lrscale.analysis.run", "analyze"),
  # building blocks
  "build_schedule": ("lrscale.optim.schedule_build", "build_schedule"),
  "apply_scaling": ("lrscale.optim.scaling", "apply_scaling"),
  "build_optimizer": ("lrscale.optim.optimizers", "build_optimizer"),
  "get_task": ("lrscale.tasks", "get_task"),
  "build_model": ("lrscale.models", "build_model"),
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
  if name not in _API:
    raise AttributeError(f"module 'lrscale' has no attribute {name!r}")
  module, attr = _API[name]
  value = getattr(importlib.import_module(module), attr)
  globals()[name] = value  # later look-ups skip this function
  return value


def __dir__() -> list[str]:
  return __all__
