"""Writing: markdown tables and verdicts, the report, results.json."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common.curves import mean_std
from experiments.common.runs import Done, Summaries


def fmt(value: Any, spec: str = ".4g") -> str:
  """A table cell: ``-`` for None/NaN, floats by ``spec``."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  if isinstance(value, (float, np.floating)):
    return format(float(value), spec)
  return str(value)


def fmt_mean_std(values: Sequence[float], spec: str = ".2f") -> str:
  """``mean ± std`` of ``values`` (``mean`` alone for one value)."""
  m, s = mean_std(values)
  return fmt(m, spec) if len(values) < 2 else f"{fmt(m, spec)} ± {fmt(s, spec)}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub markdown table; cells go through :func:`fmt`."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def verdict(held: bool, finding: str, evidence: str) -> str:
  """One honest line: whether the paper's qualitative finding held here, and why."""
  return f"**{'Held' if held else 'Did not hold'}**: {finding} {evidence}"


def format_duration(seconds: float) -> str:
  """``42 s`` or ``6.1 min``."""
  return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def runtime_line(seconds: float, done: Done | Summaries | None = None, *, smoke: bool) -> str:
  """Where and how long: the runtime is measured, never typed in."""
  import jax  # pylint: disable=g-import-not-at-top

  dev = jax.devices()[0]
  kind = dev.device_kind if dev.platform != "cpu" else f"CPU ({os.cpu_count()} cores visible)"
  line = (
    f"Runtime: {format_duration(seconds)} of wall time on {kind}"
    f"{' (smoke variant)' if smoke else ''}"
  )
  if done is None:
    return line + "."
  if done.reused == done.total:
    return line + (
      f": analysis only, all {done.total} runs had been finished by an earlier "
      "invocation and were not rerun."
    )
  if done.reused:
    return line + (
      f", training included, but {done.reused} of its {done.total} runs had "
      "been finished by an earlier invocation and were not rerun."
    )
  return line + f", training all {done.total} runs included."


def write_report(outdir: str, title: str, sections: Sequence[str]) -> str:
  """Writes ``report.md`` (sections separated by blank lines); returns its path."""
  os.makedirs(outdir, exist_ok=True)
  path = os.path.join(outdir, "report.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections if s) + "\n")
  return path


def write_results(outdir: str, results: Mapping[str, Any]) -> str:
  """Writes ``results.json`` (strict JSON: NaN/inf become null); returns its path."""
  from lrscale.analysis.report import to_jsonable  # pylint: disable=g-import-not-at-top

  os.makedirs(outdir, exist_ok=True)
  path = os.path.join(outdir, "results.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(to_jsonable(results), f, indent=2, allow_nan=False, sort_keys=True)
    f.write("\n")
  return path
