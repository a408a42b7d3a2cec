r"""Train-step throughput and launch-to-first-step: lrscale vs a hand-written jax+optax loop.

Usage (from the repo root, no install needed):
  python scripts/bench_train_step.py                   # everything, ~4-5 min on 2 busy cores
  python scripts/bench_train_step.py --batch_sizes=32 --reps=15 --launch_reps=0
  python scripts/bench_train_step.py --baseline_run    # only the minimal hand-written run
  python scripts/bench_train_step.py --models=mlp,cnn,cnn28,resnet8,resnet20 \
      --skip_throughput --launch_reps=0                # lrscale vs PyTorch (needs torch)

Throughput, all in this one process, on the same MLP (64-128-128-10, ReLU), the
same digits batches (same example order) and momentum SGD (0.9):

* ``lrscale``: ``configs/default.py`` resolved with one device, a real
  ``RunSetup``, and ``setup.fns.train_segment`` called over precomputed batch
  indices (the on-device loop of ``segment_len`` = ``sync_every`` steps that
  ``lrscale.train`` runs between host syncs, with its per-step divergence and
  target checks; in-loop evaluation is pushed out of reach, as the baseline
  evaluates nothing);
* ``lrscale loop``: the same plus what ``train()`` does per segment on the host
  (build and upload the indices, fetch the per-step metric buffer), but not its
  per-step Python bookkeeping of that buffer (logging rows, a few us per step);
* ``py-loop``: a ``@jax.jit`` step on (params dict, opt_state, x, y) called from
  a Python for-loop over batches pre-sliced on the device;
* ``scan``: the same step inside a hand-written ``lax.scan`` over chunks of
  ``segment_len`` pre-sliced batches (as many steps per call as lrscale's segment);
* ``lrscale step`` (diagnostic): lrscale's own jitted ``train_step`` called from a
  Python loop, to tell the step's cost from the loop's.

Repetitions are interleaved (all contenders in order, then in reverse order, ...)
because this 2-core machine is shared and noisy; the tables show medians and
the median of the per-repetition ratios.

Launch to first step is wall time from ``Popen`` to the first progress line
(``step N/M``) of ``python -m lrscale.train --config=configs/default.py`` with a
cold (fresh, empty) and a warm persistent compilation cache
(``config.compilation_cache``), vs this script's ``--baseline_run`` printing its
first completed step, in two styles: ``jax`` (``jax.random`` init, batches
gathered on the device: the usual tutorial script) and ``numpy`` (numpy init,
host-sliced batches: no random-number or gather program to compile before the
step; about the fastest start a minimal script gets). The baseline has no
persistent cache (a minimal script does not set one up). lrscale prints its
first progress line at its first host sync (step N is printed: the first
segment's steps cost milliseconds, the start-up seconds), after the step-0
evaluation, so its time includes compiling evaluation too; the baseline
evaluates nothing before training.

lrscale vs PyTorch (``--models``; torch is in the ``bench`` extra), per model and batch
size: lrscale's segment loop (as above) with ``config.model.conv_impl`` = ``auto`` and,
for conv models, ``xla`` (XLA's native convolutions), against a hand-written PyTorch
loop (``scripts/torch_baselines.py``: the same layers in NCHW, ``torch.optim.SGD``
momentum 0.9, batches pre-sliced) using ``--torch_threads`` threads. Models: ``mlp``
and ``cnn`` (the small CNN) on the 8x8 digits, ``cnn28`` (Shallue et al.'s CNN of
``configs/mnist_cnn.py``: 32/64 channels, dense 1024) on random 28x28x1 images and
``resnet8``/``resnet20`` on random 32x32x3 images (a step costs the same on any data).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

if TYPE_CHECKING:  # only for annotations: --baseline_run must import jax, optax, numpy only
  import ml_collections

# Run from a checkout without installing: lrscale and configs/ live at the repo root.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

BASELINE_MARKER = "BASELINE_FIRST_STEP"
LAUNCH_VARIANTS = (
  "lrscale cold cache",
  "lrscale warm cache",
  "baseline, jax init",
  "baseline, numpy init",
)
# lrscale.engine.outputs.Progress logs "step 10/450 loss=... | 12.3 steps/s | ETA 0:05".
PROGRESS_RE = re.compile(r"\] step \d+/\d+ ")
HIDDEN = (128, 128)
MOMENTUM = 0.9


# --------------------------------------------------------------------------------------
# The hand-written baseline. Only jax, optax and numpy: ``--baseline_run`` is launched
# as its own process to time a minimal script's start-up, so it must not import lrscale.
# --------------------------------------------------------------------------------------

Params = dict[str, dict[str, jax.Array]]


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> Params:
  """LeCun-normal kernels and zero biases, like ``nnx.Linear``."""
  params = {}
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    w = jax.random.normal(k, (fan_in, fan_out), jnp.float32) / np.sqrt(fan_in)
    params[f"layer{i}"] = {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}
  return params


def mlp_logits(params: Params, x: jax.Array) -> jax.Array:
  """ReLU MLP on flattened inputs."""
  h = x.reshape((x.shape[0], -1))
  layers = [params[f"layer{i}"] for i in range(len(params))]
  for layer in layers[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  return h @ layers[-1]["w"] + layers[-1]["b"]


class Baseline(NamedTuple):
  """The hand-written loop: one jitted step, and the same step under ``lax.scan``."""

  tx: optax.GradientTransformation
  step: Callable[..., tuple[Params, Any, jax.Array]]
  scan: Callable[..., tuple[Params, Any, jax.Array]]


def make_baseline(lr: float) -> Baseline:
  """What a competent user writes: ``optax.sgd`` with momentum and a ``@jax.jit`` step."""
  tx = optax.sgd(lr, momentum=MOMENTUM)

  def loss_fn(params, x, y):
    logits = mlp_logits(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def scan(params, opt_state, xs, ys):
    def body(carry, xy):
      p, s, loss = step(*carry, *xy)
      return (p, s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
    return params, opt_state, losses

  # Donating params and optimizer state, as lrscale's train_segment donates its state.
  return Baseline(
    tx=tx, step=jax.jit(step, donate_argnums=(0, 1)), scan=jax.jit(scan, donate_argnums=(0, 1))
  )


def load_digits_fast() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits from the CSV it ships: float32 [1797, 64] in [0, 1], labels.

  ``sklearn.datasets.load_digits`` would add scikit-learn's import (seconds) to the
  baseline's start-up; reading the file directly is what lrscale does, so both
  sides pay the same small cost.
  """
  spec = importlib.util.find_spec("sklearn")
  path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.float32)
  return table[:, :-1] / 16.0, table[:, -1].astype(np.int32)


def init_mlp_numpy(seed: int, sizes: Sequence[int]) -> Params:
  """``init_mlp`` with numpy's generator: no JAX program to compile for the init."""
  rng = np.random.default_rng(seed)
  params = {}
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    w = rng.normal(size=(fan_in, fan_out)).astype(np.float32) / np.float32(np.sqrt(fan_in))
    params[f"layer{i}"] = {"w": jnp.asarray(w), "b": jnp.asarray(np.zeros(fan_out, np.float32))}
  return params


def baseline_run(style: str, batch_size: int = 64, epochs: int = 20, lr: float = 0.05) -> None:
  """A whole minimal training run; prints ``BASELINE_MARKER`` once step 1 is done.

  Args:
    style: ``jax``: ``jax.random`` init and batches gathered on the device (the
      usual JAX tutorial script; every eager op compiles on first use, and
      threefry's generator compiles slowly on CPU); ``numpy``: numpy init and
      batches sliced on the host (only optax's tiny init ops compile before the step).
    batch_size, epochs, lr: the run, as configs/default.py (without its cosine).
  """
  x, y = load_digits_fast()
  perm = np.random.default_rng(0).permutation(len(x))
  train, test = perm[:-360], perm[-360:]
  mean, std = x[train].mean(), x[train].std() + 1e-6
  xtr, ytr = (x[train] - mean) / std, y[train]
  xte, yte = (x[test] - mean) / std, y[test]
  sizes = (64, *HIDDEN, 10)
  if style == "jax":
    xtr, ytr = jnp.asarray(xtr), jnp.asarray(ytr)
    params = init_mlp(jax.random.key(0), sizes)
  else:
    params = init_mlp_numpy(0, sizes)
  base = make_baseline(lr)
  opt_state = base.tx.init(params)
  steps_per_epoch = len(train) // batch_size
  rng = np.random.default_rng(0)
  for epoch in range(epochs):
    order = rng.permutation(len(train))
    for i in range(steps_per_epoch):
      idx = order[i * batch_size : (i + 1) * batch_size]
      params, opt_state, loss = base.step(params, opt_state, xtr[idx], ytr[idx])
      if epoch == 0 and i == 0:
        print(f"{BASELINE_MARKER} loss={float(loss):.4f}", flush=True)
  accuracy = jnp.mean(jnp.argmax(mlp_logits(params, jnp.asarray(xte)), -1) == yte)
  print(
    f"baseline ({style}): {epochs} epochs, final eval accuracy {float(accuracy):.4f}", flush=True
  )


# --------------------------------------------------------------------------------------
# Throughput, in this process.
# --------------------------------------------------------------------------------------


class Contender(NamedTuple):
  """One way of training: ``run()`` does ``steps`` steps and blocks until they are done."""

  name: str
  run: Callable[[], None]


def load_default_config(
  batch_size: int, steps: int, segment_steps: int | None
) -> tuple[ml_collections.ConfigDict, Any]:
  """``configs/default.py`` for one device at ``batch_size``, as a run would resolve it."""
  from lrscale import config as config_lib  # pylint: disable=g-import-not-at-top

  cfg = config_lib.load_config_file(os.path.join(REPO, "configs", "default.py"))
  cfg.parallel.num_devices = 1
  cfg.batch_size = batch_size
  cfg.budget = f"{steps} steps"  # shapes the cosine only; a step costs the same at any lr
  cfg.compilation_cache = ""
  cfg.tensorboard = False
  # Train steps only: the baseline evaluates nothing, so no in-loop evaluation here.
  cfg.eval_every = f"{10**9} steps"
  if segment_steps:
    cfg.sync_every = f"{segment_steps} steps"  # the segment length is sync_every
  return cfg, config_lib.resolve(cfg)


def segment_runner(setup: Any, plan: Any, steps: int) -> Callable[[], None]:
  """``steps`` steps of lrscale's on-device segment loop, indices precomputed."""
  seg = setup.segment_len
  idx = [setup.indices(plan, s, seg) for s in range(0, steps, seg)]  # (idx, ks or None)
  n_seg = jnp.int32(seg)
  # No target and no divergence bound: the checks still run every step, as in a real run.
  control = setup.control(plan, max_loss=math.inf, target_done=True)
  box: dict[str, Any] = {"state": setup.initial_state(plan)}

  def run() -> None:
    state = box["state"]
    for i, ks in idx:
      state, *_ = setup.fns.train_segment(
        state, setup.train_x, setup.train_y, i, n_seg, setup.eval_batches, control, ks
      )
    box["state"] = jax.block_until_ready(state)

  return run


def lrscale_contenders(setup: Any, plan: Any, steps: int) -> list[Contender]:
  """lrscale's segment loop as ``train()`` calls it, and its bare jitted step."""
  from lrscale.data import order  # pylint: disable=g-import-not-at-top

  seg = setup.segment_len
  starts = range(0, steps, seg)
  # No target and no divergence bound: the checks still run every step, as in a real run.
  control = setup.control(plan, max_loss=math.inf, target_done=True)
  box: dict[str, Any] = {"state": setup.initial_state(plan)}
  run_lrscale = segment_runner(setup, plan, steps)

  def run_lrscale_loop() -> None:
    # train()'s per-segment host work: indices built and uploaded, metrics fetched.
    state = box["state"]
    for s in starts:
      i, ks = setup.indices(plan, s, seg)
      state, buf, done, _ = setup.fns.train_segment(
        state, setup.train_x, setup.train_y, i, jnp.int32(seg), setup.eval_batches, control, ks
      )
      jax.device_get((buf, done))
    box["state"] = jax.block_until_ready(state)

  # Diagnostic: lrscale's own jitted step in a Python loop over pre-sliced batches
  # [microbatches=1, B, ...], like the py-loop baseline: the step's cost without the loop's.
  flat = order.batch_indices(
    seed=plan.config.seed,
    start_step=0,
    num_steps=steps,
    batch_size=plan.batch_size,
    num_examples=setup.data.num_train,
  )
  batches = [
    (jnp.asarray(setup.data.train_x[f][None]), jnp.asarray(setup.data.train_y[f][None]))
    for f in flat
  ]
  step_box: dict[str, Any] = {"state": setup.initial_state(plan)}

  def run_lrscale_step() -> None:
    state = step_box["state"]
    for x, y in batches:
      state, _ = setup.fns.train_step(state, x, y)
    step_box["state"] = jax.block_until_ready(state)

  return [
    Contender("lrscale", run_lrscale),
    Contender("lrscale loop", run_lrscale_loop),
    Contender("lrscale step", run_lrscale_step),
  ]


def baseline_contenders(data: Any, lr: float, flat: np.ndarray, seg: int) -> list[Contender]:
  """The hand-written loops on the batches ``flat`` ([steps, B] example indices)."""
  x_host = data.train_x.reshape(data.num_train, -1)[flat]  # [steps, B, 64], flattened once
  y_host = data.train_y[flat]
  batches = [(jnp.asarray(x), jnp.asarray(y)) for x, y in zip(x_host, y_host)]
  chunks = [
    (jnp.asarray(x_host[s : s + seg]), jnp.asarray(y_host[s : s + seg]))
    for s in range(0, len(flat), seg)
  ]
  base = make_baseline(lr)
  sizes = (x_host.shape[-1], *HIDDEN, data.num_classes)
  loop_box: dict[str, Any] = {"p": init_mlp(jax.random.key(0), sizes)}
  scan_box: dict[str, Any] = {"p": init_mlp(jax.random.key(0), sizes)}
  for box in (loop_box, scan_box):
    box["s"] = base.tx.init(box["p"])

  def run_py_loop() -> None:
    p, s = loop_box["p"], loop_box["s"]
    for x, y in batches:
      p, s, _ = base.step(p, s, x, y)
    loop_box["p"], loop_box["s"] = jax.block_until_ready((p, s))

  def run_scan() -> None:
    p, s = scan_box["p"], scan_box["s"]
    for xs, ys in chunks:
      p, s, _ = base.scan(p, s, xs, ys)
    scan_box["p"], scan_box["s"] = jax.block_until_ready((p, s))

  return [Contender("py-loop", run_py_loop), Contender("scan", run_scan)]


def make_contenders(
  batch_size: int, steps: int, segment_steps: int | None
) -> tuple[list[Contender], int, int]:
  """Builds, compiles and warms up every contender for about ``steps`` steps.

  Returns:
    The contenders, lrscale's segment length (steps per device call, also the
    scan baseline's) and the steps one ``run()`` does (``steps`` rounded up to
    whole segments).
  """
  from lrscale.data import order, registry  # pylint: disable=g-import-not-at-top
  from lrscale.engine import loop as train_lib  # pylint: disable=g-import-not-at-top

  cfg, plan = load_default_config(batch_size, steps, segment_steps)
  data = registry.load_in_memory(cfg.dataset)
  setup = train_lib.RunSetup(plan, data)
  seg = setup.segment_len
  steps = -(-steps // seg) * seg
  flat = order.batch_indices(
    seed=plan.config.seed,
    start_step=0,
    num_steps=steps,
    batch_size=batch_size,
    num_examples=data.num_train,
  )
  lrs = lrscale_contenders(setup, plan, steps)
  contenders = lrs[:2] + baseline_contenders(data, plan.lr, flat, seg) + lrs[2:]
  for c in contenders:  # compile and warm up outside the timed repetitions
    c.run()
  return contenders, seg, steps


def time_once(fn: Callable[[], None]) -> float:
  """Wall seconds of one call."""
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def time_wall_cpu(fn: Callable[[], None]) -> tuple[float, float]:
  """Wall seconds and this process's CPU seconds (all threads) of one call.

  CPU time is a cross-check that other people's jobs on the shared cores
  disturb less: a descheduled thread accrues wall time but no CPU time.
  """
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


class ThroughputRow(NamedTuple):
  batch_size: int
  steps: int  # steps per repetition
  segment: int  # steps per device call (lrscale and scan)
  times: dict[str, list[float]]  # wall seconds per repetition, by contender
  cpu: dict[str, list[float]]  # CPU seconds per repetition, by contender


def measure_throughput(
  batch_size: int, reps: int, segment_steps: int | None, target_s: float, probe_steps: int = 200
) -> ThroughputRow:
  """Interleaved repetitions (forward order, then reversed, ...) of every contender.

  One repetition is ``passes`` calls of each contender's ``run()`` (``probe_steps``
  steps each), with ``passes`` chosen so that lrscale's repetition lasts about
  ``target_s``: long enough to swamp timer noise, short enough to interleave often.
  """
  contenders, seg, steps = make_contenders(batch_size, probe_steps, segment_steps)
  probe = min(time_once(contenders[0].run) for _ in range(3))
  passes = max(1, round(target_s / max(probe, 1e-9)))

  def repeat(fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
      for _ in range(passes):
        fn()

    return run

  times: dict[str, list[float]] = {c.name: [] for c in contenders}
  cpu: dict[str, list[float]] = {c.name: [] for c in contenders}
  for r in range(reps):
    for c in contenders if r % 2 == 0 else contenders[::-1]:
      wall_s, cpu_s = time_wall_cpu(repeat(c.run))
      times[c.name].append(wall_s)
      cpu[c.name].append(cpu_s)
  return ThroughputRow(batch_size, steps * passes, seg, times, cpu)


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
  """Median over repetitions of time(b) / time(a): throughput of a relative to b."""
  return statistics.median(tb / ta for ta, tb in zip(a, b))


# (lrscale side, baseline side) pairs whose throughput ratio the table shows.
RATIOS = (
  ("lrscale", "py-loop"),
  ("lrscale", "scan"),
  ("lrscale loop", "py-loop"),
  ("lrscale loop", "scan"),
  ("lrscale step", "py-loop"),
)


def print_throughput(rows: Sequence[ThroughputRow]) -> None:
  """Examples/s per contender, then the lrscale / baseline ratios (wall and CPU time)."""
  names = list(rows[0].times)
  print("\nTrain-step throughput, examples/s (median of interleaved repetitions)")
  head = f"{'B':>5} {'steps':>6} {'seg':>4} | " + " ".join(f"{n:>12}" for n in names)
  print(head)
  print("-" * len(head))
  for row in rows:
    thr = [row.batch_size * row.steps / statistics.median(row.times[n]) for n in names]
    print(
      f"{row.batch_size:>5} {row.steps:>6} {row.segment:>4} | "
      + " ".join(f"{v:>12.0f}" for v in thr)
    )
  print(
    "\nThroughput ratios (median over repetitions of the per-repetition ratio; "
    "target lrscale >= 0.95x)"
  )
  head = f"{'B':>5} | " + " ".join(f"{a + ' / ' + b:>22}" for a, b in RATIOS)
  print(head)
  print("-" * len(head))
  for row in rows:
    print(
      f"{row.batch_size:>5} | "
      + " ".join(f"{median_ratio(row.times[a], row.times[b]):>22.2f}" for a, b in RATIOS)
    )
  print("\nThe same ratios from CPU time (process_time, all threads) instead of wall time")
  print(head)
  print("-" * len(head))
  for row in rows:
    print(
      f"{row.batch_size:>5} | "
      + " ".join(f"{median_ratio(row.cpu[a], row.cpu[b]):>22.2f}" for a, b in RATIOS)
    )
  for row in rows:
    for a, b in RATIOS[:2]:
      pairs = ", ".join(f"{tb / ta:.2f}" for ta, tb in zip(row.times[a], row.times[b]))
      print(f"  B={row.batch_size} {a} / {b} per repetition: {pairs}")


# --------------------------------------------------------------------------------------
# lrscale vs PyTorch, per model, in this process.
# --------------------------------------------------------------------------------------

# name -> (lrscale model name, image shape or None for the digits, model fields).
TORCH_ROWS: dict[str, tuple[str, tuple[int, ...] | None, dict[str, Any]]] = {
  "mlp": ("mlp", None, {"hidden": (128, 128)}),
  "cnn": ("cnn", None, {"channels": (32, 64), "dense": 128}),
  "cnn28": ("cnn", (28, 28, 1), {"channels": (32, 64), "dense": 1024}),  # configs/mnist_cnn.py
  "resnet8": ("resnet8", (32, 32, 3), {}),
  "resnet20": ("resnet20", (32, 32, 3), {}),
}


def synthetic_data(shape: tuple[int, ...], num_train: int) -> Any:
  """Random images (a step costs the same on any data), 10 classes, a tiny eval split."""
  from lrscale.data import registry  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x = rng.normal(size=(num_train + 64, *shape)).astype(np.float32)
  y = rng.integers(0, 10, num_train + 64).astype(np.int32)
  return registry.InMemoryData("synthetic", x[:num_train], y[:num_train], x[-64:], y[-64:], 10)


def lrscale_model_setup(row: str, batch_size: int, steps: int, conv_impl: str) -> tuple[Any, Any]:
  """(RunSetup, RunPlan) of ``configs/default.py`` with the model and data of ``row``."""
  from lrscale import config as config_lib  # pylint: disable=g-import-not-at-top
  from lrscale import train as train_lib  # pylint: disable=g-import-not-at-top
  from lrscale.data import registry  # pylint: disable=g-import-not-at-top
  from lrscale.models import registry as models  # pylint: disable=g-import-not-at-top

  # Until train.py builds its model kwargs with models.model_kwargs (conv_impl included).
  train_lib._model_kwargs = models.model_kwargs  # pylint: disable=protected-access
  name, shape, fields = TORCH_ROWS[row]
  cfg, _ = load_default_config(batch_size, steps, steps)
  cfg.model.name, cfg.model.conv_impl = name, conv_impl
  cfg.model.update(fields)
  if shape is None:
    data = registry.load_in_memory(cfg.dataset)
    return train_lib.RunSetup(config_lib.resolve(cfg), data), config_lib.resolve(cfg)
  data = synthetic_data(shape, max(2048, 2 * batch_size))
  meta = registry.DatasetMeta("synthetic", data.num_train, data.num_eval, 10, shape, False)
  plan = config_lib.resolve(cfg, dataset_meta=meta)
  return train_lib.RunSetup(plan, data), plan


class TorchRow(NamedTuple):
  model: str
  batch_size: int
  steps: int  # steps per repetition
  times: dict[str, list[float]]  # wall seconds per repetition, by contender


def measure_vs_torch(
  row: str, batch_size: int, reps: int, target_s: float, conv_impls: Sequence[str]
) -> TorchRow:
  """Interleaved repetitions of lrscale (each of ``conv_impls``) and the PyTorch loop."""
  import torch_baselines  # pylint: disable=g-import-not-at-top  # needs torch

  from lrscale.data import order  # pylint: disable=g-import-not-at-top

  name, _, fields = TORCH_ROWS[row]
  steps = 100 if row == "mlp" else 10  # one segment per run() for conv models
  impls = ("auto",) if name == "mlp" else tuple(conv_impls)
  contenders = []
  for impl in impls:
    setup, plan = lrscale_model_setup(row, batch_size, steps, impl)
    label = "lrscale" if impl == "auto" else f"lrscale {impl}"
    contenders.append(Contender(label, segment_runner(setup, plan, steps)))
  flat = order.batch_indices(
    seed=plan.config.seed,
    start_step=0,
    num_steps=steps,
    batch_size=batch_size,
    num_examples=setup.data.num_train,
  )
  torch_model = torch_baselines.build(name, setup.data.input_shape, 10, **fields)
  run_torch = torch_baselines.train_loop(
    torch_model, plan.lr, setup.data.train_x, setup.data.train_y, flat
  )
  contenders.append(Contender("torch", run_torch))
  for c in contenders:  # compile and warm up outside the timed repetitions
    c.run()
  probe = min(time_once(contenders[0].run) for _ in range(2))
  passes = max(1, round(target_s / max(probe, 1e-9)))
  times: dict[str, list[float]] = {c.name: [] for c in contenders}
  for r in range(reps):
    for c in contenders if r % 2 == 0 else contenders[::-1]:
      times[c.name].append(time_once(lambda c=c: [c.run() for _ in range(passes)]))
  return TorchRow(row, batch_size, steps * passes, times)


def print_vs_torch(rows: Sequence[TorchRow]) -> None:
  """Examples/s (medians) and lrscale / torch throughput ratios (median per repetition)."""
  print("\nlrscale vs PyTorch CPU: examples/s (median of interleaved repetitions), ratios")
  head = (
    f"{'model':>9} {'B':>5} | {'lrscale':>9} {'lrs xla':>9} {'torch':>9} | "
    f"{'lrscale/torch':>13} {'xla/torch':>9} {'lrscale/xla':>11}"
  )
  print(head)
  print("-" * len(head))
  for row in rows:

    def thr(name: str, row: TorchRow = row) -> str:
      if name not in row.times:
        return f"{'-':>9}"
      return f"{row.batch_size * row.steps / statistics.median(row.times[name]):>9.0f}"

    def ratio(a: str, b: str, width: int, row: TorchRow = row) -> str:
      if a not in row.times or b not in row.times:
        return f"{'-':>{width}}"
      return f"{median_ratio(row.times[a], row.times[b]):>{width}.2f}"

    print(
      f"{row.model:>9} {row.batch_size:>5} | {thr('lrscale')} {thr('lrscale xla')} "
      f"{thr('torch')} | {ratio('lrscale', 'torch', 13)} {ratio('lrscale xla', 'torch', 9)} "
      f"{ratio('lrscale', 'lrscale xla', 11)}",
      flush=True,
    )


# --------------------------------------------------------------------------------------
# Launch to first step, in fresh processes.
# --------------------------------------------------------------------------------------


class Launch(NamedTuple):
  wall_s: float  # Popen to the first-step line
  cpu_s: float  # the child's CPU time (user + system) until it was killed just after
  line: str  # the line that marked the first step


def time_to_line(
  cmd: Sequence[str],
  pattern: re.Pattern[str],
  *,
  stream: str,
  env: dict[str, str] | None = None,
  timeout_s: float = 300.0,
) -> Launch:
  """Times ``cmd`` from ``Popen`` to its first output line matching ``pattern``.

  The process is killed then: only its start-up is measured, the rest of the run
  would just cost time.
  """
  t0 = time.perf_counter()
  proc = subprocess.Popen(
    cmd,
    cwd=REPO,
    env=env,
    text=True,
    bufsize=1,
    stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
    stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL,
  )
  pipe = proc.stdout if stream == "stdout" else proc.stderr
  tail: list[str] = []
  found, wall = "", 0.0
  for line in pipe:
    if pattern.search(line):
      wall, found = time.perf_counter() - t0, line.strip()
      break
    tail = (tail + [line])[-20:]
    if time.perf_counter() - t0 > timeout_s:
      break
  proc.kill()
  # wait4 (not proc.wait) to read the child's CPU time.
  _, _, usage = os.wait4(proc.pid, 0)
  proc.returncode = -9
  pipe.close()
  if not found:
    raise RuntimeError(
      f"{' '.join(cmd)} ended without a line matching {pattern.pattern!r}; "
      f"last output:\n{''.join(tail)}"
    )
  return Launch(wall, usage.ru_utime + usage.ru_stime, found)


def lrscale_launch_cmd(workdir: str, cache_dir: str) -> list[str]:
  """The user's launch of the default run, with its compilation cache at ``cache_dir``."""
  return [
    sys.executable,
    "-m",
    "lrscale.train",
    "--config=configs/default.py",
    f"--workdir={workdir}",
    f"--config.compilation_cache={cache_dir}",
  ]


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[str]:
  """A temporary directory, removed afterwards."""
  path = tempfile.mkdtemp(prefix=prefix)
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


class LaunchResult(NamedTuple):
  launches: dict[str, list[Launch]]  # by variant, in launch order


def measure_launch(reps: int) -> LaunchResult:
  """Interleaved: lrscale cold cache, lrscale warm cache, both baselines; ``reps`` rounds."""
  env = dict(
    os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH", "")]))
  )
  baseline_cmd = [sys.executable, os.path.abspath(__file__), "--baseline_run"]
  marker = re.compile(BASELINE_MARKER)
  launches: dict[str, list[Launch]] = {name: [] for name in LAUNCH_VARIANTS}
  with temp_dir("bench_launch_") as root:
    warm = os.path.join(root, "warm_cache")
    # Fill the warm cache once (untimed): what a user's second launch finds.
    time_to_line(
      lrscale_launch_cmd(os.path.join(root, "fill"), warm), PROGRESS_RE, stream="stderr", env=env
    )
    for r in range(reps):
      runs = {
        # A fresh, empty cache directory every time.
        "lrscale cold cache": (
          lrscale_launch_cmd(os.path.join(root, f"cold{r}"), os.path.join(root, f"cold_cache{r}")),
          PROGRESS_RE,
          "stderr",
        ),
        "lrscale warm cache": (
          lrscale_launch_cmd(os.path.join(root, f"warm{r}"), warm),
          PROGRESS_RE,
          "stderr",
        ),
        "baseline, jax init": (baseline_cmd + ["--baseline_style=jax"], marker, "stdout"),
        "baseline, numpy init": (baseline_cmd + ["--baseline_style=numpy"], marker, "stdout"),
      }
      for name, (cmd, pattern, stream) in runs.items():
        launches[name].append(time_to_line(cmd, pattern, stream=stream, env=env))
  return LaunchResult(launches)


def print_launch(result: LaunchResult) -> None:
  """Launch-to-first-step medians and ratios to both baselines, wall and CPU time."""
  print(
    "\nLaunch to first completed train step (median of interleaved launches; ratio = "
    "median of per-launch ratios to the baseline launched in the same round)"
  )
  print(
    f"  {'':<22} {'wall s':>7} {'/ jax-init':>10} {'/ numpy-init':>12} {'CPU s':>7} "
    f"{'/ jax-init':>10} {'/ numpy-init':>12}   [wall s of each launch]"
  )
  base_jax = result.launches["baseline, jax init"]
  base_np = result.launches["baseline, numpy init"]

  def ratio(ls: list[Launch], base: list[Launch], field: str) -> float:
    return statistics.median(getattr(a, field) / getattr(b, field) for a, b in zip(ls, base))

  for name, ls in result.launches.items():
    runs = ", ".join(f"{x.wall_s:.2f}" for x in ls)
    print(
      f"  {name:<22} {statistics.median(x.wall_s for x in ls):>7.2f} "
      f"{ratio(ls, base_jax, 'wall_s'):>10.2f} {ratio(ls, base_np, 'wall_s'):>12.2f} "
      f"{statistics.median(x.cpu_s for x in ls):>7.2f} "
      f"{ratio(ls, base_jax, 'cpu_s'):>10.2f} {ratio(ls, base_np, 'cpu_s'):>12.2f}   [{runs}]"
    )
  for name, ls in result.launches.items():
    print(f"  {name} first-step line: {ls[-1].line[-110:]}")


# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """The command line (see the module docstring)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch_sizes", default="32,128,1024", help="Comma-separated batch sizes.")
  p.add_argument("--reps", type=int, default=9, help="Interleaved throughput repetitions.")
  p.add_argument(
    "--rep_seconds",
    type=float,
    default=0.4,
    help="Target length of one lrscale repetition (sets steps per repetition).",
  )
  p.add_argument(
    "--segment_steps",
    type=int,
    default=0,
    help="Steps per device call for lrscale and the scan baseline (0 = the config's sync_every).",
  )
  p.add_argument(
    "--launch_reps",
    type=int,
    default=3,
    help="Launches per launch variant (0 = skip the launch benchmark).",
  )
  p.add_argument("--skip_throughput", action="store_true")
  p.add_argument(
    "--models",
    default="",
    help=f"Comma-separated rows of the lrscale-vs-PyTorch table, from {sorted(TORCH_ROWS)} "
    "(empty = skip it; needs torch, the bench extra).",
  )
  p.add_argument(
    "--torch_batch_sizes", default="32,256,1024", help="Batch sizes of the PyTorch table."
  )
  p.add_argument(
    "--conv_impls",
    default="auto,xla",
    help="config.model.conv_impl values timed for conv models (the first is 'lrscale'); "
    "'auto' alone skips XLA's conv, which is slow inside lrscale's scan on CPU.",
  )
  p.add_argument("--torch_threads", type=int, default=os.cpu_count(), help="torch.set_num_threads.")
  p.add_argument(
    "--baseline_run",
    action="store_true",
    help="Only run the minimal hand-written training loop (used as a subprocess).",
  )
  p.add_argument(
    "--baseline_style",
    choices=("jax", "numpy"),
    default="jax",
    help="--baseline_run's init and batching, see baseline_run().",
  )
  return p.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  """Throughput table, then launch table; or only the baseline run (``--baseline_run``)."""
  args = parse_args(argv)
  if args.baseline_run:
    baseline_run(args.baseline_style)
    return
  print(
    f"jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}, "
    f"{jax.device_count()} device(s), {os.cpu_count()} CPU(s)"
  )
  if not args.skip_throughput:
    rows = [
      measure_throughput(int(b), args.reps, args.segment_steps or None, args.rep_seconds)
      for b in args.batch_sizes.split(",")
    ]
    print_throughput(rows)
  if args.models:
    import torch  # pylint: disable=g-import-not-at-top

    torch.set_num_threads(args.torch_threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    torch_rows = []
    for row in args.models.split(","):
      for b in args.torch_batch_sizes.split(","):
        torch_rows.append(
          measure_vs_torch(row, int(b), args.reps, args.rep_seconds, args.conv_impls.split(","))
        )
        print_vs_torch(torch_rows[-1:])
    print_vs_torch(torch_rows)
  if args.launch_reps > 0:
    print_launch(measure_launch(args.launch_reps))


if __name__ == "__main__":
  from lrscale import errors  # pylint: disable=g-import-not-at-top

  errors.handle(main)(sys.argv[1:])
