"""Run outputs: metrics.jsonl, TensorBoard events, summary.json, console progress.

``metrics.jsonl`` is the record the analysis reads: one JSON object per logged
step. On resume it is cut back to the restored checkpoint's step, so a killed
and resumed run leaves the same file as an uninterrupted one. Files a reader
may open while the run is writing (summary.json, config.json) are written to a
temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from absl import logging

from lrscale.jsonio import read_jsonl


class _DropLibraryInfo:
  """Drops INFO records from libraries that log on every checkpoint (orbax)."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  """Keeps the console to lrscale's own progress; library warnings still show."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  absl_logger = std_logging.getLogger("absl")
  if not any(isinstance(f, _DropLibraryInfo) for f in absl_logger.filters):
    absl_logger.addFilter(_DropLibraryInfo())


def atomic_write_text(path: str, text: str) -> None:
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def atomic_write_json(path: str, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
  if hasattr(obj, "item"):
    return obj.item()
  if hasattr(obj, "tolist"):
    return obj.tolist()
  return str(obj)


class MetricsWriter:
  """Appends metric rows to metrics.jsonl and (optionally) TensorBoard.

  ``active=False`` (every process but 0 of a multi-process run) writes nothing:
  one writer per run directory.
  """

  def __init__(self, workdir: str, *, resume_step: int, tensorboard: bool, active: bool = True):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = self._tb = None
    if not active:
      return
    kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
    atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
    self._file = open(self.path, "a")
    self._tb = None
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        logging.warning("tensorboardX is not installed: no TensorBoard events are written.")

  def write(self, row: dict[str, Any]) -> None:
    if self._file is None:
      return
    clean = {k: (float(v) if not isinstance(v, (int, str)) else v) for k, v in row.items()}
    self._file.write(json.dumps(clean) + "\n")
    self._file.flush()
    if self._tb is not None:
      for key, value in clean.items():
        if key != "step" and isinstance(value, float) and math.isfinite(value):
          self._tb.add_scalar(key, value, clean["step"])

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()


class Progress:
  """Console progress: step, loss, steps/s and ETA, at most every ``every_s`` seconds."""

  def __init__(self, *, total_steps: int, start_step: int, every_s: float = 2.0, prefix: str = ""):
    self.total, self.start, self.every_s, self.prefix = total_steps, start_step, every_s, prefix
    self._t0 = time.perf_counter()
    self._last = -math.inf

  def update(self, step: int, *, force: bool = False, **values: float) -> None:
    now = time.perf_counter()
    if not force and now - self._last < self.every_s:
      return
    self._last = now
    done = step - self.start
    rate = done / max(now - self._t0, 1e-9)
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    parts = " ".join(f"{k}={v:.4g}" for k, v in values.items())
    logging.info(
      "%sstep %d/%d %s | %.1f steps/s | ETA %s",
      self.prefix,
      step,
      self.total,
      parts,
      rate,
      format_seconds(eta),
    )


def format_seconds(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
