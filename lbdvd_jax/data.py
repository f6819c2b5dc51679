"""Training data for DelpNet: in-focus selection, synthetic defocus, camera noise, bg labels, splits.

The paper (Sec. 2.1) blurs in-focus BBBC006 fields with the 11 level PSFs of Eq. 2, adds
Poisson noise, crops 84x84 patches, labels near-empty patches 'bg' (max < 230 and
max - min < 30 counts) and divides by 65535. Here every step is a pure JAX function on one
patch, vmapped, so a fresh batch is generated on the device for every training step:

    window (patch + k - 1)^2 of a field or a phantom --FFT conv, 'valid'--> 84x84 expected
    counts --intensity/offset jitter--> camera noise --> rounding --> bg rule --> D4 flip/rot.

Camera noise (Eq. 1's Poisson model, made camera-like): counts = offset + gain * N + read,
N ~ Poisson((mu - offset) / gain) photoelectrons, read ~ Normal(0, read_noise). Measured on
the real BBBC006 images (high-pass variance vs local mean, flat regions of the in-focus
fields and all of the z00 fields, 118-690 counts, spatially white): var = gain * (mean -
offset) + read_noise^2 with gain ~ 0.33 counts per photoelectron, offset 100 counts,
read_noise ~ 1.3 counts. The real fields already carry that noise and blurring removes it,
so noise is added back at the camera's level, less the part the blurred field still holds
(sum(psf^2) of it): level 0 with a delta PSF returns the field unchanged.

References:
    D. He et al., IEEE Photonics J. 12(2):3900513 (2020), Sec. 2.1, Eq. 1.
    S. J. Yang et al., BMC Bioinformatics 19:77 (2018): degrade.py (photoelectrons, offset).
"""

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.camera import (
    GAIN,
    OFFSET,
    READ_NOISE,
    CameraModel,
    add_camera_noise,
    bg_mask,
    camera_variance,
    shaped_normal,
)
from lbdvd_jax.constants import BG_LABEL, COUNT_SCALE, PATCH_SIZE
from lbdvd_jax.errors import InputError
from lbdvd_jax.fields import load_infocus_fields, select_focal_plane, split_fields, tile_fields
from lbdvd_jax.phantoms import PHANTOM_KINDS, phantoms
from lbdvd_jax.validate import is_concrete

# the camera and field names stay importable from here (they lived in this module before)
__all__ = [
    "BG_LABEL", "COUNT_SCALE", "CameraModel", "GAIN", "OFFSET", "PATCH", "READ_NOISE", "add_camera_noise",
    "bg_mask", "defocus_crops", "load_infocus_fields", "make_eval_set", "select_focal_plane",
    "split_fields", "synth_batch", "tile_fields",
]

PATCH = PATCH_SIZE  #: DelpNet's patch side in pixels (`constants.PATCH_SIZE`)


# --------------------------------------------------------------------------- synthesis

def _otfs(psfs, window):
    """rfft2 of each kernel zero-padded to the window: circular conv = 'valid' conv there."""
    k = psfs.shape[-1]
    padded = jnp.zeros(psfs.shape[:-2] + (window, window), psfs.dtype).at[..., :k, :k].set(psfs)
    return jnp.fft.rfft2(padded)


def _blur_valid(window, otf, *, patch):
    """'valid' convolution of a (patch + k - 1)^2 window with the kernel of `otf`."""
    size = window.shape[-1]
    full = jnp.fft.irfft2(jnp.fft.rfft2(window) * otf, s=(size, size))
    return full[size - patch:, size - patch:]


def _check_sources(fields, psfs, patch):
    if fields.ndim != 3 or fields.shape[0] < 1:
        raise InputError(f"fields: got shape {fields.shape}, expected (F, H, W) with F >= 1; "
                         "load them with load_infocus_fields")
    if psfs.ndim != 3 or psfs.shape[1] != psfs.shape[2]:
        raise InputError(f"psfs: got shape {psfs.shape}, expected (levels, k, k), e.g. "
                         "psf_stack(Optics(), size=49)")
    window = patch + psfs.shape[-1] - 1
    if min(fields.shape[1:]) < window:
        raise InputError(f"fields: {fields.shape[1]}x{fields.shape[2]} is smaller than the "
                         f"{window}x{window} window a {patch}px patch and {psfs.shape[-1]}px PSF need; "
                         "use larger fields or tiles, or a smaller PSF size")
    return window


# All per-patch choices come from one (n, 8) table of uniforms, one random call per batch:
# every jax.random call adds a threefry kernel, and those dominate the compile time on CPU.
_U_LEVEL, _U_FIELD, _U_Y, _U_X, _U_SCALE, _U_SHIFT, _U_D4, _U_ORDER = range(8)


def _pick(u, weights):
    """Inverse-CDF draw of an index with probability proportional to `weights` (last axis)."""
    cdf = jnp.cumsum(weights, axis=-1)
    target = u * cdf[..., -1]
    return jnp.minimum(jnp.sum(cdf <= target[..., None], axis=-1), weights.shape[-1] - 1)


def _sample_levels_fields(u, num_fields, num_levels, level_mask, levels=None):
    n = u.shape[0]
    if level_mask is None:
        if levels is None:
            levels = _pick(u[:, _U_LEVEL], jnp.ones((num_levels,)))
        return levels, _pick(u[:, _U_FIELD], jnp.ones((n, num_fields)))
    mask = jnp.asarray(level_mask, jnp.float32)
    if levels is None:
        levels = _pick(u[:, _U_LEVEL], (jnp.sum(mask, 0) > 0).astype(jnp.float32))
    return levels, _pick(u[:, _U_FIELD], mask.T[levels])


def _field_windows(u, fields, fidx, *, window, positions=None):
    _, h, w = fields.shape
    if positions is None:
        ys = jnp.minimum((u[:, _U_Y] * (h - window + 1)).astype(jnp.int32), h - window)
        xs = jnp.minimum((u[:, _U_X] * (w - window + 1)).astype(jnp.int32), w - window)
    else:
        ys, xs = positions[:, 0], positions[:, 1]
    take = lambda f, y, x: jax.lax.dynamic_slice(fields[f], (y, x), (window, window))
    return jax.vmap(take)(fidx, ys, xs)


def _render(key, u, windows, levels, psfs, present_scale, *, patch, gain, offset, read_noise,
            scale_range, offset_range, augment, method, bg_max, bg_range, with_bg, noise=True,
            noise_spectrum="white"):
    """Blur, jitter, noise, round, label and flip/rotate a batch of windows."""
    n, window = windows.shape[0], windows.shape[-1]
    dtype = windows.dtype
    otfs = _otfs(psfs.astype(dtype), window)
    blurred = jax.vmap(lambda w, o: _blur_valid(w, o, patch=patch))(windows, otfs[levels])
    if augment:
        lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
        scale = jnp.exp(lo + (hi - lo) * u[:, _U_SCALE]).astype(dtype)
        shift = (offset_range[0] + (offset_range[1] - offset_range[0]) * u[:, _U_SHIFT]).astype(dtype)
    else:
        scale, shift = jnp.ones((n,), dtype), jnp.zeros((n,), dtype)
    cam_offset = offset + shift
    mu = cam_offset[:, None, None] + scale[:, None, None] * jnp.maximum(blurred - offset, 0.0)
    present = jnp.clip(present_scale * scale * jnp.sum(psfs ** 2, axis=(-2, -1))[levels], 0.0, 1.0)
    if noise and noise_spectrum == "matched":
        # the window's own noise keeps power present_scale * scale * |H(f)|^2 after the blur: fresh
        # noise shaped by the rest makes the total as flat as real camera noise (synthesis.matched_noise)
        kept = jnp.clip(present_scale * scale, 0.0, None)[:, None, None] * jnp.abs(_otfs(psfs, patch)[levels]) ** 2
        variance = camera_variance(mu, gain=gain, offset=cam_offset[:, None, None], read_noise=read_noise)
        counts = jnp.clip(jnp.round(mu + jnp.sqrt(variance) * shaped_normal(key, mu.shape, kept, dtype)),
                          0.0, COUNT_SCALE)
    elif noise:
        noisy = add_camera_noise(key, mu, gain=gain, offset=cam_offset[:, None, None],
                                 read_noise=read_noise, present=present[:, None, None], method=method)
        counts = jnp.clip(jnp.round(noisy), 0.0, COUNT_SCALE)
    else:
        counts = mu
    labels = levels.astype(jnp.int32)
    if with_bg:
        labels = jnp.where(bg_mask(counts, bg_max=bg_max, bg_range=bg_range), psfs.shape[0], labels)
    if augment:  # the 8 symmetries of the square (the PSFs are radially symmetric)
        d4 = (u[:, _U_D4] * 8).astype(jnp.int32)[:, None, None]
        counts = jnp.where(d4 & 1, jnp.swapaxes(counts, -1, -2), counts)
        counts = jnp.where(d4 & 2, counts[:, ::-1, :], counts)
        counts = jnp.where(d4 & 4, counts[:, :, ::-1], counts)
    return counts, labels


_DEFAULTS = dict(gain=GAIN, offset=OFFSET, read_noise=READ_NOISE, scale_range=(0.5, 2.0),
                 offset_range=(-10.0, 10.0), method="normal", bg_max=230.0, bg_range=30.0,
                 with_bg=True)


def defocus_crops(key, field, psfs, levels, *, num_crops=20, patch=PATCH, augment=False,
                  noise=True, positions=None, **kwargs):
    """Random defocused crops of one field: the paper's protocol (20 per image and level).

    Each crop blurs a (patch + k - 1)^2 window of `field` with psfs[level] by an FFT
    convolution ('valid', so no border effects), adds camera noise (see `synth_batch` for the
    keyword arguments) and is labelled with its level, or bg (= len(psfs)) by the bg rule.

    Args:
        key: `jax.random` key.
        field: (H, W) in-focus field in counts (already noisy, like the real fields).
        psfs: (L, k, k) kernels, e.g. `psf_stack(Optics(), size=49)`.
        levels: (n_levels,) int level indices to generate.
        num_crops: static number of crops per level.
        patch: static patch side (84).
        augment: static; apply `synth_batch`'s jitter and flips (default False).
        noise: static; False returns the noise-free blurred expected counts (not rounded).
        positions: optional (n_levels * num_crops, 2) int (y, x) top-left corners of the
            (patch + k - 1)^2 windows in `field` (default: uniform random, fully inside); the
            patch is then field[y + k//2 : y + k//2 + patch, x + k//2 : ...] blurred.
        **kwargs: `synth_batch`'s noise / bg keywords.

    Returns:
        (counts, labels): (n_levels * num_crops, patch, patch) float32 counts and int32 labels.
    """
    field = jnp.asarray(field)
    if not jnp.issubdtype(field.dtype, jnp.floating):
        field = field.astype(jnp.float32)
    if field.ndim != 2:
        raise InputError(f"field: got shape {field.shape}, expected (H, W)")
    psfs = jnp.asarray(psfs, field.dtype)
    window = _check_sources(field[None], psfs, patch)
    opts = {**_DEFAULTS, **kwargs}
    lv = jnp.repeat(jnp.asarray(levels, jnp.int32), num_crops)
    k_u, k_r = jax.random.split(key)
    u = jax.random.uniform(k_u, (lv.shape[0], 8))
    if positions is not None:
        positions = jnp.asarray(positions, jnp.int32)
        if positions.shape != (lv.shape[0], 2):
            raise InputError(f"positions: got shape {positions.shape}, expected {(lv.shape[0], 2)} "
                             "(one (y, x) window corner per crop)")
    windows = _field_windows(u, field[None], jnp.zeros_like(lv), window=window, positions=positions)
    return _render(k_r, u, windows, lv, psfs, 1.0, patch=patch, augment=augment, noise=noise, **opts)


def synth_batch(key, fields, psfs, *, batch_size=128, augment=True, phantom_fraction=0.0,
                gain=GAIN, offset=OFFSET, read_noise=READ_NOISE, bg_max=230.0, bg_range=30.0,
                with_bg=True, scale_range=(0.5, 2.0), offset_range=(-10.0, 10.0),
                method="normal", level_mask=None, levels=None, patch=PATCH, noise_spectrum="white"):
    """A fresh batch of labelled synthetic defocused patches, ready for DelpNet.

    Each patch: uniform random level (or `levels`), random source (a random field and crop
    position, or with probability `phantom_fraction` a procedural phantom), 'valid' FFT blur
    by psfs[level], intensity scale and camera-offset jitter (augment), camera noise (topped up
    to the camera's level: a field's own noise left after blurring is counted), integer rounding,
    bg label by the paper's rule, and a random flip/rot90 (augment).

    Args:
        key: `jax.random` key (fresh data for every key).
        fields: (F, H, W) in-focus fields in counts (`load_infocus_fields`), H, W >= patch+k-1.
        psfs: (L, k, k) level kernels, each summing to 1 (`psf_stack(Optics(), size=49)`).
        batch_size: static number of patches B.
        augment: static; intensity scale (log-uniform in `scale_range`, applied to the signal
            above the offset), camera offset shift (uniform in `offset_range`, counts) and the
            8 flips/rotations of the square.
        phantom_fraction: static fraction of the batch made from phantoms (`phantoms.phantom`).
        gain, offset, read_noise: camera model (counts per photoelectron, counts, counts).
        bg_max, bg_range: bg rule thresholds in counts (paper: 230, 30).
        with_bg: static; False keeps level labels on bg patches (the paper's no-bg ablation).
        scale_range, offset_range: static augmentation ranges.
        method: static noise method, 'normal' or 'poisson' (see `add_camera_noise`).
        level_mask: optional (F, L) bool: only these (field, level) images are drawn (the
            paper's split protocol, `split_fields(..., protocol='paper')`).
        levels: optional (B,) int levels to use instead of uniform draws.
        noise_spectrum: static; 'white' (default): fresh white noise of the variance the blur
            took from the window's own noise (its blurred remnant keeps excess low-frequency
            power); 'matched': fresh noise shaped so that the total has the flat spectrum of
            real camera noise (as `synthesis.matched_noise`; Gaussian, `method` ignored).
        patch: static patch side (84).

    Returns:
        (x, y): x (B, patch, patch, 1) float32 = counts / 65535; y (B,) int32 in 0..L
        (L = bg when `with_bg`).

    Examples:
        >>> import functools, jax
        >>> from lbdvd_jax import Optics, psf_stack, load_infocus_fields, synth_batch
        >>> fields, _ = load_infocus_fields("../shared/data/real/bbbc006/infocus")  # doctest: +SKIP
        >>> psfs = psf_stack(Optics(), size=49)
        >>> batch = jax.jit(functools.partial(synth_batch, batch_size=128))  # doctest: +SKIP
        >>> x, y = batch(jax.random.key(0), fields, psfs)  # doctest: +SKIP
    """
    fields = jnp.asarray(fields)
    if not jnp.issubdtype(fields.dtype, jnp.floating):
        fields = fields.astype(jnp.float32)
    psfs = jnp.asarray(psfs, fields.dtype)
    window = _check_sources(fields, psfs, patch)
    if not 0.0 <= phantom_fraction <= 1.0:
        raise InputError(f"phantom_fraction: got {phantom_fraction!r}, expected a number in [0, 1]")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size: got {batch_size!r}, expected a positive Python int")
    n_ph = int(round(phantom_fraction * batch_size))
    k_u, k_ph, k_r = jax.random.split(key, 3)
    u = jax.random.uniform(k_u, (batch_size, 8))
    if level_mask is not None:
        if np.shape(level_mask) != (fields.shape[0], psfs.shape[0]):
            raise InputError(f"level_mask: got shape {np.shape(level_mask)}, expected "
                             f"{(fields.shape[0], psfs.shape[0])} (fields x levels)")
        if levels is not None and is_concrete(level_mask) and is_concrete(levels):
            held = np.asarray(level_mask, bool).any(axis=0)
            missing = sorted(set(np.asarray(levels).ravel().tolist()) - set(np.flatnonzero(held).tolist()))
            if missing:
                raise InputError(f"levels: level(s) {missing} have no field allowed by level_mask; "
                                 "request only levels the mask holds (level_mask.any(axis=0))")
    lv, fidx = _sample_levels_fields(u, fields.shape[0], psfs.shape[0], level_mask, levels)
    windows = _field_windows(u[: batch_size - n_ph], fields, fidx[: batch_size - n_ph], window=window)
    present = jnp.ones((batch_size,), fields.dtype)
    if n_ph:
        # a static, near-equal share of each kind (cheaper than a traced per-window switch)
        shares = [n_ph // 3 + (i < n_ph % 3) for i in range(3)]
        ph = jnp.concatenate([
            phantoms(k, m, size=window, kind=kind, offset=offset)
            for k, kind, m in zip(jax.random.split(k_ph, 3), PHANTOM_KINDS, shares) if m])
        windows = jnp.concatenate([windows, ph.astype(fields.dtype)])
        present = present.at[batch_size - n_ph:].set(0.0)  # phantoms are noise-free
    counts, labels = _render(k_r, u, windows, lv, psfs, present, patch=patch, gain=gain, offset=offset,
                             read_noise=read_noise, scale_range=scale_range,
                             offset_range=offset_range, augment=augment, method=method,
                             bg_max=bg_max, bg_range=bg_range, with_bg=with_bg, noise_spectrum=noise_spectrum)
    if n_ph:  # interleave phantoms and fields
        perm = jnp.argsort(u[:, _U_ORDER])
        counts, labels = counts[perm], labels[perm]
    return (counts / COUNT_SCALE).astype(fields.dtype)[..., None], labels


_STATIC = ("batch_size", "augment", "phantom_fraction", "with_bg", "scale_range", "offset_range",
           "method", "patch", "noise_spectrum")
# One compiled generator shared by make_eval_set calls of the same static configuration.
_synth_batch_jit = jax.jit(synth_batch, static_argnames=_STATIC)


def make_eval_set(key, fields, psfs, *, per_level=200, chunk=256, augment=False, **kwargs):
    """A fixed, seeded, level-balanced evaluation set (for the val / test sources).

    Args:
        key: `jax.random` key (same key, same set).
        fields: (F, H, W) held-out fields (or tiles) in counts.
        psfs: (L, k, k) kernels.
        per_level: static number of patches per level (before bg relabelling).
        chunk: static batch size used to generate it (bounds memory).
        augment: static; default False (real intensities, no flips).
        **kwargs: `synth_batch` keywords (noise, bg, level_mask, phantom_fraction ...).

    Returns:
        (x, y) as NumPy arrays: (L * per_level, patch, patch, 1) float32 and (L * per_level,)
        int32, ordered by level (unless phantoms are mixed in). With `level_mask`, only the
        levels the mask holds are generated, each from its allowed fields.
    """
    psfs = jnp.asarray(psfs)
    present = np.arange(psfs.shape[0], dtype=np.int32)
    if kwargs.get("level_mask") is not None:  # paper protocol: only the split's (field, level) images
        present = present[np.asarray(kwargs["level_mask"], bool).any(axis=0)]
    levels = np.repeat(present, per_level)
    xs, ys = [], []
    static = {k: v for k, v in kwargs.items() if k in _STATIC}
    traced = {k: v for k, v in kwargs.items() if k not in _STATIC}
    for i, start in enumerate(range(0, len(levels), chunk)):
        lv = levels[start:start + chunk]
        pad = np.pad(lv, (0, chunk - len(lv)))
        x, y = _synth_batch_jit(jax.random.fold_in(key, i), fields, psfs, batch_size=chunk,
                                augment=augment, levels=jnp.asarray(pad), **static, **traced)
        xs.append(np.asarray(x)[: len(lv)])
        ys.append(np.asarray(y)[: len(lv)])
    return np.concatenate(xs), np.concatenate(ys)
