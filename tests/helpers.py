"""Shared test fixtures that are not oracles: tiny model configurations and toy data."""

import contextlib
import dataclasses

import jax
import jax.monitoring
import jax.numpy as jnp

from lbdvd_jax.model import DelpNetConfig

#: a two-layer DelpNet on 16-px patches (dropout as in the paper's configuration)
TINY = DelpNetConfig(features=((4, 3, 2), (8, 3, 2)), patch_size=16)
#: the same without dropout (deterministic training steps)
TINY_NO_DROPOUT = dataclasses.replace(TINY, dropout_rate=0.0, head_dropout_rate=0.0)


def toy_batch(key, scale, *, batch_size=16):
    """Separable toy data: class c is a flat 16-px patch of brightness (c + 1) * scale plus noise."""
    k1, k2 = jax.random.split(key)
    y = jax.random.randint(k1, (batch_size,), 0, 12)
    x = (y[:, None, None, None] + 1.0) * scale + 0.002 * jax.random.normal(k2, (batch_size, 16, 16, 1))
    return x.astype(jnp.float32), y.astype(jnp.int32)


COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  #: jax.monitoring's XLA-compile event


@contextlib.contextmanager
def count_compilations():
    """Count XLA compilations inside the block through jax.monitoring (a public seam, as optax's
    tests do with `log_compilations`): `with count_compilations() as c: ...; c["n"]`, and the
    compiled functions' names in c["names"]."""
    box = {"n": 0, "names": []}

    def listener(event, duration_secs, **kwargs):
        if event == COMPILE_EVENT:
            box["n"] += 1
            box["names"].append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield box
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
