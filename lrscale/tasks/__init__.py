"""Tasks: what is learned (loss, metrics, target names), separate from the engine."""

from lrscale.tasks.base import Task
from lrscale.tasks.classification import CLASSIFICATION
from lrscale.tasks.lm import LANGUAGE_MODELLING
from lrscale.tasks.regression import EXACT_REGRESSION, REGRESSION

TASKS: dict[str, Task] = {
  t.name: t for t in (CLASSIFICATION, REGRESSION, EXACT_REGRESSION, LANGUAGE_MODELLING)
}
TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> Task:
  """The task called ``name`` (see ``TASK_NAMES``)."""
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; known tasks: {list(TASK_NAMES)}.")
  return TASKS[name]


__all__ = [
  "CLASSIFICATION",
  "EXACT_REGRESSION",
  "LANGUAGE_MODELLING",
  "REGRESSION",
  "TASKS",
  "TASK_NAMES",
  "Task",
  "get_task",
]
