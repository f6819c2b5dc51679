"""The estimator's training batches: synthetic defocus of real fields, at levels or at continuous
depths with soft targets, through what another camera or file format would do.

Batches come from `data.synth_batch` (real in-focus fields blurred by the Eq. 2 PSF, camera
noise calibrated on BBBC006, the paper's bg rule in 16-bit counts), then a random global gain
(log-uniform, default 1/24..1: 8-bit files are 16-bit counts / 16) and, for a share of the
batch, integer rounding. A share of the level-10 patches is blurred beyond 20 µm (24..40 µm) and
still labelled 10: the top level means "20 µm or more". Optional: continuous depths with soft
targets (`soft_level_targets`), mixed fields (`mixed_fields`), zoomed in-focus patches. The
configuration is `estimator_train.EstimatorTrainConfig`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.camera import OFFSET, add_camera_noise, bg_mask
from lbdvd_jax.constants import BG_LABEL, COUNT_SCALE, LEVEL_STEP_UM, NUM_CLASSES, NUM_LEVELS, PATCH_SIZE
from lbdvd_jax.data import synth_batch
from lbdvd_jax.optics import Optics
from lbdvd_jax.psf import psf_stack

__all__ = ["BEYOND_Z_UM", "CONTINUOUS_Z_UM", "TRAIN_PSF_SIZE", "mixed_fields", "soft_level_targets",
           "training_batch", "training_batch_targets", "training_psfs"]

BEYOND_Z_UM = (24.0, 28.0, 32.0, 36.0, 40.0)  #: defocus beyond level 10, labelled 10
#: depths of `continuous_fraction` patches (µm), soft-labelled between their two levels
CONTINUOUS_Z_UM = tuple(0.25 * k for k in range(81))
TRAIN_PSF_SIZE = 79  #: holds 99 % of the 40 µm PSF (kernel_size_for)


def training_psfs(optics=Optics(), *, size=TRAIN_PSF_SIZE, continuous: bool = False):
    """(16, size, size) PSFs: the 11 levels, then `BEYOND_Z_UM`; with `continuous`, then also
    one per depth of `CONTINUOUS_Z_UM` (97 in all)."""
    z = np.concatenate([2.0 * np.arange(NUM_LEVELS), BEYOND_Z_UM] + ([CONTINUOUS_Z_UM] if continuous else []))
    return psf_stack(optics, jnp.asarray(z, jnp.float32), size=size)


def soft_level_targets(index, *, num_psfs):
    """(B, 12) target distributions of `training_psfs` indices (bg = `num_psfs`).

    Levels: one-hot; beyond 20 µm: level 10; a continuous depth z: (1 - f) on level floor(z / 2)
    and f = z / 2 - floor(z / 2) on the next one; bg: one-hot on class 11.
    """
    first = NUM_LEVELS + len(BEYOND_Z_UM)
    z = jnp.asarray(CONTINUOUS_Z_UM, jnp.float32)[jnp.clip(index - first, 0, len(CONTINUOUS_Z_UM) - 1)]
    pos = jnp.where(index >= first, z / LEVEL_STEP_UM,
                    jnp.minimum(index, NUM_LEVELS - 1).astype(jnp.float32))
    lower = jnp.minimum(jnp.floor(pos), NUM_LEVELS - 1).astype(jnp.int32)
    frac = pos - lower
    upper = jnp.minimum(lower + 1, NUM_LEVELS - 1)
    soft = ((1.0 - frac)[:, None] * jax.nn.one_hot(lower, NUM_CLASSES)
            + frac[:, None] * jax.nn.one_hot(upper, NUM_CLASSES))
    return jnp.where((index == num_psfs)[:, None], jax.nn.one_hot(BG_LABEL, NUM_CLASSES), soft)


def mixed_fields(key, fields, *, offset=OFFSET):
    """(F, H, W) sums of each field and another one (random partner and flip), minus one offset.

    Two in-focus fluorescence fields in counts, f_i = o + g N_i + read: f_i + f_j - o = o +
    g (N_i + N_j) + read', and N_i + N_j is Poisson with the summed expectation, so the mixed
    field is a field of the same camera (read noise sqrt(2)x, negligible at 1.3 counts). The
    partner is flipped up-down / left-right at random (no seams, unlike a roll), never the
    field itself unflipped. Jittable.
    """
    n = fields.shape[0]
    k_p, k_f = jax.random.split(key)
    partner = (jnp.arange(n) + jax.random.randint(k_p, (n,), 1, max(n, 2))) % n
    flips = jax.random.randint(k_f, (n,), 0, 4)
    other = fields[partner]
    other = jnp.where((flips & 1)[:, None, None] == 1, other[:, ::-1, :], other)
    other = jnp.where((flips & 2)[:, None, None] == 2, other[:, :, ::-1], other)
    if n == 1:  # the only partner is the field itself: always flipped
        other = jnp.where(flips[:, None, None] == 0, other[:, ::-1, ::-1], other)
    return fields + jnp.maximum(other - offset, 0.0)


def zoomed_fields(key, fields, zoom_range, *, offset=OFFSET):
    """(F, H, W) fields magnified s x about their centres, s log-uniform in `zoom_range` per field.

    The signal above `offset` is resampled bilinearly (mirrored at the borders). Interpolating
    between pixels averages their camera noise: a pixel that mixes its neighbours with weights
    (1 - t, t) along each axis keeps the fraction ((1 - t)^2 + t^2) of the noise variance per
    axis, and the rest is drawn afresh (`add_camera_noise(present=...)`), so the zoomed field
    carries the camera's noise level again. Jittable.
    """
    from jax.scipy.ndimage import map_coordinates

    n, h, w = fields.shape
    k_s, k_n = jax.random.split(key)
    lo, hi = np.log(zoom_range[0]), np.log(zoom_range[1])
    s = jnp.exp(jax.random.uniform(k_s, (n,), minval=lo, maxval=hi))
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows, cols = jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32)

    def one(field, scale):
        y, x = cy + (rows - cy) / scale, cx + (cols - cx) / scale
        yy, xx = jnp.meshgrid(y, x, indexing="ij")
        signal = map_coordinates(field - offset, [yy, xx], order=1, mode="mirror")
        ty, tx = y - jnp.floor(y), x - jnp.floor(x)
        kept = ((1 - ty) ** 2 + ty ** 2)[:, None] * ((1 - tx) ** 2 + tx ** 2)[None, :]
        return signal + offset, kept

    zoomed, kept = jax.vmap(one)(fields, s)
    return add_camera_noise(k_n, zoomed, present=kept)


def training_batch(key, fields, psfs, *, config):
    """(counts (B, w, w) float32 at a random gain, labels (B,) int32 0..11), w = config.window.

    Jittable. Windows wider than 84 px take their bg label from the centre 84 px (the patch
    being judged), by the paper's rule in 16-bit counts before the gain. The label of a patch at
    a continuous depth is its nearest level (`training_batch_targets` gives the soft targets).
    """
    counts, targets = training_batch_targets(key, fields, psfs, config=config)
    return counts, jnp.argmax(targets, axis=-1).astype(jnp.int32)


def training_batch_targets(key, fields, psfs, *, config):
    """(counts (B, w, w), targets (B, 12) distributions): `training_batch` with soft targets
    (`soft_level_targets`); `psfs` from `training_psfs(continuous=config.continuous_fraction > 0)`."""
    b = config.batch_size
    k_lv, k_beyond, k_syn, k_gain, k_round = jax.random.split(key, 5)
    levels = jax.random.randint(k_lv, (b,), 0, NUM_LEVELS)
    nb = len(BEYOND_Z_UM)
    u = jax.random.uniform(k_beyond, (b, 2))
    beyond = NUM_LEVELS + jnp.minimum((u[:, 1] * nb).astype(jnp.int32), nb - 1)
    levels = jnp.where((levels == NUM_LEVELS - 1) & (u[:, 0] < config.beyond_fraction), beyond, levels)
    if config.continuous_fraction > 0:
        first = NUM_LEVELS + nb
        k_c, k_z = jax.random.split(jax.random.fold_in(key, 13))
        pick = jax.random.uniform(k_c, (b,)) < config.continuous_fraction
        if config.continuous_draw == "uniform":  # any depth 0..20 µm
            cont = first + jax.random.randint(k_z, (b,), 0, len(CONTINUOUS_Z_UM))
        else:  # 'jitter': the drawn level's depth ± 1 µm, kept in 2..20 µm; level 0 stays exact
            z = jnp.clip(LEVEL_STEP_UM * levels + jax.random.uniform(k_z, (b,), minval=-1.0, maxval=1.0),
                         LEVEL_STEP_UM, CONTINUOUS_Z_UM[-1])
            cont = first + jnp.round(z / CONTINUOUS_Z_UM[1]).astype(jnp.int32)
            pick = pick & (levels >= 1) & (levels < NUM_LEVELS)
        levels = jnp.where(pick, cont, levels)
    w = config.window
    if config.object_zoom_range is not None:  # objects of other sizes, at every level
        fields = zoomed_fields(jax.random.fold_in(key, 17), fields, config.object_zoom_range)
    if config.mix_sources:  # half of the windows from mixed fields (uniform over the stack)
        fields = jnp.concatenate([fields, mixed_fields(jax.random.fold_in(key, 11), fields)])
    x, y = synth_batch(k_syn, fields, psfs, batch_size=b, levels=levels, patch=w,
                       with_bg=w == PATCH_SIZE,
                       phantom_fraction=config.phantom_fraction, scale_range=config.scale_range,
                       noise_spectrum=config.noise_spectrum)
    if w != PATCH_SIZE:
        c = (w - PATCH_SIZE) // 2
        y = jnp.where(bg_mask(x[:, c:c + PATCH_SIZE, c:c + PATCH_SIZE, 0] * COUNT_SCALE), psfs.shape[0], y)
    targets = soft_level_targets(y, num_psfs=psfs.shape[0])
    if config.zoom_fraction > 0:
        x, targets = _zoom_in_focus(jax.random.fold_in(key, 7), x, targets, config)
    lo, hi = np.log(config.gain_range[0]), np.log(config.gain_range[1])
    gain = jnp.exp(jax.random.uniform(k_gain, (b, 1, 1), minval=lo, maxval=hi))
    counts = x[..., 0] * COUNT_SCALE * gain
    rounded = jax.random.uniform(k_round, (b, 1, 1)) < config.round_fraction
    return jnp.where(rounded, jnp.round(counts), counts), targets


def _zoom_in_focus(key, x, targets, config):
    """Magnify a share of the level-0 patches (see `EstimatorTrainConfig.zoom_fraction`)."""
    b, p = x.shape[0], x.shape[1]
    k_pick, k_s, k_noise = jax.random.split(key, 3)
    lo, hi = np.log(config.zoom_range[0]), np.log(config.zoom_range[1])
    s = jnp.exp(jax.random.uniform(k_s, (b,), minval=lo, maxval=hi))
    coords = (jnp.arange(p) - (p - 1) / 2.0)
    counts = x[..., 0] * COUNT_SCALE

    def magnify(img, scale):
        c = (p - 1) / 2.0 + coords / scale
        yy, xx = jnp.meshgrid(c, c, indexing="ij")
        return jax.scipy.ndimage.map_coordinates(img, [yy, xx], order=1, mode="nearest")

    zoomed = jax.vmap(magnify)(counts, s)
    zoomed = jnp.clip(jnp.round(add_camera_noise(k_noise, jnp.maximum(zoomed, OFFSET))), 0, COUNT_SCALE)
    pick = (targets[:, 0] == 1.0) & (jax.random.uniform(k_pick, (b,)) < config.zoom_fraction)
    x = jnp.where(pick[:, None, None, None], (zoomed / COUNT_SCALE)[..., None], x)
    return x, targets
