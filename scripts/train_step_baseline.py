"""The hand-written baseline of scripts/bench_train_step.py: a minimal jax + optax MLP loop.

Only jax, optax, numpy and the standard library: ``bench_train_step.py
--baseline_run`` is launched as its own process to time a minimal script's
start-up, so nothing here may import lrscale.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from train_step_launch import BASELINE_MARKER

HIDDEN = (128, 128)
MOMENTUM = 0.9

Params = dict[str, dict[str, jax.Array]]


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> Params:
  """LeCun-normal kernels and zero biases, like ``nnx.Linear``."""
  params = {}
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    w = jax.random.normal(k, (fan_in, fan_out), jnp.float32) / np.sqrt(fan_in)
    params[f"layer{i}"] = {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}
  return params


def mlp_logits(params: Params, x: jax.Array) -> jax.Array:
  """ReLU MLP on flattened inputs."""
  h = x.reshape((x.shape[0], -1))
  layers = [params[f"layer{i}"] for i in range(len(params))]
  for layer in layers[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
  return h @ layers[-1]["w"] + layers[-1]["b"]


class Baseline(NamedTuple):
  """The hand-written loop: one jitted step, and the same step under ``lax.scan``."""

  tx: optax.GradientTransformation
  step: Callable[..., tuple[Params, Any, jax.Array]]
  scan: Callable[..., tuple[Params, Any, jax.Array]]


def make_baseline(lr: float) -> Baseline:
  """What a competent user writes: ``optax.sgd`` with momentum and a ``@jax.jit`` step."""
  tx = optax.sgd(lr, momentum=MOMENTUM)

  def loss_fn(params, x, y):
    logits = mlp_logits(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def scan(params, opt_state, xs, ys):
    def body(carry, xy):
      p, s, loss = step(*carry, *xy)
      return (p, s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
    return params, opt_state, losses

  # Donating params and optimizer state, as lrscale's train_segment donates its state.
  return Baseline(
    tx=tx, step=jax.jit(step, donate_argnums=(0, 1)), scan=jax.jit(scan, donate_argnums=(0, 1))
  )


def load_digits_fast() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits from the CSV it ships: float32 [1797, 64] in [0, 1], labels.

  ``sklearn.datasets.load_digits`` would add scikit-learn's import (seconds) to the
  baseline's start-up; reading the file directly is what lrscale does, so both
  sides pay the same small cost.
  """
  spec = importlib.util.find_spec("sklearn")
  path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
  with gzip.open(path, "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.float32)
  return table[:, :-1] / 16.0, table[:, -1].astype(np.int32)


def init_mlp_numpy(seed: int, sizes: Sequence[int]) -> Params:
  """``init_mlp`` with numpy's generator: no JAX program to compile for the init."""
  rng = np.random.default_rng(seed)
  params = {}
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    w = rng.normal(size=(fan_in, fan_out)).astype(np.float32) / np.float32(np.sqrt(fan_in))
    params[f"layer{i}"] = {"w": jnp.asarray(w), "b": jnp.asarray(np.zeros(fan_out, np.float32))}
  return params


def baseline_run(style: str, batch_size: int = 64, epochs: int = 20, lr: float = 0.05) -> None:
  """A whole minimal training run; prints ``BASELINE_MARKER`` once step 1 is done.

  Args:
    style: ``jax``: ``jax.random`` init and batches gathered on the device (the
      usual JAX tutorial script; every eager op compiles on first use, and
      threefry's generator compiles slowly on CPU); ``numpy``: numpy init and
      batches sliced on the host (only optax's tiny init ops compile before the step).
    batch_size, epochs, lr: the run, as configs/default.py (without its cosine).
  """
  x, y = load_digits_fast()
  perm = np.random.default_rng(0).permutation(len(x))
  train, test = perm[:-360], perm[-360:]
  mean, std = x[train].mean(), x[train].std() + 1e-6
  xtr, ytr = (x[train] - mean) / std, y[train]
  xte, yte = (x[test] - mean) / std, y[test]
  sizes = (64, *HIDDEN, 10)
  if style == "jax":
    xtr, ytr = jnp.asarray(xtr), jnp.asarray(ytr)
    params = init_mlp(jax.random.key(0), sizes)
  else:
    params = init_mlp_numpy(0, sizes)
  base = make_baseline(lr)
  opt_state = base.tx.init(params)
  steps_per_epoch = len(train) // batch_size
  rng = np.random.default_rng(0)
  for epoch in range(epochs):
    order = rng.permutation(len(train))
    for i in range(steps_per_epoch):
      idx = order[i * batch_size : (i + 1) * batch_size]
      params, opt_state, loss = base.step(params, opt_state, xtr[idx], ytr[idx])
      if epoch == 0 and i == 0:
        print(f"{BASELINE_MARKER} loss={float(loss):.4f}", flush=True)
  accuracy = jnp.mean(jnp.argmax(mlp_logits(params, jnp.asarray(xte)), -1) == yte)
  print(
    f"baseline ({style}): {epochs} epochs, final eval accuracy {float(accuracy):.4f}", flush=True
  )
