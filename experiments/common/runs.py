"""Running an experiment: named runs trained with one compiled set-up per program, or a
study; both skip what is already finished, so an interrupted experiment resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from experiments.common.configs import check_full_runs
from lrscale import config as config_lib
from lrscale import errors
from lrscale.analysis import store_reader
from lrscale.data import registry
from lrscale.engine.programs import program_key


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of an experiment.

  Attributes:
    name: directory name under ``<workdir>/runs/``; unique within the experiment.
    config: the run config.
    tags: what the report groups by (method, batch size, seed, ...).
  """

  name: str
  config: ml_collections.ConfigDict
  tags: Mapping[str, Any]


def run_dir(workdir: str, name: str) -> str:
  """The directory of run ``name`` of an experiment."""
  return os.path.join(workdir, "runs", name)


def _finished_summary(path: str) -> dict[str, Any] | None:
  """The summary of a finished (complete or diverged) run, else None."""
  summary = store_reader.read_json(os.path.join(path, "summary.json"))
  if summary and summary.get("status") in ("complete", "diverged"):
    return summary
  return None


@dataclasses.dataclass(frozen=True)
class Done:
  """What :func:`run_study` did.

  Attributes:
    value: the analysis dict.
    total: trials in the study.
    reused: of those, trials an earlier invocation had already finished.
  """

  value: Any
  total: int
  reused: int


class Summaries(dict):
  """``{run name: summary}`` from :func:`run_all`, with ``total`` and ``reused`` counts."""

  total: int = 0
  reused: int = 0


def run_all(
  runs: Sequence[Run],
  workdir: str,
  *,
  full: bool = False,
  log: Callable[[str], None] = print,
) -> Summaries:
  """Trains every run (skipping finished ones) and returns ``{name: summary}``.

  Every config is resolved before the first step, so a bad one fails before
  any compute. Runs that differ only in lr, seed or scaling rule share one
  compiled ``RunSetup`` (lrscale.train), which is what makes hundreds of short
  runs affordable on a CPU. With ``full`` (the paper-scale mode) the configs are
  first checked against their datasets' published sizes and the data's
  presence (``check_full_runs``), before anything is written.
  """
  if full:
    check_full_runs([r.config for r in runs])
  from lrscale.engine import loop as train_lib  # pylint: disable=g-import-not-at-top

  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(
      f"run names must be unique; duplicates: {sorted({n for n in names if names.count(n) > 1})}"
    )
  plans = [config_lib.resolve(r.config) for r in runs]
  summaries = Summaries()
  setups: dict[str, Any] = {}
  data: dict[str, registry.InMemoryData] = {}
  t0 = time.perf_counter()
  reused = 0
  for i, (run, plan) in enumerate(zip(runs, plans)):
    path = run_dir(workdir, run.name)
    done = _finished_summary(path)
    reused += done is not None
    if done is None:
      dkey = json.dumps(plan.config.dataset.to_dict(), sort_keys=True)
      if dkey not in data:
        data[dkey] = registry.load_in_memory(plan.config.dataset)
      key = program_key(plan)
      if key not in setups:
        setups[key] = train_lib.RunSetup(plan, data[dkey])
      done = train_lib.train(run.config, path, plan=plan, setup=setups[key], data=data[dkey])
    summaries[run.name] = done
    log(
      f"[{i + 1}/{len(runs)}] {run.name}: {done['status']}, {done['steps']} steps, "
      f"eval_accuracy {done['final'].get('eval_accuracy', float('nan')):.4f} "
      f"({time.perf_counter() - t0:.0f} s so far)"
    )
  summaries.total, summaries.reused = len(runs), reused
  return summaries


def run_study(study: ml_collections.ConfigDict, workdir: str) -> Done:
  """Runs a study (resuming it) and analyses it; ``Done.value`` is the analysis dict.

  Raises:
    ValueError: ``workdir`` holds trials this study does not have (another
      study's, or an older grid): analysing them together would mix the two.
  """
  from lrscale.analysis.run import analyze  # pylint: disable=g-import-not-at-top
  from lrscale.study import runner, space  # pylint: disable=g-import-not-at-top

  trials_dir = os.path.join(workdir, "trials")
  present = set(os.listdir(trials_dir)) if os.path.isdir(trials_dir) else set()
  foreign = present - {t.id for t in space.enumerate_trials(study)}
  if foreign:
    raise errors.UserError(
      f"{workdir} holds {len(foreign)} trials that study {study.name!r} does "
      f"not have (e.g. {sorted(foreign)[0]}); use another directory, or delete "
      "it to start over."
    )
  counts = runner.run_study(study, workdir)
  total = sum(counts.values())
  return Done(value=analyze(workdir), total=total, reused=counts.get("skipped", 0))
