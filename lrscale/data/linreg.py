"""``linreg``: single-pass linear regression on Gaussian features, with an exact answer.

A teacher-student problem whose SGD dynamics have a closed form, so a study's
steps-to-target can be checked against ground truth (the recursion lives in
``lrscale.analysis.theory``). Features ``x ~ N(0, H)``, ``H = diag(h)``,
``h_i = i^-alpha`` (i = 1..dim: a power-law spectrum, as in the SGD-on-linear-
regression analyses of Bach & Moulines 2013 and Zhang et al. 2019, "Which
Algorithmic Choices Matter at Which Batch Sizes?"); teacher ``w*_i =
i^-teacher_power``; label ``y = w* . x + noise * eps``, ``eps ~ N(0, 1)``. The
student is a linear model without bias started at ``w = 0`` (``model.name =
'linear'``), trained on ``(w . x - y)^2 / 2``.

Every example is a pure function of ``(seed, k)`` for its global index ``k``
(``jax.random.fold_in``), generated on the device inside the compiled step:
there are no epochs, the batch can be as large as memory allows, a resumed run
draws exactly what an uninterrupted one would, and any number of devices sees
the same global batch (each device generates the examples of its shard).

Evaluation is exact, not sampled:

    eval_excess_risk     = (w - w*)^T H (w - w*) / 2
    eval_relative_excess = eval_excess_risk / (w*^T H w* / 2)   (1 at w = 0)
    eval_loss            = eval_excess_risk + noise^2 / 2       (the expected loss)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from lrscale.data.linreg_spec import LinregSpec

NAME = "linreg"
TASK = "exact_regression"
MODEL = "linear"


def example_ids(seed: int, start: int, count: int) -> np.ndarray:
  """The ids of examples [start, start + count) of seed ``seed``: uint32 [count, 2].

  An id is ``(seed, k)``: with the seed inside the id, runs that share one
  compiled program (the seeds of a study) draw different data.

  Raises:
    ValueError: when ``k`` would pass 2^32 (the example counter is uint32).
  """
  if start + count > 2**32:
    raise ValueError(f"linreg example index {start + count} exceeds 2^32; shorten config.budget.")
  ids = np.empty((count, 2), np.uint32)
  ids[:, 0] = seed
  ids[:, 1] = np.arange(start, start + count, dtype=np.uint64)
  return ids


def make_sampler(spec: LinregSpec) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
  """``ids [..., 2] -> (x [..., dim], y [...])``, traceable; example k is pure in (seed, k)."""
  sqrt_h = jnp.asarray(np.sqrt(spec.spectrum), jnp.float32)
  w_star = jnp.asarray(spec.teacher, jnp.float32)

  def one(pair):
    key = jax.random.fold_in(jax.random.key(pair[0]), pair[1])
    z = jax.random.normal(key, (spec.dim + 1,), jnp.float32)
    x = sqrt_h * z[: spec.dim]
    return x, jnp.dot(w_star, x) + spec.noise * z[spec.dim]

  def sample(ids):
    flat = ids.reshape(-1, 2)
    x, y = jax.vmap(one)(flat)
    return x.reshape(ids.shape[:-1] + (spec.dim,)), y.reshape(ids.shape[:-1])

  return sample


def make_exact_metrics(spec: LinregSpec) -> Callable[[Callable[[jax.Array], jax.Array]], dict]:
  """``predict -> metrics`` for a model linear in x without bias (``w = predict(I)``).

  Reading ``w`` off the model's outputs on the basis vectors keeps this blind to
  how the model stores its parameters; it is exact because ``f(x) = w . x``.
  """
  h = jnp.asarray(spec.spectrum, jnp.float32)
  w_star = jnp.asarray(spec.teacher, jnp.float32)
  basis = jnp.eye(spec.dim, dtype=jnp.float32)
  e0 = jnp.float32(spec.initial_excess)
  half_noise_var = jnp.float32(0.5 * spec.noise**2)

  def metrics(predict):
    w = predict(basis).reshape(spec.dim)
    excess = 0.5 * jnp.sum(h * jnp.square(w - w_star))
    return {
      "eval_loss": excess + half_noise_var,
      "eval_excess_risk": excess,
      "eval_relative_excess": excess / e0,
    }

  return metrics


def meta(linreg_cfg: Any):
  """What config resolution needs: no finite training set (``num_train=None``)."""
  from lrscale.data.registry import DatasetMeta  # pylint: disable=g-import-not-at-top

  spec = LinregSpec.from_config(linreg_cfg)
  return DatasetMeta(
    name=NAME,
    num_train=None,
    num_eval=0,
    num_classes=1,  # one output: the prediction
    input_shape=(spec.dim,),
    streamed=False,
    task=TASK,
    model=MODEL,
  )
