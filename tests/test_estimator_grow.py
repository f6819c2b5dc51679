"""Growing a trained estimator (estimator_grow): wider, the same function, trainable new units."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lbdvd_jax.estimator import DefocusEstimator, EstimatorConfig
from lbdvd_jax.estimator_grow import widen_estimator, widened_config
from lbdvd_jax.model import count_params

SMALL = EstimatorConfig(conv=((4, 5, 2), (8, 3, 2)), spectral_width=8, hidden=16)


def _patches(seed=0, n=3):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.poisson(200.0, (n, 84, 84)).astype(np.float32) + 100.0)


def test_widened_config_multiplies_every_width():
    cfg = widened_config(SMALL, 2)
    assert cfg.conv == ((8, 5, 2), (16, 3, 2)) and cfg.spectral_width == 16 and cfg.hidden == 32
    assert (cfg.num_bins, cfg.patch_size, cfg.taper) == (SMALL.num_bins, SMALL.patch_size, SMALL.taper)
    with pytest.raises(ValueError, match="factor: got 0.5"):
        widened_config(SMALL, 0.5)


@pytest.mark.parametrize("config", [SMALL, dataclasses.replace(SMALL, conv=())])
def test_widened_estimator_computes_the_same_logits(config):
    """Same logits (to float32 rounding) with every width doubled; the old model untouched."""
    old = DefocusEstimator(config, rngs=nnx.Rngs(3))
    before = nnx.to_pure_dict(nnx.state(old, nnx.Param))
    x = _patches()
    grown = widen_estimator(old, widened_config(config, 2.0), seed=5)
    np.testing.assert_allclose(np.asarray(grown(x)), np.asarray(old(x)), atol=1e-5, rtol=1e-5)
    assert grown.hidden.kernel.shape == (16 + (2 * 16 if config.conv else 0), 32)
    assert count_params(grown) > 1.5 * count_params(old)
    after = nnx.to_pure_dict(nnx.state(old, nnx.Param))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), before, after)


def test_new_units_receive_gradient():
    """The zero outgoing weights of the new hidden units get a nonzero gradient, so training moves
    them (a zero-init that stayed zero would add nothing)."""
    old = DefocusEstimator(SMALL, rngs=nnx.Rngs(0))
    grown = widen_estimator(old, widened_config(SMALL, 2.0))
    graphdef, params = nnx.split(grown)
    labels = jnp.array([0, 5, 11])

    def loss(p):
        logits = nnx.merge(graphdef, p)(_patches())
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels])

    grad = nnx.to_pure_dict(jax.grad(loss)(params))
    assert np.abs(np.asarray(grad["out"]["kernel"])[SMALL.hidden:]).max() > 0


def test_widen_refuses_what_is_not_a_widening():
    old = DefocusEstimator(SMALL, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="only widths can grow"):
        widen_estimator(old, dataclasses.replace(widened_config(SMALL, 2), num_bins=24))
    with pytest.raises(ValueError, match="kernel and stride"):
        widen_estimator(old, dataclasses.replace(SMALL, conv=((4, 3, 2), (8, 3, 2))))
    with pytest.raises(ValueError, match="must each be >="):
        widen_estimator(old, dataclasses.replace(SMALL, hidden=8))
