"""Procedural in-focus phantoms in camera counts: textured nuclei, beads and rings.

A second source of training windows besides the few real BBBC006 fields: random, noise-free,
in-focus objects on a camera offset plus a faint background, in the same 16-bit counts as the
real images, so that `synth_batch` can blur them with the same PSFs and add the same camera
noise. The kinds follow the paper's Fig. 7: O1 beads (sub-resolution spots), O2 rings, and
nuclei-like blobs (smooth ellipses with chromatin texture, as in BBBC006's U2OS Hoechst
images). Everything is pure JAX, seeded by a key, and has static shapes, so `jax.vmap` over
keys makes a batch.

References:
    D. He et al., IEEE Photonics J. 12(2):3900513 (2020), Fig. 7 (O1 beads, O2 ring).
"""

import jax
import jax.numpy as jnp

__all__ = ["PHANTOM_KINDS", "phantom"]

#: Phantom kinds, in the order `kind="mixed"` draws them from.
PHANTOM_KINDS = ("nuclei", "beads", "rings")

_MAX_NUCLEI = 8
_MAX_BEADS = 24
_MAX_RINGS = 3


def _log_uniform(key, shape, lo, hi):
    return jnp.exp(jax.random.uniform(key, shape, minval=jnp.log(lo), maxval=jnp.log(hi)))


def _active(key, shape_max, empty_prob=0.1):
    """Random object count in 0..shape_max (0 with extra probability `empty_prob`), as a mask."""
    k1, k2 = jax.random.split(key)
    n = jax.random.randint(k1, (), 1, shape_max + 1)
    n = jnp.where(jax.random.uniform(k2) < empty_prob, 0, n)
    return jnp.arange(shape_max) < n


def _smooth_noise(key, size, sigma):
    """Unit-variance Gaussian random field with correlation length `sigma` px (FFT filter)."""
    white = jax.random.normal(key, (size, size))
    f = jnp.fft.fftfreq(size)
    g = jnp.exp(-2.0 * (jnp.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    field = jnp.fft.ifft2(jnp.fft.fft2(white) * g).real
    return field / jnp.maximum(jnp.std(field), 1e-6)


def _nuclei(key, yy, xx, size):
    ks = jax.random.split(key, 9)
    m = _MAX_NUCLEI
    on = _active(ks[0], m)
    cy = jax.random.uniform(ks[1], (m,), minval=-0.15 * size, maxval=1.15 * size)
    cx = jax.random.uniform(ks[2], (m,), minval=-0.15 * size, maxval=1.15 * size)
    a = jax.random.uniform(ks[3], (m,), minval=6.0, maxval=16.0)  # semi-axes in px (4-10 µm)
    b = a * jax.random.uniform(ks[4], (m,), minval=0.55, maxval=1.0)
    th = jax.random.uniform(ks[5], (m,), maxval=jnp.pi)
    amp = _log_uniform(ks[6], (m,), 80.0, 3000.0)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    c, s = jnp.cos(th)[:, None, None], jnp.sin(th)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    rho = jnp.sqrt((u / a[:, None, None]) ** 2 + (v / b[:, None, None]) ** 2)
    edge = jax.nn.sigmoid((1.0 - rho) * a[:, None, None] / 1.2)  # ~1 px soft rim
    texture_amp = jax.random.uniform(ks[7], (), minval=0.1, maxval=0.45)
    texture = jnp.clip(1.0 + texture_amp * _smooth_noise(ks[8], size, 1.5), 0.2, None)
    objects = jnp.where(on[:, None, None], amp[:, None, None] * edge, 0.0)
    return jnp.max(objects, axis=0) * texture


def _beads(key, yy, xx, size):
    ks = jax.random.split(key, 5)
    m = _MAX_BEADS
    on = _active(ks[0], m)
    cy = jax.random.uniform(ks[1], (m,), maxval=size)
    cx = jax.random.uniform(ks[2], (m,), maxval=size)
    sig = jax.random.uniform(ks[3], (m,), minval=0.5, maxval=1.6)
    amp = _log_uniform(ks[4], (m,), 100.0, 3000.0)
    r2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    spots = amp[:, None, None] * jnp.exp(-0.5 * r2 / sig[:, None, None] ** 2)
    return jnp.sum(jnp.where(on[:, None, None], spots, 0.0), axis=0)


def _rings(key, yy, xx, size):
    ks = jax.random.split(key, 6)
    m = _MAX_RINGS
    on = _active(ks[0], m)
    cy = jax.random.uniform(ks[1], (m,), minval=0.2 * size, maxval=0.8 * size)
    cx = jax.random.uniform(ks[2], (m,), minval=0.2 * size, maxval=0.8 * size)
    radius = jax.random.uniform(ks[3], (m,), minval=5.0, maxval=0.3 * size)
    width = jax.random.uniform(ks[4], (m,), minval=0.7, maxval=2.5)
    amp = _log_uniform(ks[5], (m,), 100.0, 2500.0)
    r = jnp.sqrt((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
    rings = amp[:, None, None] * jnp.exp(-0.5 * ((r - radius[:, None, None]) / width[:, None, None]) ** 2)
    return jnp.sum(jnp.where(on[:, None, None], rings, 0.0), axis=0)


def phantom(key, *, size=132, kind="mixed", offset=100.0, background=(5.0, 40.0)):
    """One random, noise-free, in-focus phantom window in camera counts.

    The window is `offset` + a background (uniform level drawn from `background`, plus a gentle
    linear gradient of up to 30 % of it) + objects of one kind: nuclei (soft-edged ellipses of
    4-10 µm semi-axis at 0.65 µm/px, chromatin texture, 80-3000 counts), beads (Gaussian spots
    of 0.5-1.6 px sigma, 100-3000 counts; paper's O1) or rings (annuli of 5 px to 0.3*size
    radius; paper's O2). About 10 % of windows hold no object, i.e. background only.

    Args:
        key: a `jax.random` key.
        size: static side of the square window in pixels (for `synth_batch`: patch + k - 1).
        kind: static; one of 'nuclei', 'beads', 'rings', or 'mixed' (a random kind per key).
        offset: camera offset in counts.
        background: (low, high) of the uniform background level above `offset`, in counts.

    Returns:
        (size, size) float32 array of expected counts (no noise), all >= `offset`.

    Raises:
        ValueError: unknown `kind` or a `size` below 8.

    Examples:
        >>> import jax
        >>> from lbdvd_jax.phantoms import phantom
        >>> keys = jax.random.split(jax.random.key(0), 4)
        >>> jax.vmap(lambda k: phantom(k, size=132))(keys).shape
        (4, 132, 132)
    """
    if kind not in PHANTOM_KINDS + ("mixed",):
        raise ValueError(f"kind: got {kind!r}, expected one of {PHANTOM_KINDS + ('mixed',)}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size: got {size!r}, expected a Python int >= 8 (the window side in px)")
    k_kind, k_obj, k_bg, k_grad = jax.random.split(key, 4)
    yy, xx = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32),
                          indexing="ij")
    makers = {"nuclei": _nuclei, "beads": _beads, "rings": _rings}
    if kind == "mixed":
        choice = jax.random.randint(k_kind, (), 0, len(PHANTOM_KINDS))
        signal = jax.lax.switch(choice, [lambda k, f=makers[n]: f(k, yy, xx, size) for n in PHANTOM_KINDS],
                                k_obj)
    else:
        signal = makers[kind](k_obj, yy, xx, size)
    level = jax.random.uniform(k_bg, (), minval=background[0], maxval=background[1])
    gy, gx = jax.random.uniform(k_grad, (2,), minval=-0.15, maxval=0.15)
    grad = level * (1.0 + gy * (yy / size - 0.5) * 2 + gx * (xx / size - 0.5) * 2)
    return (offset + grad + signal).astype(jnp.float32)
