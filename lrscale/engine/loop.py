"""The host side of a run: segments of device steps, and the bookkeeping between them.

``train(config, workdir)`` trains one run. The loop alternates device-side
segments of steps (``lrscale.engine.step``) with host-side bookkeeping at
segment boundaries: logging, evaluation records, target and divergence checks,
reduce-on-plateau, checkpoints. Boundaries fall on multiples of ``log_every``,
``eval_every`` and ``checkpoint_every`` only, so a resumed run passes through
the very same boundaries as an uninterrupted one.

Outputs in ``workdir``: config.json, metrics.jsonl, tensorboard/, summary.json,
checkpoints/.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lrscale import config as config_lib
from lrscale import noise_scale
from lrscale.data import registry
from lrscale.engine import early_stopping as early_lib
from lrscale.engine import interrupt, outputs, parallel
from lrscale.engine import workdir as workdir_lib
from lrscale.engine.setup import RunSetup
from lrscale.engine.step import TrainState
from lrscale.optim import plateau as plateau_lib


def _next_boundary(step: int, plan: config_lib.RunPlan, segment_len: int) -> int:
  """The next step at which the host must act: sync, checkpoint, plateau eval or the end."""
  intervals = [segment_len, plan.checkpoint_every]
  if plan.config.plateau.enabled or registry.is_streamed(plan.config.dataset):  # host-side evals
    intervals.append(plan.eval_every)
  # A batch-ramp phase starts a segment of its own: its eval cadence differs.
  phase_starts = [p.start_step for p in plan.ramp if p.start_step > step]
  if plan.config.early_stopping.enabled:  # decided on the host at each eval
    offset, every = plan.eval_cadence_at(step)
    phase_starts.append(step + every - (step - offset) % every)
  return min(
    [plan.total_steps] + phase_starts + [(step // every + 1) * every for every in intervals]
  )


class RunLoop:
  """The host side of one run: outputs, logging, evaluation records, stopping, checkpoints.

  The device side (one run's ``train_segment``, or a vmapped group of runs) is
  driven by the caller; after each segment it hands this run's slice of the
  per-step buffer to ``absorb``. Keeping this in one class lets a single run
  and a vmapped group of trials share every line of bookkeeping.
  """

  def __init__(
    self,
    plan: config_lib.RunPlan,
    workdir: str,
    setup: RunSetup,
    initial_state: TrainState | None = None,
  ):
    self.plan, self.workdir, self.setup = plan, workdir, setup
    self.t_start = time.perf_counter()
    workdir_lib.check_identity(workdir, json.loads(config_lib.to_json(plan)))
    os.makedirs(workdir, exist_ok=True)
    self.is_lead = jax.process_index() == 0
    if self.is_lead:
      outputs.atomic_write_text(os.path.join(workdir, "config.json"), config_lib.to_json(plan))
    logging.info("Run plan: %s", json.dumps(plan.summary(), default=str))
    logging.info("Scaling rule: %s", plan.scaled.description)
    # initial_state: a branch started from another run's state (lrscale.cbs);
    # this run's own checkpoint, if any, still wins below (resume).
    self.state = setup.initial_state(plan) if initial_state is None else initial_state
    # Imported here: orbax costs ~0.5 s of start-up that lr_find does not need.
    from lrscale.engine.checkpoint import Checkpointer, abstract_like  # pylint: disable=g-import-not-at-top

    self.ckpt = Checkpointer(workdir, keep=plan.config.checkpoint_keep)
    self.plateau = plateau_lib.init_plateau(plan.config.plateau)
    # Host-side state that a resumed run needs to continue exactly.
    self.host: dict[str, Any] = dict(
      target_step=None,
      wall_time_s=0.0,
      loss_sum=0.0,
      loss_n=0,
      max_loss=plan.max_loss,
      last_eval={},
      plateau=self.plateau.to_dict(),
    )
    self.early = early_lib.init_early_stopping(plan.config.early_stopping)
    self.host["early_stopping"] = self.early.to_dict()
    self.best_ckpt = None
    if plan.config.early_stopping.enabled and plan.config.early_stopping.restore_best:
      self.best_ckpt = Checkpointer(os.path.join(workdir, "best"), keep=1)
    self.step = self.saved_step = 0
    restored = self.ckpt.restore_latest(abstract_like(self.state))
    if restored is not None:
      self.step, self.state, self.host = restored
      self.saved_step = self.step
      self.plateau = plateau_lib.PlateauState.from_dict(self.host["plateau"])
      if "early_stopping" in self.host:
        self.early = early_lib.EarlyStoppingState.from_dict(self.host["early_stopping"])
      logging.info("Resumed %s from the checkpoint at step %d.", workdir, self.step)
    self.writer = outputs.MetricsWriter(
      workdir,
      resume_step=self.step,
      tensorboard=plan.config.tensorboard and self.is_lead,
      active=self.is_lead,
    )
    self.progress = outputs.Progress(total_steps=plan.total_steps, start_step=self.step)
    # A run killed after its final checkpoint but before summary.json restores as
    # finished: it writes its outputs without training on.
    self.status = self.host.get("status", "running")
    self.diverged_step = None
    last = self.host.get("last_loss")
    self.last_loss = float("nan") if last is None else float(last)
    # Pause (checkpoint, status "paused") at this step: successive halving's rungs.
    self.pause_at: int | None = None
    self.wall_before = float(self.host["wall_time_s"])
    self.t_loop = time.perf_counter()
    if self.step == 0:
      self.host["last_eval"] = setup.evaluate(self.state)
      if self.host["max_loss"] == 0.0:  # automatic bound, from the task
        self.host["max_loss"] = plan.task.auto_max_loss(
          self.host["last_eval"]["eval_loss"], setup.data.num_classes
        )
      self.writer.write(dict(step=0, examples_seen=0, **self.host["last_eval"]))
    self.control = setup.control(
      plan, max_loss=self.host["max_loss"], target_done=self.host["target_step"] is not None
    )

  @property
  def finished(self) -> bool:
    return self.status != "running"

  def next_boundary(self) -> int:
    """The end of the next segment; also sets the segment's eval cadence."""
    offset, every = self.plan.eval_cadence_at(self.step)
    self.control = self.control._replace(eval_every=jnp.int32(every), eval_offset=jnp.int32(offset))
    end = _next_boundary(self.step, self.plan, self.setup.segment_len)
    return end if self.pause_at is None or self.pause_at <= self.step else min(end, self.pause_at)

  def absorb(
    self, buf: dict[str, np.ndarray], done: int, get_state: Callable[[], TrainState]
  ) -> None:
    """Records ``done`` steps of a segment; checkpoints and decides whether to stop.

    Args:
      buf: this run's per-step buffer (host numpy arrays).
      done: how many steps the device ran.
      get_state: returns this run's state after the segment (called only when
        it is needed: checkpoints, plateau, the end).
    """
    plan, host, cfg_t = self.plan, self.host, self.plan.config.target
    for i in range(done):
      s = self.step + i + 1
      loss = float(buf["train_loss"][i])
      if buf["diverged"][i]:
        self.status, self.diverged_step = "diverged", s
        self.writer.write(
          dict(step=s, examples_seen=plan.examples_at(s), lr=float(buf["lr"][i]), train_loss=loss)
        )
        logging.warning(
          "Diverged at step %d: train loss %s is non-finite or above %.3g.",
          s,
          loss,
          host["max_loss"],
        )
        self.state = get_state()
        return
      host["loss_sum"] += loss
      host["loss_n"] += 1
      self.last_loss = loss
      if s % plan.log_every == 0 or s == plan.total_steps:
        row = dict(
          step=s,
          examples_seen=plan.examples_at(s),
          lr=float(buf["lr"][i]),
          train_loss=host["loss_sum"] / host["loss_n"],
          grad_norm=float(buf["grad_norm"][i]),
        )
        row.update({k: float(buf[k][i]) for k in buf if k.startswith("gns_") or k == "loss_scale"})
        self.writer.write(row)
        host["loss_sum"], host["loss_n"] = 0.0, 0
      if not math.isnan(buf["eval_loss"][i]):
        host["last_eval"] = {k: float(buf[k][i]) for k in plan.task.metric_names}
        self.writer.write(dict(step=s, examples_seen=plan.examples_at(s), **host["last_eval"]))
        if plan.config.plateau.enabled:
          self.plateau = plateau_lib.update_plateau(
            self.plateau,
            host["last_eval"][plan.config.plateau.metric],
            cfg=plan.config.plateau,
            peak_lr=plan.lr,
          )
        if self._early_stop(s, get_state):
          done = i + 1  # the stop is at this eval (a segment boundary when enabled)
          break
      if buf["reached"][i] and host["target_step"] is None:
        host["target_step"] = s
        self.control = self.control._replace(target_value=jnp.float32(jnp.nan))
        logging.info(
          "Target %s %s %s reached at step %d.",
          cfg_t.metric,
          ">=" if cfg_t.mode == "max" else "<=",
          cfg_t.value,
          s,
        )
    self.step += done
    self.progress.update(
      self.step, force=self.step == plan.total_steps, loss=self.last_loss, **host["last_eval"]
    )
    stop_now = plan.has_target and cfg_t.stop and host["target_step"] is not None
    at_end = self.step >= plan.total_steps or stop_now or self.early.stopped
    paused = not at_end and self.pause_at is not None and self.step >= self.pause_at
    if plan.config.plateau.enabled or at_end or paused or self.step % plan.checkpoint_every == 0:
      self.state = get_state()
    if self.early.stopped and self.best_ckpt is not None:  # the best evaluation's parameters
      from lrscale.engine.checkpoint import abstract_like  # pylint: disable=g-import-not-at-top

      self.state = self.best_ckpt.restore_latest(abstract_like(self.state))[1]
      host["last_eval"] = dict(self.early.best_metrics)
    if plan.config.plateau.enabled:
      self.state = self.state._replace(
        lr_scale=parallel.put_replicated(
          jnp.asarray(self.plateau.scale, jnp.float32), self.setup.mesh
        )
      )
    if self.step % plan.checkpoint_every == 0 or at_end or paused:
      if at_end:  # recorded in the checkpoint: a rerun must not train on
        host["status"] = "stopped_early" if self.early.stopped else "complete"
      self.save()
    if at_end:
      self.status = "stopped_early" if self.early.stopped else "complete"
    elif paused:
      self.status = "paused"

  def _early_stop(self, step: int, get_state: Callable[[], TrainState]) -> bool:
    """Feeds this eval to early stopping; True when the run stops here."""
    cfg = self.plan.config.early_stopping
    if not cfg.enabled:
      return False
    before = self.early
    self.early = early_lib.update_early_stopping(before, self.host["last_eval"], step=step, cfg=cfg)
    if self.best_ckpt is not None and self.early.best_step != before.best_step:
      self.best_ckpt.save(step, get_state(), {})
    if not self.early.stopped:
      return False
    logging.info(
      "Early stopping at step %d: %s has not improved on %.6g (step %d) for %d evaluations.",
      step,
      cfg.metric,
      self.early.best,
      self.early.best_step,
      self.early.num_bad,
    )
    return True

  def save(self) -> None:
    """Checkpoints the current step (once: a step already saved is not saved again)."""
    if self.saved_step == self.step:
      return
    host = self.host
    host["plateau"] = self.plateau.to_dict()
    host["early_stopping"] = self.early.to_dict()
    host["wall_time_s"] = self.wall_before + time.perf_counter() - self.t_loop
    host["last_loss"] = None if math.isnan(self.last_loss) else self.last_loss
    self.ckpt.save(self.step, self.state, host)
    self.saved_step = self.step

  def close(self) -> None:
    for part in (self.writer, self.ckpt, self.best_ckpt, self.setup):  # setup: input workers
      if part is not None:
        part.close()

  def summary(self) -> dict[str, Any]:
    """Writes and returns summary.json (call once the run is finished)."""
    summary = _summary(
      self.plan,
      status=self.status,
      step=self.diverged_step or self.step,
      last_eval=self.host["last_eval"],
      last_loss=self.last_loss,
      host=self.host,
      state=self.state,
      wall=self.wall_before + time.perf_counter() - self.t_loop,
      total_wall=time.perf_counter() - self.t_start,
    )
    if self.plan.config.early_stopping.enabled:
      summary["early_stopping"] = early_lib.summary(self.early, self.plan.config.early_stopping)
    if self.is_lead:
      outputs.atomic_write_json(os.path.join(self.workdir, "summary.json"), summary)
    logging.info(
      "Run %s after %d steps: %s",
      self.status,
      summary["steps"],
      json.dumps(summary["final"], default=str),
    )
    return summary


def prepare(cfg, *, plan: config_lib.RunPlan | None = None) -> config_lib.RunPlan:
  """Process-level set-up before a run: config check, caches, logs.

  Multi-process runs are initialised before this, by the main
  (``lrscale.engine.launch``).
  """
  plan = plan or config_lib.resolve(cfg)
  outputs.quiet_library_logs()
  parallel.enable_compilation_cache(os.path.expanduser(plan.config.compilation_cache))
  return plan


def train(
  cfg,
  workdir: str,
  *,
  plan: config_lib.RunPlan | None = None,
  setup: RunSetup | None = None,
  data: registry.InMemoryData | None = None,
  stop_after_steps: int | None = None,
  initial_state: TrainState | None = None,
  pause_at_step: int | None = None,
) -> dict[str, Any]:
  """Trains one run to its budget or target and returns its summary.

  Args:
    cfg: the run config (``lrscale.config.base_config()`` plus changes).
    workdir: output directory; an existing one with checkpoints is resumed.
    plan: an already resolved plan (the study runner resolves once).
    setup: a ``RunSetup`` to reuse (its compiled functions serve every lr).
    data: in-memory data to reuse.
    stop_after_steps: stop (as if killed) at the first host boundary at or after
      this step; for tests.
    initial_state: start from this state instead of the seed's initialisation
      (placed like ``setup.initial_state``'s); used to branch from another run.
    pause_at_step: checkpoint at exactly this step and return a summary with
      status ``paused``; training the same config again continues from there
      (the budget, hence every schedule's horizon, is unchanged).

  Returns:
    The summary dict also written to ``workdir/summary.json``.
  """
  config_lib.check_run_config(cfg)
  workdir_lib.check_writable(workdir)
  plan = prepare(cfg, plan=plan)
  # Before loading any data: whose workdir it is, and whether the run is done.
  workdir_lib.check_identity(workdir, json.loads(config_lib.to_json(plan)))
  done = workdir_lib.finished_summary(workdir)
  if done is not None:
    logging.info("Run in %s is already %s; nothing to train.", workdir, done["status"])
    return done
  is_lead = jax.process_index() == 0
  with (
    workdir_lib.hold(workdir, what="lrscale.train", enabled=is_lead),
    interrupt.catch_stop_signals() as stop,
  ):
    return _train_loop(
      plan, workdir, setup, data, stop, stop_after_steps, initial_state, pause_at_step
    )


def _train_loop(
  plan, workdir, setup, data, stop, stop_after_steps, initial_state=None, pause_at_step=None
) -> dict[str, Any]:
  data = data or (setup.data if setup else registry.load_in_memory(plan.config.dataset))
  setup = setup or RunSetup(plan, data)
  loop = RunLoop(plan, workdir, setup, initial_state=initial_state)
  loop.pause_at = pause_at_step
  if pause_at_step is not None and pause_at_step <= loop.step < plan.total_steps:
    loop.status = "paused"  # resumed at or past the pause: nothing to train
  try:
    while not loop.finished:
      if stop.signum is not None:
        loop.save()
        raise stop.interrupted(step=loop.step, workdir=workdir)
      end = loop.next_boundary()
      data_x, data_y, idx, ks = setup.inputs(plan, loop.step, end - loop.step)
      state, buf, done, _ = setup.fns.train_segment(
        loop.state,
        data_x,
        data_y,
        idx,
        jnp.int32(end - loop.step),
        setup.eval_batches,
        loop.control,
        ks,
      )
      # The state first: absorb may change it (reduce-on-plateau sets lr_scale).
      loop.state = state
      loop.absorb(jax.device_get(buf), int(done), lambda: state)  # one transfer
      if not loop.finished and stop_after_steps is not None and loop.step >= stop_after_steps:
        return dict(status="interrupted", steps=loop.step)
  finally:
    loop.close()
  return loop.summary()


def _summary(plan, *, status, step, last_eval, last_loss, host, state, wall, total_wall):
  cfg_t = plan.config.target
  target_step = host.get("target_step")
  noise = None
  if plan.config.noise_scale.enabled and status != "diverged":
    noise = dict(
      b_simple=float(noise_scale.b_simple(state.noise)),
      grad_sq_norm=float(state.noise.ema_grad_sq),
      trace_sigma=float(state.noise.ema_trace),
    )
  return dict(
    status=status,
    steps=int(step),
    examples_seen=plan.examples_at(int(step)),
    batch_size=plan.batch_size,
    lr=plan.lr,
    final=dict(train_loss=last_loss, **last_eval),
    target=dict(
      metric=cfg_t.metric,
      value=cfg_t.value,
      mode=cfg_t.mode,
      reached=target_step is not None,
      step=target_step,
      examples=None if target_step is None else plan.examples_at(target_step),
    ),
    wall_time_s=wall,
    process_time_s=total_wall,
    noise_scale=noise or dict(b_simple=None, grad_sq_norm=None, trace_sigma=None),
  )
