"""``lr_find``: the range test of a config at each batch size and seed, and its outputs."""

from __future__ import annotations

import os

import jax
import ml_collections
from absl import logging

from lrscale import config as config_lib
from lrscale import errors
from lrscale.data import registry
from lrscale.engine import outputs, parallel
from lrscale.engine import workdir as workdir_lib
from lrscale.engine.setup import RunSetup
from lrscale.engine.step import TrainState
from lrscale.lr_find import config as lf_config
from lrscale.lr_find import predict as predict_lib
from lrscale.lr_find import suggest as suggest_lib
from lrscale.lr_find.plot import plot
from lrscale.lr_find.results import (
  LrFindResult,
  batch_scaling,
  describe,
  paste_line,
  to_csv,
  to_json,
)
from lrscale.lr_find.sweep import RangeTest, program_groups


def lr_find(
  cfg: ml_collections.ConfigDict,
  workdir: str | None = None,
  *,
  data: registry.InMemoryData | None = None,
  state: TrainState | None = None,
  num_devices: int | None = None,
) -> LrFindResult:
  """Runs the range test of ``cfg`` at each batch size and seed; writes outputs to ``workdir``.

  Args:
    cfg: a run config with its ``lr_find`` section.
    workdir: where lr_find.csv/json/png go (None: write nothing).
    data: in-memory data to reuse.
    state: start every sweep from a copy of this state (it is not changed) instead
      of a fresh init; it must fit the config's model and optimizer.
    num_devices: override ``config.parallel.num_devices``.

  Returns:
    The ``LrFindResult``.

  Raises:
    ValueError: naming the config field, before any compute (or after a sweep
      that diverged within its first 3 steps: lower ``min_lr``).
  """
  outputs.quiet_library_logs()
  config_lib.check_run_config(cfg)
  if workdir is not None:  # before the sweep, not after it
    workdir_lib.check_writable(workdir)
  lf = cfg.lr_find
  lf_config.validate(lf)
  plans = [
    lf_config.sweep_plan(cfg, b, num_devices=num_devices) for b in lf_config.batch_sizes(cfg)
  ]
  if plans[0].dataset.streamed:
    raise errors.UserError(
      f"config.dataset.name={plans[0].dataset.name!r} is streamed; the range "
      "test needs an in-memory dataset."
    )
  lead = workdir is not None and jax.process_index() == 0
  with workdir_lib.hold(workdir or "", what="lrscale.lr_find", enabled=lead):
    return _sweep(cfg, workdir if lead else None, plans, data, state)


def _sweep(cfg, workdir, plans, data, state) -> LrFindResult:
  """The sweeps of every program group (after every check and the workdir lock)."""
  lf = cfg.lr_find
  parallel.enable_compilation_cache(os.path.expanduser(plans[0].config.compilation_cache))
  data = data or registry.load_in_memory(plans[0].config.dataset)
  seeds = tuple(lf.seeds)
  results = {}
  for group in program_groups(plans):
    test = RangeTest(RunSetup(group[0], data), group, lf)
    logging.info(
      "Compiled the sweep of B=%s in %.2f s.",
      [p.batch_size for p in group],
      test.compile(len(seeds), state),
    )
    for plan in group:
      results[plan.batch_size] = result = test.run(plan.batch_size, seeds, state=state)
      logging.info("B=%d: %s (%.2f s)", plan.batch_size, describe(result), result.seconds)
  results = [results[p.batch_size] for p in plans]
  predictions = ()
  if lf.predict == "short_runs":  # K short trainings per batch size inside the ramp's bracket
    predictions = tuple(predict_lib.predict(cfg, r, data, workdir) for r in results)
    for p in predictions:
      logging.info("B=%d: %s (%.2f s)", p.batch_size, predict_lib.describe(p), p.seconds)
  predicted = [p.lr for p in predictions] if predictions else None
  fit = batch_scaling(results, predicted)
  out = LrFindResult(
    tuple(results),
    fit,
    paste_line(cfg, results, fit, predicted),
    suggest_lib.RECOMMENDATION_RULE,
    predictions,
  )
  if workdir is not None:
    write_outputs(out, cfg, workdir)
  return out


def write_outputs(result: LrFindResult, cfg: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes lr_find.csv, lr_find.json and lr_find.png into ``workdir``."""
  os.makedirs(workdir, exist_ok=True)
  outputs.atomic_write_text(os.path.join(workdir, "lr_find.csv"), to_csv(result))
  outputs.atomic_write_json(os.path.join(workdir, "lr_find.json"), to_json(result, cfg))
  plot(result, os.path.join(workdir, "lr_find.png"))
