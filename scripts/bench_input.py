r"""Input-pipeline throughput: lrscale's grain pipeline vs a bare single-process PIL loop.

Usage (from the repo root, no install needed)::

  python -m lrscale.data.synthetic_imagenet --data_dir=/tmp/synth224 \
      --num_classes=10 --train_per_class=60 --eval_per_class=2 --min_side=256 --max_side=400
  python scripts/bench_input.py --data_dir=/tmp/synth224 --out=/tmp/bench_input.json

All contenders run in this one process on the same JPEGs (the ``train`` split
of ``lrscale_synthetic_imagenet`` under ``--data_dir``) at 224 px with
``inception_crop_flip``:

* ``pil``: a bare loop in this process: read the record, ``PIL.Image.open``,
  draw a random-resized-crop box, crop + resize to 224 in one bilinear PIL
  call, flip half the images, write into a preallocated uint8 batch array;
* ``lrscale_1worker`` / ``lrscale_2workers``:
  ``lrscale.data.pipeline.train_batches_from_source`` with ``workers`` = 1, 2
  (the same work plus per-example seeding, batching and the transfer from
  the worker processes).

Then ResNet-50's train step at 224 px (``configs/imagenet_resnet50_goyal.py``:
Nesterov, BN groups of ``--step_batch``, one device) on random uint8 images, in
float32 and in bfloat16 compute (float32 parameters and optimizer state,
``lrscale.optim.precision``): after one compiling step, ``--step_reps`` steps
are timed one by one, each waited for; the JSON holds the median images per
second (how many images per second the pipeline must feed on this machine).
``--skip_input`` runs only this part (no ``--data_dir`` needed); ``--skip_step``
only the input part.

Each repetition starts each pipeline afresh and takes two warm-up batches per
worker (worker start-up is excluded: a run pays it once), then times
``--batches`` batches and closes it, so no pipeline computes in the
background while another contender is timed. Repetitions alternate
the contenders (forward, then reverse order) because the machine is shared;
the JSON holds the medians of images per second and of the per-repetition
ratios to ``pil``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from lrscale.data import augment, pipeline, tfds_source
from lrscale.data.synthetic_imagenet import NAME

SIZE = 224
WARMUP_BATCHES = 2  # per worker
STEP_DTYPES = ("float32", "bfloat16")


def bare_pil(source, batch_size: int) -> Callable[[int], None]:
  """Returns ``run(num_batches)``: the hand-written single-process loop."""
  rng = np.random.default_rng(0)
  n = len(source)
  out = np.empty((batch_size, SIZE, SIZE, 3), np.uint8)
  pos = [0]

  def run(num_batches: int) -> float:
    start = time.perf_counter()
    for _ in range(num_batches):
      for j in range(batch_size):
        data = source[pos[0] % n]["image"]
        pos[0] += 1
        pil = Image.open(io.BytesIO(data)).convert("RGB")
        w, h = pil.size
        for _ in range(10):
          area = h * w * rng.uniform(0.08, 1.0)
          aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
          cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
          if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            break
        else:
          ch = cw = round(0.875 * min(h, w))
          top, left = (h - ch) // 2, (w - cw) // 2
        crop = pil.resize((SIZE, SIZE), Image.BILINEAR, box=(left, top, left + cw, top + ch))
        array = np.asarray(crop)
        out[j] = array[:, ::-1] if rng.random() < 0.5 else array
    return time.perf_counter() - start

  return run


def lrscale_pipeline(source, batch_size: int, workers: int) -> Callable[[int], None]:
  """Returns ``run(num_batches)``: starts the pipeline, takes the warm-up, times, closes.

  A pipeline is only alive while it is measured: its workers would otherwise
  compute (and buffer batches) while the other contenders are timed.
  """
  transform = augment.train_transform("inception_crop_flip", SIZE)

  def run(num_batches: int) -> float:
    it = pipeline.train_batches_from_source(
      source, transform, batch_size=batch_size, seed=0, workers=workers
    )
    # Warm-up: worker start-up, and one batch per worker so that the
    # round-robin start (all workers finish their first batch together) is
    # behind us; the consumer is instant, so no buffer builds up after it.
    for _ in range(WARMUP_BATCHES * max(1, workers)):
      next(it)
    start = time.perf_counter()
    for _ in range(num_batches):
      images, _ = next(it)
      assert images.shape == (batch_size, SIZE, SIZE, 3)
    elapsed = time.perf_counter() - start
    it.close()
    return elapsed

  return run


def resnet50_step_rates(batch_size: int, reps: int) -> dict[str, float]:
  """Median images/s of ResNet-50's jitted train step at 224 px, per compute dtype."""
  import os  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from lrscale import config as config_lib  # pylint: disable=g-import-not-at-top
  from lrscale.data import registry  # pylint: disable=g-import-not-at-top
  from lrscale.engine.setup import RunSetup  # pylint: disable=g-import-not-at-top

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  meta = registry.DatasetMeta(
    name="imagenet2012",
    num_train=1_281_167,
    num_eval=50_000,
    num_classes=1000,
    input_shape=(SIZE, SIZE, 3),
    streamed=True,
  )
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (1, batch_size, SIZE, SIZE, 3), dtype=np.uint8)
  x = jnp.asarray(pixels, jnp.float32) / 255.0
  y = jnp.asarray(rng.integers(0, 1000, (1, batch_size)), jnp.int32)
  empty = np.zeros((0, SIZE, SIZE, 3), np.float32)
  data = registry.InMemoryData(
    "imagenet2012", empty, empty[:, 0, 0, 0], empty, empty[:, 0, 0, 0], 1000
  )
  rates = {}
  for dtype in STEP_DTYPES:
    cfg = config_lib.load_config_file(os.path.join(repo, "configs", "imagenet_resnet50_goyal.py"))
    cfg.parallel.num_devices = 1
    cfg.batch_size = batch_size
    cfg.model.bn_group_size = batch_size
    cfg.model.dtype = dtype
    cfg.compilation_cache = ""
    plan = config_lib.resolve(cfg, dataset_meta=meta)
    setup = RunSetup(plan, data)
    state = setup.initial_state(plan)
    state, _ = setup.fns.train_step(state, x, y)  # compiles
    jax.block_until_ready(state)
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      state, metrics = setup.fns.train_step(state, x, y)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t0)
    setup.close()
    rates[dtype] = batch_size / statistics.median(times)
    print(f"resnet50 train step, 224 px, batch {batch_size}, {dtype}: {rates[dtype]:.2f} img/s")
  return rates


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="", help="synthetic set (not with --skip_input)")
  parser.add_argument("--out", required=True, help="JSON file to write")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--batches", type=int, default=16, help="timed batches per repetition")
  parser.add_argument("--reps", type=int, default=4)
  parser.add_argument("--step_batch", type=int, default=8, help="ResNet-50 train-step batch")
  parser.add_argument("--step_reps", type=int, default=3, help="timed ResNet-50 steps per dtype")
  parser.add_argument("--skip_input", action="store_true", help="only the ResNet-50 train step")
  parser.add_argument("--skip_step", action="store_true", help="only the input pipeline")
  args = parser.parse_args()
  result: dict = {}
  if not args.skip_input:
    if not args.data_dir:
      raise SystemExit("--data_dir: the synthetic set to read (or pass --skip_input)")
    result.update(input_rates(args))
  if not args.skip_step:
    steps = resnet50_step_rates(args.step_batch, args.step_reps)
    result.update({f"resnet50_{k}_img_per_s": v for k, v in steps.items()})
    result["resnet50_setup"] = dict(
      batch_size=args.step_batch, steps=args.step_reps, image_size=SIZE
    )
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  for key, value in result.items():
    if not isinstance(value, dict):
      print(f"{key}: {value:.3f}")


def input_rates(args: argparse.Namespace) -> dict:
  """The input contenders' medians (see the module docstring)."""

  source, _ = tfds_source.open_split_encoded(NAME, "train", data_dir=args.data_dir)
  first = augment.to_pil(source[0]["image"])
  if min(first.size) < SIZE:
    raise SystemExit(f"{args.data_dir}: images must be >= {SIZE} px; rebuild with --min_side=256")
  contenders = {
    "pil": bare_pil(source, args.batch_size),
    "lrscale_1worker": lrscale_pipeline(source, args.batch_size, 1),
    "lrscale_2workers": lrscale_pipeline(source, args.batch_size, 2),
  }
  contenders["pil"](WARMUP_BATCHES)  # warm-up, as the pipelines get

  rates: dict[str, list[float]] = {k: [] for k in contenders}
  for rep in range(args.reps):
    order = list(contenders) if rep % 2 == 0 else list(reversed(contenders))
    for key in order:
      elapsed = contenders[key](args.batches)
      rates[key].append(args.batches * args.batch_size / elapsed)
    print(f"rep {rep}: " + ", ".join(f"{k} {rates[k][-1]:.1f} img/s" for k in contenders))

  result = {f"{k}_img_per_s": statistics.median(v) for k, v in rates.items()}
  for key, name in (("lrscale_1worker", "ratio_1worker"), ("lrscale_2workers", "ratio_2workers")):
    result[name] = statistics.median(a / b for a, b in zip(rates[key], rates["pil"]))
  result["per_rep_img_per_s"] = rates
  result["setup"] = dict(
    batch_size=args.batch_size, batches=args.batches, reps=args.reps, image_size=SIZE
  )
  return result


if __name__ == "__main__":
  main()
