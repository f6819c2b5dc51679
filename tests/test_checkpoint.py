"""Checkpoints: exact resume, save -> restore identical logits, shipped weights, bad files."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY
from helpers import toy_batch as toy_batch16

from lbdvd_jax import checkpoint as C
from lbdvd_jax import train as T
from lbdvd_jax.model import DelpNetConfig, classify_patches

toy_batch = functools.partial(toy_batch16, batch_size=8)


CFG = T.TrainConfig(learning_rate=3e-3, warmup_steps=2, total_steps=6, cooldown_steps=3, batch_size=8)
ONE = DelpNetConfig(features=((4, 3, 2),), patch_size=16)  # smallest model: three compiles below


def _assert_trees_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    args = (jnp.float32(0.02),)
    kw = dict(log_every=100, verbose=False)  # checkpoints at the stops only: orbax saves are slow
    result = T.fit(ONE, CFG, toy_batch, args, out_dir=tmp_path / "full", **kw)
    assert isinstance(result, T.TrainResult) and isinstance(result.state, T.TrainState)
    full = result.state
    # interrupted after 3 steps (checkpoint at the stop), then resumed by a fresh call
    _, part, _ = T.fit(ONE, CFG, toy_batch, args, out_dir=tmp_path / "cut", max_steps=3, **kw)
    assert int(part.step) == 3
    _, resumed, _ = T.fit(ONE, CFG, toy_batch, args, out_dir=tmp_path / "cut", **kw)
    assert int(resumed.step) == int(full.step) == 6
    for k in ("step", "params", "batch_stats", "opt_state", "key"):
        _assert_trees_equal(getattr(resumed, k), getattr(full, k))
    # older checkpoints are kept and restorable by step; missing ones are named
    g, _, like = T.init_state(ONE, CFG)
    with C.checkpoint_manager(tmp_path / "cut" / "ckpt") as mgr:
        assert sorted(mgr.all_steps()) == [3, 6]
        assert int(C.restore_train_state(mgr, like, step=3).step) == 3
        with pytest.raises(FileNotFoundError, match="available steps"):
            C.restore_train_state(mgr, like, step=2)


def test_export_load_identical_logits(tmp_path, rng):
    g, _, state = T.init_state(TINY, CFG)
    # make the BN statistics non-trivial
    bs = jax.tree.map(lambda v: v + 0.1, state.batch_stats)
    path = C.export_weights(tmp_path / "w.npz", TINY, state.params, bs, metadata={"note": "t"})
    model = C.load_delpnet(path)
    x = jnp.asarray(rng.random((4, 16, 16, 1)), jnp.float32)
    ref = T.predict_logits(g, state.params, bs, x)
    np.testing.assert_array_equal(model(x), ref)
    assert C.read_weights(path)[2] == {"note": "t"}
    assert model.config == TINY
    labels, probs = classify_patches(model, np.asarray(x[..., 0]) * 65535)
    assert probs.shape == (4, 12)
    # a run directory resolves to its best.npz
    (tmp_path / "run").mkdir()
    C.export_weights(tmp_path / "run" / "best.npz", TINY, state.params, bs)
    np.testing.assert_array_equal(C.load_delpnet(tmp_path / "run")(x), ref)


def test_shipped_weights_load_offline():
    if not C.SHIPPED_WEIGHTS.exists():
        pytest.skip("no shipped weights yet")
    model = C.load_delpnet(C.PAPER_DELPNET)
    assert C.SHIPPED_WEIGHTS.stat().st_size < 15e6
    labels, probs = classify_patches(model, np.full((2, 84, 84), 110, np.uint16))
    assert probs.shape == (2, model.config.num_classes)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        C.load_delpnet(tmp_path / "missing.npz")
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="corrupt"):
        C.load_delpnet(bad)
    g, _, state = T.init_state(TINY, CFG)
    good = C.export_weights(tmp_path / "good.npz", TINY, state.params, state.batch_stats)
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        C.load_delpnet(trunc)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="architecture record"):
        C.load_delpnet(plain)


def test_other_architecture(tmp_path):
    g, _, state = T.init_state(TINY, CFG)
    path = C.export_weights(tmp_path / "w.npz", TINY, state.params, state.batch_stats)
    with pytest.raises(ValueError, match="another DelpNet architecture"):
        C.load_delpnet(path, config=DelpNetConfig())
    # arrays of one architecture under the record of another
    other = DelpNetConfig(features=((4, 3, 2), (6, 3, 2)), patch_size=16)
    forged = C.export_weights(tmp_path / "forged.npz", other, state.params, state.batch_stats)
    with pytest.raises(ValueError, match="another architecture"):
        C.load_delpnet(forged)
    # an orbax training checkpoint of another model cannot be resumed into this one
    _, _, like = T.init_state(other, CFG)
    with C.checkpoint_manager(tmp_path / "ckpt") as mgr:
        C.save_train_state(mgr, state)
        mgr.wait_until_finished()
        with pytest.raises(ValueError, match="does not match"):
            C.restore_train_state(mgr, like)
    with C.checkpoint_manager(tmp_path / "empty") as empty, pytest.raises(FileNotFoundError, match="no checkpoint"):
        C.restore_train_state(empty, like)
