"""Growing a trained defocus estimator: wider layers that start as the same function.

Training from scratch on this CPU costs hours that a fine-tune does not, so capacity is added to
a trained estimator instead (the Net2Net idea, Chen et al. 2016, in its zero-init form): each
layer of the pixel branch, the spectral dense layer and the hidden layer get more units; every
new unit has freshly initialised incoming weights and *zero outgoing weights*, and every new
input of an old unit has zero weight, so the grown model computes exactly the old logits until
training moves the new weights (the gradient of a zero outgoing weight is the new unit's
activation times the upstream gradient, not zero, so they do move).

References:
    T. Chen, I. Goodfellow, J. Shlens, "Net2Net: accelerating learning via knowledge transfer",
    ICLR 2016.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from lbdvd_jax.errors import InputError
from lbdvd_jax.estimator import DefocusEstimator, EstimatorConfig

__all__ = ["widen_estimator", "widened_config"]


def widened_config(config: EstimatorConfig, factor: float) -> EstimatorConfig:
    """`config` with every conv width, `spectral_width` and `hidden` times `factor` (rounded)."""
    if not factor >= 1:
        raise InputError(f"factor: got {factor!r}, expected >= 1 (e.g. 2: twice the units)")
    grow = lambda n: int(round(n * factor))  # noqa: E731
    return dataclasses.replace(config, conv=tuple((grow(c), k, s) for c, k, s in config.conv),
                               spectral_width=grow(config.spectral_width), hidden=grow(config.hidden))


def _check_growable(old: EstimatorConfig, new: EstimatorConfig):
    same = ("num_bins", "patch_size", "taper")
    for name in same:
        if getattr(old, name) != getattr(new, name):
            raise InputError(f"config: {name} {getattr(new, name)!r} differs from the model's "
                             f"{getattr(old, name)!r}; only widths can grow")
    if [(k, s) for _, k, s in old.conv] != [(k, s) for _, k, s in new.conv]:
        raise InputError(f"config: conv layers {new.conv} do not match the model's {old.conv} in number, "
                         "kernel and stride; only the widths can grow")
    if any(c_new < c_old for (c_new, _, _), (c_old, _, _) in zip(new.conv, old.conv)) or \
            new.spectral_width < old.spectral_width or new.hidden < old.hidden:
        raise InputError(f"config: widths {new.conv}, spectral_width {new.spectral_width}, hidden {new.hidden} "
                         f"must each be >= the model's ({old.conv}, {old.spectral_width}, {old.hidden})")


def widen_estimator(model: DefocusEstimator, config: EstimatorConfig, *, seed: int = 0) -> DefocusEstimator:
    """A `DefocusEstimator` of the wider `config` that gives the same logits as `model`.

    Args:
        model: a trained `DefocusEstimator`.
        config: the grown architecture (`widened_config(model.config, 2)`, say): the same
            layers, kernels, strides, bins and patch size, each width >= the model's; its
            `window` is taken as given.
        seed: initialisation of the new units' incoming weights (keyword-only).

    Returns:
        The grown estimator (a new module; `model` is not changed).

    Raises:
        ValueError: `config` is not a widening of `model.config` (named, with what differs).
    """
    old_cfg = model.config
    _check_growable(old_cfg, config)
    old = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    grown = DefocusEstimator(config, rngs=nnx.Rngs(seed))
    state = nnx.state(grown, nnx.Param)
    new = nnx.to_pure_dict(state)
    a = lambda tree, *keys: np.array(_get(tree, keys))  # noqa: E731

    s_old, s_new = old_cfg.spectral_width, config.spectral_width
    kern = a(new, "spec_dense", "kernel")
    kern[:, :s_old] = a(old, "spec_dense", "kernel")
    bias = a(new, "spec_dense", "bias")
    bias[:s_old] = a(old, "spec_dense", "bias")
    _set(new, ("spec_dense", "kernel"), kern)
    _set(new, ("spec_dense", "bias"), bias)
    for name in ("scale", "bias"):
        _set(new, ("spec_norm", name), a(old, "spec_norm", name))

    c_in_old = c_in_new = 1
    for i, ((c_old, _, _), (c_new, _, _)) in enumerate(zip(old_cfg.conv, config.conv)):
        kern = a(new, "convs", i, "kernel")
        kern[:, :, :c_in_old, :c_old] = a(old, "convs", i, "kernel")
        kern[:, :, c_in_old:, :c_old] = 0.0  # new inputs leave the old units unchanged
        bias = a(new, "convs", i, "bias")
        bias[:c_old] = a(old, "convs", i, "bias")
        _set(new, ("convs", i, "kernel"), kern)
        _set(new, ("convs", i, "bias"), bias)
        c_in_old, c_in_new = c_old, c_new

    # the hidden layer reads [spectral (s), max-pooled (c), mean-pooled (c)]
    h_old = old_cfg.hidden
    rows_old = [np.arange(s_old)]
    rows_new = [np.arange(s_old)]
    if old_cfg.conv:
        rows_old += [s_old + np.arange(c_in_old), s_old + c_in_old + np.arange(c_in_old)]
        rows_new += [s_new + np.arange(c_in_old), s_new + c_in_new + np.arange(c_in_old)]
    rows_old, rows_new = np.concatenate(rows_old), np.concatenate(rows_new)
    kern = a(new, "hidden", "kernel")
    kern[:, :h_old] = 0.0  # new inputs leave the old hidden units unchanged
    kern[rows_new, :h_old] = a(old, "hidden", "kernel")[rows_old]
    bias = a(new, "hidden", "bias")
    bias[:h_old] = a(old, "hidden", "bias")
    _set(new, ("hidden", "kernel"), kern)
    _set(new, ("hidden", "bias"), bias)

    kern = a(new, "out", "kernel")
    kern[:h_old] = a(old, "out", "kernel")
    kern[h_old:] = 0.0  # new hidden units start silent
    _set(new, ("out", "kernel"), kern)
    _set(new, ("out", "bias"), a(old, "out", "bias"))

    nnx.replace_by_pure_dict(state, new)
    nnx.update(grown, state)
    return grown


def _get(tree, keys):
    for k in keys:
        tree = tree[k]
    return tree


def _set(tree, keys, value):
    for k in keys[:-1]:
        tree = tree[k]
    tree[keys[-1]] = value
