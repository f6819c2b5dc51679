"""Pooling of defocus evidence between the patches of one image.

A real specimen's depth varies smoothly across the field (a tilted coverslip, an undulating
surface: the paper's Sec. 2.3), while one 84-px patch holds too little of the OTF to tell
18 from 20 µm (their first OTF zeros are less than half a frequency bin apart). So each
non-bg patch's level distribution is replaced by the certainty-weighted geometric mean of its
own and its 3x3 neighbours' (`pool_neighbours`: Gaussian spatial weights, σ = 1 grid step;
certainty 1 - H(p)/log 11 as Yang et al. 2018 weight patches): for a plane or a uniform blur
the neighbours average out to the centre's depth with nine times the evidence. Then (the
default, `pool='surface'`) a smooth depth surface is fitted over the field to each patch's own
most probable depth (`own_depth_surface`, certainty-weighted, robust) and each patch's level
probabilities are multiplied by a Gaussian prior around the surface's depth at the patch
(`surface_prior`, σ = `SURFACE_PRIOR_UM`, half a level step): a patch follows the field's depth
unless its own evidence is strong, and a misread patch among correct ones is repaired from
further than its 3x3 neighbours. Where the surface does not explain the patches
(`surface_agreement` below `SURFACE_AGREEMENT`) the prior is skipped. `pool='neighbours'` stops
after the 3x3 pooling (for specimens whose depth is not smooth over the field). The choice of
σ and of the gate is replayed by `examples/pooling_choice.py`.

References:
    S. J. Yang et al., BMC Bioinformatics 19:77 (2018): certainty-weighted patch pooling.
"""

from __future__ import annotations

import numpy as np

from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM, NUM_LEVELS, PATCH_SIZE
from lbdvd_jax.errors import InputError

__all__ = ["POOL_MODES", "SURFACE_AGREEMENT", "SURFACE_PRIOR_UM", "certainty", "own_depth_surface", "pool_mode",
           "pool_neighbours", "surface_agreement", "surface_prior"]

#: the ways of pooling evidence between patches (`pool=True` is 'surface'; False: none)
POOL_MODES = ("surface", "neighbours")
#: σ (µm) of the depth-surface prior on the level probabilities: half a level step. Chosen on the
#: validation field a01 (whole-field level calls, uniform / tilted / curved depths;
#: examples/pooling_choice.py, shipped estimator): 95.6 % against 95.5 % for 0.5 µm, 93.1 % for
#: 2 µm, 89.0 % for the 3x3 pooling alone.
SURFACE_PRIOR_UM = 1.0
#: the surface prior applies only where the surface agrees, within one level (2 µm), with the
#: own depths of at least this certainty-weighted share of the patches: a field the estimator
#: reads as two depths (e.g. sharp nuclei of another microscope, part read as 0 µm and part as
#: 20 µm: 35 % agree) keeps the 3x3 pooling, where a smooth field agrees at 79-100 %
#: (examples/pooling_choice.py).
SURFACE_AGREEMENT = 0.5


def certainty(levels):
    """1 - H(p)/log 11 of (..., 11) level probabilities (renormalised): 1 sure, 0 uniform."""
    p = levels / np.maximum(levels.sum(-1, keepdims=True), 1e-30)
    h = -np.sum(p * np.log(np.maximum(p, 1e-30)), axis=-1)
    return 1.0 - h / np.log(NUM_LEVELS)


def pool_neighbours(probs, *, sigma: float = 1.0, radius: int = 1):
    """Certainty-weighted geometric mean of level distributions over grid neighbours.

    Args:
        probs: (rows, cols, 12) per-patch probabilities (levels 0..10, bg).
        sigma: Gaussian spatial weight in grid steps (keyword-only).
        radius: neighbourhood half-width in grid steps (1 = 3x3).

    Returns:
        (rows, cols, 12) float32: each patch keeps its own bg probability; its level
        probabilities become exp(Σ_j w_j c_j log p_j / Σ_j w_j c_j) renormalised to 1 - p_bg,
        over neighbours j that are not bg (c_j certainty x (1 - p_bg,j), w_j spatial weight).
    """
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 3 or probs.shape[-1] != NUM_LEVELS + 1:
        raise InputError(f"probs: got shape {probs.shape}, expected (rows, cols, {NUM_LEVELS + 1})")
    if sigma <= 0 or radius < 0:
        raise InputError(f"sigma, radius: got {sigma!r}, {radius!r}; expected sigma > 0, radius >= 0")
    levels, bg = probs[..., :NUM_LEVELS], probs[..., NUM_LEVELS]
    logp = np.log(np.maximum(levels / np.maximum(levels.sum(-1, keepdims=True), 1e-30), 1e-12))
    weight = certainty(levels) * (1.0 - bg) + 1e-6
    rows, cols = bg.shape
    num = np.zeros_like(logp)
    den = np.zeros_like(bg)
    pw = np.pad(weight, radius)
    pl = np.pad(logp * weight[..., None], ((radius, radius), (radius, radius), (0, 0)))
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            k = np.exp(-(dy * dy + dx * dx) / (2.0 * sigma * sigma))
            ys, xs = slice(radius + dy, radius + dy + rows), slice(radius + dx, radius + dx + cols)
            num += k * pl[ys, xs]
            den += k * pw[ys, xs]
    pooled = np.exp(num / den[..., None] - (num / den[..., None]).max(-1, keepdims=True))
    pooled = pooled / pooled.sum(-1, keepdims=True) * (1.0 - bg)[..., None]
    return np.concatenate([pooled, bg[..., None]], axis=-1).astype(np.float32)


def pool_mode(pool):
    """'surface', 'neighbours' or None of a `pool` argument (True = 'surface', False = None)."""
    if pool is True:
        return "surface"
    if pool is False or pool is None:
        return None
    if isinstance(pool, str) and pool in POOL_MODES:
        return pool
    raise InputError(f"pool: got {pool!r}, expected True (= 'surface'), 'surface', 'neighbours' or False")


def own_depth_surface(own_probs, fg, origins, shape, *, degree="auto"):
    """The depth surface fitted to the foreground patches' own most probable depths
    (`estimator.most_probable_depth`, unclipped), each weighted by its own certainty.

    Args:
        own_probs: (n, 12) each patch's own (unpooled) probabilities; fg: (n,) bool foreground.
        origins: (n, 2) the patch grid; shape: (H, W) of the image (for the per-pixel map).
        degree: as `depth_surface.fit_depth_surface` (keyword-only).

    Returns:
        (z_own (n,) µm, weight (n,), `DepthSurface`).

    Raises:
        ValueError: too few weighted patches for the degree (`fit_depth_surface`).
    """
    from lbdvd_jax.depth_surface import fit_depth_surface
    from lbdvd_jax.estimator import most_probable_depth

    own = np.asarray(own_probs, np.float64)
    z_own = most_probable_depth(own)
    weight = certainty(own[:, :NUM_LEVELS]) * fg
    surface = fit_depth_surface(np.where(fg, z_own, np.nan), weight, np.asarray(origins) + PATCH_SIZE / 2.0,
                                shape, degree=degree)
    return z_own, weight, surface


def surface_agreement(own_probs, origins):
    """How well one smooth depth surface describes a field: the certainty-weighted share of the
    foreground patches whose own most probable depth lies within one level (2 µm) of the
    surface fitted to them (`own_depth_surface`).

    Args:
        own_probs: (n, 12) each patch's own probabilities; origins: (n, 2) the patch grid.

    Returns:
        (share in 0..1, `DepthSurface`), or (nan, None) when too few patches carry a depth.
    """
    origins = np.asarray(origins)
    shape = tuple(int(v) for v in origins.max(0) + PATCH_SIZE)
    try:
        z_own, weight, surface = own_depth_surface(own_probs, np.argmax(own_probs, -1) != BG_LABEL, origins, shape)
    except InputError:  # too few patches carry a depth for any surface
        return float("nan"), None
    if not np.sum(weight) > 0:
        return float("nan"), None
    near = np.abs(z_own - surface.z_patches) <= LEVEL_STEP_UM  # weight is 0 off the foreground
    return float(np.sum(weight * near) / np.sum(weight)), surface


def surface_prior(probs, own_probs, origins, *, sigma_um: float = SURFACE_PRIOR_UM,
                  agreement: float = SURFACE_AGREEMENT):
    """Level probabilities times a Gaussian prior around a depth surface fitted over the field.

    Args:
        probs: (n, 12) probabilities to weight (e.g. after `pool_neighbours`).
        own_probs: (n, 12) each patch's own probabilities: the surface is fitted to them
            (`own_depth_surface`) over the patches whose own call is not bg.
        origins: (n, 2) the patch grid.
        sigma_um: width of the prior (keyword-only), > 0.
        agreement: the gate (keyword-only): the least `surface_agreement` at which the prior
            applies (0: always).

    Returns:
        (n, 12) float32: level probabilities p_l exp(-(2l - s)^2 / 2σ^2) renormalised to 1 - p_bg,
        s the surface at the patch centre; bg probabilities unchanged. Unchanged when too few
        patches carry a depth for any surface, or when the surface is within one level of the
        own depths of less than `agreement` of the (certainty-weighted) patches.
    """
    if not sigma_um > 0:
        raise InputError(f"sigma_um: got {sigma_um!r}, expected > 0")
    probs = np.asarray(probs, np.float64)
    share, surface = surface_agreement(own_probs, origins)
    if surface is None or share < agreement:
        return probs.astype(np.float32)
    depth = LEVEL_STEP_UM * np.arange(NUM_LEVELS)
    log_w = (np.log(np.maximum(probs[:, :NUM_LEVELS], 1e-300))
             - (depth[None] - surface.z_patches[:, None]) ** 2 / (2.0 * sigma_um ** 2))
    w = np.exp(log_w - log_w.max(-1, keepdims=True))  # in logs: no underflow far from the surface
    bg = probs[:, NUM_LEVELS]
    levels = w / w.sum(-1, keepdims=True) * (1.0 - bg)[:, None]
    return np.concatenate([levels, bg[:, None]], -1).astype(np.float32)
