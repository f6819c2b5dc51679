"""DelpNet's optimiser and schedule: the paper's Adam with Keras decay, or a warmup-stable-decay
AdamW for CPU runs (`TrainConfig`), as pure functions of the configuration.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from lbdvd_jax.errors import InputError

__all__ = ["PRESETS", "TrainConfig", "learning_rate_schedule", "lr_at", "make_optimizer"]

PRESETS = ("paper", "fast")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule.

    Attributes:
        preset: ``"paper"`` (Adam, lr 6e-5 with Keras inverse-time decay 5e-6 per step:
            ``lr / (1 + 5e-6 * step)``, eps 1e-7) or ``"fast"`` (AdamW with linear warmup, constant
            peak, linear cooldown to 0 over the last ``cooldown_steps`` of ``total_steps``: the
            warmup-stable-decay schedule, which lets a CPU run be extended before its cooldown).
        learning_rate: peak (fast) or initial (paper) learning rate; None takes the preset's
            (6e-5 paper, 1e-3 fast).
        decay: Keras-style inverse-time decay per step (paper preset).
        warmup_steps, total_steps, cooldown_steps: fast preset schedule, in steps.
        weight_decay: decoupled weight decay (fast preset).
        clip_norm: global gradient-norm clip (fast preset; None disables).
        batch_size: patches per step (128 in the paper).
        seed: seeds initialisation, data and dropout.
    """

    preset: str = "fast"
    learning_rate: float | None = None
    decay: float = 5e-6
    warmup_steps: int = 300
    total_steps: int = 10_000
    cooldown_steps: int = 2_000
    weight_decay: float = 1e-4
    clip_norm: float | None = 1.0
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise InputError(f"preset must be one of {PRESETS}, got {self.preset!r}.")
        if self.batch_size < 2:
            raise InputError(f"batch_size must be >= 2 (BatchNorm needs a batch), got {self.batch_size!r}.")

    @property
    def peak_lr(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return 6e-5 if self.preset == "paper" else 1e-3

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """The step -> learning-rate function of ``config`` (see :class:`TrainConfig`)."""
    lr = config.peak_lr
    if config.preset == "paper":
        decay = config.decay

        def keras_decay(step):  # Keras (<= 2.2) Adam "decay": lr / (1 + decay * iterations)
            return lr / (1.0 + decay * jnp.asarray(step, jnp.float32))

        return keras_decay
    warm, total, cool = config.warmup_steps, config.total_steps, config.cooldown_steps

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        w = jnp.minimum(1.0, (step + 1.0) / max(warm, 1))
        c = jnp.clip((total - step) / max(cool, 1), 0.0, 1.0)
        return lr * w * c

    return schedule


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The optax optimizer of ``config``: Adam (paper) or clipped AdamW (fast)."""
    schedule = learning_rate_schedule(config)
    if config.preset == "paper":
        return optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-7)  # Keras Adam defaults
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    if config.clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
    return tx


def lr_at(config: TrainConfig, step: int) -> float:
    """The learning rate at ``step`` (for logs and plots)."""
    return float(learning_rate_schedule(config)(step))
