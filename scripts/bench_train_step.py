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
import math
import os
import statistics
import sys
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

if TYPE_CHECKING:  # only for annotations: --baseline_run must import jax, optax, numpy only
  pass

# Run from a checkout without installing: lrscale and configs/ live at the repo root.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from step_timing import (  # noqa: E402  (scripts/ is on sys.path when run as a script)
  Contender,
  load_default_config,
  median_ratio,
  segment_runner,
  time_once,
  time_wall_cpu,
)
from train_step_baseline import (  # noqa: E402
  HIDDEN,
  baseline_run,
  init_mlp,
  make_baseline,
)
from train_step_launch import measure_launch, print_launch  # noqa: E402
from train_step_torch import TORCH_ROWS, measure_vs_torch, print_vs_torch  # noqa: E402

# --------------------------------------------------------------------------------------
# Throughput, in this process.
# --------------------------------------------------------------------------------------


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
    default="auto,patches",
    help="config.model.conv_impl values timed for conv models ('auto' is 'lrscale'); "
    "'xla' (autodiff of XLA's conv) is very slow inside lrscale's scan on CPU.",
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
