"""The ``linreg`` problem's parameters (``config.dataset.linreg``), without JAX.

One definition serves the device-side generator (:mod:`lrscale.data.linreg`) and
the exact SGD recursion of the analysis (:mod:`lrscale.analysis.theory`), which
must not import JAX.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

_F = "config.dataset.linreg"


@dataclasses.dataclass(frozen=True)
class LinregSpec:
  """The problem: ``dim`` features with spectrum ``i^-alpha``, teacher ``i^-teacher_power``."""

  dim: int = 100
  alpha: float = 1.0
  teacher_power: float = 0.0
  noise: float = 0.5

  def __post_init__(self):
    if int(self.dim) < 1:
      raise ValueError(f"{_F}.dim={self.dim}: must be a positive integer")
    if not (math.isfinite(self.noise) and self.noise >= 0):
      raise ValueError(f"{_F}.noise={self.noise}: must be finite and >= 0")

  @classmethod
  def from_config(cls, linreg_cfg: Any) -> LinregSpec:
    """Reads and validates ``config.dataset.linreg``.

    Raises:
      ValueError: naming the field and the fix.
    """
    dim = linreg_cfg.dim
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
      raise ValueError(f"{_F}.dim must be a positive integer (features), got {dim!r}.")
    for field in ("alpha", "teacher_power", "noise"):
      value = linreg_cfg[field]
      if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{_F}.{field} must be a finite number, got {value!r}.")
    if linreg_cfg.alpha < 0:
      raise ValueError(f"{_F}.alpha must be >= 0 (h_i = i^-alpha decays), got {linreg_cfg.alpha}.")
    if linreg_cfg.noise < 0:
      raise ValueError(f"{_F}.noise must be >= 0 (label noise std), got {linreg_cfg.noise}.")
    return cls(
      dim=dim,
      alpha=float(linreg_cfg.alpha),
      teacher_power=float(linreg_cfg.teacher_power),
      noise=float(linreg_cfg.noise),
    )

  @classmethod
  def from_mapping(cls, linreg: Mapping[str, Any]) -> LinregSpec:
    """From a ``dataset.linreg`` dict (e.g. a study.json's); absent fields take the defaults."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: type(getattr(cls(), k))(v) for k, v in linreg.items() if k in fields})

  @property
  def spectrum(self) -> np.ndarray:
    """``h_i = i^-alpha``, the diagonal of the feature covariance H (float64)."""
    return np.arange(1, self.dim + 1, dtype=np.float64) ** -self.alpha

  @property
  def teacher(self) -> np.ndarray:
    """``w*_i = i^-teacher_power`` (float64)."""
    return np.arange(1, self.dim + 1, dtype=np.float64) ** -self.teacher_power

  @property
  def initial_excess(self) -> float:
    """The excess risk at ``w = 0``: ``w*^T H w* / 2``."""
    return float(0.5 * np.sum(self.spectrum * self.teacher**2))
