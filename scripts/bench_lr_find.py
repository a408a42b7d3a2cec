"""lrscale's LR range test vs torch-lr-finder, the same work done both ways.

Work: range tests for 3 seeds x 3 batch sizes (64, 256, 1024) x 100
iterations, SGD with momentum 0.9, lr 1e-6 -> MAX_LR exponentially, on the
digits MLP 64-128-128-10 (lrscale's offline digits, standardised the way
``lrscale.data.registry`` does it). Both finders are told not to stop early, so
each runs all 900 iterations (the range ends at 1.0, where neither loss turns
non-finite; the script checks the count).

* lrscale: ``python -m lrscale.lr_find`` as a user runs it, outputs included
  (csv, json, png): once with an empty XLA compilation cache (cold, a first run)
  and once more with the cache it left (warm, every later run).
* torch-lr-finder: one ``LRFinder.range_test`` per seed and batch size over a
  shuffled ``DataLoader`` of a ``TensorDataset``, then ``reset()`` and its plot
  (one figure per batch size), as its README shows.

Each side is a fresh process timed from spawn to exit (start-up included). The
steady-state time per iteration is measured inside each: lrscale's sweep time
after compilation (lr_find.json), torch's range_test time after a warm-up test.

  /work/venv/bin/python scripts/bench_lr_find.py [--repeats=3]

Needs PyTorch (CPU) and torch-lr-finder, benchmark-only dependencies:
  pip install torch==2.13.0 && pip install torch-lr-finder --no-deps
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH_SIZES = (64, 256, 1024)
SEEDS = (0, 1, 2)
ITERS = 100
MIN_LR, MAX_LR = 1e-6, 1.0
MOMENTUM = 0.9


def torch_child(out_dir: str, threads: int) -> None:
  """Runs torch-lr-finder's range tests; writes torch.json with its iteration count and timing."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from torch.utils.data import DataLoader, TensorDataset  # pylint: disable=g-import-not-at-top
  from torch_lr_finder import LRFinder  # pylint: disable=g-import-not-at-top

  from lrscale.data import offline  # pylint: disable=g-import-not-at-top

  if threads:
    torch.set_num_threads(threads)
  (tx, ty), _, _ = offline.load("digits")
  mean, std = tx.mean(axis=(0, 1, 2), keepdims=True), tx.std(axis=(0, 1, 2), keepdims=True)
  tx = (tx - mean) / (std + 1e-6)  # as lrscale.data.registry.load_in_memory
  x = torch.from_numpy(np.ascontiguousarray(tx.reshape(len(tx), -1), np.float32))
  y = torch.from_numpy(ty.astype(np.int64))
  timings, iters = [], 0

  def one_test(seed: int, batch: int, ax) -> tuple[float, int]:
    torch.manual_seed(seed)
    model = nn.Sequential(
      nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=MIN_LR, momentum=MOMENTUM)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True)
    finder = LRFinder(model, optimizer, nn.CrossEntropyLoss(), device="cpu")
    t0 = time.perf_counter()
    finder.range_test(loader, end_lr=MAX_LR, num_iter=ITERS, diverge_th=float("inf"))
    seconds = time.perf_counter() - t0
    finder.plot(ax=ax, suggest_lr=True)
    finder.reset()
    return seconds, len(finder.history["loss"])

  for batch in BATCH_SIZES:
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for seed in SEEDS:
      seconds, n = one_test(seed, batch, ax)
      timings.append((seconds, n))
      iters += n
    fig.savefig(os.path.join(out_dir, f"torch_lr_find_b{batch}.png"))
  # Steady state: every test but the first (which pays torch's first-call costs).
  with open(os.path.join(out_dir, "torch.json"), "w") as f:
    json.dump(
      dict(
        iterations=iters,
        steady_seconds=sum(t for t, _ in timings[1:]),
        steady_iterations=sum(n for _, n in timings[1:]),
      ),
      f,
    )


def lrscale_command(workdir: str, cache: str) -> list[str]:
  return [
    sys.executable,
    "-m",
    "lrscale.lr_find",
    "--config=configs/lr_find.py",
    f"--workdir={workdir}",
    f"--config.compilation_cache={cache}",
    f"--config.lr_find.batch_sizes={BATCH_SIZES}",
    f"--config.lr_find.seeds={SEEDS}",
    f"--config.lr_find.num_steps={ITERS}",
    f"--config.lr_find.min_lr={MIN_LR}",
    f"--config.lr_find.max_lr={MAX_LR}",
    "--config.lr_find.diverge_factor=1e30",
    "--config.lr_find.check_every=0",
    "--config.parallel.num_devices=1",
  ]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
  """(wall seconds, CPU seconds user + system) of a fresh process, start-up included."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  t0 = time.perf_counter()
  subprocess.run(
    cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
  )
  wall = time.perf_counter() - t0
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def lrscale_steady(workdir: str) -> float:
  """Seconds per iteration of lrscale's sweeps, compilation excluded (from lr_find.json)."""
  with open(os.path.join(workdir, "lr_find.json")) as f:
    info = json.load(f)
  seconds = sum(b["seconds"] for b in info["per_batch"])
  iters = sum(s["steps_run"] for b in info["per_batch"] for s in b["seeds"])
  assert iters == len(SEEDS) * len(BATCH_SIZES) * ITERS, iters
  return seconds / iters


def torch_steady(out_dir: str) -> float:
  with open(os.path.join(out_dir, "torch.json")) as f:
    info = json.load(f)
  assert info["iterations"] == len(SEEDS) * len(BATCH_SIZES) * ITERS, info
  return info["steady_seconds"] / info["steady_iterations"]


def compare(repeats: int) -> None:
  env = dict(
    os.environ,
    PYTHONPATH=REPO,
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
    JAX_PLATFORMS="cpu",
  )
  names = ("torch-lr-finder", "torch-lr-finder 1 thread", "lrscale cold", "lrscale warm")
  wall, cpu, steady = ({n: [] for n in names} for _ in range(3))
  load = [os.getloadavg()[0]]
  for _ in range(repeats):
    with tempfile.TemporaryDirectory() as tmp:
      cache = os.path.join(tmp, "xla_cache")  # empty: the first lrscale run compiles
      runs = [
        (names[0], [sys.executable, __file__, "--child=torch", f"--out={tmp}"], torch_steady, tmp),
        (
          names[1],
          [sys.executable, __file__, "--child=torch", "--threads=1", f"--out={tmp}"],
          torch_steady,
          tmp,
        ),
      ] + [
        (
          n,
          lrscale_command(os.path.join(tmp, n[-4:]), cache),
          lrscale_steady,
          os.path.join(tmp, n[-4:]),
        )
        for n in names[2:]
      ]
      for name, cmd, read_steady, out in runs:
        w, c = timed(cmd, env)
        wall[name].append(w)
        cpu[name].append(c)
        steady[name].append(read_steady(out))
    load.append(os.getloadavg()[0])
  med = statistics.median
  print(
    f"{len(SEEDS)} seeds x {BATCH_SIZES} x {ITERS} iterations, MLP 64-128-128-10 on "
    f"digits, SGD momentum {MOMENTUM}, lr {MIN_LR:g}..{MAX_LR:g}; {os.cpu_count()} CPU "
    f"cores, 1-min load average {min(load):.1f}..{max(load):.1f}; median of {repeats}"
  )
  print(f"{'':26s}{'wall s':>9s}{'CPU s':>9s}{'steady ms/iter':>16s}")
  for name in names:
    print(f"{name:26s}{med(wall[name]):9.2f}{med(cpu[name]):9.2f}{1e3 * med(steady[name]):16.3f}")
  for torch_name in names[:2]:
    for name in names[2:]:
      print(
        f"end-to-end speed-up of {name} over {torch_name}: wall "
        f"{med(wall[torch_name]) / med(wall[name]):.2f}x, CPU "
        f"{med(cpu[torch_name]) / med(cpu[name]):.2f}x"
      )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--child", choices=("torch",), default=None)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  if args.child == "torch":
    torch_child(args.out, args.threads)
  else:
    compare(args.repeats)


if __name__ == "__main__":
  from lrscale import errors  # pylint: disable=g-import-not-at-top

  errors.handle(main)()
