"""Per-patch defocus over a whole image: classify the grid, pool evidence between neighbours.

A real specimen's depth varies smoothly across the field (a tilted coverslip, an undulating
surface: the paper's Sec. 2.3), while one 84-px patch holds too little of the OTF to tell
18 from 20 µm (their first OTF zeros are less than half a frequency bin apart). So each
non-bg patch's level distribution is replaced by the certainty-weighted geometric mean of its
own and its 3x3 neighbours' (Gaussian spatial weights, σ = 1 grid step; certainty
1 - H(p)/log 11 as Yang et al. 2018 weight patches): for a plane or a uniform blur the
neighbours average out to the centre's depth with nine times the evidence. Then (the default,
`pool='surface'`) a smooth depth surface is fitted over the field to each patch's own most
probable depth (`depth_surface.fit_depth_surface`, certainty-weighted, robust) and each patch's
level probabilities are multiplied by a Gaussian prior around the surface's depth at the patch
(σ = `SURFACE_PRIOR_UM`, half a level step): a patch follows the field's depth unless its own
evidence is strong, and a misread patch among correct ones is repaired from further than its 3x3
neighbours. Where the surface does not explain the patches (within one level of the own
depths of less than half of them, certainty-weighted) the prior is skipped.
`pool='neighbours'` stops after the 3x3 pooling (for specimens whose depth is not smooth over
the field). bg decisions stay each patch's own. `pool=False` gives the
isolated-patch calls (the paper's protocol).

References:
    S. J. Yang et al., BMC Bioinformatics 19:77 (2018): certainty-weighted patch pooling.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM, NUM_LEVELS, PATCH_SIZE
from lbdvd_jax.errors import InputError, InputTypeError

__all__ = ["DefocusMap", "EstimatorDomainWarning", "ImageStats", "POOL_MODES", "SURFACE_AGREEMENT", "SURFACE_PRIOR_UM",
           "defocus_map", "domain_report", "image_stats", "judging_window", "own_depth_surface", "patch_probabilities",
           "pool_mode", "pool_neighbours", "predict_defocus", "surface_prior", "window_corners"]

#: the ways of pooling evidence between patches (`pool=True` is 'surface'; False: none)
POOL_MODES = ("surface", "neighbours")
#: σ (µm) of the depth-surface prior on the level probabilities: half a level step. Chosen on the
#: validation field a01 (whole-field level calls, uniform / tilted / curved depths; README):
#: mean 96.2 % against 95.9 % for 0.5 µm, 95.2 % for the residual scale, 90.0 % for 3x3 pooling.
SURFACE_PRIOR_UM = 1.0
#: the surface prior applies only where the surface agrees, within one level (2 µm), with the
#: own depths of at least this certainty-weighted share of the patches: a field the estimator
#: reads as two depths (e.g. sharp nuclei of another microscope, part read as 0 µm and part as
#: 20 µm: 21 % agree) keeps the 3x3 pooling, where a smooth field agrees at 79-99 % (README).
SURFACE_AGREEMENT = 0.5


class EstimatorDomainWarning(UserWarning):
    """An image lies outside what the defocus estimator was trained on (once per image)."""


class DefocusMap(NamedTuple):
    """Per-patch output of `predict_defocus`, on the `patch_grid` (n = rows * cols, row-major).

    Attributes:
        labels: (n,) int32 level 0..10 (z = 2 µm x level) or 11 = bg.
        probs: (n, 12) float32 probabilities (after pooling, when on).
        origins: (n, 2) int patch corners.
        z_um: (n,) expected defocus in µm (NaN for bg).
        spread_um: (n,) standard deviation of z (µm).
        certainty: (n,) 1 - H(p_levels) / log 11.
        own_probs: (n, 12) float32 each patch's own probabilities, before pooling (None: as
            `probs`). A depth surface is fitted to these: the surface pools the evidence itself,
            and fitted to pooled probabilities it would count each patch up to nine times.
    """

    labels: np.ndarray
    probs: np.ndarray
    origins: np.ndarray
    z_um: np.ndarray
    spread_um: np.ndarray
    certainty: np.ndarray
    own_probs: np.ndarray | None = None


def _certainty(levels):
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
    weight = _certainty(levels) * (1.0 - bg) + 1e-6
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
    weight = _certainty(own[:, :NUM_LEVELS]) * fg
    surface = fit_depth_surface(np.where(fg, z_own, np.nan), weight, np.asarray(origins) + PATCH_SIZE / 2.0,
                                shape, degree=degree)
    return z_own, weight, surface


def surface_prior(probs, own_probs, origins, *, sigma_um: float = SURFACE_PRIOR_UM):
    """Level probabilities times a Gaussian prior around a depth surface fitted over the field.

    Args:
        probs: (n, 12) probabilities to weight (e.g. after `pool_neighbours`).
        own_probs: (n, 12) each patch's own probabilities: the surface is fitted to them
            (`own_depth_surface`) over the patches whose own call is not bg.
        origins: (n, 2) the patch grid.
        sigma_um: width of the prior (keyword-only), > 0.

    Returns:
        (n, 12) float32: level probabilities p_l exp(-(2l - s)^2 / 2σ^2) renormalised to 1 - p_bg,
        s the surface at the patch centre; bg probabilities unchanged. Unchanged when too few
        patches carry a depth for any surface, or when the surface is within one level of the
        own depths of less than `SURFACE_AGREEMENT` of the (certainty-weighted) patches.
    """
    if not sigma_um > 0:
        raise InputError(f"sigma_um: got {sigma_um!r}, expected > 0")
    probs = np.asarray(probs, np.float64)
    origins = np.asarray(origins)
    shape = tuple(int(v) for v in origins.max(0) + PATCH_SIZE)
    try:
        z_own, weight, surface = own_depth_surface(own_probs, np.argmax(own_probs, -1) != BG_LABEL, origins, shape)
    except InputError:  # too few patches carry a depth for any surface
        return probs.astype(np.float32)
    near = np.abs(z_own - surface.z_patches) <= LEVEL_STEP_UM  # weight is 0 off the foreground
    if np.sum(weight * near) < SURFACE_AGREEMENT * np.sum(weight):
        return probs.astype(np.float32)
    depth = LEVEL_STEP_UM * np.arange(NUM_LEVELS)
    log_w = (np.log(np.maximum(probs[:, :NUM_LEVELS], 1e-300))
             - (depth[None] - surface.z_patches[:, None]) ** 2 / (2.0 * sigma_um ** 2))
    w = np.exp(log_w - log_w.max(-1, keepdims=True))  # in logs: no underflow far from the surface
    bg = probs[:, NUM_LEVELS]
    levels = w / w.sum(-1, keepdims=True) * (1.0 - bg)[:, None]
    return np.concatenate([levels, bg[:, None]], -1).astype(np.float32)


class ImageStats(NamedTuple):
    """What `domain_report` reads of an image: cheap to compute over a chunked one too."""

    top: float  #: maximum pixel value
    bottom: float  #: minimum pixel value
    at_top: float  #: share of pixels at the maximum
    centre: np.ndarray  #: the (84, 84) patch at the image centre


def image_stats(image) -> ImageStats:
    """`ImageStats` of an in-memory (H, W) image."""
    img = np.asarray(image, np.float32)
    top = float(img.max())
    h, w = img.shape
    cy, cx = (h - PATCH_SIZE) // 2, (w - PATCH_SIZE) // 2
    return ImageStats(top, float(img.min()), float(np.mean(img >= top)),
                      img[cy:cy + PATCH_SIZE, cx:cx + PATCH_SIZE])


def domain_report(stats, probs, labels):
    """Reasons why an image may lie outside the estimator's training domain (list of str).

    Args:
        stats: `ImageStats` (or an (H, W) image, from which they are taken).
        probs, labels: the image's per-patch probabilities (each patch's own, before pooling)
            and labels.
    """
    from lbdvd_jax.spectral import noise_sigma

    if not isinstance(stats, ImageStats):
        stats = image_stats(stats)
    reasons = []
    top, at_top = stats.top, stats.at_top
    if top > stats.bottom and at_top >= 1e-3 and top in (255.0, 4095.0, 65535.0, 1.0):
        reasons.append(f"{at_top:.1%} of the pixels sit at the maximum {top:g} (saturated): "
                       "defocus near them is judged as if unclipped")
    fg = labels != BG_LABEL
    if fg.any():
        centre = np.asarray(stats.centre, np.float32)
        sigma = float(noise_sigma(centre))
        if centre.std() > 0 and sigma <= 1e-4 * centre.std():
            reasons.append("no camera noise detected: the noise floor was assumed at the image's "
                           "finest detail, so in-focus calls rest on the spectrum alone")
        cert = _certainty(np.asarray(probs)[fg, :NUM_LEVELS])
        if cert.mean() < 0.25:
            reasons.append(f"the estimator is unsure on most patches (mean certainty "
                           f"{cert.mean():.2f}): the image may be unlike its training data "
                           "(wide-field nuclei at 0.65 µm/px, NA 0.5)")
    return reasons


def _probabilities(model, windows, batch_size):
    from lbdvd_jax.estimator import DefocusEstimator
    from lbdvd_jax.model import DelpNet, classify_patches

    if isinstance(model, (DefocusEstimator, DelpNet)):
        return classify_patches(model, windows, batch_size=batch_size)[1]
    if not callable(model):
        raise InputTypeError(f"model: got {type(model).__name__}; pass load_delpnet(), a DelpNet, or a "
                        "callable (n, 84, 84) patches -> (n, 12) probabilities")
    probs = np.asarray(model(windows), np.float32)
    if probs.shape != (len(windows), NUM_LEVELS + 1):
        raise InputError(f"model: the callable returned shape {probs.shape}, expected "
                         f"{(len(windows), NUM_LEVELS + 1)} probabilities")
    return probs


def judging_window(model) -> int:
    """Side in px of the window `model` judges a grid patch from (84 unless it was trained on
    wider windows: `EstimatorConfig.window`)."""
    config = getattr(model, "config", None)
    return int(getattr(config, "window", PATCH_SIZE)) if config is not None else PATCH_SIZE


def window_corners(origins, image_shape, window: int):
    """(n, 2) corners of the `window`-px windows that judge the 84-px patches at `origins`.

    Each window is centred on its patch and shifted inwards at the image border, so that it
    holds only real pixels; an axis shorter than the window starts at 0 (it is padded, see
    `patch_probabilities`). The same patch gets the same window in a whole image and in any
    block of it (the corners depend only on the image shape).
    """
    m = (window - PATCH_SIZE) // 2
    o = np.asarray(origins, np.int64) - m
    out = np.empty_like(o)
    for ax in range(2):
        n = int(image_shape[ax])
        out[:, ax] = np.clip(o[:, ax], 0, n - window) if n >= window else 0
    return out


def patch_probabilities(image, origins, *, model, batch_size: int = 256, image_shape=None, offset=(0, 0)):
    """(n, 12) own (unpooled) probabilities of the 84-px patches at `origins`.

    A model trained on wider windows (`judging_window`) sees each patch with its neighbours
    (`window_corners`); an image axis shorter than the window is reflected to its size.

    Args:
        image: (h, w) image, or a slab of a larger one (then `image_shape` is the whole
            image's shape and `offset` the slab's corner in it; the slab must hold every
            window: `window_corners` of the whole image).
        origins: (n, 2) patch corners in the whole image.
        model, batch_size: as `predict_defocus`.
    """
    from lbdvd_jax.patches import gather_windows

    img = np.asarray(image, np.float32)
    shape = img.shape if image_shape is None else tuple(int(v) for v in image_shape)
    w = judging_window(model)
    corners = window_corners(origins, shape, w) - np.asarray(offset, np.int64)
    pads = [(0, 0), (0, 0)]
    for ax in range(2):
        if shape[ax] < w:  # a short axis: the slab holds all of it; reflect it to the window
            if img.shape[ax] != shape[ax]:
                raise InputError(f"image: a slab must hold the whole axis {ax} shorter than the "
                                 f"{w}-px judging window")
            before = (w - shape[ax]) // 2
            pads[ax] = (before, w - shape[ax] - before)
    if any(pads[0] + pads[1]):
        img = np.pad(img, pads, mode="symmetric")
    if corners.size and (corners.min() < 0 or (corners + w > np.asarray(img.shape)).any()):
        raise InputError("image: the slab does not hold every judging window; take it from "
                         "window_corners(origins, image_shape, window)")
    probs = np.empty((len(origins), NUM_LEVELS + 1), np.float32)
    for s in range(0, len(origins), batch_size * 4):
        part = corners[s:s + batch_size * 4]
        windows = np.asarray(gather_windows(img, part, w))
        probs[s:s + len(part)] = _probabilities(model, windows, batch_size)
    return probs


def defocus_map(probs, origins, *, pool=True, stats: ImageStats | None = None,
                warn: bool = True) -> DefocusMap:
    """`DefocusMap` of a whole grid's own probabilities (pooled unless `pool` is False).

    Args:
        probs: (n, 12) `patch_probabilities` of every patch of the image's `patch_grid`.
        origins: (n, 2) that grid.
        pool: True / 'surface', 'neighbours' or False: how evidence is pooled between
            patches (module docstring).
        stats: the image's `ImageStats`, for the domain warning (None: no warning).
        warn: emit one `EstimatorDomainWarning` when the image looks unlike the training data.
    """
    rows = len(np.unique(origins[:, 0]))
    cols = len(origins) // rows
    probs = own_probs = np.asarray(probs, np.float32)
    own = probs.argmax(-1)
    mode = pool_mode(pool)
    if mode is not None:
        probs = pool_neighbours(probs.reshape(rows, cols, -1)).reshape(len(origins), -1)
    if mode == "surface":
        probs = surface_prior(probs, own_probs, origins)
    labels = probs.argmax(-1).astype(np.int32)
    labels[own == BG_LABEL] = BG_LABEL
    from lbdvd_jax.estimator import defocus_from_probs

    z, spread, cert = defocus_from_probs(probs)
    z = np.where(labels == BG_LABEL, np.nan, z).astype(np.float32)
    if warn and stats is not None:
        reasons = domain_report(stats, own_probs, labels)  # the estimator's own certainty, before pooling
        if reasons:
            warnings.warn("defocus estimator: " + "; ".join(reasons), EstimatorDomainWarning,
                          stacklevel=3)
    return DefocusMap(labels, probs, origins, z, spread.astype(np.float32), cert.astype(np.float32), own_probs)


def predict_defocus(image, *, model, stride: int = 42, pool=True, batch_size: int = 256,
                    warn: bool = True) -> DefocusMap:
    """Defocus of every patch of `patch_grid(image.shape, stride=stride)`.

    Args:
        image: (H, W) raw image (any gain/offset for a `DefocusEstimator`; counts for DelpNet).
        model: `load_delpnet()` (the shipped estimator), a paper `DelpNet`, or any callable
            (n, 84, 84) raw patches -> (n, 12) probabilities.
        stride: static grid step in px (keyword-only).
        pool: True / 'surface', 'neighbours' or False: how evidence is pooled between
            patches (module docstring).
        batch_size: patches per classifier call (bounds memory).
        warn: emit one `EstimatorDomainWarning` when the image looks unlike the training data.

    Returns:
        `DefocusMap`.
    """
    from lbdvd_jax.patches import patch_grid

    img = np.asarray(image, np.float32)
    origins = patch_grid(img.shape, patch=PATCH_SIZE, stride=stride)
    probs = patch_probabilities(img, origins, model=model, batch_size=batch_size)
    return defocus_map(probs, origins, pool=pool, stats=image_stats(img) if warn else None, warn=warn)
