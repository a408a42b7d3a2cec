"""SIGTERM and Ctrl-C during training: finish the segment, checkpoint, exit cleanly.

A signal handler only records the request; the training loop checks it at the
next segment boundary (the device is idle there and the state is consistent),
saves a checkpoint, and raises ``lrscale.errors.Interrupted``, which the entry
point turns into one line saying how to resume and exit status 128 + signal
(143 for SIGTERM, 130 for Ctrl-C). A second signal aborts at once
(``KeyboardInterrupt``), for a loop that is stuck compiling. JAX installs no
SIGTERM handler of its own unless ``jax.distributed`` preemption sync is in use
(multi-host), so in one process this handler is the only one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from typing import Iterator

from absl import logging

from lrscale import errors

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclasses.dataclass
class StopRequest:
  """Set by the handler: which signal asked the run to stop (None = none)."""

  signum: int | None = None

  def interrupted(self, *, step: int, workdir: str) -> errors.Interrupted:
    name = signal.Signals(self.signum).name
    return errors.Interrupted(
      self.signum,
      f"stopped by {name} at step {step}; checkpoint saved in {workdir}. Rerun the same "
      "command to resume.",
    )


@contextlib.contextmanager
def catch_stop_signals() -> Iterator[StopRequest]:
  """Routes SIGTERM/SIGINT to a ``StopRequest`` while the block runs (main thread only)."""
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return
  previous = {}

  def handler(signum, frame):
    del frame
    if request.signum is not None:  # asked twice: stop now, without a checkpoint
      raise KeyboardInterrupt
    request.signum = signum
    logging.warning(
      "%s: checkpointing at the next step boundary, then exiting (send it again to abort "
      "without a checkpoint).",
      signal.Signals(signum).name,
    )

  for signum in SIGNALS:
    previous[signum] = signal.signal(signum, handler)
  try:
    yield request
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)
