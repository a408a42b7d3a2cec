"""Hand-written PyTorch (CPU) training loops mirroring lrscale's models, for benchmarks.

Used by ``scripts/bench_train_step.py --models=...``. Same layers, widths, kernel sizes,
strides and optimizer (SGD, momentum 0.9) as lrscale's ``mlp``, ``cnn`` and CIFAR
ResNets, in PyTorch's NCHW layout with its defaults: symmetric ``k // 2`` padding (TF-style
SAME pads stride-2 even sizes one pixel lopsidedly; the cost is the same) and whole-batch
BatchNorm (lrscale's ghost BN normalises groups of 32; same arithmetic per example).
Needs the ``bench`` extra (``pip install torch==2.13.0``: the CPU wheel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

MOMENTUM = 0.9


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int]) -> nn.Module:
  """Flatten, then ReLU dense layers, then a linear readout (lrscale ``mlp``)."""
  sizes = (int(np.prod(input_shape)), *hidden)
  layers: list[nn.Module] = [nn.Flatten()]
  for a, b in zip(sizes[:-1], sizes[1:]):
    layers += [nn.Linear(a, b), nn.ReLU()]
  return nn.Sequential(*layers, nn.Linear(sizes[-1], num_classes))


def cnn(
  input_shape: Sequence[int], num_classes: int, channels: Sequence[int], dense: int, kernel: int = 5
) -> nn.Module:
  """Stride-2 conv-ReLU stack, dense ReLU layer, readout (lrscale ``cnn``)."""
  height, width, c = input_shape
  layers: list[nn.Module] = []
  for out in channels:
    layers += [nn.Conv2d(c, out, kernel, stride=2, padding=kernel // 2), nn.ReLU()]
    c, height, width = out, -(-height // 2), -(-width // 2)
  return nn.Sequential(
    *layers,
    nn.Flatten(),
    nn.Linear(c * height * width, dense),
    nn.ReLU(),
    nn.Linear(dense, num_classes),
  )


class _BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers plus the parameter-free "pad" shortcut (He et al. 2016, A)."""

  def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(out_ch)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_ch)
    self.stride, self.extra = stride, out_ch - in_ch

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    short = x[:, :, :: self.stride, :: self.stride]
    if self.extra:
      short = nn.functional.pad(short, (0, 0, 0, 0, 0, self.extra))
    return torch.relu(y + short)


def cifar_resnet(depth: int, input_shape: Sequence[int], num_classes: int) -> nn.Module:
  """ResNet-(6n+2) with 16/32/64 channels (lrscale ``resnet8`` / ``resnet20``)."""
  n = (depth - 2) // 6
  layers: list[nn.Module] = [
    nn.Conv2d(input_shape[-1], 16, 3, 1, 1, bias=False),
    nn.BatchNorm2d(16),
    nn.ReLU(),
  ]
  in_ch = 16
  for stage, width in enumerate((16, 32, 64)):
    for index in range(n):
      layers.append(_BasicBlock(in_ch, width, 2 if stage > 0 and index == 0 else 1))
      in_ch = width
  return nn.Sequential(
    *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)
  )


def build(
  name: str,
  input_shape: Sequence[int],
  num_classes: int,
  *,
  hidden: Sequence[int] = (128, 128),
  channels: Sequence[int] = (32, 64),
  dense: int = 128,
) -> nn.Module:
  """The PyTorch twin of lrscale model ``name`` (mlp, cnn, resnet8, resnet20)."""
  if name == "mlp":
    return mlp(input_shape, num_classes, hidden)
  if name == "cnn":
    return cnn(input_shape, num_classes, channels, dense)
  if name in ("resnet8", "resnet20"):
    return cifar_resnet(int(name[len("resnet") :]), input_shape, num_classes)
  raise ValueError(f"no PyTorch twin for model {name!r}")


def train_loop(
  model: nn.Module, lr: float, x: np.ndarray, y: np.ndarray, flat: np.ndarray
) -> Callable[[], None]:
  """A ``run()`` doing one SGD-momentum step per row of ``flat`` ([steps, B] indices).

  Batches are sliced up front (NCHW for images), as the jax baselines pre-slice theirs.
  """
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM)
  xs = torch.from_numpy(np.ascontiguousarray(x[flat]))  # [steps, B, ...]
  if xs.ndim == 5:  # NHWC images -> NCHW, PyTorch's native (fastest CPU) layout
    xs = xs.permute(0, 1, 4, 2, 3).contiguous()
  ys = torch.from_numpy(y[flat].astype(np.int64))
  loss_fn = nn.CrossEntropyLoss()

  def run() -> None:
    for xb, yb in zip(xs, ys):
      opt.zero_grad(set_to_none=True)
      loss_fn(model(xb), yb).backward()
      opt.step()

  return run
