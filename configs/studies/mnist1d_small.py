"""The MNIST-1D study reduced to fit a CPU: B = 32 .. 8192, 108 trials.

configs/studies/mnist1d.py with a smaller MLP (40-128-128-10), two seeds, six
lrs around a square-root rule (anchored at the B = 1024 optimum, lr 0.4: the
linear rule overshoots from B ~ 2048), no gradient-noise-scale estimates and a
4000-example eval subset: 5.3 minutes on 2 shared cores (265 s of CPU,
measured). The 200k training examples (the cached set of the full study) keep
B = 8192 within 6 epochs (it reaches 0.85 after 4.4). Trials stop at eval accuracy 0.85, the
hardest of the three targets the analysis reads from the stored eval rows
(``analysis.targets``: 0.75, 0.8, 0.85), so B_crit can be followed as the
target moves (McCandlish et al. 2018: a harder target has a larger B_crit).

Launch:
  python -m lrscale.study --config=configs/studies/mnist1d_small.py --workdir=runs/mnist1d_small
  python -m lrscale.analyze --workdir=runs/mnist1d_small
"""

from configs.studies import mnist1d


def get_config():
  s = mnist1d.get_config()
  s.name = "mnist1d_mlp_small"
  s.base.model.hidden = (128, 128)
  s.base.noise_scale.enabled = False
  s.base.dataset.eval_examples = 4000  # accuracy SE ~0.6% at 0.85
  s.batch_sizes = tuple(2**k for k in range(5, 14))  # 32 .. 8192
  s.seeds = (0, 1)
  s.lr.rule = "sqrt"
  s.lr.base_lr = 0.4
  s.lr.reference_batch = 1024
  s.lr.grid = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
  s.target.value = 0.85
  s.analysis.targets = (0.75, 0.8, 0.85)
  s.budget = "6 epochs"  # 146 steps at B = 8192
  s.eval_every = "0.01 epochs"  # 2000 examples: every 62 steps at B = 32, every step from 2048
  return s
