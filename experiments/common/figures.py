"""Figures small enough to commit (``save_figure``) and the batch-size axis they share."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_FIGURE_BYTES = 200_000


def figure(
  nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 4.4
) -> tuple[Figure, np.ndarray]:
  """A figure on the Agg canvas (no pyplot state) and its axes as a 2-D array."""
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig, np.atleast_2d(np.asarray(fig.subplots(nrows, ncols), dtype=object)).reshape(
    nrows, ncols
  )


def save_figure(fig: Figure, path: str, *, max_bytes: int = MAX_FIGURE_BYTES) -> str:
  """Saves a PNG, lowering the resolution until it is under ``max_bytes``; returns its name.

  Raises:
    ValueError: not even 20 dpi fits (simplify the figure).
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  dpi = 100.0
  while dpi >= 20:
    fig.savefig(path, dpi=dpi)
    if os.path.getsize(path) <= max_bytes:
      return os.path.basename(path)
    dpi *= 0.85
  raise ValueError(f"{path}: {os.path.getsize(path)} bytes even at 20 dpi, over {max_bytes}.")


def batch_axis(ax: Axes, batch_sizes: Sequence[int]) -> None:
  """Log-2 batch-size x axis with the batch sizes as tick labels."""
  ax.set_xscale("log", base=2)
  ax.set_xticks(list(batch_sizes), [str(b) for b in batch_sizes])
  ax.set_xlabel("batch size B")


def batch_colors(batch_sizes: Sequence[int]) -> dict[int, Any]:
  """One colour per batch size, dark (small B) to light (large B)."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top

  cmap = colormaps["viridis"]
  n = max(1, len(batch_sizes) - 1)
  return {b: cmap(0.9 * i / n) for i, b in enumerate(sorted(batch_sizes))}
