"""Per-patch defocus over a whole image: classify the grid (each patch judged from its window),
pool evidence between patches (`pooling`), warn when an image looks unlike the training data.

`pool=True` / 'surface' (default): 3x3 certainty-weighted pooling, then a prior around a smooth
depth surface fitted over the field; 'neighbours': the 3x3 pooling only; False: each patch's
own call (the paper's isolated-patch protocol). bg decisions stay each patch's own.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from lbdvd_jax.constants import BG_LABEL, NUM_LEVELS, PATCH_SIZE
from lbdvd_jax.errors import InputError, InputTypeError
from lbdvd_jax.pooling import (  # noqa: F401
    POOL_MODES,
    SURFACE_AGREEMENT,
    SURFACE_PRIOR_UM,
    certainty,
    own_depth_surface,
    pool_mode,
    pool_neighbours,
    surface_agreement,
    surface_prior,
)

__all__ = ["DefocusMap", "EstimatorDomainWarning", "ImageStats", "POOL_MODES", "SURFACE_AGREEMENT", "SURFACE_PRIOR_UM",
           "defocus_map", "domain_report", "image_stats", "judging_window", "own_depth_surface", "patch_probabilities",
           "pool_mode", "pool_neighbours", "predict_defocus", "surface_agreement", "surface_prior",
           "window_corners"]


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
        cert = certainty(np.asarray(probs)[fg, :NUM_LEVELS])
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
