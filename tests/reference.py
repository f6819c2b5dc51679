"""Independent float64 NumPy/SciPy oracles. Append-only: one section per module under test."""

import functools

import numpy as np
import scipy.integrate
import scipy.special

# --- PSF (Eq. 2) by adaptive quadrature, per distinct radius ------------------------------


def eq2_point_quad(r_um, z_um, wavelength_um, na, n):
    """|int_0^1 J0(k NA/n r rho) exp(-i/2 k rho^2 z NA^2/n^2) rho d rho|^2 by scipy.integrate.quad."""
    k = 2.0 * np.pi / wavelength_um
    a = k * na / n * r_um
    b = 0.5 * k * z_um * (na / n) ** 2
    re = scipy.integrate.quad(lambda p: scipy.special.j0(a * p) * np.cos(b * p * p) * p, 0.0, 1.0,
                              limit=400, epsabs=1e-14, epsrel=1e-12)[0]
    im = scipy.integrate.quad(lambda p: -scipy.special.j0(a * p) * np.sin(b * p * p) * p, 0.0, 1.0,
                              limit=400, epsabs=1e-14, epsrel=1e-12)[0]
    return re * re + im * im


@functools.lru_cache(maxsize=64)
def psf_quad(size, z_um, wavelength_um=0.451, na=0.5, n=1.0, pixel_um=0.65):
    """Normalised (size, size) PSF sampled at pixel centres, quad at each distinct radius."""
    half = size // 2
    i = np.arange(size) - half
    r2 = i[:, None] ** 2 + i[None, :] ** 2
    uniq, inverse = np.unique(r2, return_inverse=True)
    vals = np.array([eq2_point_quad(pixel_um * np.sqrt(q), z_um, wavelength_um, na, n) for q in uniq])
    h = vals[inverse].reshape(size, size)
    return h / h.sum()


# --- Synthetic defocus data (data.py) -----------------------------------------------------


def defocus_valid_ref(window, psf):
    """Float64 'valid' convolution of a window with a PSF (scipy.signal.fftconvolve)."""
    import scipy.signal

    return scipy.signal.fftconvolve(np.asarray(window, np.float64), np.asarray(psf, np.float64),
                                    mode="valid")


def bg_rule_ref(patch, bg_max=230.0, bg_range=30.0):
    """The paper's bg rule in plain Python: max < bg_max and max - min < bg_range (counts)."""
    p = np.asarray(patch, np.float64)
    return bool(p.max() < bg_max and p.max() - p.min() < bg_range)


def camera_moments_ref(mu, gain, offset, read_noise):
    """Mean and variance of offset + gain * Poisson((mu - offset)/gain) + Normal(0, read_noise)."""
    electrons = np.maximum(np.asarray(mu, np.float64) - offset, 0.0) / gain
    return offset + gain * electrons, gain ** 2 * electrons + read_noise ** 2


def gaussian_psf_ref(size, sigma):
    """Normalised isotropic Gaussian kernel (a stand-in PSF)."""
    i = np.arange(size) - size // 2
    g = np.exp(-0.5 * (i[:, None] ** 2 + i[None, :] ** 2) / sigma ** 2)
    return g / g.sum()


# --- Richardson-Lucy and patch-wise montage (deconv.py, patches.py) ------------------------


def rl_ref(image, psf, num_iter, eps=1e-12):
    """Float64 RL with scipy.signal.fftconvolve(mode='same'), o_0 = image, ratio 0 where the
    re-blurred estimate <= eps (scikit-image's loop with the paper's initial estimate)."""
    import scipy.signal

    image = np.asarray(image, np.float64)
    psf = np.asarray(psf, np.float64)
    est = image.copy()
    for _ in range(num_iter):
        conv = scipy.signal.fftconvolve(est, psf, mode="same")
        ok = conv > eps
        ratio = np.where(ok, image / np.where(ok, conv, 1.0), 0.0)
        est = est * scipy.signal.fftconvolve(ratio, psf[::-1, ::-1], mode="same")
    return est


def blind_rl_ref(image, psf0, num_iter, eps=1e-12):
    """Float64 blind RL: one image update, then one PSF update on the kernel support, clip,
    renormalise (the alternation of Matlab's deconvblind, without its acceleration)."""
    import scipy.signal

    image = np.asarray(image, np.float64)
    psf = np.asarray(psf0, np.float64)
    kh, kw = psf.shape
    est = image.copy()

    def ratio_of(est, psf):
        conv = scipy.signal.fftconvolve(est, psf, mode="same")
        ok = conv > eps
        return np.where(ok, image / np.where(ok, conv, 1.0), 0.0)

    for _ in range(num_iter):
        est = est * scipy.signal.fftconvolve(ratio_of(est, psf), psf[::-1, ::-1], mode="same")
        r = ratio_of(est, psf)
        # corr[d] = sum_j r[j] est[j - d], d in [-k//2, k//2]
        full = scipy.signal.correlate(r, est, mode="full", method="direct")
        cy, cx = est.shape[0] - 1, est.shape[1] - 1  # zero lag
        corr = full[cy - kh // 2:cy + kh // 2 + 1, cx - kw // 2:cx + kw // 2 + 1]
        psf = np.maximum(psf * corr / est.sum(), 0)
        psf = psf / psf.sum()
    return est, psf


def patchwise_ref(image, levels, psfs, patch, stride, context, num_iter, weights, passthrough):
    """Patch-wise RL by explicit loops: grid with a flush last patch, zero context, per-patch
    rl_ref, montage by accumulating w * patch and w."""
    image = np.asarray(image, np.float64)
    h, w = image.shape

    def starts(n):
        s = list(range(0, n - patch + 1, stride))
        return s + [n - patch] if s[-1] + patch < n else s

    if weights == "triangular":
        half = patch / 2
        t = 1 - np.abs(np.arange(patch) + 0.5 - half) / half
        wts = np.outer(t, t)
    else:
        wts = np.ones((patch, patch))
    padded = np.pad(image, context)
    num = np.zeros_like(image)
    den = np.zeros_like(image)
    i = 0
    for r in starts(h):
        for c in starts(w):
            win = padded[r:r + patch + 2 * context, c:c + patch + 2 * context]
            if levels[i] not in passthrough:
                win = rl_ref(win, psfs[levels[i]], num_iter)
            num[r:r + patch, c:c + patch] += wts * win[context:context + patch,
                                                       context:context + patch]
            den[r:r + patch, c:c + patch] += wts
            i += 1
    return num / den


# --- End-to-end restore (pipeline.py) -------------------------------------------------------


def restore_ref(image, labels, psfs, patch, stride, context, num_iter, pad_mode, passthrough):
    """Float64 patch-wise RL + triangular montage by loops, with `pad_mode` ('constant' or
    'reflect', NumPy's meaning) beyond the image; labels in `passthrough` keep their pixels;
    `psfs` indexed by label, or a (n, k, k) stack of per-patch kernels when len(psfs) == n."""
    image = np.asarray(image, np.float64)
    h, w = image.shape

    def starts(n):
        s = list(range(0, n - patch + 1, stride))
        return s + [n - patch] if s[-1] + patch < n else s

    half = patch / 2
    t = 1 - np.abs(np.arange(patch) + 0.5 - half) / half
    wts = np.outer(t, t)
    padded = np.pad(image, context, mode=pad_mode)
    num = np.zeros_like(image)
    den = np.zeros_like(image)
    grid = [(r, c) for r in starts(h) for c in starts(w)]
    per_patch = len(psfs) == len(grid) and len(grid) != 11
    for i, (r, c) in enumerate(grid):
        win = padded[r:r + patch + 2 * context, c:c + patch + 2 * context]
        if labels[i] not in passthrough:
            win = rl_ref(win, psfs[i] if per_patch else psfs[labels[i]], num_iter)
        num[r:r + patch, c:c + patch] += wts * win[context:context + patch,
                                                   context:context + patch]
        den[r:r + patch, c:c + patch] += wts
    return num / den


# --------------------------------------------------------------------------- DelpNet metrics oracles

def classification_metrics_ref(y_true, y_pred, num_classes):
    """Loop-based float64 confusion matrix, accuracy and macro P/R/F1 (scikit-learn conventions:
    macro over classes present in y_true, zero_division=0)."""
    import numpy as np

    cm = np.zeros((num_classes, num_classes), np.int64)
    for t, p in zip(y_true, y_pred):
        cm[int(t), int(p)] += 1
    ps, rs, fs = [], [], []
    for c in range(num_classes):
        tp = cm[c, c]
        support = cm[c, :].sum()
        if support == 0:
            continue
        pred = cm[:, c].sum()
        prec = tp / pred if pred else 0.0
        rec = tp / support
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        ps.append(prec)
        rs.append(rec)
        fs.append(f1)
    acc = float(np.trace(cm)) / max(len(y_true), 1)
    return cm, acc, float(np.mean(ps)), float(np.mean(rs)), float(np.mean(fs))


def top_k_ref(y_true, scores):
    """Top-k accuracy for k = 1..C by sorting each row (ties resolved in favour of the truth)."""
    import numpy as np

    scores = np.asarray(scores, np.float64)
    out = []
    for k in range(1, scores.shape[1] + 1):
        hits = 0
        for t, row in zip(y_true, scores):
            higher = sum(1 for v in row if v > row[int(t)])
            hits += higher < k
        out.append(hits / len(y_true))
    return out


# --- Noise spectra (camera noise completions) ------------------------------------------------


def radial_noise_power(images, bands=10):
    """Periodogram |FFT|^2 / pixels of (..., h, w) images, each less its own mean, averaged over
    the leading axes and over rings of width 0.5 / bands cycle/px (ring b: b..b+1 widths; the
    corners beyond Nyquist left out): white noise of variance v gives v in every ring."""
    a = np.asarray(images, np.float64)
    h, w = a.shape[-2:]
    p = np.abs(np.fft.fft2(a - a.mean(axis=(-2, -1), keepdims=True))) ** 2 / (h * w)
    p = p.reshape(-1, h, w)
    ring = np.minimum((np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None]) / (0.5 / bands)).astype(int),
                      bands)
    return np.array([p[:, ring == b].mean() for b in range(bands)])
