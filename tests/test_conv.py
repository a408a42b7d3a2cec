"""Every convolution implementation equals XLA's conv: forward, input and weight gradients."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax

from lrscale import config as config_lib
from lrscale.models import CONV_IMPLS, build_model, model_kwargs
from lrscale.models.canonical_conv import canonical_conv_general_dilated
from lrscale.models.conv import conv_general_dilated_fn, cpu_auto_conv_general_dilated
from lrscale.models.patches_conv import patches_conv_general_dilated

DIMS = ("NHWC", "HWIO", "NHWC")
CENTRED_3 = ((1, 1), (1, 1))  # lrscale.models.resnet's padding for a 3x3 window

# (input [B, H, W, C], kernel [kh, kw, C, O], strides, padding): the small CNN on 8x8
# digits and Shallue's CNN on 28x28 (5x5 stride 2 SAME), the CIFAR ResNets (3x3 centred,
# stride 1 and 2, odd and even sizes), ImageNet ResNets (7x7 stride-2 stem, 1x1 projections),
# plus VALID, uneven strides and negative (cropping) padding.
CASES = [
  ((3, 8, 8, 1), (5, 5, 1, 4), (2, 2), "SAME"),
  ((3, 4, 4, 5), (5, 5, 5, 6), (2, 2), "SAME"),
  ((2, 28, 28, 1), (5, 5, 1, 3), (2, 2), "SAME"),
  ((2, 14, 14, 4), (5, 5, 4, 5), (2, 2), "SAME"),
  ((2, 7, 7, 3), (5, 5, 3, 2), (2, 2), "SAME"),
  ((2, 10, 10, 3), (3, 3, 3, 4), (1, 1), CENTRED_3),
  ((2, 8, 8, 3), (3, 3, 3, 4), (2, 2), CENTRED_3),
  ((2, 7, 7, 3), (3, 3, 3, 4), (2, 2), CENTRED_3),
  ((2, 9, 9, 2), (7, 7, 2, 3), (2, 2), ((3, 3), (3, 3))),
  ((2, 8, 8, 4), (1, 1, 4, 6), (2, 2), ((0, 0), (0, 0))),
  ((2, 9, 9, 3), (3, 3, 3, 2), (1, 1), "VALID"),
  ((2, 9, 9, 3), (3, 3, 3, 2), (2, 2), "VALID"),
  ((2, 9, 8, 3), (3, 2, 3, 2), (2, 1), "SAME"),
  ((2, 9, 9, 2), (3, 3, 2, 2), (1, 2), ((-1, 1), (2, 0))),
  # Batches of 32+ (multiples of 8): the canonical weight gradient sums chunks of 8, as
  # im2col's transpose on maps of <= 16x16 pixels and as a conv on larger ones.
  ((64, 6, 6, 2), (3, 3, 2, 3), (1, 1), CENTRED_3),
  ((32, 17, 17, 2), (3, 3, 2, 3), (1, 1), CENTRED_3),
  ((64, 7, 7, 2), (3, 3, 2, 3), (2, 2), CENTRED_3),
]


def _arrays(x_shape, k_shape, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
  k = jnp.asarray(rng.normal(size=k_shape) / np.sqrt(np.prod(k_shape[:3])), jnp.float32)
  return x, k


def _value_and_vjp(conv_fn, x, k, strides, padding):
  """(y, dL/dx, dL/dk) for L = <y, cotangent>, a fixed random cotangent; one jitted call."""

  def f(x, k):
    return conv_fn(x, k, strides, padding, dimension_numbers=DIMS)

  ct = np.random.default_rng(1).normal(size=jax.eval_shape(f, x, k).shape).astype(np.float32)

  @jax.jit
  def value_and_vjp(x, k, ct):
    y, vjp = jax.vjp(f, x, k)
    return (y, *vjp(ct))

  return value_and_vjp(x, k, ct)


@pytest.mark.parametrize("impl", ["patches", "canonical", "auto"])
@pytest.mark.parametrize("x_shape, k_shape, strides, padding", CASES)
def test_impls_equal_xla_forward_and_gradients(impl, x_shape, k_shape, strides, padding):
  x, k = _arrays(x_shape, k_shape)
  fn = conv_general_dilated_fn(impl, backend="cpu")
  got = _value_and_vjp(fn, x, k, strides, padding)
  want = _value_and_vjp(lax.conv_general_dilated, x, k, strides, padding)
  for name, g, w in zip(("y", "dx", "dkernel"), got, want):
    assert g.shape == w.shape, name
    # float32 sums in a different order: a few hundred terms of size ~1, except the
    # weight gradient, which sums B*H*W (up to ~9000) and whose rounding grows with it.
    terms = x_shape[0] * x_shape[1] * x_shape[2] if name == "dkernel" else 300
    tol = 2e-5 * max(1.0, np.sqrt(terms / 300))
    np.testing.assert_allclose(g, w, rtol=tol / 2, atol=tol, err_msg=name)


def test_patches_against_a_direct_numpy_convolution():
  # Independent of XLA: y[b, h, w, o] = sum_{i, j, c} x_pad[b, 2h + i, 2w + j, c] k[i, j, c, o].
  x, k = _arrays((2, 7, 6, 3), (3, 3, 3, 2))
  y = patches_conv_general_dilated(x, k, (2, 2), ((1, 1), (0, 1)), dimension_numbers=DIMS)
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (0, 1), (0, 0)))
  want = np.zeros((2, 4, 3, 2))
  for h in range(4):
    for w in range(3):
      window = xp[:, 2 * h : 2 * h + 3, 2 * w : 2 * w + 3, :]
      want[:, h, w, :] = np.einsum("bijc,ijco->bo", window, np.asarray(k, np.float64))
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_auto_picks_per_backend_and_per_layer():
  assert conv_general_dilated_fn("auto", backend="gpu") is lax.conv_general_dilated
  assert conv_general_dilated_fn("auto", backend="tpu") is lax.conv_general_dilated
  assert conv_general_dilated_fn("auto", backend="cpu") is cpu_auto_conv_general_dilated
  assert conv_general_dilated_fn("xla") is lax.conv_general_dilated
  assert conv_general_dilated_fn("patches") is patches_conv_general_dilated
  assert conv_general_dilated_fn("canonical") is canonical_conv_general_dilated
  with pytest.raises(ValueError, match=r"config.model.conv_impl='im2col'"):
    conv_general_dilated_fn("im2col")


def _hlo_convs(conv_fn, x, k) -> list[str]:
  """Dimension labels of every convolution XLA compiles for a 3-step scan of gradients."""

  def loss(k, x):
    return jnp.sum(jnp.tanh(conv_fn(x, k, (1, 1), CENTRED_3, dimension_numbers=DIMS)))

  def scanned(k, x):
    def body(k, _):
      return k - 1e-3 * jax.grad(loss)(k, x), None

    return lax.scan(body, k, None, length=3)[0]

  hlo = jax.jit(scanned).lower(k, x).compile().as_text()
  return re.findall(r"convolution\(.*?dim_labels=([^,\s]+)", hlo)


def test_canonical_gradients_stay_canonical_inside_a_scan():
  # Why the implementation exists: autodiff of lax's conv leaves non-canonical convs in a
  # while loop's body, which XLA's CPU backend runs as slow naive loops.
  x, k = _arrays((4, 16, 16, 4), (3, 3, 4, 4))
  assert set(_hlo_convs(canonical_conv_general_dilated, x, k)) == {"b01f_01io->b01f"}
  assert set(_hlo_convs(lax.conv_general_dilated, x, k)) > {"b01f_01io->b01f"}


def test_auto_chooses_per_layer_on_cpu():
  # Stride-1 convs of maps with >= 256 pixels go to canonical XLA convs, the rest to im2col.
  def convs(x_shape, k_shape, strides):
    x, k = _arrays(x_shape, k_shape)
    f = lambda x: cpu_auto_conv_general_dilated(x, k, strides, "SAME", dimension_numbers=DIMS)
    return str(jax.make_jaxpr(f)(x)).count("conv_general_dilated")

  assert convs((2, 16, 16, 3), (3, 3, 3, 4), (1, 1)) == 1  # canonical: XLA's conv
  assert convs((2, 8, 8, 3), (3, 3, 3, 4), (1, 1)) == 0  # im2col: slices and a dot
  assert convs((2, 32, 32, 3), (3, 3, 3, 4), (2, 2)) == 0
  assert convs((2, 32, 32, 3), (1, 1, 3, 4), (1, 1)) == 0


def test_patches_rejects_what_it_cannot_compute():
  x, k = _arrays((1, 6, 6, 2), (3, 3, 2, 2))
  with pytest.raises(ValueError, match="conv_impl='xla'"):
    patches_conv_general_dilated(x, k, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DIMS)
  # auto falls back to XLA's conv for it, with XLA's result.
  y = cpu_auto_conv_general_dilated(
    x, k, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DIMS
  )
  want = lax.conv_general_dilated(x, k, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DIMS)
  np.testing.assert_array_equal(y, want)


def _model_cfg(name: str, conv_impl: str) -> ml_collections.ConfigDict:
  cfg = config_lib.base_config().model
  cfg.name, cfg.conv_impl = name, conv_impl
  cfg.channels, cfg.dense = (4, 6), 8  # small, so the test compiles quickly
  return cfg


def _loss_and_grads(name: str, conv_impl: str, x: jax.Array, y: jax.Array):
  model = build_model(
    name,
    input_shape=x.shape[1:],
    num_classes=10,
    bn_group_size=2,
    rngs=nnx.Rngs(0),
    **model_kwargs(_model_cfg(name, conv_impl)),
  )
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params):
    logits = nnx.merge(graphdef, params, rest, copy=True)(x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, *jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("impl", ["patches", "canonical"])
@pytest.mark.parametrize("name, image", [("cnn", (8, 8, 1)), ("resnet8", (8, 8, 3))])
def test_model_with_impl_matches_xla(name, image, impl):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, *image)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, 4), jnp.int32)
  p_xla, loss_xla, g_xla = _loss_and_grads(name, "xla", x, y)
  p_pat, loss_pat, g_pat = _loss_and_grads(name, impl, x, y)
  # Same parameter names, shapes and initial values: checkpoints carry across impls.
  assert jax.tree.structure(p_xla) == jax.tree.structure(p_pat)
  jax.tree.map(np.testing.assert_array_equal, p_xla, p_pat)
  np.testing.assert_allclose(loss_pat, loss_xla, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g_pat, g_xla)


def test_config_validates_conv_impl():
  assert set(CONV_IMPLS) == {"auto", "xla", "patches", "canonical"}
  cfg = config_lib.base_config()
  cfg.parallel.num_devices = 1
  cfg.model.conv_impl = "fast"
  with pytest.raises(ValueError, match=r"^config.model.conv_impl='fast' .*choose one of"):
    config_lib.resolve(cfg)
  assert model_kwargs(_model_cfg("resnet20", "xla"))["conv_impl"] == "xla"
  assert "conv_impl" not in model_kwargs(_model_cfg("mlp", "xla"))
