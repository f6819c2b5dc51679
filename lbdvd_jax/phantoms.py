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

from lbdvd_jax.errors import InputError

__all__ = ["PHANTOM_KINDS", "phantom", "phantoms"]

#: Phantom kinds, in the order `kind="mixed"` draws them from.
PHANTOM_KINDS = ("nuclei", "beads", "rings")

_MAX_NUCLEI = 8
_MAX_BEADS = 24
_MAX_RINGS = 3


def _lerp(u, lo, hi):
    return lo + (hi - lo) * u


def _log_lerp(u, lo, hi):
    return jnp.exp(_lerp(u, jnp.log(lo), jnp.log(hi)))


def _active(u_count, u_empty, m, empty_prob=0.1):
    """Random object count in 1..m (0 with probability `empty_prob`), as a (m,) mask."""
    n = jnp.where(u_empty < empty_prob, 0, 1 + jnp.floor(u_count * m))
    return jnp.arange(m) < n


def _smooth_noise(white, sigma):
    """Unit-variance Gaussian random field with correlation length `sigma` px (FFT filter)."""
    size = white.shape[-1]
    f = jnp.fft.fftfreq(size)
    g = jnp.exp(-2.0 * (jnp.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    field = jnp.fft.ifft2(jnp.fft.fft2(white) * g).real
    return field / jnp.maximum(jnp.std(field), 1e-6)


# Renderers take their uniforms (rows: parameters, columns: objects) rather than a key: the
# random draws for a whole batch are then one un-vmapped call (vmapped threefry compiles slowly).

def _nuclei(u, white, yy, xx, size):
    m = _MAX_NUCLEI
    u = u[:8, :m]
    on = _active(u[0, 0], u[0, 1], m)
    cy, cx = _lerp(u[1], -0.15 * size, 1.15 * size), _lerp(u[2], -0.15 * size, 1.15 * size)
    a = _lerp(u[3], 6.0, 16.0)  # semi-axes in px (4-10 µm at 0.65 µm/px)
    b = a * _lerp(u[4], 0.55, 1.0)
    th = u[5] * jnp.pi
    amp = _log_lerp(u[6], 80.0, 3000.0)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    c, s = jnp.cos(th)[:, None, None], jnp.sin(th)[:, None, None]
    p, q = c * dx + s * dy, -s * dx + c * dy
    rho = jnp.sqrt((p / a[:, None, None]) ** 2 + (q / b[:, None, None]) ** 2)
    edge = jax.nn.sigmoid((1.0 - rho) * a[:, None, None] / 1.2)  # ~1 px soft rim
    texture_amp = _lerp(u[7, 0], 0.1, 0.45)
    texture = jnp.clip(1.0 + texture_amp * _smooth_noise(white, 1.5), 0.2, None)
    objects = jnp.where(on[:, None, None], amp[:, None, None] * edge, 0.0)
    return jnp.max(objects, axis=0) * texture


def _beads(u, white, yy, xx, size):
    m = _MAX_BEADS
    u = u[:5, :m]
    on = _active(u[0, 0], u[0, 1], m)
    cy, cx = u[1] * size, u[2] * size
    sig = _lerp(u[3], 0.5, 1.6)
    amp = _log_lerp(u[4], 100.0, 3000.0)
    r2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
    spots = amp[:, None, None] * jnp.exp(-0.5 * r2 / sig[:, None, None] ** 2)
    return jnp.sum(jnp.where(on[:, None, None], spots, 0.0), axis=0)


def _rings(u, white, yy, xx, size):
    m = _MAX_RINGS
    u = u[:6, :m]
    on = _active(u[0, 0], u[0, 1], m)
    cy, cx = _lerp(u[1], 0.2 * size, 0.8 * size), _lerp(u[2], 0.2 * size, 0.8 * size)
    radius = _lerp(u[3], 5.0, 0.3 * size)
    width = _lerp(u[4], 0.7, 2.5)
    amp = _log_lerp(u[5], 100.0, 2500.0)
    r = jnp.sqrt((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
    rings = amp[:, None, None] * jnp.exp(-0.5 * ((r - radius[:, None, None]) / width[:, None, None]) ** 2)
    return jnp.sum(jnp.where(on[:, None, None], rings, 0.0), axis=0)


def phantom(key, *, size=132, kind="mixed", offset=100.0, background=(5.0, 40.0)):
    """One random, noise-free, in-focus phantom window in camera counts.

    The window is `offset` + a background (uniform level drawn from `background`, plus a gentle
    linear gradient of up to +-15 % of it) + objects of one kind: nuclei (1-8 soft-edged
    ellipses of 4-10 µm semi-axis at 0.65 µm/px, chromatin texture, 80-3000 counts), beads (1-24
    Gaussian spots of 0.5-1.6 px sigma, 100-3000 counts; paper's O1) or rings (1-3 annuli of
    5 px to 0.3*size radius; paper's O2). 10 % of windows hold no object (background only).

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
        >>> phantom(jax.random.key(0), size=132, kind="beads").shape
        (132, 132)
    """
    return phantoms(key, 1, size=size, kind=kind, offset=offset, background=background)[0]


def phantoms(key, num, *, size=132, kind="mixed", offset=100.0, background=(5.0, 40.0)):
    """`num` independent phantoms at once (see `phantom`); faster to compile than a vmap.

    Args:
        key: a `jax.random` key.
        num: static number of windows.
        size, kind, offset, background: as in `phantom`.

    Returns:
        (num, size, size) float32 expected counts.
    """
    if kind not in PHANTOM_KINDS + ("mixed",):
        raise InputError(f"kind: got {kind!r}, expected one of {PHANTOM_KINDS + ('mixed',)}")
    if not isinstance(size, int) or size < 8:
        raise InputError(f"size: got {size!r}, expected a Python int >= 8 (the window side in px)")
    if not isinstance(num, int) or num < 1:
        raise InputError(f"num: got {num!r}, expected a positive Python int")
    if kind in ("nuclei", "mixed"):
        k_u, k_tex = jax.random.split(key)
        white = jax.random.normal(k_tex, (num, size, size))
    else:
        k_u, white = key, jnp.zeros((num, 1, 1))
    u = jax.random.uniform(k_u, (num, 8 * _MAX_BEADS + 4))
    u_obj, u_bg = u[:, 4:].reshape(num, 8, _MAX_BEADS), u[:, :4]
    yy, xx = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32),
                          indexing="ij")
    makers = {"nuclei": _nuclei, "beads": _beads, "rings": _rings}

    def one(u, ub, w):
        if kind == "mixed":
            choice = jnp.minimum((ub[0] * len(PHANTOM_KINDS)).astype(jnp.int32), len(PHANTOM_KINDS) - 1)
            signal = jax.lax.switch(choice, [lambda u, w, f=makers[n]: f(u, w, yy, xx, size)
                                             for n in PHANTOM_KINDS], u, w)
        else:
            signal = makers[kind](u, w, yy, xx, size)
        level = _lerp(ub[1], background[0], background[1])
        gy, gx = _lerp(ub[2], -0.15, 0.15), _lerp(ub[3], -0.15, 0.15)
        grad = level * (1.0 + gy * (yy / size - 0.5) * 2 + gx * (xx / size - 0.5) * 2)
        return (offset + grad + signal).astype(jnp.float32)

    return jax.vmap(one)(u_obj, u_bg, white)
