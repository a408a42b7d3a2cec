"""Reading the JSON files runs and studies write, tolerant of a writer killed mid-line.

One reader for every JSON output (summary.json, claims, metrics.jsonl,
attempts.jsonl): a file that is missing or torn reads as "not there yet"
rather than raising, because a study's workers and its analysis read files
that another process may be writing at that instant.
"""

from __future__ import annotations

import json
from typing import Any


def read_json(path: str) -> dict[str, Any] | None:
  """A JSON object file; ``None`` if missing, truncated or not an object."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError):
    return None
  return data if isinstance(data, dict) else None


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The objects of a JSON-lines file; [] if missing.

  Blank and unparsable lines are skipped: a killed writer leaves a torn last
  line, and dropping it is the right reading of the file at this instant.
  """
  rows: list[dict[str, Any]] = []
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if isinstance(row, dict):
          rows.append(row)
  except OSError:
    return []
  return rows
