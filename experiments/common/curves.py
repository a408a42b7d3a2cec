"""Reading runs back: per-run curves against epochs, binned means, final error."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common.configs import DIGITS_NUM_TRAIN
from experiments.common.runs import Run, run_dir
from lrscale.analysis import store_reader


def read_rows(path: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(train rows, eval rows) of a run directory's metrics.jsonl, each sorted by step."""
  return store_reader.split_rows(store_reader.read_jsonl(os.path.join(path, "metrics.jsonl")))


def curve(
  rows: Sequence[Mapping[str, Any]], key: str, *, num_train: int = DIGITS_NUM_TRAIN
) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, values) of ``key`` over the rows that carry a finite value of it."""
  pts = [
    (float(r["examples_seen"]) / num_train, float(r[key]))
    for r in rows
    if store_reader.as_float(r.get(key)) is not None and math.isfinite(float(r[key]))
  ]
  if not pts:
    return np.zeros(0), np.zeros(0)
  x, y = zip(*pts)
  return np.asarray(x), np.asarray(y)


def binned_mean(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """Mean of ``y`` in each bin ``[edges[i], edges[i+1])`` of ``x`` (NaN where empty)."""
  out = np.full(len(edges) - 1, np.nan)
  idx = np.digitize(x, edges) - 1
  for i in range(len(out)):
    sel = idx == i
    if sel.any():
      out[i] = float(np.mean(y[sel]))
  return out


def mean_curve(
  paths: Sequence[str],
  key: str,
  *,
  edges: np.ndarray | None = None,
  num_train: int = DIGITS_NUM_TRAIN,
) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, mean over runs of ``key``) for runs that differ only in their seed.

  Train keys are averaged within epoch bins ``edges`` first (per-step minibatch
  losses are noisy); without ``edges`` the rows are aligned by position, which
  is exact for eval rows because every seed evaluates at the same steps.
  """
  if not paths:
    return np.zeros(0), np.zeros(0)
  train = not key.startswith("eval_")
  series = [curve(read_rows(p)[0 if train else 1], key, num_train=num_train) for p in paths]
  if edges is not None:
    ys = np.stack([binned_mean(x, y, edges) for x, y in series])
    ok = np.isfinite(ys).all(axis=0)
    return 0.5 * (edges[1:] + edges[:-1])[ok], ys[:, ok].mean(axis=0)
  n = min(len(x) for x, _ in series)
  return series[0][0][:n], np.mean([y[:n] for _, y in series], axis=0)


def curves_by_rule_and_batch(
  runs: Sequence[Run],
  workdir: str,
  *,
  edges: np.ndarray,
  num_train: int,
  eval_metrics: Sequence[str] = ("eval_loss",),
) -> tuple[dict[tuple[str, int], list[Run]], dict[tuple[str, int], dict[str, Any]]]:
  """Runs grouped by their (``rule``, ``batch_size``) tags, and each group's mean curves.

  ``train`` is the train loss binned on ``edges``; each of ``eval_metrics`` is keyed
  by its name without ``eval_`` (``eval_loss`` -> ``eval``, ``eval_accuracy`` -> ``eval_acc``).
  """
  groups: dict[tuple[str, int], list[Run]] = {}
  for r in runs:
    groups.setdefault((r.tags["rule"], r.tags["batch_size"]), []).append(r)
  curves = {}
  for key, members in groups.items():
    dirs = [run_dir(workdir, r.name) for r in members]
    curves[key] = dict(train=mean_curve(dirs, "train_loss", edges=edges, num_train=num_train))
    for metric in eval_metrics:
      name = {"eval_loss": "eval", "eval_accuracy": "eval_acc"}[metric]
      curves[key][name] = mean_curve(dirs, metric, num_train=num_train)
  return groups, curves


def mismatch(
  x_ref: np.ndarray, y_ref: np.ndarray, x: np.ndarray, y: np.ndarray, *, start: float
) -> float:
  """Mean over the reference points with ``x >= start`` of |ln(y / y_ref)|, y interpolated.

  The curve mismatch of Malladi et al. 2022's comparison (experiments/malladi2022.py,
  experiments/transfer_rules.py): both curves are functions of examples (epochs,
  examples / N); ``y`` is interpolated linearly in log space at the reference's
  points inside its own range. 0 is the same curve; 0.1 about 10% apart on average.
  """
  sel = (x_ref >= start) & (x_ref >= x.min()) & (x_ref <= x.max()) & (y_ref > 0)
  if not sel.any() or (y <= 0).any():
    return float("nan")
  interp = np.interp(x_ref[sel], x, np.log(y))
  return float(np.mean(np.abs(interp - np.log(y_ref[sel]))))


def error_pct(summary: Mapping[str, Any], *, num_classes: int = 10) -> float:
  """Final eval error in percent; a diverged run counts as chance (its training failed)."""
  if summary["status"] == "diverged":
    return 100.0 * (1.0 - 1.0 / num_classes)
  return 100.0 * (1.0 - float(summary["final"]["eval_accuracy"]))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  v = np.asarray(values, dtype=float)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
