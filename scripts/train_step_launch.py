"""Launch to first step, in fresh processes (bench_train_step's launch table).

Only the standard library at import: ``bench_train_step.py --baseline_run``
imports ``BASELINE_MARKER`` from here and must start like a minimal script.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Iterator, NamedTuple, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_MARKER = "BASELINE_FIRST_STEP"
LAUNCH_VARIANTS = (
  "lrscale cold cache",
  "lrscale warm cache",
  "baseline, jax init",
  "baseline, numpy init",
)
# lrscale.engine.outputs.Progress logs "step 10/450 loss=... | 12.3 steps/s | ETA 0:05".
PROGRESS_RE = re.compile(r"\] step \d+/\d+ ")


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
  baseline_cmd = [
    sys.executable,
    os.path.join(REPO, "scripts", "bench_train_step.py"),
    "--baseline_run",
  ]
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
