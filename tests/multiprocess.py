"""Spawning an lrscale main as N JAX processes on 127.0.0.1, for the multi-host tests.

Each process is ``timeout -k 5 T python -m MODULE ARGS --coordinator_address=127.0.0.1:PORT
--num_processes=N --process_id=I`` (no identity flags for N = 1) with ``D`` fake CPU
devices, exactly the documented one-command-per-host launch. ``timeout -k`` is the
hard limit: JAX catches SIGTERM, so plain ``timeout`` would not stop a process
stuck in a collective.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env_for(devices: int) -> dict[str, str]:
  env = dict(os.environ)
  env.update(
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
  )
  return env


@dataclasses.dataclass
class Proc:
  """One spawned process: the ``timeout`` wrapper and its log file."""

  popen: subprocess.Popen
  log: str

  def python_pid(self) -> int:
    """The python under ``timeout`` (its only child)."""
    path = f"/proc/{self.popen.pid}/task/{self.popen.pid}/children"
    for _ in range(100):
      with open(path) as f:
        kids = f.read().split()
      if kids:
        return int(kids[0])
      time.sleep(0.05)
    raise RuntimeError(f"no child under pid {self.popen.pid}")

  def kill9(self) -> None:
    os.kill(self.python_pid(), signal.SIGKILL)

  def output(self) -> str:
    with open(self.log, errors="replace") as f:
      return f.read()


def spawn(
  module: str,
  args: Sequence[str],
  *,
  num_processes: int,
  devices: int,
  timeout_s: float,
  log_dir: str,
  tag: str = "",
) -> list[Proc]:
  """Starts ``num_processes`` processes of ``python -m module args`` (not waited for)."""
  port = free_port()
  os.makedirs(log_dir, exist_ok=True)
  procs = []
  for i in range(num_processes):
    ident = (
      [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}"]
      + [f"--process_id={i}"]
      if num_processes > 1
      else []
    )
    cmd = ["timeout", "-k", "5", str(int(timeout_s)), sys.executable, "-m", module]
    log = os.path.join(log_dir, f"{tag or module}-{num_processes}x{devices}-p{i}.log")
    with open(log, "w") as f:
      popen = subprocess.Popen(
        cmd + list(args) + ident, cwd=REPO, env=env_for(devices), stdout=f, stderr=f
      )
    procs.append(Proc(popen, log))
  return procs


def wait_all(procs: Sequence[Proc], timeout_s: float) -> list[int]:
  """Return codes, waiting at most ``timeout_s`` in all (then SIGKILL what is left)."""
  deadline = time.monotonic() + timeout_s
  codes = []
  for p in procs:
    try:
      codes.append(p.popen.wait(timeout=max(0.1, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
      p.popen.kill()
      codes.append(p.popen.wait())
  return codes


def run(
  module: str,
  args: Sequence[str],
  *,
  num_processes: int,
  devices: int,
  timeout_s: float,
  log_dir: str,
  tag: str = "",
) -> list[Proc]:
  """Runs the processes to the end; asserts every one exited 0 (showing the logs if not)."""
  procs = spawn(
    module,
    args,
    num_processes=num_processes,
    devices=devices,
    timeout_s=timeout_s,
    log_dir=log_dir,
    tag=tag,
  )
  codes = wait_all(procs, timeout_s + 10)
  if any(codes):
    logs = "\n".join(
      f"--- process {i} (rc {c}):\n{p.output()[-3000:]}"
      for i, (p, c) in enumerate(zip(procs, codes))
    )
    raise AssertionError(f"{module} {num_processes}x{devices} failed:\n{logs}")
  return procs
