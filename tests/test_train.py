"""Training: presets and schedules, a short run whose loss falls, determinism, BN re-estimation, metrics."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TINY_NO_DROPOUT, toy_batch
from reference import classification_metrics_ref, top_k_ref

from lbdvd_jax import train as T
from lbdvd_jax.metrics_cls import classification_report, confusion_matrix, top_k_curve, write_report
from lbdvd_jax.model import DelpNetConfig


def test_paper_preset_is_keras_inverse_time_decay():
    cfg = T.TrainConfig(preset="paper")
    sched = T.learning_rate_schedule(cfg)
    for t in (0, 1, 1000, 200_000):
        np.testing.assert_allclose(float(sched(t)), 6e-5 / (1 + 5e-6 * t), rtol=1e-6)
    g, opt, state = T.init_state(TINY_NO_DROPOUT, cfg)
    assert isinstance(state, T.TrainState) and int(state.step) == 0


def test_fast_preset_warmup_stable_decay():
    cfg = T.TrainConfig(learning_rate=1e-3, warmup_steps=10, total_steps=100, cooldown_steps=20)
    lr = functools.partial(T.lr_at, cfg)
    np.testing.assert_allclose([lr(0), lr(9), lr(50), lr(80), lr(90), lr(100)],
                               [1e-4, 1e-3, 1e-3, 1e-3, 5e-4, 0.0], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kwargs, match", [({"preset": "sgd"}, "preset"), ({"batch_size": 1}, "batch_size")])
def test_train_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.TrainConfig(**kwargs)


def test_short_run_loss_falls_and_is_deterministic():
    cfg = T.TrainConfig(learning_rate=3e-3, warmup_steps=1, total_steps=40, cooldown_steps=1, batch_size=16)
    scale = jnp.float32(0.02)
    runs = []
    for _ in range(2):
        g, opt, state = T.init_state(TINY_NO_DROPOUT, cfg)
        step = jax.jit(functools.partial(T.train_step, g, opt))
        losses = []
        for s in range(40):
            dk, pk = T.step_keys(state.key, s)
            state, m = step(state, *toy_batch(dk, scale), pk)
            losses.append(float(m["loss"]))
        runs.append((losses, state))
    losses = runs[0][0]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert runs[0][0] == runs[1][0]  # same seed, same run
    for a, b in zip(jax.tree.leaves(runs[0][1].params), jax.tree.leaves(runs[1][1].params)):
        np.testing.assert_array_equal(a, b)


def test_reestimate_batch_stats_is_cumulative_average(rng):
    cfg = DelpNetConfig(features=((3, 1, 1),), patch_size=4, dropout_rate=0.0, head_dropout_rate=0.0)
    g, _, state = T.init_state(cfg, T.TrainConfig())
    batches = [rng.random((5, 4, 4, 1)).astype(np.float32) for _ in range(4)]
    bs = T.reestimate_batch_stats(g, state.params, state.batch_stats, batches)
    w = np.asarray(state.params["convs"][0]["kernel"][...], np.float64).reshape(1, 3)
    feats = [b.reshape(-1, 1).astype(np.float64) @ w for b in batches]
    np.testing.assert_allclose(bs["norms"][0]["mean"][...], np.mean([f.mean(0) for f in feats], 0), rtol=1e-5)
    np.testing.assert_allclose(bs["norms"][0]["var"][...], np.mean([f.var(0) for f in feats], 0), rtol=1e-4)
    # no batches: unchanged
    assert T.reestimate_batch_stats(g, state.params, state.batch_stats, []) is state.batch_stats


def test_metrics_against_loop_oracle(rng):
    y = rng.integers(0, 12, 300)
    logits = rng.normal(size=(300, 12)) + 3.0 * np.eye(12)[y] * (rng.random(300) < 0.6)[:, None]
    rep = classification_report(y, logits)
    cm, acc, p, r, f = classification_metrics_ref(y, logits.argmax(1), 12)
    np.testing.assert_array_equal(rep["confusion"], cm)
    np.testing.assert_allclose([rep["accuracy"], rep["precision"], rep["recall"], rep["f1"]], [acc, p, r, f])
    np.testing.assert_allclose(rep["top_k"], top_k_ref(y, logits))
    assert rep["top_k"][-1] == 1.0
    np.testing.assert_allclose(top_k_curve(y, logits), top_k_ref(y, logits))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(rep["loss"], -logp[np.arange(300), y].mean(), rtol=1e-10)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="y_true"):
        confusion_matrix([0, 12], [0, 1], num_classes=12)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0], num_classes=12)


def test_write_report_json_and_plots(tmp_path, rng):
    y = rng.integers(0, 12, 50)
    rep = classification_report(y, rng.normal(size=(50, 12)))
    hist = [{"step": 1, "minutes": 0.5, "val_loss": 2.0, "val_accuracy": 0.2, "train_loss": 2.2},
            {"step": 2, "minutes": 1.0, "val_loss": 1.5, "val_accuracy": 0.4, "train_loss": 1.6}]
    files = write_report(rep, tmp_path / "rep.json", history=hist)
    back = json.loads((tmp_path / "rep.json").read_text())
    assert back["accuracy"] == rep["accuracy"] and len(back["history"]) == 2
    pytest.importorskip("matplotlib")
    assert {f.name for f in files} >= {"rep.json", "rep_confusion.png", "rep_topk.png", "rep_curves.png"}


def test_evaluate_compiles_once_for_any_set_size(rng):
    """The ragged last batch is padded: sets of 20 and 27 patches at batch 8 run one program,
    and a second call builds no new jit."""
    from helpers import count_compilations
    g, _, state = T.init_state(TINY_NO_DROPOUT, T.TrainConfig(batch_size=8))
    x = rng.random((27, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 12, 27)
    full = T.evaluate(g, state.params, state.batch_stats, x[:20], y[:20], batch_size=8)
    with count_compilations() as compiled:
        again = T.evaluate(g, state.params, state.batch_stats, x, y, batch_size=8)
    assert compiled["n"] == 0
    assert full["accuracy"] >= 0 and len(again["per_class"]["recall"]) == 12
    # padding changes nothing: batches of 4 divide 20 exactly and score the same
    exact = T.evaluate(g, state.params, state.batch_stats, x[:20], y[:20], batch_size=4)
    assert exact["accuracy"] == full["accuracy"] and exact["loss"] == pytest.approx(full["loss"], rel=1e-5)
