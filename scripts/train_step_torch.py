"""lrscale vs a hand-written PyTorch loop, per model, in one process (bench_train_step --models)."""

from __future__ import annotations

import statistics
from typing import Any, NamedTuple, Sequence

import numpy as np
from step_timing import Contender, load_default_config, median_ratio, segment_runner, time_once

# name -> (lrscale model name, image shape or None for the digits, model fields).
TORCH_ROWS: dict[str, tuple[str, tuple[int, ...] | None, dict[str, Any]]] = {
  "mlp": ("mlp", None, {"hidden": (128, 128)}),
  "cnn": ("cnn", None, {"channels": (32, 64), "dense": 128}),
  "cnn28": ("cnn", (28, 28, 1), {"channels": (32, 64), "dense": 1024}),  # configs/mnist_cnn.py
  "resnet8": ("resnet8", (32, 32, 3), {}),
  "resnet20": ("resnet20", (32, 32, 3), {}),
}


def synthetic_data(shape: tuple[int, ...], num_train: int) -> Any:
  """Random images (a step costs the same on any data), 10 classes, a tiny eval split."""
  from lrscale.data import registry  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x = rng.normal(size=(num_train + 64, *shape)).astype(np.float32)
  y = rng.integers(0, 10, num_train + 64).astype(np.int32)
  return registry.InMemoryData("synthetic", x[:num_train], y[:num_train], x[-64:], y[-64:], 10)


def lrscale_model_setup(row: str, batch_size: int, steps: int, conv_impl: str) -> tuple[Any, Any]:
  """(RunSetup, RunPlan) of ``configs/default.py`` with the model and data of ``row``."""
  from lrscale import config as config_lib  # pylint: disable=g-import-not-at-top
  from lrscale.data import registry  # pylint: disable=g-import-not-at-top
  from lrscale.engine.setup import RunSetup  # pylint: disable=g-import-not-at-top

  name, shape, fields = TORCH_ROWS[row]
  cfg, _ = load_default_config(batch_size, steps, steps)
  cfg.model.name, cfg.model.conv_impl = name, conv_impl
  cfg.model.update(fields)
  if shape is None:
    data = registry.load_in_memory(cfg.dataset)
    return RunSetup(config_lib.resolve(cfg), data), config_lib.resolve(cfg)
  data = synthetic_data(shape, max(2048, 2 * batch_size))
  meta = registry.DatasetMeta("synthetic", data.num_train, data.num_eval, 10, shape, False)
  plan = config_lib.resolve(cfg, dataset_meta=meta)
  return RunSetup(plan, data), plan


class TorchRow(NamedTuple):
  model: str
  batch_size: int
  steps: int  # steps per repetition
  times: dict[str, list[float]]  # wall seconds per repetition, by contender


def measure_vs_torch(
  row: str, batch_size: int, reps: int, target_s: float, conv_impls: Sequence[str]
) -> TorchRow:
  """Interleaved repetitions of lrscale (each of ``conv_impls``) and the PyTorch loop."""
  import torch_baselines  # pylint: disable=g-import-not-at-top  # needs torch

  from lrscale.data import order  # pylint: disable=g-import-not-at-top

  name, _, fields = TORCH_ROWS[row]
  steps = 100 if row == "mlp" else 10  # one segment per run() for conv models
  impls = ("auto",) if name == "mlp" else tuple(conv_impls)
  contenders = []
  for impl in impls:
    setup, plan = lrscale_model_setup(row, batch_size, steps, impl)
    label = "lrscale" if impl == "auto" else f"lrscale {impl}"
    contenders.append(Contender(label, segment_runner(setup, plan, steps)))
  flat = order.batch_indices(
    seed=plan.config.seed,
    start_step=0,
    num_steps=steps,
    batch_size=batch_size,
    num_examples=setup.data.num_train,
  )
  torch_model = torch_baselines.build(name, setup.data.input_shape, 10, **fields)
  run_torch = torch_baselines.train_loop(
    torch_model, plan.lr, setup.data.train_x, setup.data.train_y, flat
  )
  contenders.append(Contender("torch", run_torch))
  for c in contenders:  # compile and warm up outside the timed repetitions
    c.run()
  probe = min(time_once(contenders[0].run) for _ in range(2))
  passes = max(1, round(target_s / max(probe, 1e-9)))
  times: dict[str, list[float]] = {c.name: [] for c in contenders}
  for r in range(reps):
    for c in contenders if r % 2 == 0 else contenders[::-1]:
      times[c.name].append(time_once(lambda c=c: [c.run() for _ in range(passes)]))
  return TorchRow(row, batch_size, steps * passes, times)


def print_vs_torch(rows: Sequence[TorchRow]) -> None:
  """Examples/s (medians) and throughput ratios to torch and to lrscale's default (auto).

  One column per lrscale contender (``lrscale`` = ``conv_impl=auto``, then each other
  ``--conv_impls`` value); ratios are medians of per-repetition ratios.
  """
  names = list(dict.fromkeys(n for row in rows for n in row.times if n != "torch"))
  others = [n for n in names if n != "lrscale"]
  print("\nlrscale vs PyTorch CPU: examples/s (median of interleaved repetitions), ratios")
  cols = [f"{n:>16}" for n in names] + [f"{'torch':>9}"]
  ratios = [f"{n + '/torch':>22}" for n in names] + [f"{'auto/' + n[8:]:>16}" for n in others]
  head = f"{'model':>9} {'B':>5} | {' '.join(cols)} | {' '.join(ratios)}"
  print(head)
  print("-" * len(head))
  for row in rows:

    def thr(name: str, width: int, row: TorchRow = row) -> str:
      if name not in row.times:
        return f"{'-':>{width}}"
      return f"{row.batch_size * row.steps / statistics.median(row.times[name]):>{width}.0f}"

    def ratio(a: str, b: str, width: int, row: TorchRow = row) -> str:
      if a not in row.times or b not in row.times:
        return f"{'-':>{width}}"
      return f"{median_ratio(row.times[a], row.times[b]):>{width}.2f}"

    values = [thr(n, 16) for n in names] + [thr("torch", 9)]
    rel = [ratio(n, "torch", 22) for n in names] + [ratio("lrscale", n, 16) for n in others]
    print(f"{row.model:>9} {row.batch_size:>5} | {' '.join(values)} | {' '.join(rel)}", flush=True)
