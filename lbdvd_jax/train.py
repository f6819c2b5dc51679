"""Training DelpNet with optax: presets, pure train/eval steps, BN re-estimation, the loop.

The training state is a `TrainState` NamedTuple pytree (step, params, batch_stats, opt_state, key,
elapsed_s); the model's structure (``nnx.GraphDef``) and the optimizer are static. Every random
number of step ``s`` comes from ``fold_in(key, s)``, so a run is a pure function of its seed and
configuration and a run resumed from an orbax checkpoint equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lbdvd_jax import checkpoint as ckpt_lib
from lbdvd_jax.metrics_cls import classification_report
from lbdvd_jax.model import DelpNet, DelpNetConfig, module_initialiser
from lbdvd_jax.train_config import PRESETS, TrainConfig, learning_rate_schedule, lr_at, make_optimizer


class TrainState(NamedTuple):
    """DelpNet's training state (a pytree; saved whole in orbax checkpoints).

    Attributes:
        step: () int32 steps taken; params / batch_stats: `nnx.State` of the parameters and of
        the BatchNorm running statistics; opt_state: the optax state; key: the run's PRNG key
        (step s draws from fold_in(key, s)); elapsed_s: () float32 training seconds so far.
    """

    step: jax.Array
    params: nnx.State
    batch_stats: nnx.State
    opt_state: optax.OptState
    key: jax.Array
    elapsed_s: jax.Array


class TrainSetup(NamedTuple):
    """`init_state`'s result."""

    graphdef: nnx.GraphDef
    optimizer: optax.GradientTransformation
    state: TrainState


class TrainResult(NamedTuple):
    """`fit`'s result: the module structure, the final state and the evaluation records."""

    graphdef: nnx.GraphDef
    state: TrainState
    history: list


@functools.lru_cache(maxsize=8)
def _optimizer_init(config: TrainConfig):
    return jax.jit(make_optimizer(config).init)


def init_state(model_config: DelpNetConfig, config: TrainConfig):
    """A fresh model and training state.

    Args:
        model_config: architecture.
        config: training configuration (its seed initialises the parameters).

    Returns:
        `TrainSetup(graphdef, optimizer, state)`: the static model structure, the optax
        transformation and the `TrainState`.
    """
    key = jax.random.PRNGKey(config.seed)
    init_key, run_key = jax.random.split(key)
    graphdef, init = module_initialiser(DelpNet, model_config, "params", nnx.Param, nnx.BatchStat)
    params, batch_stats = init(init_key)
    optimizer = make_optimizer(config)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                       opt_state=_optimizer_init(config)(params), key=run_key,
                       elapsed_s=jnp.zeros((), jnp.float32))
    return TrainSetup(graphdef, optimizer, state)


def step_keys(key: jax.Array, step) -> tuple[jax.Array, jax.Array]:
    """The (data, dropout) keys of training step ``step``: a pure function of the run key."""
    k = jax.random.fold_in(key, step)
    return tuple(jax.random.split(k))


def train_step(graphdef, optimizer, state: TrainState, x: jax.Array, y: jax.Array, dropout_key: jax.Array):
    """One optimisation step (pure; jit it with ``graphdef`` and ``optimizer`` static).

    Args:
        graphdef: static model structure from :func:`init_state`.
        optimizer: optax transformation from :func:`init_state`.
        state: `TrainState`.
        x: (B, 84, 84, 1) normalised patches.
        y: (B,) int labels.
        dropout_key: PRNG key for the dropout masks.

    Returns:
        ``(new_state, metrics)`` with ``metrics = {"loss", "accuracy", "lr"}`` scalars.
    """

    def loss_fn(params, batch_stats):
        model = nnx.merge(graphdef, params, batch_stats, copy=True)
        logits = model(x, train=True, key=dropout_key)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (logits, nnx.state(model, nnx.BatchStat))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.batch_stats
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state._replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
    return new_state, metrics


def predict_logits(graphdef, params, batch_stats, x: jax.Array) -> jax.Array:
    """Inference logits with running BN statistics and no dropout (pure; jit it)."""
    return nnx.merge(graphdef, params, batch_stats)(x, train=False)


def batch_moments(graphdef, params, batch_stats, x: jax.Array):
    """The per-layer BN batch mean and variance of ``x`` (dropout off), as a BatchStat state."""
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    for bn in model.norms:
        bn.momentum = 0.0  # running <- this batch's statistics
    model(x, train=True, dropout=False)
    return nnx.state(model, nnx.BatchStat)


def reestimate_batch_stats(graphdef, params, batch_stats, batches, *, moments_fn=None):
    """Replace the BN running statistics by their cumulative average over ``batches``.

    With the paper's momentum 0.6 the running statistics remember only the last 2-3 training
    batches, so evaluations swing by 10+ points; averaging the batch moments of many training
    batches (dropout off) gives stable statistics that match what the layers saw in training.

    Args:
        graphdef, params, batch_stats: model pieces (``batch_stats`` gives the structure).
        batches: iterable of (B, 84, 84, 1) normalised training patches.
        moments_fn: optional jitted ``batch_moments`` (default: jit a fresh one).

    Returns:
        new batch_stats (same structure); ``batch_stats`` itself if the model has no BatchNorm
        or ``batches`` is empty.
    """
    if not jax.tree.leaves(batch_stats):
        return batch_stats
    moments_fn = moments_fn or _moments_jit(graphdef)
    total, n = None, 0
    for x in batches:
        m = moments_fn(params, batch_stats, x)
        total = m if total is None else jax.tree.map(jnp.add, total, m)
        n += 1
    if n == 0:
        return batch_stats
    return jax.tree.map(lambda t: t / n, total)


def evaluate(graphdef, params, batch_stats, x, y, *, batch_size: int = 256, predict_fn=None) -> dict:
    """Classification report (accuracy, loss, macro P/R/F1, confusion, top-k) on a labelled set.

    Args:
        graphdef, params, batch_stats: model pieces.
        x: (n, 84, 84, 1) normalised patches (NumPy or JAX).
        y: (n,) int labels.
        batch_size: static; patches per forward pass.
        predict_fn: optional jitted :func:`predict_logits` partial over ``graphdef``.

    Returns:
        :func:`lbdvd_jax.metrics_cls.classification_report` dict.
    """
    predict_fn = predict_fn or _predict_jit(graphdef)
    x = np.asarray(x)
    bs = min(batch_size, len(x))
    logits = []
    for i in range(0, len(x), bs):
        chunk = x[i:i + bs]
        m = len(chunk)
        if m < bs:  # the ragged last batch padded: one compiled shape for every call
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], bs - m, axis=0)])
        logits.append(np.asarray(predict_fn(params, batch_stats, jnp.asarray(chunk)))[:m])
    return classification_report(np.asarray(y), np.concatenate(logits))


@functools.lru_cache(maxsize=8)
def _predict_jit(graphdef):
    """The jitted `predict_logits` of one architecture (bounded cache: one compile per shape)."""
    return jax.jit(functools.partial(predict_logits, graphdef))


@functools.lru_cache(maxsize=8)
def _moments_jit(graphdef):
    return jax.jit(functools.partial(batch_moments, graphdef))


@functools.lru_cache(maxsize=8)
def _images_jit(batch_fn):
    """`batch_fn`'s images, jitted: BatchNorm re-estimation draws many batches, and op by op a
    synthetic batch took ~1 s (phantoms, blur, noise) against milliseconds compiled."""
    return jax.jit(lambda key, *args: batch_fn(key, *args)[0])


_STEP_CACHE: dict = {}


def _jitted_step(graphdef, config: TrainConfig, optimizer, batch_fn):
    """The jitted data + train step, cached so that a resume in the same process does not recompile."""
    key = (graphdef, config, batch_fn)
    fn = _STEP_CACHE.get(key)
    if fn is None:

        def _step(state, *args):
            data_key, dropout_key = step_keys(state.key, state.step)
            x, y = batch_fn(data_key, *args)
            return train_step(graphdef, optimizer, state, x, y, dropout_key)

        if len(_STEP_CACHE) >= 8:
            _STEP_CACHE.clear()
        fn = _STEP_CACHE[key] = jax.jit(_step, donate_argnums=0)
    return fn


def _log(msg: str, *, stream=None) -> None:
    stream = stream or sys.stderr  # looked up per call: a redirected stderr gets the log
    stream.write(msg + "\n")
    stream.flush()


def fit(
    model_config: DelpNetConfig,
    config: TrainConfig,
    batch_fn: Callable,
    batch_args: tuple = (),
    *,
    out_dir=None,
    eval_set: tuple | None = None,
    eval_every: int | None = None,
    ckpt_every: int | None = None,
    ckpt_every_s: float | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    bn_batches: int = 50,
    log_every: int = 20,
    resume: bool = True,
    verbose: bool = True,
):
    """Train DelpNet, with orbax checkpoints, periodic evaluation and exact resume.

    Args:
        model_config: architecture.
        config: optimiser / schedule / seed.
        batch_fn: jittable ``batch_fn(key, *batch_args) -> (x (B,84,84,1) float32, y (B,) int32)``
            making a fresh training batch from a PRNG key (e.g. :func:`lbdvd_jax.data.synth_batch`
            with fields and PSFs as ``batch_args``).
        batch_args: arrays passed to ``batch_fn`` (traced, not baked into the program).
        out_dir: run directory (``ckpt/`` orbax checkpoints, ``history.json``, ``best.npz``,
            ``config.json``); None trains in memory only.
        eval_set: optional ``(x, y)`` held-out set evaluated every ``eval_every`` steps (and at
            the end) after re-estimating BN statistics over ``bn_batches`` training batches.
        eval_every: steps between evaluations (None: only at the end).
        ckpt_every: steps between checkpoints; ``ckpt_every_s`` seconds alternatively.
        max_steps: stop after this global step even if the schedule is longer (None: the
            schedule's ``total_steps``).
        max_seconds: stop after this many seconds in this call.
        bn_batches: training batches for BN re-estimation before each evaluation.
        log_every: steps between progress lines on stderr.
        resume: continue from the latest checkpoint in ``out_dir`` when there is one.
        verbose: print progress.

    Returns:
        `TrainResult(graphdef, state, history)`; ``history`` is the list of evaluation records.
    """
    graphdef, optimizer, state = init_state(model_config, config)
    out = pathlib.Path(out_dir) if out_dir is not None else None
    history: list[dict] = []
    mgr = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(
            json.dumps({"model": model_config.to_dict(), "train": config.to_dict()}, indent=1)
        )
        mgr = ckpt_lib.checkpoint_manager(out / "ckpt")
        if resume and mgr.latest_step() is not None:
            state = ckpt_lib.restore_train_state(mgr, state)
            if (out / "history.json").exists():
                history = json.loads((out / "history.json").read_text())
            if verbose:
                _log(f"resumed from step {int(state.step)} ({float(state.elapsed_s) / 60:.1f} min)")
    stop = min(max_steps if max_steps is not None else config.total_steps, config.total_steps)
    if config.preset == "paper" and max_steps is not None:
        stop = max_steps

    step_fn = _jitted_step(graphdef, config, optimizer, batch_fn)
    predict_fn = _predict_jit(graphdef)
    moments_fn = _moments_jit(graphdef)
    images_fn = _images_jit(batch_fn)
    bn_key = jax.random.fold_in(state.key, 2**31 - 1)
    best_acc = max((h["val_accuracy"] for h in history), default=-1.0)

    def _evaluate(state):
        step = int(state.step)
        keys = jax.random.split(jax.random.fold_in(bn_key, step), bn_batches)
        bs = reestimate_batch_stats(
            graphdef, state.params, state.batch_stats,
            (images_fn(k, *batch_args) for k in keys), moments_fn=moments_fn,
        )
        report = evaluate(graphdef, state.params, bs, *eval_set, predict_fn=predict_fn)
        return report, bs

    def _save(state):
        if mgr is not None:
            ckpt_lib.save_train_state(mgr, state)

    t0 = time.perf_counter()
    elapsed0 = float(state.elapsed_s)
    last_ckpt_t, last_log_t, last_log_step = t0, t0, int(state.step)
    run_loss, run_acc, run_n = 0.0, 0.0, 0
    step = int(state.step)
    while step < stop:
        state, m = step_fn(state, *batch_args)
        step += 1
        now = time.perf_counter()
        state = state._replace(elapsed_s=jnp.asarray(elapsed0 + now - t0, jnp.float32))
        if step % log_every == 0 or step == stop:
            m = jax.device_get(m)
            run_loss, run_acc, run_n = run_loss + float(m["loss"]), run_acc + float(m["accuracy"]), run_n + 1
            now = time.perf_counter()
            rate = (step - last_log_step) * config.batch_size / max(now - last_log_t, 1e-9)
            if verbose:
                lr = float(learning_rate_schedule(config)(step - 1))
                _log(f"step {step}/{stop} | {(elapsed0 + now - t0) / 60:6.1f} min | loss {float(m['loss']):.4f} "
                     f"acc {float(m['accuracy']):.3f} | lr {lr:.2e} | {rate:.0f} patches/s")
            last_log_t, last_log_step = now, step
        if eval_set is not None and ((eval_every and step % eval_every == 0) or step == stop):
            te = time.perf_counter()
            report, bs = _evaluate(state)
            rec = {
                "step": step,
                "minutes": round((elapsed0 + te - t0) / 60, 3),
                "val_loss": report["loss"],
                "val_accuracy": report["accuracy"],
                "val_within_1": report["within_1"],
                "val_f1": report["f1"],
                "train_loss": run_loss / max(run_n, 1),
                "train_accuracy": run_acc / max(run_n, 1),
                "eval_s": round(time.perf_counter() - te, 1),
            }
            run_loss, run_acc, run_n = 0.0, 0.0, 0
            history.append(rec)
            if verbose:
                _log(f"eval step {step}: val acc {rec['val_accuracy']:.4f} (±1: {rec['val_within_1']:.4f}) "
                     f"loss {rec['val_loss']:.4f} f1 {rec['val_f1']:.4f} [{rec['eval_s']} s]")
            if out is not None:
                (out / "history.json").write_text(json.dumps(history, indent=1))
                if report["accuracy"] > best_acc:
                    best_acc = report["accuracy"]
                    ckpt_lib.export_weights(out / "best.npz", model_config, state.params, bs,
                                            metadata={"step": step, "val": {k: report[k] for k in
                                                      ("accuracy", "loss", "precision", "recall", "f1", "within_1")}})
            t0 += time.perf_counter() - te  # evaluation time is not training time
            last_log_t += time.perf_counter() - te
        if mgr is not None:
            now = time.perf_counter()
            if (ckpt_every and step % ckpt_every == 0) or (ckpt_every_s and now - last_ckpt_t >= ckpt_every_s) \
                    or step == stop:
                _save(state)
                last_ckpt_t = now
        if max_seconds is not None and time.perf_counter() - t0 >= max_seconds:
            _save(state)
            break
    if mgr is not None:
        mgr.wait_until_finished()
        mgr.close()  # an open manager leaves TensorStore handles to the garbage collector
    return TrainResult(graphdef, state, history)


def model_from_state(graphdef, state: TrainState, batch_stats=None) -> DelpNet:
    """The ``DelpNet`` module of a training state (``batch_stats`` overrides the running ones)."""
    return nnx.merge(graphdef, state.params, state.batch_stats if batch_stats is None else batch_stats)


__all__ = [
    "TrainResult", "PRESETS", "TrainConfig", "TrainSetup", "TrainState", "batch_moments", "evaluate",
    "fit", "init_state", "learning_rate_schedule", "lr_at", "make_optimizer", "model_from_state",
    "predict_logits", "reestimate_batch_stats", "step_keys", "train_step",
]
