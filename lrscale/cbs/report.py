"""cbs.png and report.md from cbs.json."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write(result: dict[str, Any], workdir: str) -> None:
  """CBS(t) with its range over seeds beside B_simple(t), and a markdown table."""
  pts = result["points"]
  x = [p["examples"] for p in pts]
  med = [p["cbs"]["median"] for p in pts]
  err = [
    [m - p["cbs"]["lo"] for m, p in zip(med, pts)],
    [p["cbs"]["hi"] - m for m, p in zip(med, pts)],
  ]
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.errorbar(
    x, med, yerr=err, marker="o", capsize=3, label="local CBS (branching), range over seeds"
  )
  exact = [(p["examples"], p["exact_cbs"]) for p in pts if "exact_cbs" in p]
  if exact:
    ax.plot(*zip(*exact), "k^:", label="exact CBS (expected losses, linreg)")
  bs = [(p["examples"], p["b_simple"]) for p in pts if p["b_simple"]]
  if bs:
    ax.plot(*zip(*bs), "s--", label="B_simple (gradient noise scale)")
  ax.axhline(result["max_batch"], color="grey", lw=0.8, ls=":", label="largest branch batch")
  ax.set_yscale("log")
  ax.set_xlabel("examples seen by the reference at the branch point")
  ax.set_ylabel("batch size (examples)")
  ax.set_title(f"Local critical batch size ({result['rule']} lr rule, tol {result['tolerance']:g})")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "cbs.png"), dpi=120)
  plt.close(fig)
  lines = [
    "# Local critical batch size over training (Merrill et al. 2025 branching)",
    "",
    f"Reference batch B = {result['reference_batch']}; branches at k x B for k in "
    f"{result['multipliers']}, {result['branch_length']} each, lr rule {result['rule']!r}; "
    f"CBS = largest k x B whose {result['metric']} after the branch is within "
    f"{result['tolerance']:g} of the k = 1 branch (every smaller k too). "
    f"A CBS equal to {result['max_batch']} is a lower bound (the largest batch tried).",
    "",
    "| step | examples | reference metric | CBS median | CBS range over seeds | exact CBS "
    "| B_simple |",
    "|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for p in pts:
    ref = p["reference_metric"]
    bsimple = p["b_simple"]
    lines.append(
      f"| {p['step']} | {p['examples']} | {'' if ref is None else f'{ref:.4f}'} | "
      f"{p['cbs']['median']:g} | [{p['cbs']['lo']:g}, {p['cbs']['hi']:g}] | "
      f"{p.get('exact_cbs', '')} | {'' if bsimple is None else f'{bsimple:.1f}'} |"
    )
  ramp = result.get("batch_ramp")
  if ramp:
    lines += [
      "",
      "Planned batch warmup from B (lrscale.cbs.plan; cautious: the low end of the range):",
      f"`config.batch_ramp.milestones = {tuple(ramp['milestones'])}`, "
      f"`config.batch_ramp.factor = {ramp['factor']}` (not validated against fixed-batch "
      "controls here).",
    ]
  lines += ["", "![CBS(t)](cbs.png)", ""]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines))
