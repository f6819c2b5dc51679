"""The defocus estimator: spectral evidence + a small CNN, ordinal output, scale-free.

DelpNet (`model.py`) reads raw counts / 65535, so its call depends on the camera's gain and
offset, and it learns the OTF's signature from pixels at the paper's GPU budget. This estimator
is built to learn from cheaper signals on a CPU:

* a *spectral branch*: `spectral.spectral_features` (radial log power spectrum over the patch's
  own noise floor, plus SNR statistics), affine-invariant by construction, through LayerNorm and
  a dense layer;
* a *pixel branch*: a 4-layer strided CNN (~7 M multiply-adds, 1/13 of DelpNet's) on the
  patch normalised to zero mean and unit variance, global max and mean pooling;
* a dense head on both, 12 logits (levels 0..10, bg).

Every input is normalised per patch, so `a x + b` (a > 0) gives the same call: uint16, 8-bit,
float 0..1 and brighter images agree up to quantisation (trained with random gain and
rounding). The output is ordinal: besides the label and the 12 probabilities it returns the
expected defocus z = Σ p_l 2l µm over the level probabilities, its spread, and a certainty
1 - H(p)/log 11 (Yang et al. 2018's pooling weight). Trained with cross-entropy plus the
ranked probability score (`estimator_train.py`).

References:
    D. He et al., IEEE Photonics J. 12(2) (2020), Sec. 2.2 (12 classes, 84x84 patches).
    S. J. Yang et al., BMC Bioinformatics 19:77 (2018): ranked probability score, certainty.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM, NUM_CLASSES, NUM_LEVELS, PATCH_SIZE
from lbdvd_jax.errors import InputError
from lbdvd_jax.spectral import feature_size, normalise_patch, spectral_features
from lbdvd_jax.validate import check_patches

__all__ = ["DefocusEstimate", "DefocusEstimator", "EstimatorConfig", "clear_caches", "defocus_from_probs",
           "estimate_defocus", "estimator_logits", "estimator_probs", "most_probable_depth"]

#: (out_channels, kernel, stride) of the pixel branch: maps 42, 21, 11, 6 px for 84 px
DEFAULT_CONV = ((16, 5, 2), (32, 3, 2), (64, 3, 2), (96, 3, 2))


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    """Architecture of a `DefocusEstimator`.

    Attributes:
        num_bins: radial spectrum bins up to Nyquist (`spectral.spectral_features`); 42 at
            84 px is one bin per FFT ring (1/84 cycles/px), which resolves the first OTF zeros
            of levels 7-10 (0.03-0.05 cycles/px); 24 bins merge them (measured: README).
        conv: pixel-branch layers (out_channels, kernel, stride); () = spectral branch only.
        spectral_width: width of the spectral branch's dense layer.
        hidden: width of the head's hidden layer.
        patch_size: patch side in px (84, the paper's).
        taper: Tukey taper of the spectral window (1.0 = Hann).
        window: side in px of the window a grid patch is judged from in whole images (what
            the estimator was trained on): the patch with (window - patch_size) / 2 px of its
            neighbours on each side (`defocus_map.patch_probabilities`). Isolated patches
            (`classify_patches` on (n, 84, 84)) are judged from the patch alone.
    """

    num_bins: int = 42
    conv: tuple[tuple[int, int, int], ...] = DEFAULT_CONV
    spectral_width: int = 64
    hidden: int = 128
    patch_size: int = PATCH_SIZE
    taper: float = 1.0
    window: int = PATCH_SIZE

    def __post_init__(self):
        object.__setattr__(self, "conv", tuple(tuple(int(v) for v in c) for c in self.conv))
        if not 4 <= self.num_bins <= self.patch_size // 2:
            raise InputError(f"num_bins: got {self.num_bins!r}, expected 4..{self.patch_size // 2}")
        if self.window < self.patch_size or (self.window - self.patch_size) % 2:
            raise InputError(f"window: got {self.window!r}, expected patch_size ({self.patch_size}) "
                             "plus an even number of px")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["conv"] = [list(c) for c in self.conv]
        d["kind"] = "defocus_estimator"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EstimatorConfig:
        d = dict(d)
        if d.pop("kind", "defocus_estimator") != "defocus_estimator":
            raise InputError("not a defocus-estimator configuration")
        d["conv"] = tuple(tuple(c) for c in d.get("conv", ()))
        return cls(**d)


class DefocusEstimator(nnx.Module):
    """Spectral + pixel defocus classifier (module docstring); 12 logits per patch.

    Args:
        config: `EstimatorConfig`.
        rngs: `nnx.Rngs` for initialisation.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lbdvd_jax.model import build_module
        >>> est = build_module(lambda: DefocusEstimator(rngs=nnx.Rngs(0)))
        >>> nnx.jit(lambda m, x: m(x))(est, jnp.ones((2, 84, 84)) * 100.0).shape
        (2, 12)
    """

    def __init__(self, config: EstimatorConfig | None = None, *, rngs: nnx.Rngs):
        self.config = config = config or EstimatorConfig()
        nf = feature_size(config.num_bins)
        self.spec_norm = nnx.LayerNorm(nf, rngs=rngs)
        self.spec_dense = nnx.Linear(nf, config.spectral_width, rngs=rngs)
        convs, ch = [], 1
        for out, k, s in config.conv:
            convs.append(nnx.Conv(ch, out, kernel_size=(k, k), strides=(s, s), padding="SAME", rngs=rngs))
            ch = out
        self.convs = nnx.List(convs)
        width = config.spectral_width + (2 * ch if config.conv else 0)
        self.hidden = nnx.Linear(width, config.hidden, rngs=rngs)
        self.out = nnx.Linear(config.hidden, NUM_CLASSES, rngs=rngs)

    def __call__(self, patches: jax.Array) -> jax.Array:
        """Logits (B, 12) of raw-value patches (B, p, p), any gain and offset.

        Windows larger than `patch_size` (B, w, w) give the spectral branch their whole extent
        (finer statistics of the same frequency bins) and the pixel branch their centre.
        """
        feats = jax.vmap(lambda p: spectral_features(p, num_bins=self.config.num_bins,
                                                     taper=self.config.taper))(patches)
        h = jax.nn.gelu(self.spec_dense(self.spec_norm(feats)))
        if self.config.conv:
            side, p = patches.shape[-1], self.config.patch_size
            centre = patches[:, (side - p) // 2:(side - p) // 2 + p, (side - p) // 2:(side - p) // 2 + p]
            x = jax.vmap(normalise_patch)(centre)[..., None]
            for conv in self.convs:
                x = jax.nn.relu(conv(x))
            h = jnp.concatenate([h, jnp.max(x, axis=(1, 2)), jnp.mean(x, axis=(1, 2))], axis=-1)
        return self.out(jax.nn.gelu(self.hidden(h)))


def estimator_logits(graphdef, params, patches):
    """Pure logits of split estimator parameters (jit with `graphdef` static)."""
    return nnx.merge(graphdef, params)(patches)


class DefocusEstimate(NamedTuple):
    """Per-patch output of `estimate_defocus`.

    Attributes:
        labels: (n,) int32, 0..10 = level (z = 2 µm x level), 11 = bg.
        probs: (n, 12) float32 probabilities.
        z_um: (n,) float32 expected defocus Σ p_l 2l / Σ p_l over the level classes (µm; NaN for bg).
        spread_um: (n,) float32 standard deviation of z under those probabilities (µm).
        certainty: (n,) float32 1 - H(p_levels) / log 11, in [0, 1].
    """

    labels: np.ndarray
    probs: np.ndarray
    z_um: np.ndarray
    spread_um: np.ndarray
    certainty: np.ndarray


def defocus_from_probs(probs):
    """Expected z (µm), its spread (µm) and certainty from (..., 12) probabilities (NumPy or JAX).

    Levels only: the bg probability is removed and the rest renormalised.
    """
    xp = jnp if isinstance(probs, jax.Array) else np
    p = probs[..., :NUM_LEVELS]
    p = p / xp.maximum(xp.sum(p, axis=-1, keepdims=True), 1e-30)
    z = LEVEL_STEP_UM * xp.arange(NUM_LEVELS, dtype=p.dtype)
    mean = xp.sum(p * z, axis=-1)
    spread = xp.sqrt(xp.maximum(xp.sum(p * (z - mean[..., None]) ** 2, axis=-1), 0.0))
    entropy = -xp.sum(p * xp.log(xp.maximum(p, 1e-30)), axis=-1)
    return mean, spread, 1.0 - entropy / np.log(NUM_LEVELS)


def most_probable_depth(probs):
    """The most probable defocus (µm) of (..., 12) probabilities, between and beyond the levels.

    A parabola through log p at the most probable level and its two neighbours (the two
    innermost levels when it is level 0 or 10) has its vertex at the depth returned: exact for
    level probabilities shaped like a Gaussian in z, exp(-(2l - z)^2 / 2σ^2), of any σ, and
    within [-1, 21] µm (the vertex is kept within 1.5 levels of the middle knot; where log p
    does not peak there, at an end level, that level's depth). Unlike the expected z, a spread
    does not pull it toward the middle of the range, so a patch at focus is not read as ~1 µm
    deep only because its probabilities spill onto level 1; values just outside [0, 20] µm are
    kept, so that a depth surface fitted to them is not biased at the range ends either (clip
    after fitting).
    """
    p = np.asarray(probs, np.float64)[..., :NUM_LEVELS]
    logp = np.log(np.maximum(p / np.maximum(p.sum(-1, keepdims=True), 1e-300), 1e-12))
    top = np.argmax(logp, axis=-1)
    mid = np.clip(top, 1, NUM_LEVELS - 2)[..., None]
    a, b, c = (np.take_along_axis(logp, mid + d, axis=-1)[..., 0] for d in (-1, 0, 1))
    curv = a - 2.0 * b + c  # < 0: a peak; >= 0 only at an end level (then that level itself)
    peak = curv < -1e-9
    vertex = mid[..., 0] + np.clip(0.5 * (a - c) / np.where(peak, curv, -1.0), -1.5, 1.5)
    return LEVEL_STEP_UM * np.where(peak, vertex, top)


def estimate_defocus(probs) -> DefocusEstimate:
    """`DefocusEstimate` of (n, 12) probabilities (labels = argmax; z NaN where bg)."""
    probs = np.asarray(probs, np.float32)
    labels = probs.argmax(-1).astype(np.int32)
    z, spread, cert = defocus_from_probs(probs)
    z = np.where(labels == BG_LABEL, np.nan, z).astype(np.float32)
    return DefocusEstimate(labels, probs, z, spread.astype(np.float32), cert.astype(np.float32))


@functools.lru_cache(maxsize=8)
def _probs_fn(graphdef, devices):
    """Jitted probabilities for one architecture, batches split over `devices` (bounded cache)."""
    from lbdvd_jax.devices import sharded_map

    def fn(params, x):
        return sharded_map(lambda xs: jax.nn.softmax(estimator_logits(graphdef, params, xs)),
                           devices=list(devices))(x)

    return jax.jit(fn)


def _constant_patches(arr):
    flat = arr.reshape(arr.shape[0], -1)
    return flat.max(1) - flat.min(1) <= 1e-6 * (np.abs(flat).max(1) + 1e-30)


def estimator_probs(model: DefocusEstimator, patches, *, batch_size: int = 256):
    """Class probabilities of raw patches (n, p, p) at any gain/offset; constant patches are bg.

    Windows of the estimator's judging side (n, window, window) are read as patches with their
    neighbours (`EstimatorConfig.window`); bg by constancy is decided on their centre patch.

    Runs in batches of `batch_size` (the last padded, so one compiled program serves every
    call), split over the local devices.

    Raises:
        ValueError: wrong shape, NaN/Inf values, or a bad batch_size (named, with the fix).
    """
    shape = np.shape(patches)
    last = shape[-2] if len(shape) == 4 and shape[-1] == 1 else (shape[-1] if shape else 0)
    side = model.config.window if last == model.config.window else model.config.patch_size
    arr = check_patches(patches, side, batch_size=batch_size)
    n = arr.shape[0]
    if n == 0:
        return np.zeros((0, NUM_CLASSES), np.float32)
    graphdef, params = nnx.split(model)
    devices = tuple(jax.local_devices())
    bs = min(batch_size, n)
    bs += (-bs) % len(devices)
    fn = _probs_fn(graphdef, devices)
    probs = np.empty((n, NUM_CLASSES), np.float32)
    for start in range(0, n, bs):
        chunk = arr[start:start + bs]
        m = len(chunk)
        if m < bs:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], bs - m, 0)])
        probs[start:start + m] = np.asarray(fn(params, jnp.asarray(chunk)))[:m]
    c, p = (side - model.config.patch_size) // 2, model.config.patch_size
    const = _constant_patches(arr[:, c:c + p, c:c + p])  # the judged patch, not its surround
    probs[const] = np.eye(NUM_CLASSES, dtype=np.float32)[BG_LABEL]
    return probs


def clear_caches():
    """Drop the compiled inference programs (they are rebuilt on the next call)."""
    _probs_fn.cache_clear()
