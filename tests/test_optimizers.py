"""Tests for lrscale.optimizers and lrscale.param_groups.

One-step values are checked against hand-written numpy formulas (float64),
not against the optax code they are built from.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lrscale.optim import hyperparams, optimizer_config, optimizers, param_groups

RTOL = 2e-5


def _cfg(name, **fields):
  cfg = optimizer_config.default_config()
  cfg.name = name
  for k, v in fields.items():
    setattr(cfg, k, v)
  return cfg


def _problem():
  rng = np.random.default_rng(0)
  params = {"layer": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=(3,))}}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape), params) for _ in range(2)]
  return params, grads


def _run(cfg, params, grads, lrs):
  """Runs len(grads) steps in float32 with lr lrs[t] at step t."""
  p32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  tx = optimizers.build_optimizer(cfg, params=p32)
  state = tx.init(p32)
  for g, lr in zip(grads, lrs):
    state = hyperparams.set_learning_rate(state, lr)
    g32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g)
    updates, state = tx.update(g32, state, p32)
    p32 = optax.apply_updates(p32, updates)
  return p32, state


# Numpy references: f(params, grads, lrs) -> params after len(grads) steps.
# Each leaf is independent except where a norm is taken per leaf (lars, lamb).
M, WD, B1, B2, EPS = 0.9, 0.01, 0.9, 0.999, 1e-8


def _ref_per_leaf(step):
  def run(params, grads, lrs):
    out = {}
    for key, w in params["layer"].items():
      w = w.copy()
      st = {}
      for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        w = w - step(w, g["layer"][key], lr, t, st)
      out[key] = w
    return {"layer": out}

  return run


def _sgd(w, g, lr, t, st):
  return lr * (g + WD * w)


def _momentum(nesterov):
  def step(w, g, lr, t, st):
    gd = g + WD * w
    st["u"] = M * st.get("u", 0.0) + gd
    return lr * (gd + M * st["u"] if nesterov else st["u"])

  return step


def _adam_direction(g, t, st):
  st["m"] = B1 * st.get("m", 0.0) + (1 - B1) * g
  st["v"] = B2 * st.get("v", 0.0) + (1 - B2) * g**2
  mh, vh = st["m"] / (1 - B1**t), st["v"] / (1 - B2**t)
  return mh / (np.sqrt(vh) + EPS)


def _adam(w, g, lr, t, st):  # L2 in the gradient
  return lr * _adam_direction(g + WD * w, t, st)


def _adamw(w, g, lr, t, st):  # decoupled, scaled by lr
  return lr * (_adam_direction(g, t, st) + WD * w)


def _lars(w, g, lr, t, st):
  # optax.lars: trust 1e-3 * ||w|| / ||g + wd w||, then lr, then momentum.
  gd = g + WD * w
  trust = 1e-3 * np.linalg.norm(w) / np.linalg.norm(gd)
  st["u"] = M * st.get("u", 0.0) + trust * gd
  return lr * st["u"]


def _lamb(w, g, lr, t, st):
  eps_lamb = 1e-6
  st["m"] = B1 * st.get("m", 0.0) + (1 - B1) * g
  st["v"] = B2 * st.get("v", 0.0) + (1 - B2) * g**2
  mh, vh = st["m"] / (1 - B1**t), st["v"] / (1 - B2**t)
  a = mh / (np.sqrt(vh) + eps_lamb) + WD * w
  return lr * np.linalg.norm(w) / np.linalg.norm(a) * a


def _rmsprop(w, g, lr, t, st):
  gd = g + WD * w
  st["nu"] = 0.9 * st.get("nu", 0.0) + 0.1 * gd**2
  return lr * gd / (np.sqrt(st["nu"]) + EPS)


def _adagrad(w, g, lr, t, st):
  gd = g + WD * w
  st["acc"] = st.get("acc", 0.1) + gd**2
  return lr * gd / np.sqrt(st["acc"] + 1e-7)


REFERENCES = {
  "sgd": _sgd,
  "momentum": _momentum(False),
  "nesterov": _momentum(True),
  "adam": _adam,
  "adamw": _adamw,
  "lars": _lars,
  "lamb": _lamb,
  "rmsprop": _rmsprop,
  "adagrad": _adagrad,
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_two_steps_match_numpy_reference(name):
  params, grads = _problem()
  lrs = [0.1, 0.03]  # an lr change between the steps
  cfg = _cfg(name, weight_decay=WD, decay_mask="all")
  got, _ = _run(cfg, params, grads, lrs)
  want = _ref_per_leaf(REFERENCES[name])(params, grads, lrs)
  for key in ("kernel", "bias"):
    # Compare displacements: LARS steps are ~1e-3 of the weights, so
    # comparing weights would hide errors in the step.
    w0 = params["layer"][key]
    np.testing.assert_allclose(
      got["layer"][key] - w0, want["layer"][key] - w0, rtol=1e-4, atol=1e-7, err_msg=key
    )
    assert np.abs(want["layer"][key] - w0).max() > 1e-4  # not vacuous


def _ref_schedule_free_sgd(params, grads, lrs, b1=0.9):
  """Defazio et al. 2024: y = (1-b1) z + b1 x; z -= lr g(y); x -> avg."""
  out_y, out_x = {}, {}
  for key, w in params["layer"].items():
    x, z, y, wsum = w.copy(), w.copy(), w.copy(), 0.0
    max_lr = 0.0
    for g, lr in zip(grads, lrs):
      max_lr = max(max_lr, lr)
      wsum += max_lr**2
      c = max_lr**2 / wsum
      z = z - lr * g["layer"][key]
      x = (1 - c) * x + c * z
      y = b1 * x + (1 - b1) * z
    out_y[key], out_x[key] = y, x
  return {"layer": out_y}, {"layer": out_x}


def test_schedule_free_sgd_matches_numpy_and_eval_params():
  params, grads = _problem()
  lrs = [0.1, 0.2]
  cfg = _cfg("schedule_free_sgd")
  got, state = _run(cfg, params, grads, lrs)
  want_y, want_x = _ref_schedule_free_sgd(params, grads, lrs)
  x = optimizers.eval_params(cfg, state, got)
  for key in ("kernel", "bias"):
    np.testing.assert_allclose(got["layer"][key], want_y["layer"][key], rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(x["layer"][key], want_x["layer"][key], rtol=RTOL, atol=1e-6)
    assert not np.allclose(want_x["layer"][key], want_y["layer"][key])


def test_schedule_free_adamw_matches_optax_contrib():
  params, grads = _problem()
  cfg = _cfg("schedule_free_adamw", weight_decay=WD, decay_mask="all")
  got, state = _run(cfg, params, grads, [0.01, 0.01])
  ref = optax.contrib.schedule_free_adamw(0.01, weight_decay=WD)
  p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  s = ref.init(p)
  for g in grads:
    u, s = ref.update(jax.tree.map(jnp.float32, g), s, p)
    p = optax.apply_updates(p, u)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL), got, p)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL),
    optimizers.eval_params(cfg, state, got),
    optax.contrib.schedule_free_eval_params(s, p),
  )


def test_eval_params_is_identity_otherwise():
  params, grads = _problem()
  cfg = _cfg("adam")
  got, state = _run(cfg, params, grads, [0.1, 0.1])
  assert optimizers.eval_params(cfg, state, got) is got


def test_lars_goyal_form_without_correction_is_optax_lars():
  params, grads = _problem()
  lrs = [0.5, 2.0]
  cfg = _cfg(
    "lars", weight_decay=WD, decay_mask="all", momentum_form="goyal", momentum_correction=False
  )
  got, _ = _run(cfg, params, grads, lrs)
  ref = optax.inject_hyperparams(optax.lars)(learning_rate=0.5, weight_decay=WD)
  p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  s = ref.init(p)
  for g, lr in zip(grads, lrs):
    s.hyperparams["learning_rate"] = jnp.float32(lr)
    u, s = ref.update(jax.tree.map(jnp.float32, g), s, p)
    p = optax.apply_updates(p, u)
  jax.tree.map(lambda a, b, w: np.testing.assert_allclose(a - w, b - w, rtol=1e-4), got, p, params)


# --- momentum correction (Goyal et al. 2017, sec. 2.1) ---------------------


@pytest.mark.parametrize("name", ["momentum", "nesterov", "lars"])
def test_goyal_form_with_correction_equals_optax_form(name):
  rng = np.random.default_rng(1)
  params = {"w": rng.normal(size=(5, 2))}
  grads = [{"w": rng.normal(size=(5, 2))} for _ in range(6)]
  lrs = [0.1, 0.1, 0.4, 0.4, 0.04, 0.2]  # warmup end + decays
  optax_form, _ = _run(_cfg(name), params, grads, lrs)
  corrected, _ = _run(_cfg(name, momentum_form="goyal"), params, grads, lrs)
  uncorrected, _ = _run(
    _cfg(name, momentum_form="goyal", momentum_correction=False), params, grads, lrs
  )
  np.testing.assert_allclose(corrected["w"], optax_form["w"], rtol=1e-5)
  assert np.abs(uncorrected["w"] - optax_form["w"]).max() > 1e-3
  # With a constant lr the correction is 1 and all three coincide.
  const = [0.1] * 6
  a, _ = _run(_cfg(name), params, grads, const)
  b, _ = _run(_cfg(name, momentum_form="goyal", momentum_correction=False), params, grads, const)
  np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5)


def test_goyal_correction_survives_zero_lr_warmup_start():
  # lr_0 = 0: v_1 = 0 and the ratio 0.1 / 0 is taken as 1, so
  # v_2 = 0.1, v_3 = 0.9 * 2 * 0.1 + 0.2 = 0.38; w = 1 - 0.1 - 0.38.
  # (The optax form, unlike this one, also accumulates g while lr = 0.)
  params = {"w": np.ones(3)}
  grads = [{"w": np.full(3, 1.0)}] * 3
  b, _ = _run(_cfg("momentum", momentum_form="goyal"), params, grads, [0.0, 0.1, 0.2])
  np.testing.assert_allclose(b["w"], 0.52, rtol=1e-6)


# --- one compiled step serves every lr --------------------------------------


@pytest.mark.parametrize("name", optimizer_config.OPTIMIZERS)
def test_one_compilation_serves_many_lrs(name):
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  tx = optimizers.build_optimizer(_cfg(name), params=params)
  traces = []

  @jax.jit
  def step(params, state, lr):
    traces.append(1)
    state = hyperparams.set_learning_rate(state, lr)
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.5, params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  results = []
  state = tx.init(params)
  for lr in (0.1, 0.01, 1e-4, 0.3):
    new_params, new_state = step(params, state, lr)
    results.append(float(new_params["w"][0, 0]))
    assert float(hyperparams.current_hparams(new_state)["lr"]) == (pytest.approx(lr))
    state = new_state  # carried state keeps its avals
  assert len(traces) == 1
  assert len(set(results)) == 4  # the lr really reached the update


def test_set_learning_rate_with_nnx_optimizer_one_trace():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  tx = optimizers.build_optimizer(_cfg("momentum"), params=nnx.state(model, nnx.Param))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  traces = []

  @nnx.jit
  def step(model, opt, lr):
    traces.append(1)
    opt.opt_state = hyperparams.set_learning_rate(opt.opt_state, lr)
    grads = nnx.grad(lambda m: (m(jnp.ones((4, 3))) ** 2).sum())(model)
    opt.update(model, grads)

  for lr in (0.01, 0.02, 0.03):
    step(model, opt, lr)
    assert float(hyperparams.current_hparams(opt.opt_state)["lr"]) == (pytest.approx(lr))
  assert len(traces) == 1


def test_current_and_set_hparams():
  params = {"w": jnp.ones(2)}
  assert set(
    hyperparams.current_hparams(optimizers.build_optimizer(_cfg("sgd"), params=params).init(params))
  ) == {"lr", "weight_decay"}
  tx = optimizers.build_optimizer(_cfg("nesterov"), params=params, learning_rate=0.2)
  state = tx.init(params)
  hp = hyperparams.current_hparams(state)
  assert set(hp) == {"lr", "momentum", "weight_decay"}
  assert float(hp["lr"]) == pytest.approx(0.2)
  state = hyperparams.set_hyperparams(state, momentum=0.5)
  assert float(hyperparams.current_hparams(state)["momentum"]) == 0.5
  assert hyperparams.current_hparams(state)["momentum"].dtype == jnp.float32
  with pytest.raises(KeyError, match="b1"):
    hyperparams.set_hyperparams(state, b1=0.5)
  assert set(
    hyperparams.current_hparams(
      optimizers.build_optimizer(_cfg("adamw"), params=params).init(params)
    )
  ) >= {"lr", "b1", "b2", "eps"}


def test_set_learning_rate_inside_multisteps():
  params = {"w": jnp.ones(2)}
  tx = optax.MultiSteps(optimizers.build_optimizer(_cfg("sgd"), params=params), every_k_schedule=2)
  state = hyperparams.set_learning_rate(tx.init(params), 0.7)
  assert float(hyperparams.current_hparams(state)["lr"]) == pytest.approx(0.7)


# --- parameter groups on a real nnx model -----------------------------------


class _Net(nnx.Module):
  def __init__(self, rngs):
    self.layers = nnx.List([nnx.Linear(4, 5, rngs=rngs), nnx.Linear(5, 5, rngs=rngs)])
    self.bn1 = nnx.BatchNorm(5, rngs=rngs)
    self.head = nnx.Linear(5, 3, rngs=rngs)

  def __call__(self, x):
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return self.head(self.bn1(x))


def _nnx_params():
  _, params, batch_stats = nnx.split(_Net(nnx.Rngs(0)), nnx.Param, nnx.BatchStat)
  assert jax.tree.leaves(batch_stats)  # the stats are split off, not params
  return params


def test_param_paths_nnx_and_dict_agree():
  params = _nnx_params()
  paths = nnx.to_pure_dict(param_groups.param_paths(params))
  assert paths == {
    "layers": {
      0: {"kernel": "layers/0/kernel", "bias": "layers/0/bias"},
      1: {"kernel": "layers/1/kernel", "bias": "layers/1/bias"},
    },
    "bn1": {"scale": "bn1/scale", "bias": "bn1/bias"},
    "head": {"kernel": "head/kernel", "bias": "head/bias"},
  }
  assert param_groups.param_paths(nnx.to_pure_dict(params)) == paths
  assert param_groups.param_paths({"a": [np.ones(1), {"b": np.ones(1)}]}) == {
    "a": ["a/0", {"b": "a/1/b"}]
  }


def test_bias_norm_mask_leaf_by_leaf():
  mask = nnx.to_pure_dict(param_groups.bias_norm_mask(_nnx_params()))
  assert mask == {
    "layers": {0: {"kernel": True, "bias": False}, 1: {"kernel": True, "bias": False}},
    "bn1": {"scale": False, "bias": False},
    "head": {"kernel": True, "bias": False},
  }


@pytest.mark.parametrize(
  "path,ndim,expected",
  [
    ("encoder/LayerNorm_0/kernel", 2, True),  # 'norm' component
    ("block1/bn2/weight", 2, True),  # bn token
    ("ln_f/gain", 2, True),
    ("subnet/kernel", 2, False),  # 'bn' inside a word: no
    ("embed/embedding", 2, False),
    ("pos/offset", 1, True),  # any 1-D leaf
    ("conv/kernel", 4, False),
  ],
)
def test_is_bias_or_norm(path, ndim, expected):
  assert param_groups.is_bias_or_norm(path, ndim) is expected


def _one_sgd_update(cfg, params, grads, lr=1.0):
  tx = optimizers.build_optimizer(cfg, params=params, learning_rate=lr)
  updates, _ = tx.update(grads, tx.init(params), params)
  return nnx.to_pure_dict(updates) if isinstance(updates, nnx.State) else updates


@pytest.mark.parametrize("decay_mask", ["no_bias_norm", "all", "none"])
def test_decay_mask_on_nnx_state(decay_mask):
  params = _nnx_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates = _one_sgd_update(_cfg("sgd", weight_decay=0.1, decay_mask=decay_mask), params, zeros)
  kernels = {"layers/0/kernel", "layers/1/kernel", "head/kernel"}
  paths = jax.tree.leaves(param_groups.param_paths(nnx.to_pure_dict(params)))
  assert len(paths) == 8
  for path, u, w in zip(paths, jax.tree.leaves(updates), jax.tree.leaves(nnx.to_pure_dict(params))):
    on = {"all": True, "none": False, "no_bias_norm": path in kernels}[decay_mask]
    np.testing.assert_allclose(u, -0.1 * w if on else 0 * w, rtol=1e-6, err_msg=path)


def test_trust_mask_skips_bias_and_norm():
  params = _nnx_params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  cfg = _cfg("lars", trust_mask="no_bias_norm", momentum=0.0, trust_coefficient=0.5)
  updates = _one_sgd_update(cfg, params, grads, lr=0.1)
  kernels = {"layers/0/kernel", "layers/1/kernel", "head/kernel"}
  paths = jax.tree.leaves(param_groups.param_paths(nnx.to_pure_dict(params)))
  for path, u, w, g in zip(
    paths,
    jax.tree.leaves(updates),
    jax.tree.leaves(nnx.to_pure_dict(params)),
    jax.tree.leaves(nnx.to_pure_dict(grads)),
  ):
    if path in kernels:
      want = -0.1 * 0.5 * np.linalg.norm(w) / np.linalg.norm(g) * g
    else:
      want = -0.1 * g
    np.testing.assert_allclose(u, want, rtol=1e-5, err_msg=path)


def test_lr_multipliers_scale_exactly_those_leaves():
  params = _nnx_params()
  grads = jax.tree.map(jnp.ones_like, params)
  spec = "head/.*=0.1, layers/0/kernel=0,layers/.*=2.5"
  updates = _one_sgd_update(_cfg("sgd", lr_multipliers=spec), params, grads, lr=0.2)
  expected_mult = {
    "layers": {0: {"kernel": 0.0, "bias": 2.5}, 1: {"kernel": 2.5, "bias": 2.5}},
    "bn1": {"scale": 1.0, "bias": 1.0},
    "head": {"kernel": 0.1, "bias": 0.1},
  }
  assert nnx.to_pure_dict(param_groups.multiplier_tree(params, spec)) == (expected_mult)
  jax.tree.map(lambda u, m: np.testing.assert_allclose(u, -0.2 * m), updates, expected_mult)


def test_lr_multipliers_with_adam_are_per_group_lr():
  params = {"a": {"w": jnp.ones(3)}, "b": {"w": jnp.ones(3)}}
  grads = {"a": {"w": jnp.array([1.0, -2.0, 3.0])}, "b": {"w": jnp.array([1.0, -2.0, 3.0])}}
  updates = _one_sgd_update(_cfg("adam", lr_multipliers="a/.*=0.5"), params, grads, lr=0.1)
  np.testing.assert_allclose(updates["a"]["w"], 0.5 * updates["b"]["w"])
  np.testing.assert_allclose(updates["b"]["w"], -0.1 * np.sign(grads["b"]["w"]), rtol=1e-6)


def test_lr_multiplier_errors():
  params = {"head": {"kernel": jnp.ones((2, 2))}}
  with pytest.raises(
    ValueError,
    match=r"config.optimizer.lr_multipliers.*"
    r"\['heads/.\*'\] match no parameter",
  ):
    optimizers.build_optimizer(_cfg("sgd", lr_multipliers="heads/.*=2"), params=params)
  for bad, msg in [
    ("head", "not REGEX=FLOAT"),
    ("head/.*=x", "not a number"),
    ("(=1", "invalid regex"),
    ("head/.*=-1", ">= 0"),
  ]:
    with pytest.raises(ValueError, match="config.optimizer.lr_multipliers.*" + msg):
      optimizer_config.validate(_cfg("sgd", lr_multipliers=bad))


def test_grad_clip_is_first():
  params = {"w": jnp.zeros(2)}
  grads = {"w": jnp.array([3.0, 4.0])}  # norm 5
  updates = _one_sgd_update(_cfg("sgd", grad_clip_norm=1.0), params, grads)
  np.testing.assert_allclose(updates["w"], [-0.6, -0.8], rtol=1e-6)
  # Clipping precedes Adam: a clipped gradient gives the same sign step.
  upd = _one_sgd_update(_cfg("momentum", grad_clip_norm=2.5), params, grads, lr=0.1)
  np.testing.assert_allclose(upd["w"], [-0.15, -0.2], rtol=1e-6)


# --- validation --------------------------------------------------------------


@pytest.mark.parametrize(
  "name,fields,match",
  [
    ("momentum", {"momentum": 1.2}, r"config.optimizer.momentum must be in \[0, 1\), got 1.2"),
    ("sgd", {"b1": 0.9}, "config.optimizer.b1 is not used by optimizer"),
    ("adam", {"b2": -0.1}, "config.optimizer.b2 must be in"),
    ("schedule_free_sgd", {"b1": 0.0}, r"config.optimizer.b1 must be in \(0"),
    ("adam", {"eps": -1.0}, "config.optimizer.eps must be"),
    ("adamw", {"weight_decay": -1e-4}, "config.optimizer.weight_decay"),
    ("sgd", {"grad_clip_norm": -1.0}, "config.optimizer.grad_clip_norm"),
    ("sgd", {"decay_mask": "bias"}, "config.optimizer.decay_mask must be one"),
    ("lars", {"trust_mask": "x"}, "config.optimizer.trust_mask must be one"),
    ("lars", {"trust_coefficient": 0.0}, "config.optimizer.trust_coefficient"),
    ("adam", {"trust_coefficient": 0.1}, "trust_coefficient is not used"),
    ("adam", {"nesterov": True}, "config.optimizer.nesterov=True needs"),
    ("rmsprop", {"momentum_form": "goyal"}, "config.optimizer.momentum_form="),
    ("momentum", {"momentum_form": "pytorch"}, "momentum_form must be one"),
    ("sgdm", {}, "config.optimizer.name must be one of"),
  ],
)
def test_validate_errors_name_the_field(name, fields, match):
  with pytest.raises(ValueError, match=match):
    optimizer_config.validate(_cfg(name, **fields))


@pytest.mark.parametrize("name", optimizer_config.OPTIMIZERS)
def test_defaults_validate(name):
  optimizer_config.validate(_cfg(name))


def test_rmsprop_momentum_and_nesterov_are_allowed():
  optimizer_config.validate(_cfg("rmsprop", momentum=0.9, nesterov=True, momentum_form="goyal"))


def test_command_line_overrides():
  cfg = optimizer_config.default_config()
  cfg.update_from_flattened_dict({"name": "adam", "b1": 0.95, "lr_multipliers": "head/.*=0.5"})
  assert optimizer_config.resolved_hparams(cfg)["b1"] == 0.95
  assert optimizer_config.resolved_hparams(cfg)["b2"] == 0.999


# --- end to end: loss decreases on digits ------------------------------------

LRS = {
  "sgd": 0.5,
  "momentum": 0.1,
  "nesterov": 0.1,
  "adam": 0.02,
  "adamw": 0.02,
  "rmsprop": 0.02,
  "adagrad": 0.2,
  "lars": 20.0,
  "lamb": 0.05,
  "schedule_free_sgd": 0.5,
  "schedule_free_adamw": 0.02,
  "muon": 0.05,
}


@pytest.fixture(scope="module")
def digits():
  from sklearn.datasets import load_digits

  d = load_digits()
  x = jnp.asarray(d.data[:512] / 16.0, jnp.float32)
  y = jnp.asarray(d.target[:512])
  return x, y


def _loss(params, x, y):
  logits = x @ params["linear"]["kernel"] + params["linear"]["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@pytest.mark.parametrize("name", optimizer_config.OPTIMIZERS)
def test_loss_decreases_on_digits(name, digits):
  x, y = digits
  key = jax.random.key(0)
  params = {"linear": {"kernel": 0.1 * jax.random.normal(key, (64, 10)), "bias": jnp.zeros(10)}}
  cfg = _cfg(name, weight_decay=1e-4)
  tx = optimizers.build_optimizer(cfg, params=params)
  state = tx.init(params)

  @jax.jit
  def step(params, state, lr, xb, yb):
    state = hyperparams.set_learning_rate(state, lr)
    loss, grads = jax.value_and_grad(_loss)(params, xb, yb)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  initial = float(_loss(params, x, y))
  for t in range(40):
    lr = LRS[name] * min(1.0, (t + 1) / 5)  # short warmup: lr changes traced
    sl = slice((t % 4) * 128, (t % 4 + 1) * 128)
    params, state, _ = step(params, state, lr, x[sl], y[sl])
  final = float(_loss(optimizers.eval_params(cfg, state, params), x, y))
  assert np.isfinite(final)
  assert final < 0.5 * initial, (initial, final)
