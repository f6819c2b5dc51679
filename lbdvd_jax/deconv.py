"""Richardson-Lucy deconvolution of one patch (paper Eq. 3) and a blind variant.

Linear convolution is done with real FFTs on a zero-padded grid and cropped to the input
size, which equals ``scipy.signal.fftconvolve(x, psf, mode='same')`` for odd kernels. The
kernel is stored with its centre rolled to the origin, so an FFT size of ``H + k // 2`` per
axis is enough for the 'same' window to be free of wrap-around.

Batch with ``jax.vmap`` (one PSF per patch is fine); ``num_iter`` and ``fft_shape`` are
static Python values (a traced loop bound would lose reverse-mode gradients).

References:
    W. H. Richardson, "Bayesian-based iterative method of image restoration," JOSA 62 (1972).
    L. B. Lucy, "An iterative technique for the rectification of observed distributions,"
    Astron. J. 79 (1974). D. S. C. Biggs and M. Andrews, "Acceleration of iterative image
    restoration algorithms," Appl. Opt. 36 (1997) (the blind alternation, Matlab deconvblind).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lbdvd_jax.errors import InputError
from lbdvd_jax.validate import check_image, check_psf

__all__ = ["BlindDeconvolution", "blind_richardson_lucy", "convolve", "fast_fft_size", "richardson_lucy",
           "richardson_lucy_iterates"]

_EPS = 1e-12  # same magnitude as scikit-image's RL regulariser; representable in float32


def fast_fft_size(n):
    """Smallest integer >= ``n`` whose prime factors are 2, 3, 5 and 7 (fast for DUCC/cuFFT)."""
    n = int(n)
    best = 1 << max(0, (n - 1).bit_length())
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                m = p3
                while m < n:
                    m *= 2
                best = min(best, m)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def _fft_shape(image_shape, psf_shape, fft_shape):
    need = tuple(s + k // 2 for s, k in zip(image_shape, psf_shape))
    if fft_shape is None:
        return tuple(fast_fft_size(n) for n in need)
    fft_shape = tuple(int(s) for s in fft_shape)
    if len(fft_shape) != 2 or any(f < n for f, n in zip(fft_shape, need)):
        raise InputError(f"fft_shape must be two sizes >= image size + psf size // 2 = {need!r} "
                         f"to avoid wrap-around; got {fft_shape!r}. Fix: leave fft_shape=None.")
    return fft_shape


def _otf(psf, shape):
    """rfft2 of the PSF zero-padded to ``shape`` with its centre rolled to the origin."""
    kh, kw = psf.shape
    big = jnp.zeros(shape, psf.dtype).at[:kh, :kw].set(psf)
    big = jnp.roll(big, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return jnp.fft.rfft2(big)


def _filter(x, otf, shape):
    """Linear 'same' convolution (or correlation with conj(otf)) of x through the padded grid."""
    h, w = x.shape
    return jnp.fft.irfft2(jnp.fft.rfft2(x, s=shape) * otf, s=shape)[:h, :w]


def _safe_ratio(num, den, eps):
    """num / den where den > eps, else 0; double-where so gradients stay finite."""
    ok = den > eps
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))


def _rl_step(image, est, otf, shape, eps):
    ratio = _safe_ratio(image, _filter(est, otf, shape), eps)
    return est * _filter(ratio, jnp.conj(otf), shape)


def _rl_setup(image, psf, num_iter, fft_shape):
    """Checked image, iteration count, FFT shape and OTF of one RL run."""
    image = check_image(image, "image")
    psf = check_psf(psf, "psf").astype(image.dtype)
    num_iter = int(num_iter)
    if num_iter < 0:
        raise InputError(f"num_iter must be >= 0; got {num_iter!r}.")
    shape = _fft_shape(image.shape, psf.shape, fft_shape)
    return image, num_iter, shape, _otf(psf, shape)


def richardson_lucy(image, psf, *, num_iter=15, eps=_EPS, fft_shape=None, stop=None):
    """Richardson-Lucy deconvolution of one 2-D image with a known PSF (paper Eq. 3).

    ``o_{t+1} = o_t * [(i / (h (x) o_t)) (x) h(-x, -y)]`` with ``o_0 = i`` (the observed image
    is the initial estimate, as in the paper; scikit-image starts from 0.5 instead).

    Args:
        image: (H, W) non-negative float32/float64 observed image (any intensity scale).
        psf: (kh, kw) non-negative PSF with odd sizes, summing to 1, centre at ``k // 2``.
            Cast to ``image.dtype``.
        num_iter: static number of iterations (paper: 15).
        eps: static; where the re-blurred estimate is <= eps the ratio is set to 0 (no NaN/Inf
            in value or gradient when the image has zeros).
        fft_shape: static padded FFT size ``(Ph, Pw)``; default: the smallest 2-3-5-7-smooth
            sizes >= ``(H + kh // 2, W + kw // 2)``.
        stop: optional traced int: the estimate stops changing after ``stop`` iterations
            (``min(stop, num_iter)`` are applied). Under ``vmap`` every image can stop at its
            own count (e.g. per defocus level) while the loop runs ``num_iter`` times.

    Returns:
        (H, W) deconvolved image, same dtype as ``image``.

    Raises:
        TypeError: integer or complex inputs. ValueError: wrong rank, NaN/Inf, negatives, even
        kernel sizes, a PSF not summing to 1 (value checks only on concrete inputs).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from lbdvd_jax import richardson_lucy
        >>> img = jnp.ones((84, 84)); psf = jnp.ones((5, 5)) / 25
        >>> out = jax.jit(lambda x, h: richardson_lucy(x, h, num_iter=15))(img, psf)
        >>> batch = jax.vmap(richardson_lucy)(jnp.stack([img, img]), jnp.stack([psf, psf]))
    """
    image, num_iter, shape, otf = _rl_setup(image, psf, num_iter, fft_shape)
    if stop is None:
        return jax.lax.fori_loop(0, num_iter,
                                 lambda _, est: _rl_step(image, est, otf, shape, eps), image)
    return jax.lax.fori_loop(
        0, num_iter, lambda i, est: jnp.where(i < stop, _rl_step(image, est, otf, shape, eps), est),
        image)


def richardson_lucy_iterates(image, psf, *, num_iter=15, eps=_EPS, fft_shape=None):
    """Every Richardson-Lucy iterate of one image: ``(num_iter + 1, H, W)``, iterate k at index k.

    Index 0 is the image itself (the initial estimate) and index ``num_iter`` equals
    :func:`richardson_lucy` with the same arguments. Keeping the iterates lets a caller treat
    the iteration count as a real number (interpolating two iterates) and differentiate through
    it, as `policy_fit` does. Memory grows with ``num_iter``; arguments as :func:`richardson_lucy`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from lbdvd_jax.deconv import richardson_lucy_iterates
        >>> its = richardson_lucy_iterates(jnp.ones((16, 16)), jnp.ones((3, 3)) / 9, num_iter=4)
        >>> its.shape
        (5, 16, 16)
    """
    image, num_iter, shape, otf = _rl_setup(image, psf, num_iter, fft_shape)

    def body(est, _):
        new = _rl_step(image, est, otf, shape, eps)
        return new, new

    _, its = jax.lax.scan(body, image, None, length=num_iter)
    return jnp.concatenate([image[None], its])


def convolve(image, psf, *, fft_shape=None):
    """Linear 'same'-size convolution of a 2-D image with a PSF, zero outside the image.

    The forward model that :func:`richardson_lucy` inverts (its re-blur step); equals
    ``scipy.signal.fftconvolve(image, psf, mode='same')`` for odd kernel sizes. Arguments as
    :func:`richardson_lucy`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from lbdvd_jax.deconv import convolve
        >>> float(convolve(jnp.ones((8, 8)), jnp.ones((3, 3)) / 9)[4, 4])
        1.0
    """
    image = check_image(image, "image")
    psf = check_psf(psf, "psf").astype(image.dtype)
    shape = _fft_shape(image.shape, psf.shape, fft_shape)
    return _filter(image, _otf(psf, shape), shape)


class BlindDeconvolution(NamedTuple):
    """`blind_richardson_lucy`'s result (unpacks as a pair): the image and the PSF estimate."""

    image: jax.Array
    psf: jax.Array


def blind_richardson_lucy(image, psf0, *, num_iter=15, psf_iter=1, eps=_EPS, fft_shape=None):
    """Blind Richardson-Lucy: alternate image and PSF updates (like Matlab's ``deconvblind``).

    Each outer iteration does one RL image update with the current PSF, then ``psf_iter`` RL
    updates of the PSF with the image fixed:
    ``h <- h * [(i / (o (x) h)) (*) o] / sum(o)`` on the kernel support, after which the PSF is
    clipped at 0 and renormalised to sum 1. The paper uses it as a comparison (no depth prior).

    Args:
        image: (H, W) non-negative float observed image.
        psf0: (kh, kw) starting PSF (odd sizes, sums to 1); its support is kept.
        num_iter: static number of outer iterations.
        psf_iter: static number of PSF updates per outer iteration.
        eps: static safe-division threshold (see :func:`richardson_lucy`).
        fft_shape: static padded FFT size, as in :func:`richardson_lucy`.

    Returns:
        `BlindDeconvolution(image, psf)`: the (H, W) image and the (kh, kw) PSF estimates,
        dtype of ``image``.
    """
    image = check_image(image, "image")
    psf0 = check_psf(psf0, "psf0").astype(image.dtype)
    num_iter, psf_iter = int(num_iter), int(psf_iter)
    shape = _fft_shape(image.shape, psf0.shape, fft_shape)
    kh, kw = psf0.shape
    ch, cw = kh // 2, kw // 2
    rows = jnp.arange(-ch, ch + 1) % shape[0]
    cols = jnp.arange(-cw, cw + 1) % shape[1]

    def psf_step(_, carry):
        est, psf = carry
        otf = _otf(psf, shape)
        ratio = _safe_ratio(image, _filter(est, otf, shape), eps)
        # corr[d] = sum_j ratio[j] est[j - d] for lags d in the kernel support
        corr = jnp.fft.irfft2(jnp.fft.rfft2(ratio, s=shape) * jnp.conj(jnp.fft.rfft2(est, s=shape)),
                              s=shape)[rows[:, None], cols[None, :]]
        psf = jnp.maximum(psf * _safe_ratio(corr, jnp.sum(est), eps), 0)
        return est, psf / jnp.where(jnp.sum(psf) > 0, jnp.sum(psf), 1)

    def outer(_, carry):
        est, psf = carry
        est = _rl_step(image, est, _otf(psf, shape), shape, eps)
        return jax.lax.fori_loop(0, psf_iter, psf_step, (est, psf))

    return BlindDeconvolution(*jax.lax.fori_loop(0, num_iter, outer, (image, psf0)))
