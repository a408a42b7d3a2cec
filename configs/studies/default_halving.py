"""The default study searched by successive halving instead of the full grid.

Same trials as configs/studies/default.py (8 batch sizes x 6 lrs x 2 seeds);
per batch size all lrs train to the first rung (0.16 epochs, at least 20
steps), the best third goes on to 3x that, and so on (lrscale.study.halving).
Measured here: the grid's best lr (or one within its 10%-of-best range) at
every batch size with 33% of the grid's optimizer steps (docs/training_tools.md).

Launch:
  python -m lrscale.study --config=configs/studies/default_halving.py --workdir=runs/halving
Then open runs/halving/report.md (rung table at the end) and runs/halving/halving.md.
"""

from configs.studies import default


def get_config():
  s = default.get_config()
  s.name = "digits_mlp_default_halving"
  s.search.type = "halving"
  s.search.eta = 3
  s.search.min_budget = "0.16 epochs"
  s.search.min_steps = 20
  return s
