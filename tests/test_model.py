"""DelpNet: shapes, parameter count, FLOPs, config validation, classify_patches and its errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY

from lbdvd_jax.model import DelpNet, DelpNetConfig, classify_patches, conv_macs, count_params


@pytest.fixture(scope="module")
def tiny():
    return DelpNet(TINY, rngs=nnx.Rngs(0))


def test_default_architecture_size():
    model = nnx.eval_shape(lambda: DelpNet(rngs=nnx.Rngs(0)))  # shapes only
    assert len(model.convs) == 7 and len(model.norms) == 7
    # the paper's 2.3 M parameters: 2,324,184 conv + 2,448 BN scale/bias + 4,620 dense
    assert count_params(model) == 2_331_252
    assert all(bn.momentum == 0.6 for bn in model.norms)
    assert conv_macs() == 89_344_224


def test_conv_macs_oracle():
    cfg = DelpNetConfig(features=((3, 3, 1), (5, 3, 2)), patch_size=10, num_classes=11)
    # layer 1: 10*10 outputs * 9 taps * 1 * 3; layer 2: 5*5 * 9 * 3 * 5; dense 5 * 11
    assert conv_macs(cfg) == 100 * 9 * 3 + 25 * 9 * 15 + 55


@pytest.mark.parametrize("num_classes", [12, 11])
def test_output_shapes_and_modes(num_classes):
    cfg = DelpNetConfig(features=TINY.features, patch_size=16, num_classes=num_classes)
    model = DelpNet(cfg, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).random((3, 16, 16, 1)), jnp.float32)
    assert model(x).shape == (3, num_classes)
    out = model(x, train=True, key=jax.random.PRNGKey(0))
    assert out.shape == (3, num_classes) and out.dtype == jnp.float32
    # dropout is random in training, off in inference
    a = model(x, train=True, key=jax.random.PRNGKey(1), dropout=True)
    b = model(x, train=True, key=jax.random.PRNGKey(2), dropout=True)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(model(x), model(x))


def test_ablation_switches():
    no_bn = DelpNet(DelpNetConfig(features=TINY.features, use_batchnorm=False), rngs=nnx.Rngs(0))
    assert len(no_bn.norms) == 0 and no_bn.convs[0].use_bias
    assert not jax.tree.leaves(nnx.state(no_bn, nnx.BatchStat))
    m99 = DelpNet(DelpNetConfig(features=TINY.features, bn_momentum=0.99), rngs=nnx.Rngs(0))
    assert m99.norms[0].momentum == 0.99
    nodrop = DelpNet(DelpNetConfig(features=TINY.features, dropout_rate=0.0, head_dropout_rate=0.0),
                     rngs=nnx.Rngs(0))
    x = jnp.ones((2, 16, 16, 1))
    np.testing.assert_array_equal(nodrop(x, train=True, key=jax.random.PRNGKey(0)),
                                  nodrop(x, train=True, key=jax.random.PRNGKey(1)))


def test_bn_momentum_keras_semantics():
    cfg = DelpNetConfig(features=((2, 1, 1),), patch_size=4, dropout_rate=0.0, head_dropout_rate=0.0)
    model = DelpNet(cfg, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).random((5, 4, 4, 1)), jnp.float32)
    model(x, train=True)
    conv = np.asarray(model.convs[0].kernel[...]).reshape(1, 2)
    feat = np.asarray(x, np.float64).reshape(-1, 1) @ conv
    # Keras: running = 0.6 * running + 0.4 * batch, from running mean 0
    np.testing.assert_allclose(model.norms[0].mean[...], 0.4 * feat.mean(0), rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 10}, "num_classes"),
    ({"bn_momentum": 1.0}, "bn_momentum"),
    ({"dropout_rate": 1.0}, "dropout_rate"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DelpNetConfig(**kwargs)


def test_dropout_needs_key(tiny):
    with pytest.raises(ValueError, match="key"):
        tiny(jnp.ones((2, 16, 16, 1)), train=True)


def test_config_roundtrip():
    assert DelpNetConfig.from_dict(DelpNetConfig().to_dict()) == DelpNetConfig()


def test_classify_patches_normalises_and_batches(tiny, rng):
    raw = rng.integers(100, 4000, size=(7, 16, 16)).astype(np.uint16)
    labels, probs = classify_patches(tiny, raw, batch_size=3)
    assert labels.shape == (7,) and labels.dtype == np.int32
    assert probs.shape == (7, 12) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # oracle: the model on counts / 65535, one batch, softmax in float64
    logits = np.asarray(tiny(jnp.asarray(raw.astype(np.float64) / 65535.0, jnp.float32)[..., None]), np.float64)
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(labels, ref.argmax(1))
    # float counts give the same answer; a single (84, 84)-style 2-D patch works
    l2, p2 = classify_patches(tiny, raw.astype(np.float32))
    np.testing.assert_allclose(p2, probs, rtol=1e-5, atol=1e-7)
    l3, p3 = classify_patches(tiny, raw[0])
    assert l3.shape == (1,) and p3.shape == (1, 12)
    l0, p0 = classify_patches(tiny, np.zeros((0, 16, 16), np.uint16))
    assert l0.shape == (0,) and p0.shape == (0, 12)


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros((2, 84, 84)), ValueError, r"shape \(n, 16, 16\)"),
    (np.zeros((2, 16, 17)), ValueError, "shape"),
    (np.full((1, 16, 16), np.nan), ValueError, "NaN/Inf"),
    (np.full((1, 16, 16), np.inf, np.float32), ValueError, "NaN/Inf"),
    (np.array([["a"] * 16] * 16), TypeError, "numeric"),
])
def test_classify_patches_bad_input(tiny, bad, err, match):
    with pytest.raises(err, match=match):
        classify_patches(tiny, bad)


def test_classify_patches_bad_model_and_batch(tiny):
    with pytest.raises(TypeError, match="DelpNet"):
        classify_patches(object(), np.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match="batch_size"):
        classify_patches(tiny, np.zeros((1, 16, 16)), batch_size=0)


@pytest.mark.parametrize("use_batchnorm", [True, False])
def test_folded_inference_equals_the_module(use_batchnorm, rng, x64):
    """BN folded into the convs (what classify_patches runs) == conv -> BN -> ReLU in float64."""
    from lbdvd_jax.model import delpnet_inference, fold_batchnorm

    cfg = DelpNetConfig(features=((4, 5, 2), (6, 3, 1), (8, 3, 2)), patch_size=16,
                        use_batchnorm=use_batchnorm)
    model = DelpNet(cfg, rngs=nnx.Rngs(3))
    for norm in model.norms:  # running statistics far from (0, 1)
        c = norm.mean[...].shape[0]
        norm.mean[...] = jnp.asarray(rng.normal(0, 0.5, c), jnp.float32)
        norm.var[...] = jnp.asarray(rng.uniform(0.2, 3.0, c), jnp.float32)
        norm.scale[...] = jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)
        norm.bias[...] = jnp.asarray(rng.normal(0, 0.3, c), jnp.float32)
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state))
    x = jnp.asarray(rng.random((5, 16, 16, 1)), jnp.float64)
    ref = jax.nn.softmax(model(x), axis=-1)
    out = delpnet_inference(fold_batchnorm(model), x, strides=(2, 1, 2))
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-13)
