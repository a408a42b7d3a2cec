"""The default study searched by successive halving instead of the full grid.

Same trials as configs/studies/default.py (8 batch sizes x 6 lrs x 2 seeds) and
the halving defaults (eta 3, no hand-chosen first rung): per batch size the lr
the linear rule predicts trains to the target first (its steps S_ref set the
scale), the other lrs train to S_ref / 3, the best third goes on, and every
point stops at the step that proves it cannot beat the best found so far
(lrscale.study.halving). Measured: the grid's best lr at 7 of 8 batch sizes and
one within its 10%-of-best range at the eighth, with 2723 optimizer steps
against the grid's 7226 (37.7%); README, "Successive halving".

Launch (the same as default.py with --config.search.type=halving):
  python -m lrscale.study --config=configs/studies/default_halving.py --workdir=runs/halving
Then open runs/halving/report.md (rung table at the end) and runs/halving/halving.md.
"""

from configs.studies import default


def get_config():
  s = default.get_config()
  s.name = "digits_mlp_default_halving"
  s.search.type = "halving"
  return s
