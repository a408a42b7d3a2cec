"""Figures and report sections of experiments/transfer_rules.py (the scores per rule)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from experiments import common
from experiments import transfer_rules as tr

# ----------------------------------------------------------------------------- figures


def plot_scores(items: Sequence[tuple[tr.Workload, Mapping[str, Any]]], path: str) -> str:
  """Top: curve mismatch vs B per rule; bottom: steps to the target vs B (perfect scaling dashed)."""
  fig, axes = common.figure(2, len(items), width=5.6 * len(items), height=7.4)
  for j, (w, res) in enumerate(items):
    larger = [b for b in w.batch_sizes if b != w.ref_batch]
    for rule, marker in zip(w.rules, "osD^vx"):
      mm = [res["cells"][f"{rule}@{b}"]["mismatch"] for b in larger]
      axes[0, j].plot(larger, mm, marker=marker, label=tr.RULES[rule])
      ref = res["cells"][("muon_reference" if rule == "muon" else "reference") + f"@{w.ref_batch}"]
      steps = [ref["steps"]] + [res["cells"][f"{rule}@{b}"]["steps"] for b in larger]
      axes[1, j].plot(w.batch_sizes, steps, marker=marker, label=tr.RULES[rule])
    s_ref = res["cells"][f"reference@{w.ref_batch}"]["steps"]
    axes[1, j].plot(
      w.batch_sizes,
      [s_ref * w.ref_batch / b for b in w.batch_sizes],
      "k--",
      lw=1,
      label="perfect scaling",
    )
    axes[0, j].set(
      yscale="log",
      ylabel="mean |ln(loss_B / loss_ref)|",
      title=f"{w.label}\ncurve mismatch to B = {w.ref_batch}",
    )
    axes[1, j].set(
      yscale="log",
      ylabel=f"steps to eval loss {res['target']:.3g}",
      title="steps to result (unreached: missing)",
    )
    for ax in axes[:, j]:
      common.batch_axis(ax, w.batch_sizes)
      ax.title.set_fontsize(9)
    axes[0, j].legend(fontsize=7)
  return common.save_figure(fig, path)


# ----------------------------------------------------------------------------- report


def workload_sections(
  w: tr.Workload, res: Mapping[str, Any], found: Mapping[str, Any]
) -> list[str]:
  """Verdicts, the score table, Muon vs AdamW per B and every cell of one workload."""
  pr = found["per_rule"]
  score = common.md_table(
    [
      "rule",
      "mean curve mismatch",
      "B reached the target",
      "mean ln(S_B k / S_ref) where reached (0 = perfect scaling)",
    ],
    [
      [
        tr.RULES[r],
        common.fmt(pr[r]["mismatch"], ".3f"),
        f"{pr[r]['reached']} of {pr[r]['of']}",
        common.fmt(pr[r]["steps_excess"], ".2f"),
      ]
      for r in w.rules
    ],
  )
  muon = common.md_table(
    ["B", "Muon steps", "best AdamW steps", "Muon final eval loss", "best AdamW final eval loss"],
    [
      [
        b,
        m["muon_steps"],
        m["best_adamw_steps"],
        common.fmt(m["muon_loss"], ".3f"),
        common.fmt(m["best_adamw_loss"], ".3f"),
      ]
      for b, m in found["muon"].items()
    ],
  )
  rows = []
  for c in sorted(res["cells"].values(), key=lambda c: (c["batch_size"], c["rule"])):
    hp = c["hparams"]
    rows.append(
      [
        c["batch_size"],
        c["rule"],
        f"{hp['lr']:.3g}",
        f"{hp['b1']:.3g}",
        f"{hp['b2']:.4g}",
        f"{hp['weight_decay']:.3g}",
        c["diverged"],
        common.fmt(c["mismatch"], ".3f"),
        c["steps"],
        common.fmt(c["final_eval_loss"], ".3f"),
      ]
    )
  top = max(w.batch_sizes)
  return [
    f"## {w.label}\n\nB_ref = {w.ref_batch}, B = {', '.join(map(str, w.batch_sizes))}, "
    f"{len(w.seeds)} seed(s); AdamW lr {w.adamw.lr:g}, b2 {w.adamw.optimizer.b2:g}, weight decay "
    f"{w.adamw.optimizer.weight_decay:g}; Muon lr {w.muon.lr:g}. Target eval loss {res['target']:.4g} "
    "(the AdamW reference's at half its budget).\n\n"
    f"- Closest per-example curve (AdamW rules): **{tr.RULES[found['best_mismatch_rule']]}** "
    f"({pr[found['best_mismatch_rule']]['mismatch']:.3f}); fewest steps across B: "
    f"**{tr.RULES[found['best_steps_rule']]}** (reached at {pr[found['best_steps_rule']]['reached']} of "
    f"{pr[found['best_steps_rule']]['of']} B, excess {common.fmt(pr[found['best_steps_rule']]['steps_excess'], '.2f')}).\n- "
    + common.verdict(
      found["muon_ahead_at_largest"],
      f"Muon kept a lower final eval loss than every AdamW rule at the largest batch (B = {top}).",
      f"Muon {found['muon'][str(top)]['muon_loss']:.3f} vs best AdamW "
      f"{found['muon'][str(top)]['best_adamw_loss']:.3f} at B = {top}; at B_ref "
      f"{found['muon'][str(w.ref_batch)]['muon_loss']:.3f} vs {found['muon'][str(w.ref_batch)]['best_adamw_loss']:.3f}.",
    ),
    "### Scores per rule (over B > B_ref)\n\n" + score,
    "### Muon vs the best AdamW rule per B\n\n" + muon,
    "### Every cell\n\n"
    + common.md_table(
      [
        "B",
        "rule",
        "lr",
        "b1",
        "b2",
        "weight decay",
        "#diverged",
        "mismatch",
        "steps to target",
        "final eval loss",
      ],
      rows,
    ),
  ]
