"""Training the defocus estimator: configuration, ordinal loss, resumable loop.

Batches come from `estimator_batches` (synthetic defocus of real in-focus fields at a random
gain, levels or continuous depths with soft targets; its names are re-exported here).

Loss: cross-entropy over the 12 classes plus `rps_weight` x the ranked probability score over
the 11 ordered levels (non-bg patches), which charges a call by how far it lands from the true
level (Yang et al. 2018). The state is an `EstimatorTrainState` pytree; step s draws its data from
fold_in(key, s), so a run resumed from an orbax checkpoint equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lbdvd_jax import checkpoint as ckpt_lib
from lbdvd_jax.constants import NUM_CLASSES, NUM_LEVELS, PATCH_SIZE
from lbdvd_jax.errors import InputError
from lbdvd_jax.estimator import DefocusEstimator, EstimatorConfig, estimator_logits
from lbdvd_jax.estimator_batches import (
    BEYOND_Z_UM,
    CONTINUOUS_Z_UM,
    mixed_fields,
    soft_level_targets,
    training_batch,
    training_batch_targets,
    training_psfs,
)
from lbdvd_jax.estimator_weights import export_estimator
from lbdvd_jax.metrics_cls import classification_report
from lbdvd_jax.model import module_initialiser
from lbdvd_jax.optics import Optics

__all__ = [
    "BEYOND_Z_UM", "CONTINUOUS_Z_UM", "EstimatorSetup", "EstimatorTrainConfig", "EstimatorTrainState",
    "fit_estimator", "init_train_state", "make_train_step", "mixed_fields", "ordinal_loss",
    "ranked_probability_score", "soft_level_targets", "training_batch", "training_batch_targets", "training_psfs",
]


@dataclasses.dataclass(frozen=True)
class EstimatorTrainConfig:
    """Data, loss, optimiser and schedule of an estimator run.

    Attributes:
        batch_size: patches per step.
        learning_rate: AdamW peak; warmup_steps linear warm-up; total_steps / cooldown_steps
            the warmup-stable-decay schedule (a run can be extended before its cool-down).
        weight_decay: decoupled weight decay.
        rps_weight: weight of the ranked probability score (0 = cross-entropy only).
        gain_range: log-uniform global gain applied after the camera (1/16 = 8-bit files).
        round_fraction: share of patches rounded to integers after the gain.
        scale_range: signal scale above the offset (photon budget), log-uniform.
        beyond_fraction: share of level-10 patches drawn from `BEYOND_Z_UM`.
        phantom_fraction: share of procedural phantoms (`phantoms.py`).
        zoom_fraction: share of level-0 patches shown as by a microscope with finer pixels: the
            centre 84/s px magnified s x (log-uniform in `zoom_range`) and fresh camera noise
            added at the new pixels; still level 0 (in focus is in focus at any sampling).
        window: side of the training window (>= 84): the spectral branch reads the whole
            window, the pixel branch and the bg rule its centre 84 px (context for whole images).
        patch_fraction: with window > 84, the share of steps trained on isolated 84-px patches
            (every round(1 / patch_fraction)-th step), so that one model judges both whole images
            (windows) and the paper's isolated patches.
        continuous_fraction: share of the level patches blurred at a *continuous* depth (uniform
            on `CONTINUOUS_Z_UM`, 0..20 µm by 0.25 µm) instead of at a level, with a soft target
            split linearly between the two neighbouring levels (z = 9 µm: half level 4, half
            level 5). Trained on levels only, the estimator snaps an off-grid depth to one level
            (its expected z staircases, up to ±0.9 µm off between levels); soft targets make
            the expected z a continuous estimate (`defocus="continuous"`).
        continuous_draw: how those depths are drawn: 'uniform' on 0..20 µm, or 'jitter': the
            patch's drawn level ± 1 µm (uniform), kept within 2..20 µm, level 0 left exact, so
            that the share of each level, and of the in-focus patches that `zoom_fraction`
            magnifies, stays what it is without continuous depths.
        mix_sources: draw half of the windows from *mixed fields*: a training field plus another
            one, flipped, above the camera offset (`mixed_fields`). Fluorescence adds, so the sum
            of two specimens is a specimen (denser, brighter, new object arrangements) whose
            camera noise stays Poisson at the right level: more object variety from few fields.
        object_zoom_range: None, or (lo, hi): each training field magnified s x about its
            centre before the blur, s log-uniform in [lo, hi] per field and step (bilinear, mirrored
            at the borders), and camera noise added back where interpolation averaged it away, so
            that objects of other sizes (cell lines, magnifications) are seen at every level: a
            field's objects 1.25x larger were read about 0.2-0.7 µm deeper by stage 4.
        paper_fraction: share of steps on the paper's data (`paper_data`: calibrated 16-bit
            counts, exact levels; every round(1 / paper_fraction)-th step), so that the wide
            augmentation does not dilute the calibrated camera's case.
        noise_spectrum: 'white' (default, as the paper: fresh white noise tops the variance up and
            the field's own blurred noise stays, with excess low-frequency power) or 'matched'
            (`data.synth_batch`: the total as flat as real camera noise).
        seed: initialisation and data.
    """

    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    total_steps: int = 20_000
    cooldown_steps: int = 3_000
    weight_decay: float = 1e-4
    rps_weight: float = 1.0
    gain_range: tuple[float, float] = (1.0 / 24.0, 1.0)
    round_fraction: float = 0.5
    scale_range: tuple[float, float] = (0.3, 3.0)
    beyond_fraction: float = 0.3
    phantom_fraction: float = 0.1
    zoom_fraction: float = 0.0
    zoom_range: tuple[float, float] = (1.0, 4.0)
    window: int = PATCH_SIZE
    patch_fraction: float = 0.0
    continuous_fraction: float = 0.0
    continuous_draw: str = "uniform"
    mix_sources: bool = False
    object_zoom_range: tuple[float, float] | None = None
    paper_fraction: float = 0.0
    noise_spectrum: str = "white"
    seed: int = 0

    def __post_init__(self):
        if self.window < PATCH_SIZE or (self.window - PATCH_SIZE) % 2:
            raise InputError(f"window: got {self.window!r}, expected {PATCH_SIZE} plus an even number of px")
        if not 0.0 <= self.continuous_fraction <= 1.0:
            raise InputError(f"continuous_fraction: got {self.continuous_fraction!r}, expected a share in [0, 1]")
        if self.continuous_draw not in ("uniform", "jitter"):
            raise InputError(f"continuous_draw: got {self.continuous_draw!r}, expected 'uniform' or 'jitter'")
        if self.object_zoom_range is not None and not 0 < self.object_zoom_range[0] <= self.object_zoom_range[1]:
            raise InputError(f"object_zoom_range: got {self.object_zoom_range!r}, expected (lo, hi), 0 < lo <= hi")
        if not 0.0 <= self.patch_fraction <= 1.0:
            raise InputError(f"patch_fraction: got {self.patch_fraction!r}, expected a share in [0, 1]")
        if self.noise_spectrum not in ("white", "matched"):
            raise InputError(f"noise_spectrum: got {self.noise_spectrum!r}, expected 'white' or 'matched'")
        if not 0.0 <= self.paper_fraction <= 1.0:
            raise InputError(f"paper_fraction: got {self.paper_fraction!r}, expected a share in [0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def paper_data(config: EstimatorTrainConfig) -> EstimatorTrainConfig:
    """`config` on the paper's data only: 16-bit counts at the calibrated camera, photon budgets
    0.5-2x, exact levels (no gain or rounding, depths beyond 20 µm, phantoms, continuous depths,
    magnified patches, object zoom or mixed fields)."""
    return dataclasses.replace(config, gain_range=(1.0, 1.0), round_fraction=0.0, scale_range=(0.5, 2.0),
                               beyond_fraction=0.0, phantom_fraction=0.0, continuous_fraction=0.0,
                               zoom_fraction=0.0, object_zoom_range=None, mix_sources=False, paper_fraction=0.0)


def ranked_probability_score(probs, labels):
    """Ranked probability score over ordered classes: Σ_k (CDF_p(k) - CDF_q(k))² / (K - 1).

    Args:
        probs: (n, K) probabilities of K ordered classes.
        labels: (n,) int true class in 0..K-1 (CDF_q(k) = [k >= y]), or (n, K) target
            distributions (soft labels; normalised here).

    Returns:
        (n,) scores in [0, 1]; 0 for a one-hot hit, growing with the distance of the mass.
    """
    k = probs.shape[-1]
    q = jax.nn.one_hot(labels, k, dtype=probs.dtype) if labels.ndim == 1 else labels
    cdf_q = jnp.cumsum(q, axis=-1)[..., :-1] / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), 1e-12)
    return jnp.sum(jnp.square(jnp.cumsum(probs, axis=-1)[..., :-1] - cdf_q), axis=-1) / (k - 1)


def ordinal_loss(logits, labels, *, rps_weight=1.0):
    """Cross-entropy over the 12 classes + rps_weight x RPS over the 11 levels (non-bg only).

    Args:
        logits: (n, 12).
        labels: (n,) int classes, or (n, 12) target distributions (soft labels: a continuous
            depth split between two levels, `soft_level_targets`); then the cross-entropy is
            against the distribution and the RPS against its CDF over the levels.

    Returns:
        scalar mean loss.
    """
    targets = jax.nn.one_hot(labels, NUM_CLASSES) if labels.ndim == 1 else labels
    ce = optax.softmax_cross_entropy(logits, targets)
    if not rps_weight:
        return jnp.mean(ce)
    p = jax.nn.softmax(logits[:, :NUM_LEVELS], axis=-1)  # level distribution, bg removed
    q = targets[:, :NUM_LEVELS]
    is_level = jnp.sum(q, axis=-1) > 0.5  # bg targets carry no level mass
    rps = ranked_probability_score(p, q)
    return jnp.mean(ce) + rps_weight * jnp.sum(jnp.where(is_level, rps, 0.0)) / jnp.maximum(jnp.sum(is_level), 1)


def _schedule(c: EstimatorTrainConfig):
    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        w = jnp.minimum(1.0, (step + 1.0) / max(c.warmup_steps, 1))
        d = jnp.clip((c.total_steps - step) / max(c.cooldown_steps, 1), 0.0, 1.0)
        return c.learning_rate * w * d
    return lr


def _optimizer(c: EstimatorTrainConfig):
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(_schedule(c), weight_decay=c.weight_decay))


def _log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class EstimatorTrainState(NamedTuple):
    """The estimator's training state (a pytree; saved whole in orbax checkpoints).

    Attributes:
        step: () int32 steps taken; params: `nnx.State` of the estimator; opt_state: AdamW
        state; key: raw run key data (step s draws from fold_in(key, s)); elapsed_s / cpu_s:
        () float32 wall and process-CPU seconds of training so far.
    """

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    key: jax.Array
    elapsed_s: jax.Array
    cpu_s: jax.Array


class EstimatorSetup(NamedTuple):
    """`init_train_state`'s result: the static module structure and the initial state."""

    graphdef: nnx.GraphDef
    state: EstimatorTrainState


@functools.lru_cache(maxsize=8)
def _optimizer_init(config: EstimatorTrainConfig):
    return jax.jit(_optimizer(config).init)


def init_train_state(model_config: EstimatorConfig, config: EstimatorTrainConfig, *, init=None):
    """`EstimatorSetup(graphdef, state)`: a fresh estimator and its `EstimatorTrainState`, seeded
    by `config.seed`; `init` (a `DefocusEstimator`
    of the same architecture) starts from its parameters instead (fine-tuning)."""
    graphdef, initialise = module_initialiser(DefocusEstimator, model_config, "default")
    if init is None:
        params = initialise(jax.random.key(config.seed))
    else:
        if dataclasses.replace(init.config, window=model_config.window) != model_config:
            raise InputError(f"init: architecture {init.config} differs from model_config {model_config}")
        params = nnx.split(init)[1]
    state = EstimatorTrainState(step=jnp.zeros((), jnp.int32), params=params,
                                opt_state=_optimizer_init(config)(params),
                                key=jax.random.key_data(jax.random.key(config.seed + 1)),
                                elapsed_s=jnp.zeros((), jnp.float32), cpu_s=jnp.zeros((), jnp.float32))
    return EstimatorSetup(graphdef, state)


@functools.lru_cache(maxsize=8)
def make_train_step(graphdef, config: EstimatorTrainConfig):
    """The jitted step `(state, fields, psfs) -> (state, loss, accuracy)`: a fresh batch from
    fold_in(key, step), the ordinal loss, one AdamW update. Fields and PSFs are arguments, not
    constants baked into the program. One per (architecture, configuration): a resumed run in
    the same process reuses the compiled step."""
    tx = _optimizer(config)

    @jax.jit
    def step_fn(state, fields, psfs):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        x, targets = training_batch_targets(key, fields, psfs, config=config)
        y = jnp.argmax(targets, axis=-1)

        def loss_fn(p):
            logits = estimator_logits(graphdef, p, x)
            return ordinal_loss(logits, targets, rps_weight=config.rps_weight), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = state._replace(step=state.step + 1, opt_state=opt_state,
                             params=optax.apply_updates(state.params, updates))
        return new, loss, jnp.mean(jnp.argmax(logits, -1) == y)

    return step_fn


@functools.lru_cache(maxsize=8)
def _predict_fn(graphdef):
    return jax.jit(lambda p, x: jax.nn.softmax(estimator_logits(graphdef, p, x)))


def fit_estimator(model_config: EstimatorConfig, config: EstimatorTrainConfig, fields, *,
                  out_dir, eval_sets: dict, eval_every: int = 250, ckpt_every_s: float = 120.0,
                  max_seconds: float | None = None, max_steps: int | None = None,
                  optics=Optics(), log_every: int = 50, init=None):
    """Train (or resume) an estimator run in `out_dir`; evaluate and export the best on 'val'.

    Args:
        model_config, config: architecture and training configuration.
        fields: (F, H, W) in-focus training fields in counts.
        out_dir: run folder: `ckpt/` (orbax, full state), `history.json` (learning curve with
            wall and process-CPU minutes), `best.npz` (best 'val' accuracy, parameters only).
        eval_sets: name -> (counts (n, 84, 84), labels (n,)); 'val' chooses the model, the
            others (test fields) are recorded only.
        eval_every: steps between evaluations; ckpt_every_s seconds between checkpoints.
        max_seconds, max_steps: stop early (the state is checkpointed).
        init: optional `DefocusEstimator` to start from (ignored when resuming).

    Returns:
        the history list.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"model": model_config.to_dict(),
                                                 "train": config.to_dict()}, indent=1))
    graphdef, state = init_train_state(model_config, config, init=init)
    history = []
    with ckpt_lib.checkpoint_manager(out / "ckpt") as mgr:
        if mgr.latest_step() is not None:
            state = ckpt_lib.restore_train_state(mgr, state)
            if (out / "history.json").exists():
                history = json.loads((out / "history.json").read_text())
            _log(f"resumed from step {int(state.step)}")
        fields = jnp.asarray(fields, jnp.float32)
        psfs = training_psfs(optics, continuous=config.continuous_fraction > 0)

        every = round(1.0 / config.patch_fraction) if config.patch_fraction > 0 else 0
        if config.window == PATCH_SIZE:
            every = 0
        paper_every = round(1.0 / config.paper_fraction) if config.paper_fraction > 0 else 0
        steps = {}  # (isolated patches?, paper's data?) -> compiled step, each compiled when first used

        def step_for(step):
            kind = (bool(every) and step % every == every - 1, bool(paper_every) and step % paper_every == 0)
            if kind not in steps:
                cfg = dataclasses.replace(config, window=PATCH_SIZE) if kind[0] else config
                steps[kind] = make_train_step(graphdef, paper_data(cfg) if kind[1] else cfg)
            return steps[kind]

        predict = _predict_fn(graphdef)

        def evaluate(params):
            rec = {}
            for name, (x, y) in eval_sets.items():
                probs = np.concatenate([np.asarray(predict(params, jnp.asarray(x[i:i + 256])))
                                        for i in range(0, len(x), 256)])
                rep = classification_report(np.asarray(y), np.log(np.maximum(probs, 1e-30)))
                rec[name] = {k: rep[k] for k in ("accuracy", "within_1", "f1")}
                rec[name]["recall"] = rep["per_class"]["recall"] if "per_class" in rep else None
            return rec

        stop = min(config.total_steps, max_steps or config.total_steps)
        best = max((h["val"]["accuracy"] for h in history), default=-1.0)
        t0, c0 = time.perf_counter(), time.process_time()
        e0, cpu0 = float(state.elapsed_s), float(state.cpu_s)
        last_ckpt = t0
        step = int(state.step)

        def record(step):
            rec = {"step": step, "minutes": float(state.elapsed_s) / 60,
                   "cpu_minutes": float(state.cpu_s) / 60,
                   "patches": step * config.batch_size, **evaluate(state.params)}
            history.append(rec)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            _log("eval " + json.dumps({k: (v["accuracy"] if isinstance(v, dict) else v)
                                       for k, v in rec.items()}))
            return rec

        if eval_sets and not history:
            record(step)  # the learning curve starts at the initial (or fine-tuned-from) model
        while step < stop:
            state, loss, acc = step_for(step)(state, fields, psfs)
            step += 1
            state = state._replace(elapsed_s=jnp.asarray(e0 + time.perf_counter() - t0, jnp.float32),
                                   cpu_s=jnp.asarray(cpu0 + time.process_time() - c0, jnp.float32))
            if step % log_every == 0:
                _log(f"step {step}/{stop} {float(state.elapsed_s) / 60:6.1f} min "
                     f"loss {float(loss):.4f} acc {float(acc):.3f}")
            if eval_sets and (step % eval_every == 0 or step == stop):
                rec = record(step)
                if rec.get("val", {"accuracy": -1.0})["accuracy"] > best:
                    best = rec["val"]["accuracy"]
                    export_estimator(out / "best.npz", model_config, state.params,
                                     metadata={"step": step, "train": config.to_dict(),
                                               **{k: v for k, v in rec.items() if k != "step"}})
            now = time.perf_counter()
            if now - last_ckpt >= ckpt_every_s or step == stop or (
                    max_seconds is not None and now - t0 >= max_seconds):
                ckpt_lib.save_train_state(mgr, state)
                mgr.wait_until_finished()
                last_ckpt = now
                if max_seconds is not None and now - t0 >= max_seconds:
                    break
    return history
