"""The LR range test: ``python -m lrscale.lr_find --config=CONFIG --workdir=DIR``.

A range test (Smith 2017, "Cyclical Learning Rates for Training Neural
Networks"; fastai's ``lr_find``) trains the config's model, data, optimizer and
batch size for ``N = config.lr_find.num_steps`` steps while the lr grows from
``min_lr`` to ``max_lr``, and reads suggestions off the loss curve
(``lrscale.lr_find.suggest``: smoothing, divergence, suggestions and the
recommendation). Here the ramp is just another schedule: the train step of
``lrscale.engine.step`` is built with ``lr_fn(t) = ramp[t]``; one device call
(``train_segment``) runs ``check_every`` steps and returns their losses, and
the host stops the sweep between calls once it has diverged.

What it adds to fastai's, torch-lr-finder's and Lightning's finders:

* pure: each sweep starts from a fresh initial state, or a *copy* of the state
  passed in; nothing of the caller (params, optimizer state, BatchNorm
  statistics, RNG) changes, so there is nothing to restore;
* several seeds per call (``seeds``; ``vary`` picks init, data order or both):
  each suggestion comes with its spread across seeds and is flagged unreliable
  past ``max_spread``. Seeds run one after another on CPU (vmap measured no
  faster there, shared/REFERENCE.md) and in one vmapped call on accelerators;
* several batch sizes (``batch_sizes``): the fitted exponent of lr(B) beside
  the linear and square-root rules' predictions. Batch sizes that are
  multiples of the smallest share one compiled program: a batch of B runs as
  B/b microbatches of b (the step's traced microbatch count), so a
  (64, 256, 1024) ladder compiles once;
* spikes and lag: a running median before the EMA, so one or two bad batches
  neither stop the sweep nor move the suggestions, and an EMA run both ways,
  so the curve is not shifted to higher lrs.

Outputs in ``DIR``: lr_find.csv (seed, batch_size, step, lr, loss,
smoothed_loss), lr_find.json (suggestions, spreads, recommendation, exponent),
lr_find.png, and printed ``--config.lr=VALUE`` lines for ``lrscale.train``.

Modules: ``config`` (``config.lr_find`` checks, the sweep's run plan),
``sweep`` (``RangeTest``: the compiled sweep; which batch sizes share it),
``suggest`` (pure numpy: ramp, smoothing, divergence, suggestions),
``results`` (result types, lr(B) fit, paste line, CSV/JSON), ``plot``
(lr_find.png), ``run`` (``lr_find``: all of it), ``__main__`` (the CLI).
"""

from lrscale.lr_find.results import BatchResult, LrFindResult, Sweep
from lrscale.lr_find.run import lr_find
from lrscale.lr_find.sweep import RangeTest, program_groups

__all__ = ["BatchResult", "LrFindResult", "RangeTest", "Sweep", "lr_find", "program_groups"]
