"""Tests for lrscale.models: ghost batch norm, model shapes, ResNet details, pure split/merge."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrscale.models import MODEL_NAMES, GhostBatchNorm, build_model
from lrscale.models.norm import split_ghost_batches
from lrscale.models.resnet import (
  BasicBlock,
  BottleneckBlock,
  ResNet,
  _conv,
  cifar_resnet,
  imagenet_resnet,
)

NUM_CLASSES = 10
IMAGE = (8, 8, 1)  # digits-sized: the smallest input the study uses


@pytest.fixture(scope="module", autouse=True)
def _fast_cpu_init():
  """Non-partitionable threefry while these tests run.

  With jax 0.10's default partitionable threefry, every new parameter shape costs a
  CPU compile of ~1-3 s, which dominated this file; no test depends on the random
  values themselves, only on relations between outputs of the same parameters.
  """
  with jax.threefry_partitionable(False):
    yield


def _x(shape: tuple[int, ...], seed: int = 0, *, shift: float = 0.0) -> jax.Array:
  # numpy, not jax.random: every new shape would cost a jax compile.
  return jnp.asarray(np.random.default_rng(seed).normal(shift, 2.0, shape), jnp.float32)


def _param_count(model: nnx.Module) -> int:
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _bn(group_size: int, features: int = 3, **kwargs) -> GhostBatchNorm:
  bn = GhostBatchNorm(features, group_size=group_size, rngs=nnx.Rngs(0), **kwargs)
  # Non-trivial affine parameters so the test also checks where gamma/beta are applied.
  bn.scale[...] = jnp.array([0.5, 2.0, -1.0])
  bn.bias[...] = jnp.array([0.1, -0.3, 1.0])
  return bn


def _numpy_ghost_bn(x: np.ndarray, group: int, scale, bias, eps: float) -> np.ndarray:
  out = np.empty_like(x)
  for start in range(0, x.shape[0], group):
    g = x[start : start + group]
    axes = tuple(range(g.ndim - 1))
    mu, var = g.mean(axis=axes), g.var(axis=axes)
    out[start : start + group] = (g - mu) / np.sqrt(var + eps) * scale + bias
  return out


# ----------------------------------------------------------------------------- GhostBatchNorm


@pytest.mark.parametrize("shape", [(8, 3), (8, 4, 5, 3)])
def test_ghost_bn_matches_per_group_numpy(shape):
  x = _x(shape, shift=3.0)
  bn = _bn(group_size=2)
  y = bn(x, train=True)
  want = _numpy_ghost_bn(
    np.asarray(x, np.float64), 2, np.asarray(bn.scale[...]), np.asarray(bn.bias[...]), bn.epsilon
  )
  np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)


def test_ghost_bn_running_stats_follow_average_of_group_stats():
  # Groups with different offsets: within-group variance << whole-batch variance.
  x = np.asarray(_x((12, 4, 4, 3), shift=1.5), np.float64)
  x += np.repeat([0.0, 3.0, -3.0], 4)[:, None, None, None]
  bn = _bn(group_size=4, momentum=0.8)
  bn.mean[...] = jnp.array([1.0, -1.0, 0.5])
  bn.var[...] = jnp.array([2.0, 0.5, 1.0])
  old_mean, old_var = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
  bn(jnp.asarray(x, jnp.float32), train=True)
  groups = x.reshape(3, 4, 4, 4, 3)
  group_mean = groups.mean(axis=(1, 2, 3))  # [3 groups, C]
  group_var = groups.var(axis=(1, 2, 3))
  np.testing.assert_allclose(
    np.asarray(bn.mean[...]), 0.8 * old_mean + 0.2 * group_mean.mean(0), rtol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(bn.var[...]), 0.8 * old_var + 0.2 * group_var.mean(0), rtol=1e-5
  )
  # Averaged within-group variance, not the whole-batch variance (much larger here).
  assert np.all(x.var(axis=(0, 1, 2)) > 2 * group_var.mean(0))


@pytest.mark.parametrize("group_size", [8, 0, -1])
def test_ghost_bn_whole_batch_equals_flax_batchnorm(group_size):
  x = _x((8, 3, 3, 3), shift=-2.0)
  ghost = _bn(group_size=group_size, momentum=0.9)
  ref = nnx.BatchNorm(
    3, momentum=0.9, epsilon=ghost.epsilon, use_fast_variance=False, rngs=nnx.Rngs(0)
  )
  ref.scale[...], ref.bias[...] = ghost.scale[...], ghost.bias[...]
  np.testing.assert_allclose(
    ghost(x, train=True), ref(x, use_running_average=False), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(ghost.mean[...], ref.mean[...], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ghost.var[...], ref.var[...], rtol=1e-5, atol=1e-6)


def test_ghost_bn_group_size_changes_output():
  x = _x((8, 3), shift=1.0)
  out = {g: np.asarray(_bn(group_size=g)(x, train=True)) for g in (2, 4, 8)}
  assert not np.allclose(out[2], out[4], atol=1e-3)
  assert not np.allclose(out[4], out[8], atol=1e-3)


def test_ghost_bn_groups_are_independent_of_batch_split():
  # The group is defined in examples: one batch of 8 with groups of 4 is exactly two
  # batches of 4 normalised separately (as two devices of 4 would), whatever the count.
  x = _x((8, 5, 3))
  whole = _bn(group_size=4)(x, train=True)
  halves = jnp.concatenate(
    [_bn(group_size=4)(x[:4], train=True), _bn(group_size=4)(x[4:], train=True)]
  )
  np.testing.assert_allclose(whole, halves, rtol=1e-6, atol=1e-6)


def test_ghost_bn_rejects_group_not_dividing_batch():
  with pytest.raises(ValueError, match=r"config\.model\.bn_group_size"):
    _bn(group_size=3)(_x((8, 3)), train=True)
  with pytest.raises(ValueError, match=r"config\.model\.bn_group_size"):
    split_ghost_batches(_x((4, 3)), 8)


def test_ghost_bn_eval_uses_running_stats_and_leaves_them():
  bn = _bn(group_size=2)
  mean, var = jnp.array([1.0, -2.0, 0.0]), jnp.array([4.0, 0.25, 1.0])
  bn.mean[...], bn.var[...] = mean, var
  x = _x((5, 3))  # any batch size in eval mode
  y = bn(x, train=False)
  want = (x - mean) / jnp.sqrt(var + bn.epsilon) * bn.scale[...] + bn.bias[...]
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(bn.mean[...], mean)
  np.testing.assert_array_equal(bn.var[...], var)


def test_ghost_bn_params_are_scale_and_bias():
  bn = GhostBatchNorm(4, group_size=2, rngs=nnx.Rngs(0))
  assert set(nnx.state(bn, nnx.Param).keys()) == {"scale", "bias"}
  assert set(nnx.state(bn, nnx.BatchStat).keys()) == {"mean", "var"}
  zero = GhostBatchNorm(4, group_size=2, scale_init=nnx.initializers.zeros_init(), rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(zero.scale[...], np.zeros(4))


# ----------------------------------------------------------------------------- models

# Concrete models are kept to the small ones: on CPU each new parameter shape costs a
# threefry compile of seconds, and ResNet-18/50 shapes are checked abstractly instead.
SMALL = ("mlp", "cnn", "resnet8")


def _build(name: str, input_shape: tuple[int, ...] = IMAGE, **kwargs) -> nnx.Module:
  return build_model(
    name,
    input_shape=input_shape,
    num_classes=NUM_CLASSES,
    bn_group_size=2,
    rngs=nnx.Rngs(0),
    **kwargs,
  )


def _pure_forward(graphdef, params, stats, x, train: bool):
  """The step's pattern: merge inside the traced function, return logits and new stats."""
  model = nnx.merge(graphdef, params, stats)
  return model(x, train=train), nnx.state(model, nnx.BatchStat)


_jit_forward = jax.jit(_pure_forward, static_argnums=(0, 4))


@pytest.mark.parametrize(
  "name, input_shape",
  [(name, IMAGE) for name in MODEL_NAMES if name != "transformer"]  # sequences: test_lm.py
  + [("cnn", (7, 5, 3)), ("resnet8", (7, 5, 3)), ("resnet18", (7, 5, 3)), ("resnet8", (1, 1, 2))],
)
def test_output_shapes_and_stats_structure(name, input_shape):
  model = nnx.eval_shape(lambda: _build(name, input_shape))
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  x = jax.ShapeDtypeStruct((4, *input_shape), jnp.float32)
  for train in (True, False):
    logits, new_stats = jax.eval_shape(
      lambda p, s, x: _pure_forward(graphdef, p, s, x, train), params, stats, x
    )
    assert logits.shape == (4, NUM_CLASSES) and logits.dtype == jnp.float32
    assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  assert bool(jax.tree.leaves(stats)) == name.startswith("resnet")


@pytest.fixture(scope="module")
def small_models() -> dict[str, nnx.Module]:
  return {name: _build(name) for name in SMALL}


@pytest.mark.parametrize("name", SMALL)
def test_pure_split_merge_under_jit_matches_direct_call(small_models, name):
  model = small_models[name]
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  x = _x((4, *IMAGE), seed=1)
  logits, new_stats = _jit_forward(graphdef, params, stats, x, True)
  assert np.isfinite(np.asarray(logits)).all()

  direct = nnx.clone(model)  # eager, stateful call: the reference
  np.testing.assert_allclose(logits, direct(x, train=True), rtol=1e-5, atol=1e-5)
  old_leaves, new_leaves = jax.tree.leaves(stats), jax.tree.leaves(new_stats)
  assert len(new_leaves) == len(old_leaves)
  if name.startswith("resnet"):
    assert all(not np.allclose(a, b) for a, b in zip(old_leaves, new_leaves))
    for a, b in zip(jax.tree.leaves(nnx.state(direct, nnx.BatchStat)), new_leaves):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  else:
    assert not old_leaves  # no BN: empty BatchStat state still merges

  eval_logits, eval_stats = _jit_forward(graphdef, params, stats, x, False)
  if not name.startswith("resnet"):  # eager ResNet eval would only re-test BN eval mode
    np.testing.assert_allclose(eval_logits, direct(x, train=False), rtol=1e-5, atol=1e-5)
  assert not np.allclose(eval_logits, logits, atol=1e-4) or not old_leaves
  for a, b in zip(old_leaves, jax.tree.leaves(eval_stats)):
    np.testing.assert_array_equal(a, b)


def test_grad_through_pure_step_returns_stats_as_aux(small_models):
  graphdef, params, stats = nnx.split(small_models["resnet8"], nnx.Param, nnx.BatchStat)
  x, labels = _x((4, *IMAGE), seed=2), jnp.array([0, 1, 2, 3])

  def loss_fn(p, s):
    # copy=True: under jax.grad the undifferentiated stats keep their outer trace, and
    # a plain merge would reuse those Variables, making the BN update raise
    # TraceContextError (flax 0.12 behaviour, nnx.BatchNorm included).
    model = nnx.merge(graphdef, p, s, copy=True)
    logits = model(x, train=True)
    loss = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])
    return loss, nnx.state(model, nnx.BatchStat)

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  (loss, new_stats), grads = step(params, stats)
  assert np.isfinite(float(loss))
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  assert all(
    not np.allclose(a, b) for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(new_stats))
  )
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
  # Zero-initialised last gammas still receive gradient, so blocks can switch on.
  assert float(jnp.abs(grads["blocks"][0]["norm2"]["scale"][...]).sum()) > 0


def test_mlp_flattens_any_shape_and_honours_hidden():
  mlp = build_model(
    "mlp",
    input_shape=(3, 4),
    num_classes=5,
    bn_group_size=0,
    rngs=nnx.Rngs(0),
    hidden=(7,),
    activation="tanh",
  )
  assert mlp(_x((2, 3, 4)), train=False).shape == (2, 5)
  assert _param_count(mlp) == 12 * 7 + 7 + 7 * 5 + 5


def test_strided_conv_is_centred_on_shortcut_pixels():
  # A 3x3 stride-2 conv whose kernel is a centred delta must pick the same pixels as the
  # "pad" shortcut's x[:, ::2, ::2], for even and odd sizes; SAME padding would not.
  conv = _conv(1, 1, 3, 2, nnx.Rngs(0))
  conv.kernel[...] = jnp.zeros((3, 3, 1, 1)).at[1, 1].set(1.0)
  for size in (8, 7):
    x = _x((1, size, size, 1))
    np.testing.assert_array_equal(conv(x), x[:, ::2, ::2, :])


# ----------------------------------------------------------------------------- ResNet details


def _last_and_other_norms(model: ResNet) -> tuple[list[GhostBatchNorm], list[GhostBatchNorm]]:
  """(last BN of each block, every other BN) of a ResNet."""
  last, other = [], [model.stem_norm]
  for b in model.blocks:
    norms = [b.norm1, b.norm2] + ([b.norm3] if isinstance(b, BottleneckBlock) else [])
    last.append(norms.pop())
    other += norms + ([b.shortcut.proj_norm] if b.shortcut.proj_norm else [])
  return last, other


@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_init_last_bn_scales(small_models, zero_init):
  basic = small_models["resnet8"] if zero_init else _build("resnet8", zero_init_last_bn=False)
  # ImageNet layout (7x7 stem, max-pool, bottlenecks, projections) at toy widths.
  bottleneck = ResNet(
    IMAGE,
    3,
    stage_sizes=(2, 1),
    widths=(2, 4),
    block="bottleneck",
    stem="imagenet",
    shortcut="projection",
    bn_group_size=2,
    zero_init_last_bn=zero_init,
    rngs=nnx.Rngs(0),
  )
  for model, blocks, others in ((basic, 3, 1 + 3), (bottleneck, 3, 1 + 3 * 2 + 2)):
    last, other = _last_and_other_norms(model)
    assert (len(last), len(other)) == (blocks, others)
    for norm in last:
      np.testing.assert_array_equal(norm.scale[...], 0.0 if zero_init else 1.0)
    for norm in other:  # only the last BN of a block is zeroed
      np.testing.assert_array_equal(norm.scale[...], 1.0)


@pytest.mark.parametrize(
  "block_cls, in_ch, width, stride, shortcut",
  [
    (BasicBlock, 4, 4, 1, "pad"),
    (BasicBlock, 2, 4, 2, "pad"),
    (BottleneckBlock, 8, 4, 2, "projection"),
  ],
)
def test_zero_init_block_is_its_shortcut(block_cls, in_ch, width, stride, shortcut):
  norm = lambda c, **kw: GhostBatchNorm(c, group_size=2, rngs=nnx.Rngs(1), **kw)  # noqa: E731
  kwargs = dict(stride=stride, shortcut=shortcut, norm=norm, rngs=nnx.Rngs(0))
  x = _x((4, 6, 6, in_ch))
  block = block_cls(in_ch, width, zero_init_last_bn=True, **kwargs)
  identity = nnx.relu(block.shortcut(x, train=True))
  np.testing.assert_allclose(block(x, train=True), identity, atol=1e-6)
  plain = block_cls(in_ch, width, zero_init_last_bn=False, **kwargs)
  assert not np.allclose(plain(x, train=True), identity, atol=1e-3)


@pytest.mark.parametrize(
  "depth, input_shape, classes, published, exact",
  [
    # He et al. 2016 Sec. 4.2: 0.27M; 269,722 with option-A shortcuts (3x3 stem,
    # 18 bias-free 3x3 convs, 19 BNs with gamma and beta, 64 -> 10 dense).
    (20, (32, 32, 3), 10, 0.27e6, 269_722),
    (18, (224, 224, 3), 1000, 11.69e6, 11_689_512),  # = torchvision resnet18
    (50, (224, 224, 3), 1000, 25.6e6, 25_557_032),  # = torchvision; Goyal et al. 2017
  ],
)
def test_resnet_parameter_counts_match_published(depth, input_shape, classes, published, exact):
  build = cifar_resnet if depth == 20 else imagenet_resnet
  model = nnx.eval_shape(  # abstract: no parameter is materialised
    lambda: build(depth, input_shape, classes, bn_group_size=32, rngs=nnx.Rngs(0))
  )
  count = _param_count(model)
  assert abs(count - published) / published < 0.01
  assert count == exact


# ----------------------------------------------------------------------------- registry errors


def test_unknown_model_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"config\.model\.name.*resnet50"):
    _build("vgg16")


def test_invalid_options_raise():
  with pytest.raises(ValueError, match="activation"):
    _build("mlp", activation="swishy")
  with pytest.raises(ValueError, match="6n\\+2"):
    cifar_resnet(10, IMAGE, 10, bn_group_size=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="depth"):
    imagenet_resnet(42, IMAGE, 10, bn_group_size=0, rngs=nnx.Rngs(0))
