"""One training run: ``python -m lrscale.train --config=configs/default.py --workdir=DIR``.

``train(config, workdir)`` is the testable function; ``main`` is a thin absl
wrapper. The loop alternates device-side segments of steps (``lrscale.step``)
with host-side bookkeeping at segment boundaries: logging, evaluation, target
and divergence checks, reduce-on-plateau, checkpoints. Boundaries fall on
multiples of ``log_every``, ``eval_every`` and ``checkpoint_every`` only, so a
resumed run passes through the very same boundaries as an uninterrupted one.

Outputs in ``workdir``: config.json, metrics.jsonl, tensorboard/, summary.json,
checkpoints/.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from lrscale import config as config_lib
from lrscale import metrics as metrics_lib
from lrscale import noise_scale, optimizers, parallel, plateau as plateau_lib
from lrscale.checkpoint import Checkpointer, abstract_like
from lrscale.data import order, registry
from lrscale.models import build_model
from lrscale.step import StepFns, TrainState, make_step_fns


class RunSetup:
  """What a run builds before its first step: data on device, model, compiled fns."""

  def __init__(self, plan: config_lib.RunPlan, data: registry.InMemoryData):
    cfg = plan.config
    self.plan, self.data = plan, data
    self.mesh = parallel.make_mesh(plan.num_devices)
    self.graphdef, params, _ = self._init_model(cfg.seed)
    self.tx = optimizers.build_optimizer(plan.optimizer, params=params)
    self.segment_len = plan.log_every
    self.fns: StepFns = make_step_fns(
        graphdef=self.graphdef, tx=self.tx, optimizer_cfg=plan.optimizer, lr_fn=plan.lr_fn(),
        mesh=self.mesh, segment_len=self.segment_len,
        noise_splits=cfg.noise_scale.splits if cfg.noise_scale.enabled else 0,
        noise_decay=cfg.noise_scale.decay)
    # The training set lives on every device; batches are gathered by index.
    self.train_x = parallel.put_replicated(data.train_x, self.mesh)
    self.train_y = parallel.put_replicated(data.train_y, self.mesh)
    self.eval_batches = self._eval_batches()

  def _model(self, seed) -> nnx.Module:
    cfg, data = self.plan.config, self.data
    return build_model(cfg.model.name, input_shape=data.input_shape,
                       num_classes=data.num_classes, bn_group_size=self.plan.bn_group_size,
                       rngs=nnx.Rngs(seed), **_model_kwargs(cfg.model))

  def _init_model(self, seed: int):
    """(graphdef, params, batch_stats) for ``seed``; init is jitted (eager init is slow)."""
    if not hasattr(self, "_init_jit"):
      abstract = nnx.eval_shape(lambda: self._model(0))
      self._graphdef = nnx.split(abstract, nnx.Param, nnx.BatchStat)[0]
      # An 'rbg' key: XLA compiles its generator 3-5x faster than threefry's
      # (MLP init 4.8 s -> 1.4 s, ResNet-20 21 s -> 5 s on 2 CPU cores), and
      # init is compiled in every fresh process.
      self._init_jit = jax.jit(lambda s: nnx.split(
          self._model(jax.random.key(s, impl="rbg")), nnx.Param, nnx.BatchStat)[1:])
    params, batch_stats = self._init_jit(jnp.asarray(seed, jnp.uint32))
    return self._graphdef, params, batch_stats

  def initial_state(self, plan: config_lib.RunPlan) -> TrainState:
    """The state at step 0 for ``plan``'s seed and lr (the compiled fns are shared)."""
    _, params, batch_stats = self._init_model(plan.config.seed)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       batch_stats=batch_stats, opt_state=self.tx.init(params),
                       base_lr=jnp.asarray(plan.lr, jnp.float32),
                       lr_scale=jnp.ones((), jnp.float32),
                       noise=noise_scale.init_noise_scale())
    return parallel.put_replicated(state, self.mesh)

  def _eval_batches(self):
    eb = self.plan.config.eval_batch_size
    n = self.data.num_eval
    eb = min(eb, n)
    eb += -eb % self.plan.num_devices  # every device gets an equal share
    nb = -(-n // eb)
    pad = nb * eb - n
    xs = np.concatenate([self.data.eval_x, np.zeros((pad,) + self.data.eval_x.shape[1:],
                                                    np.float32)])
    ys = np.concatenate([self.data.eval_y, np.zeros((pad,), np.int32)])
    ws = np.concatenate([np.ones((n,), np.float32), np.zeros((pad,), np.float32)])
    shape = (nb, eb)
    return tuple(parallel.put_batch(a.reshape(shape + a.shape[1:]), self.mesh, axis=1)
                 for a in (xs, ys, ws))

  def indices(self, plan: config_lib.RunPlan, start: int, n: int) -> jax.Array:
    """Batch indices for steps [start, start+n), padded to the segment length: [L, k, b]."""
    idx = order.batch_indices(seed=plan.config.seed, start_step=start, num_steps=n,
                              batch_size=plan.batch_size, num_examples=self.data.num_train)
    idx = np.concatenate([idx, np.zeros((self.segment_len - n, plan.batch_size), np.int32)])
    idx = idx.reshape(self.segment_len, plan.microbatches, -1)
    return parallel.put_batch(idx, self.mesh, axis=2)

  def evaluate(self, state: TrainState) -> dict[str, float]:
    return {k: float(v) for k, v in self.fns.evaluate(state, *self.eval_batches).items()}


def _model_kwargs(model_cfg) -> dict[str, Any]:
  name = model_cfg.name
  if name == "mlp":
    return dict(hidden=tuple(model_cfg.hidden))
  if name == "cnn":
    return dict(channels=tuple(model_cfg.channels), dense=model_cfg.dense)
  if name.startswith("resnet"):
    return dict(zero_init_last_bn=model_cfg.zero_init_last_bn)
  return {}


def _next_boundary(step: int, plan: config_lib.RunPlan) -> int:
  nxt = plan.total_steps
  for every in (plan.log_every, plan.eval_every, plan.checkpoint_every):
    nxt = min(nxt, (step // every + 1) * every)
  return nxt


def _check_workdir(workdir: str, config_json: dict[str, Any]) -> None:
  """Refuses to mix two different runs in one workdir (nothing is overwritten)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f).get("config")
  if old is not None and old != config_json["config"]:
    changed = sorted(k for k in set(old) | set(config_json["config"])
                     if old.get(k) != config_json["config"].get(k))
    raise ValueError(
        f"--workdir={workdir} already holds a run with a different config (fields "
        f"{changed} differ). Use a new --workdir, or delete that directory to start over.")


def train(cfg, workdir: str, *, plan: config_lib.RunPlan | None = None,
          setup: RunSetup | None = None, data: registry.InMemoryData | None = None,
          stop_after_steps: int | None = None) -> dict[str, Any]:
  """Trains one run to its budget or target and returns its summary.

  Args:
    cfg: the run config (``lrscale.config.base_config()`` plus changes).
    workdir: output directory; an existing one with checkpoints is resumed.
    plan: an already resolved plan (the study runner resolves once).
    setup: a ``RunSetup`` to reuse (its compiled functions serve every lr).
    data: in-memory data to reuse.
    stop_after_steps: stop (as if killed) once this many steps are done; for tests.

  Returns:
    The summary dict also written to ``workdir/summary.json``.
  """
  t_start = time.perf_counter()
  parallel.maybe_initialize_distributed(cfg.parallel)
  plan = plan or config_lib.resolve(cfg)
  config_json = json.loads(config_lib.to_json(plan))
  _check_workdir(workdir, config_json)
  os.makedirs(workdir, exist_ok=True)
  if plan.dataset.streamed:
    raise ValueError(f"config.dataset.name={plan.dataset.name!r} is streamed; the streaming "
                     "train loop is not wired yet: use an in-memory dataset.")
  parallel.enable_compilation_cache(os.path.expanduser(plan.config.compilation_cache))
  is_lead = jax.process_index() == 0
  if is_lead:
    metrics_lib.atomic_write_text(os.path.join(workdir, "config.json"),
                                  config_lib.to_json(plan))
  logging.info("Run plan: %s", json.dumps(plan.summary(), default=str))
  logging.info("Scaling rule: %s", plan.scaled.description)

  data = data or (setup.data if setup else registry.load_in_memory(plan.config.dataset))
  setup = setup or RunSetup(plan, data)
  state = setup.initial_state(plan)
  ckpt = Checkpointer(workdir, keep=plan.config.checkpoint_keep)
  plateau = plateau_lib.init_plateau(plan.config.plateau)
  host: dict[str, Any] = dict(target_step=None, best=None, wall_time_s=0.0,
                              plateau=plateau.to_dict() if hasattr(plateau, "to_dict")
                              else plateau._asdict())
  restored = ckpt.restore_latest(abstract_like(state))
  step = 0
  if restored is not None:
    step, state, host = restored
    plateau = plateau_lib.PlateauState.from_dict(host["plateau"])
    logging.info("Resumed from the checkpoint at step %d.", step)
  writer = metrics_lib.MetricsWriter(workdir, resume_step=step,
                                     tensorboard=plan.config.tensorboard and is_lead)
  progress = metrics_lib.Progress(total_steps=plan.total_steps, start_step=step)
  max_loss = plan.max_loss
  status, last_eval, last_loss = "running", {}, float("nan")
  loss_sum, loss_n, diverged_step = 0.0, 0, None
  wall_before = float(host.get("wall_time_s", 0.0))
  t_loop = time.perf_counter()
  cfg_t = plan.config.target
  try:
    if step == 0:
      last_eval = setup.evaluate(state)
      if max_loss == 0.0:
        max_loss = max(4.0 * last_eval["eval_loss"], 4.0 * math.log(data.num_classes))
      writer.write(dict(step=0, examples_seen=0, **last_eval))
    elif max_loss == 0.0:
      max_loss = float(host.get("max_loss", 4.0 * math.log(data.num_classes)))
    host["max_loss"] = max_loss
    while step < plan.total_steps:
      end = _next_boundary(step, plan)
      n = end - step
      state, buf = setup.fns.train_segment(state, setup.train_x, setup.train_y,
                                           setup.indices(plan, step, n), jnp.int32(n))
      buf = jax.device_get(buf)  # one transfer; slicing on device would compile per n
      losses = buf["train_loss"][:n]
      bad = np.flatnonzero(~np.isfinite(losses) | (losses > max_loss))
      if bad.size:
        diverged_step = step + int(bad[0]) + 1
        status = "diverged"
        writer.write(dict(step=diverged_step, examples_seen=diverged_step * plan.batch_size,
                          lr=float(buf["lr"][bad[0]]), train_loss=float(losses[bad[0]])))
        logging.warning("Diverged at step %d (train loss %s > bound %.3g or non-finite).",
                        diverged_step, losses[bad[0]], max_loss)
        break
      step = end
      loss_sum += float(losses.sum())
      loss_n += n
      last_loss = float(losses[-1])
      if step % plan.log_every == 0 or step == plan.total_steps:
        row = dict(step=step, examples_seen=step * plan.batch_size, lr=float(buf["lr"][n - 1]),
                   train_loss=loss_sum / loss_n)
        row.update({k: float(buf[k][n - 1]) for k in buf if k.startswith("gns_")})
        row["grad_norm"] = float(buf["grad_norm"][n - 1])
        writer.write(row)
        loss_sum, loss_n = 0.0, 0
      if step % plan.eval_every == 0 or step == plan.total_steps:
        last_eval = setup.evaluate(state)
        writer.write(dict(step=step, examples_seen=step * plan.batch_size, **last_eval))
        metric = last_eval[cfg_t.metric]
        if plan.config.plateau.enabled:
          plateau = plateau_lib.update_plateau(plateau, last_eval[plan.config.plateau.metric],
                                             cfg=plan.config.plateau, peak_lr=plan.lr)
          state = state._replace(lr_scale=parallel.put_replicated(
              jnp.asarray(plateau.scale, jnp.float32), setup.mesh))
        if plan.has_target and host["target_step"] is None and _reached(metric, cfg_t):
          host["target_step"] = step
          logging.info("Target %s %s %s reached at step %d.", cfg_t.metric,
                       ">=" if cfg_t.mode == "max" else "<=", cfg_t.value, step)
      progress.update(step, force=step == plan.total_steps, loss=last_loss,
                      **{k: v for k, v in last_eval.items()})
      reached_stop = plan.has_target and cfg_t.stop and host["target_step"] is not None
      if step % plan.checkpoint_every == 0 or step == plan.total_steps or reached_stop:
        host["plateau"] = plateau.to_dict()
        host["wall_time_s"] = wall_before + time.perf_counter() - t_loop
        ckpt.save(step, state, host)
      if reached_stop:
        break
      if stop_after_steps is not None and step >= stop_after_steps:
        return dict(status="interrupted", steps=step)
    if status == "running":
      status = "complete"
  finally:
    writer.close()
    ckpt.close()
  summary = _summary(plan, status=status, step=diverged_step or step, last_eval=last_eval,
                     last_loss=last_loss, host=host, state=state,
                     wall=wall_before + time.perf_counter() - t_loop,
                     total_wall=time.perf_counter() - t_start)
  if is_lead:
    metrics_lib.atomic_write_json(os.path.join(workdir, "summary.json"), summary)
  logging.info("Run %s after %d steps: %s", status, summary["steps"],
               json.dumps(summary["final"], default=str))
  return summary


def _reached(value: float, target_cfg) -> bool:
  return value >= target_cfg.value if target_cfg.mode == "max" else value <= target_cfg.value


def _summary(plan, *, status, step, last_eval, last_loss, host, state, wall, total_wall):
  cfg_t = plan.config.target
  target_step = host.get("target_step")
  noise = None
  if plan.config.noise_scale.enabled and status != "diverged":
    noise = dict(b_simple=float(noise_scale.b_simple(state.noise)),
                 grad_sq_norm=float(state.noise.ema_grad_sq),
                 trace_sigma=float(state.noise.ema_trace))
  return dict(
      status=status, steps=int(step), examples_seen=int(step) * plan.batch_size,
      batch_size=plan.batch_size, lr=plan.lr,
      final=dict(train_loss=last_loss, **last_eval),
      target=dict(metric=cfg_t.metric, value=cfg_t.value, mode=cfg_t.mode,
                  reached=target_step is not None, step=target_step,
                  examples=None if target_step is None else target_step * plan.batch_size),
      wall_time_s=wall, process_time_s=total_wall,
      noise_scale=noise or dict(b_simple=None, grad_sq_norm=None, trace_sigma=None))


_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")


def main(argv):
  del argv
  train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
