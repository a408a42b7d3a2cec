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
    _conv,
    cifar_resnet,
    imagenet_resnet,
)

NUM_CLASSES = 10
IMAGE = (8, 8, 1)  # digits-sized: the smallest input the study uses


def _x(shape: tuple[int, ...], seed: int = 0, *, shift: float = 0.0) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape) * 2.0 + shift


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
    want = _numpy_ghost_bn(np.asarray(x, np.float64), 2, np.asarray(bn.scale[...]),
                           np.asarray(bn.bias[...]), bn.epsilon)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5)


def test_ghost_bn_running_stats_follow_average_of_group_stats():
    x = np.asarray(_x((12, 4, 4, 3), shift=1.5), np.float64)
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
    # Averaged within-group variance, not the whole-batch variance (which is larger here).
    assert not np.allclose(group_var.mean(0), x.var(axis=(0, 1, 2)), rtol=1e-3)


@pytest.mark.parametrize("group_size", [8, 0, -1])
def test_ghost_bn_whole_batch_equals_flax_batchnorm(group_size):
    x = _x((8, 3, 3, 3), shift=-2.0)
    ghost = _bn(group_size=group_size, momentum=0.9)
    ref = nnx.BatchNorm(3, momentum=0.9, epsilon=ghost.epsilon, use_fast_variance=False,
                        rngs=nnx.Rngs(0))
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
    halves = jnp.concatenate([_bn(group_size=4)(x[:4], train=True),
                              _bn(group_size=4)(x[4:], train=True)])
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
    zero = GhostBatchNorm(4, group_size=2, scale_init=nnx.initializers.zeros_init(),
                          rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(zero.scale[...], np.zeros(4))


# ----------------------------------------------------------------------------- models


def _build(name: str, **kwargs) -> nnx.Module:
    return build_model(name, input_shape=IMAGE, num_classes=NUM_CLASSES, bn_group_size=2,
                       rngs=nnx.Rngs(0), **kwargs)


@pytest.fixture(scope="module")
def models() -> dict[str, nnx.Module]:
    return {name: _build(name) for name in MODEL_NAMES}


def _pure_forward(graphdef, params, stats, x, train: bool):
    model = nnx.merge(graphdef, params, stats)
    return model(x, train=train), nnx.state(model, nnx.BatchStat)


_jit_forward = jax.jit(_pure_forward, static_argnums=(0, 4))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pure_split_merge_under_jit_matches_direct_call(models, name):
    model = models[name]
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    x = _x((4, *IMAGE), seed=1)
    logits, new_stats = _jit_forward(graphdef, params, stats, x, True)
    assert logits.shape == (4, NUM_CLASSES) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()

    direct = nnx.clone(model)
    np.testing.assert_allclose(logits, direct(x, train=True), rtol=1e-4, atol=1e-4)
    has_bn = name.startswith("resnet")
    old_leaves = jax.tree.leaves(stats)
    new_leaves = jax.tree.leaves(new_stats)
    assert len(new_leaves) == len(old_leaves) and bool(old_leaves) == has_bn
    if has_bn:
        assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
        assert any(not np.allclose(a, b) for a, b in zip(old_leaves, new_leaves))
        for a, b in zip(jax.tree.leaves(nnx.state(direct, nnx.BatchStat)), new_leaves):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    eval_logits, eval_stats = _jit_forward(graphdef, params, stats, x, False)
    assert eval_logits.shape == (4, NUM_CLASSES)
    for a, b in zip(old_leaves, jax.tree.leaves(eval_stats)):
        np.testing.assert_array_equal(a, b)


def test_grad_through_pure_step_returns_stats_as_aux(models):
    graphdef, params, stats = nnx.split(models["resnet8"], nnx.Param, nnx.BatchStat)
    x, labels = _x((4, *IMAGE), seed=2), jnp.array([0, 1, 2, 3])

    @jax.jit
    def loss_fn(p, s):
        model = nnx.merge(graphdef, p, s)
        logits = model(x, train=True)
        loss = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])
        return loss, nnx.state(model, nnx.BatchStat)

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    assert np.isfinite(float(loss))
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("shape", [(7, 7, 3), (9, 5, 2), (1, 1, 1)])
def test_resnets_accept_odd_and_tiny_images(shape):
    for model in (
        cifar_resnet(8, shape, 3, bn_group_size=0, rngs=nnx.Rngs(0)),
        imagenet_resnet(18, shape, 3, bn_group_size=0, rngs=nnx.Rngs(0)),
    ):
        assert model(_x((2, *shape)), train=True).shape == (2, 3)


def test_mlp_flattens_any_shape_and_honours_hidden():
    mlp = build_model("mlp", input_shape=(3, 4), num_classes=5, bn_group_size=0,
                      rngs=nnx.Rngs(0), hidden=(7,), activation="tanh")
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


def _last_norms(model) -> list[GhostBatchNorm]:
    return [b.norm3 if isinstance(b, BottleneckBlock) else b.norm2 for b in model.blocks]


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "resnet50"])
@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_init_last_bn_scales(models, name, zero_init):
    model = models[name] if zero_init else _build(name, zero_init_last_bn=False)
    blocks = list(model.blocks)
    assert len(blocks) == {"resnet20": 9, "resnet18": 8, "resnet50": 16}[name]
    for block in blocks:
        last = block.norm3 if isinstance(block, BottleneckBlock) else block.norm2
        np.testing.assert_array_equal(last.scale[...], 0.0 if zero_init else 1.0)
        # Only the last BN of a block is zeroed; projection-shortcut BNs start at 1.
        np.testing.assert_array_equal(block.norm1.scale[...], 1.0)
        if block.shortcut.proj_norm is not None:
            np.testing.assert_array_equal(block.shortcut.proj_norm.scale[...], 1.0)
    np.testing.assert_array_equal(model.stem_norm.scale[...], 1.0)


@pytest.mark.parametrize(
    "block_cls, in_ch, width, stride",
    [(BasicBlock, 4, 4, 1), (BasicBlock, 4, 8, 2), (BottleneckBlock, 8, 4, 2)],
)
def test_zero_init_block_is_its_shortcut(block_cls, in_ch, width, stride):
    norm = lambda c, **kw: GhostBatchNorm(c, group_size=2, rngs=nnx.Rngs(1), **kw)  # noqa: E731
    kwargs = dict(stride=stride, shortcut="pad", norm=norm, rngs=nnx.Rngs(0))
    x = _x((4, 6, 6, in_ch))
    block = block_cls(in_ch, width, zero_init_last_bn=True, **kwargs)
    identity = nnx.relu(block.shortcut(x, train=True))
    np.testing.assert_allclose(block(x, train=True), identity, atol=1e-6)
    plain = block_cls(in_ch, width, zero_init_last_bn=False, **kwargs)
    assert not np.allclose(plain(x, train=True), identity, atol=1e-3)


@pytest.mark.parametrize(
    "build, input_shape, classes, published",
    [
        (lambda s, c: cifar_resnet(20, s, c, bn_group_size=32, rngs=nnx.Rngs(0)),
         (32, 32, 3), 10, 0.27e6),  # He et al. 2016, Table 6
        (lambda s, c: imagenet_resnet(18, s, c, bn_group_size=32, rngs=nnx.Rngs(0)),
         (224, 224, 3), 1000, 11.69e6),  # torchvision resnet18
        (lambda s, c: imagenet_resnet(50, s, c, bn_group_size=32, rngs=nnx.Rngs(0)),
         (224, 224, 3), 1000, 25.56e6),  # torchvision resnet50 / Goyal et al. 2017
    ],
)
def test_resnet_parameter_counts_match_published(build, input_shape, classes, published):
    model = nnx.eval_shape(lambda: build(input_shape, classes))
    assert abs(_param_count(model) - published) / published < 0.01


def test_resnet20_exact_parameter_count():
    # 3x3 stem, 18 bias-free 3x3 convs, 19 BNs (gamma+beta) and a 64->10 dense layer with
    # option-A shortcuts: 269,722, the count of the reference CIFAR ResNet-20.
    model = nnx.eval_shape(
        lambda: cifar_resnet(20, (32, 32, 3), 10, bn_group_size=32, rngs=nnx.Rngs(0))
    )
    assert _param_count(model) == 269_722


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
