"""Batch warmup from a measured CBS(t) vs fixed small- and large-batch controls (Merrill 2025).

The claim checked: growing the batch as the local critical batch size grows
reaches a loss at least as low as training at the small batch throughout, in
fewer steps, and lower than training at the final large batch from the start
(Merrill et al. 2025: 1024 -> 2048 -> 4096 documents, 43% fewer steps than the
small batch). The ramp comes from ``lrscale.cbs.plan`` (cbs.json's
``batch_ramp``); the three arms share the reference's config, lr and number
of examples (the budget), and differ only in batch: B fixed, B * factor^n
fixed, and the ramp. The lr is not changed when the batch grows (as in Smith
et al. 2017's ramp).

  python -m lrscale.cbs --config=configs/cbs/digits_mlp.py --workdir=runs/cbs_digits
  python -m experiments.batch_warmup --cbs_config=configs/cbs/digits_mlp.py \
      --cbs_dir=runs/cbs_digits --workdir=runs/batch_warmup
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from lrscale import errors, jsonio
from lrscale.cbs import branch
from lrscale.engine import launch
from lrscale.engine import loop as loop_lib


def arms(cfg: ml_collections.ConfigDict, ramp: dict[str, Any]) -> dict[str, Any]:
  """Run configs of the three arms: small batch, large batch, and the planned ramp."""
  ref = ml_collections.ConfigDict(cfg.reference.to_dict())
  ref.noise_scale.enabled = False  # the estimator needs a fixed batch
  ref.checkpoint_every = ref.budget
  large = ml_collections.ConfigDict(ref.to_dict())
  large.batch_size = ref.batch_size * ramp["factor"] ** len(ramp["milestones"])
  ramped = ml_collections.ConfigDict(ref.to_dict())
  ramped.batch_ramp.milestones = tuple(ramp["milestones"])
  ramped.batch_ramp.factor = ramp["factor"]
  return {
    f"small (B={ref.batch_size})": ref,
    f"large (B={large.batch_size})": large,
    "ramp": ramped,
  }


def run(cfg: ml_collections.ConfigDict, ramp: dict[str, Any], workdir: str, seeds) -> str:
  """Trains every arm for every seed; returns the markdown table (also table.md)."""
  if not ramp["milestones"]:
    raise ValueError("the planned batch ramp has no milestone: CBS(t) never reached 2 B.")
  rows = []
  for name, arm in arms(cfg, ramp).items():
    finals, steps = [], []
    for seed in seeds:
      arm.seed = seed
      s = loop_lib.train(arm, os.path.join(workdir, f"{name.split()[0]}_s{seed}"))
      finals.append(s["final"][cfg.metric])
      steps.append(s["steps"])
    rows.append((name, np.mean(finals), np.min(finals), np.max(finals), int(np.mean(steps))))
  lines = [
    f"Ramp milestones {tuple(ramp['milestones'])}, factor {ramp['factor']}; "
    f"{cfg.reference.budget} per arm; seeds {tuple(seeds)}.",
    "",
    f"| arm | final {cfg.metric} (mean) | range over seeds | steps |",
    "|---|---:|---:|---:|",
  ]
  lines += [f"| {n} | {m:.4f} | [{lo:.4f}, {hi:.4f}] | {st} |" for n, m, lo, hi, st in rows]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(text)
  return text


def _define_flags() -> None:
  # Defined only when run as a program: tests import ``arms`` from here beside
  # other mains, and absl refuses a flag name defined twice in one process.
  config_flags.DEFINE_config_file("cbs_config", None, "The CBS config the ramp was planned with.")
  flags.DEFINE_string("cbs_dir", None, "The CBS workdir (holds cbs.json).")
  flags.DEFINE_string("workdir", None, "Output directory.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds per arm.")


def main(argv):
  del argv
  f = flags.FLAGS
  branch.validate(f.cbs_config)
  result = jsonio.read_json(os.path.join(f.cbs_dir, "cbs.json"))
  if result is None or "batch_ramp" not in result:
    raise errors.MissingInput(
      f"--cbs_dir={f.cbs_dir} holds no finished CBS measurement (cbs.json with a batch_ramp): "
      "run python -m lrscale.cbs there first."
    )
  ramp = result["batch_ramp"]
  os.makedirs(f.workdir, exist_ok=True)
  print(run(f.cbs_config, ramp, f.workdir, [int(s) for s in f.seeds]))


if __name__ == "__main__":
  _define_flags()
  launch.run(main)
