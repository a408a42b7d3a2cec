r"""Multi-host data parallelism: 1 x 8 devices vs 2 processes x 4 (vs 1 x 1), side by side.

Usage (from the repo root; about 2 minutes on 2 busy cores):
  python scripts/bench_multihost.py
  python scripts/bench_multihost.py --steps=2000 --segment_steps=100

Every topology is real: processes are spawned on 127.0.0.1 with fake CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count``) and the
documented launch flags (``--coordinator_address/--num_processes/--process_id``).
Each process of a topology:

* trains ``configs/default.py`` (in memory, digits) for ``--steps`` steps with
  ``lrscale.engine.loop.train`` and reports ``steps / wall_time_s`` (the loop's
  own clock: after set-up, including the first compile);
* measures what it sends host -> device per step: the bytes of the arrays it
  places (its addressable shards) for one segment of the in-memory run (batch
  indices) and of the streamed run (``lrscale_digits``, uint8 images + int32
  labels, ``dataset.stream=True``), divided by the segment's steps;
* measures the peak bytes one device holds of one staged streamed segment
  (``--segment_steps`` steps; the largest addressable shard of x plus y),
  which must scale as 1 / devices.

On CPU the fake devices share the same cores, so steps/s measures overhead
(collectives over gloo between processes), not a speed-up.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_ROLE = flags.DEFINE_enum("role", "main", ["main", "worker"], "main spawns the workers.")
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps of the default run per topology.")
_SEGMENT = flags.DEFINE_integer("segment_steps", 50, "Steps of the staged streamed segment.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Worker: TFDS dir holding lrscale_digits.")
_OUT = flags.DEFINE_string("out", "", "Worker: directory for its results.")

TOPOLOGIES = ((1, 1), (1, 8), (2, 4))  # (processes, devices per process)


def _shard_bytes(arrays) -> tuple[int, int]:
  """(bytes this process placed, largest bytes on one device) of ``arrays``."""
  import jax  # pylint: disable=g-import-not-at-top

  placed, per_device = 0, {}
  for a in jax.tree.leaves(arrays):
    for s in a.addressable_shards:
      placed += s.data.nbytes
      per_device[s.device] = per_device.get(s.device, 0) + s.data.nbytes
  return placed, max(per_device.values())


def worker() -> None:
  import jax  # pylint: disable=g-import-not-at-top

  from configs import default  # pylint: disable=g-import-not-at-top
  from lrscale import config as config_lib  # pylint: disable=g-import-not-at-top
  from lrscale.data import registry  # pylint: disable=g-import-not-at-top
  from lrscale.engine import loop  # pylint: disable=g-import-not-at-top
  from lrscale.engine.setup import RunSetup  # pylint: disable=g-import-not-at-top

  out = _OUT.value
  cfg = default.get_config()
  cfg.budget = f"{_STEPS.value} steps"
  cfg.tensorboard = False
  cfg.checkpoint_every = f"{_STEPS.value} steps"
  summary = loop.train(cfg, os.path.join(out, "run"))
  result = dict(steps_per_s=summary["steps"] / summary["wall_time_s"])

  seg = _SEGMENT.value
  for name, overrides in (
    ("memory", {}),
    (
      "stream",
      {
        "dataset.name": "lrscale_digits",
        "dataset.data_dir": _DATA_DIR.value,
        "dataset.stream": True,
        "dataset.standardize": False,
      },
    ),
  ):
    c = default.get_config()
    c.sync_every = f"{seg} steps"
    for k, v in overrides.items():
      config_lib.set_field(c, k, v)
    plan = config_lib.resolve(c)
    setup = RunSetup(plan, registry.load_in_memory(plan.config.dataset))
    data_x, data_y, idx, ks = setup.inputs(plan, 0, seg)
    per_step = [idx, ks] if name == "memory" else [data_x, data_y]
    placed, peak = _shard_bytes([a for a in per_step if a is not None])
    result[f"{name}_h2d_bytes_per_step"] = placed / seg
    if name == "stream":
      result["stream_segment_peak_device_bytes"] = peak
      result["stream_dtype"] = str(data_x.dtype)
      setup.feeder.close()
  if jax.process_index() == 0:
    with open(os.path.join(out, "result.json"), "w") as f:
      json.dump(result, f)


def main_role() -> None:
  from lrscale.data import digits_builder  # pylint: disable=g-import-not-at-top
  from tests import multiprocess as mp  # pylint: disable=g-import-not-at-top

  root = tempfile.mkdtemp(prefix="bench_multihost_")
  data_dir = os.path.join(root, "tfds")
  digits_builder.prepare_digits(data_dir)
  rows = []
  for procs, devices in TOPOLOGIES:
    out = os.path.join(root, f"{procs}x{devices}")
    os.makedirs(out)
    args = [
      "--role=worker",
      f"--steps={_STEPS.value}",
      f"--segment_steps={_SEGMENT.value}",
      f"--data_dir={data_dir}",
      f"--out={out}",
    ]
    mp.run(
      "scripts.bench_multihost",
      args,
      num_processes=procs,
      devices=devices,
      timeout_s=600,
      log_dir=os.path.join(root, "logs"),
    )
    with open(os.path.join(out, "result.json")) as f:
      rows.append((f"{procs} x {devices}", json.load(f)))
  print(f"default run (configs/default.py, B=64), {_STEPS.value} steps; segment {_SEGMENT.value}")
  header = f"{'processes x devices':>20} {'steps/s':>8} {'H2D B/step/proc':>16} "
  header += f"{'stream H2D B/step/proc':>23} {'stream seg peak B/device':>25}"
  print(header)
  for name, r in rows:
    print(
      f"{name:>20} {r['steps_per_s']:8.1f} {r['memory_h2d_bytes_per_step']:16.0f} "
      f"{r['stream_h2d_bytes_per_step']:23.0f} {r['stream_segment_peak_device_bytes']:25d}"
    )
  print(f"(streamed images cross as {rows[0][1]['stream_dtype']}; logs in {root}/logs)")


def main(argv) -> None:
  del argv
  if _ROLE.value == "worker":
    worker()
  else:
    main_role()


if __name__ == "__main__":
  from lrscale.engine import launch  # pylint: disable=g-import-not-at-top

  launch.run(main)
