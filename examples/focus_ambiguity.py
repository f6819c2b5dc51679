"""Why levels 0 and 1 (0 and 2 µm) are hard to tell apart on a field never seen: the physics.

Defocus multiplies the object's power spectrum by |OTF_z|^2. From 3 µm on, OTF_z has a zero
inside the sampled band (Nyquist 0.5 cycle/px at 0.65 µm pixels): a dip at a frequency fixed by
z alone, whatever the object. At 2 µm it has none: the only evidence is how much faster the
spectrum falls off than the object's own, and the object's own fall-off is unknown. This
script sets the two side by side:

- the Eq. 2 OTF (radial mean of |FFT(psf)|) at 0..20 µm, its first zero, and the extra
  fall-off (dB) that z adds over the band where every in-focus field's signal stands above
  its camera noise;
- each in-focus BBBC006 field's own fall-off over the same band (Hann window, noise floor from
  `spectral.noise_sigma` subtracted): the spread between fields is what an estimator that has
  not seen the object must absorb;
- the exact look-alike: the sampled in-focus OTF has no zero (|OTF_0| >= 0.89 at 0.65 µm
  pixels), so k = F^-1[OTF_z / OTF_0] is a blur kernel and the image of object o at z µm equals,
  pixel for pixel, the in-focus image of the object k * o. Where k is nonnegative, k * o is a
  physical object, an ordinary softer specimen; the script reports k's negative mass, and each
  field's fall-off after 2 µm of defocus (camera noise as in the acceptance data) beside the
  in-focus fall-offs: a field in focus that is blurrier than another field at 2 µm (a
  "crossing") is a real pair that no estimator reading the image alone can call both right;
- the noise texture of the synthetic levels: every real in-focus field carries its camera's
  noise, which the synthetic blur smooths (kept at low frequencies, removed at high ones)
  before fresh noise tops the variance up (`synthesis.synthesize_defocus`, as the paper blurred
  real noisy images). Its radial power relative to fresh camera noise, on a flat field, shows
  a cue that synthetic levels carry and real defocused images (fresh, white camera noise at any
  depth) do not; and the same for `synthesis.matched_noise` (noise='matched'), which shapes the
  fresh noise so that the total is flat.

    python examples/focus_ambiguity.py --depth-bias benchmarks/results/depth_bias_shipped.json \
        -o benchmarks/results/focus_ambiguity.json

With --depth-bias (the JSON of `examples/depth_bias.py`) the estimator's mean depth on each
in-focus field at 0 µm is set beside its fall-off, with their correlation over the fields.
"""

import argparse
import os
import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import add_model_and_fields, centred_kernel, write_result  # noqa: E402

from lbdvd_jax.fields import load_infocus_fields  # noqa: E402
from lbdvd_jax.optics import Optics  # noqa: E402
from lbdvd_jax.psf import psf_stack  # noqa: E402
from lbdvd_jax.spectral import noise_sigma  # noqa: E402
from lbdvd_jax.synthesis import synthesize_defocus  # noqa: E402

GRID = 512  #: FFT size (px) of the OTF and of the field spectra
BIN = 1.0 / 84.0  #: radial bin width (cycle/px): one FFT ring of an 84-px patch
SNR_DB = 6.0  #: a bin is "signal" where the field's power is this far above its noise floor
PSF_SIZE = 99  #: PSF support (px) for the OTF: holds the 20 µm PSF's rings


def ring_index(n):
    """(n, n) radial frequency (cycle/px) of an n-point FFT grid."""
    f = np.fft.fftfreq(n)
    return np.hypot(f[:, None], f[None, :])


def radial_mean(values, radius, edges):
    """Mean of `values` in each ring edges[i] <= radius < edges[i + 1]."""
    idx = np.digitize(radius.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    s = np.bincount(idx[ok], values.ravel()[ok], len(edges) - 1)
    c = np.bincount(idx[ok], None, len(edges) - 1)
    return s / np.maximum(c, 1)


def otf_profiles(depths_um, edges, optics=Optics()):
    """(len(depths), bins) radial mean |OTF| of the Eq. 2 PSF (unit sum) at each depth."""
    size = PSF_SIZE
    psfs = np.asarray(psf_stack(optics, jnp.asarray(depths_um, dtype=float), size=size), np.float64)
    radius = ring_index(GRID)
    out = []
    for p in psfs:
        out.append(radial_mean(np.abs(np.fft.fft2(centred_kernel(p, GRID))), radius, edges))
    return np.array(out)


def first_zero(depth_um, optics=Optics(), grid=4096):
    """Frequency (cycle/px) of the first zero of |OTF| along a frequency axis (exact DFT samples
    every 1/grid cycle/px): its first local minimum below 0.1 (the sampled in-focus OTF has
    shallow aliasing dips), or None when there is none up to Nyquist."""
    p = np.asarray(psf_stack(optics, jnp.asarray([depth_um], dtype=float), size=PSF_SIZE), np.float64)[0]
    line = np.abs(np.fft.rfft(p.sum(0) / p.sum(), grid))  # the OTF on the f_y = 0 axis
    dips = np.where((line[1:-1] < line[:-2]) & (line[1:-1] <= line[2:]) & (line[1:-1] < 0.1))[0] + 1
    return float(dips[0] / grid) if len(dips) else None


def lookalike_kernel(depth_um, optics=Optics(), grid=128):
    """The kernel k with OTF_0 * F[k] = OTF_z on a `grid`-point FFT (centred, unit sum), its
    negative mass (sum of its negative values over its sum), max |OTF_z / OTF_0| and min |OTF_0|
    (no zero: k exists)."""
    p = np.asarray(psf_stack(optics, jnp.asarray([0.0, depth_um], dtype=float), size=PSF_SIZE), np.float64)
    otf = [np.fft.fft2(centred_kernel(q, grid)) for q in p]
    ratio = otf[1] / otf[0]
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(ratio)))
    return (kernel, float(-kernel[kernel < 0].sum() / kernel.sum()), float(np.abs(ratio).max()),
            float(np.abs(otf[0]).min()))


def best_threshold_accuracy(level0, level1):
    """Best balanced accuracy of one threshold on a statistic that should be lower at level 0
    than at level 1: mean over the two levels of the share called right, maximised over every
    threshold between the observed values."""
    a, b = np.asarray(level0, float), np.asarray(level1, float)
    values = np.sort(np.concatenate([a, b]))
    cuts = np.concatenate([[values[0] - 1.0], 0.5 * (values[1:] + values[:-1]), [values[-1] + 1.0]])
    return float(max(0.5 * (np.mean(a < t) + np.mean(b >= t)) for t in cuts))


def synthetic_noise_ratio(levels=(0, 1, 2, 5), *, level_counts=400.0, bands=10, seeds=4, noise="white"):
    """Radial noise power of `synthesize_defocus` at each level over that of fresh camera noise,
    for a flat field at `level_counts` that carries calibrated camera noise (as a real in-focus
    field does): {level: [ratio per band of width 0.5 / bands cycle/px]}. 1 everywhere would
    be real camera noise."""
    import jax

    from lbdvd_jax.camera import add_camera_noise

    flat = np.full((520, 696), level_counts, np.float32)
    edges = np.linspace(0.0, 0.5, bands + 1)

    def power(img):
        a = np.asarray(img, np.float64)[100:420, 100:596]
        p = np.abs(np.fft.fft2(a - a.mean())) ** 2 / a.size
        return radial_mean(p, np.hypot(np.fft.fftfreq(a.shape[0])[:, None], np.fft.fftfreq(a.shape[1])[None]),
                           edges)

    noisy = np.asarray(add_camera_noise(jax.random.PRNGKey(7), flat))
    fresh = np.mean([power(add_camera_noise(jax.random.PRNGKey(100 + s), flat)) for s in range(seeds)], 0)
    return {str(lv): (np.mean([power(synthesize_defocus(noisy, level=lv, seed=s, noise=noise)[0])
                               for s in range(seeds)], 0)
                      / fresh).round(4).tolist() for lv in levels}


def field_spectrum(field, edges):
    """(signal power per ring with the white noise floor subtracted, floor) of one field."""
    n = min(GRID, *field.shape)
    a = np.asarray(field, np.float64)[:n, :n]
    win = np.hanning(n)[:, None] * np.hanning(n)[None, :]
    power = np.abs(np.fft.fft2((a - a.mean()) * win)) ** 2
    sigma = float(noise_sigma(jnp.asarray(a, jnp.float32)))
    floor = sigma ** 2 * np.sum(win ** 2)  # white noise: flat power per frequency
    return radial_mean(power, ring_index(n), edges) - floor, floor


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_and_fields(ap, model=False)
    ap.add_argument("--low", type=float, default=0.05, help="low end (cycle/px) of the compared band")
    ap.add_argument("--depth-bias", default=None, metavar="JSON",
                    help="examples/depth_bias.py output: correlate each field's reading at 0 µm with its fall-off")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    bias = None
    if args.depth_bias:
        import json
        import pathlib

        try:
            fields_bias = json.loads(pathlib.Path(args.depth_bias).read_text())["fields"]
            bias = {name: next(r[1] for r in v["rows"] if r[0] == 0.0) for name, v in fields_bias.items()}
        except (OSError, ValueError, KeyError, StopIteration) as err:
            ap.error(f"--depth-bias: {args.depth_bias} is not a depth_bias.py JSON with a 0 µm row per field "
                     f"({err}); run examples/depth_bias.py -o FILE")
    if not 0 < args.low < 0.5:
        ap.error(f"--low: got {args.low:g}, expected a frequency in (0, 0.5) cycle/px, e.g. 0.05")
    fields, names = load_infocus_fields(args.fields)
    edges = np.arange(0.0, 0.5 + 1e-9, BIN)
    centre = 0.5 * (edges[:-1] + edges[1:])
    spectra = {}
    high = 0.5
    for field, name in zip(fields, names):
        sig, floor = field_spectrum(field, edges)
        above = sig > (10 ** (SNR_DB / 10) - 1) * floor
        top = centre[np.argmin(above[1:]) + 1] if not above[1:].all() else centre[-1]  # first bin below
        high = min(high, float(top) - BIN)
        spectra[name] = sig
    lo = int(np.argmin(np.abs(centre - args.low)))
    hi = int(np.argmin(np.abs(centre - high)))
    if hi <= lo:
        ap.error(f"--low: {args.low:g} cycle/px lies above the common signal band (up to {high:.3f})")
    falloff = {n: float(10 * np.log10(s[lo] / s[hi])) for n, s in spectra.items()}
    falloff2 = {}  # each field at 2 µm with camera noise, as the estimator sees it
    for field, name in zip(fields, names):
        sig, _ = field_spectrum(synthesize_defocus(field, level=1, seed=1)[0], edges)
        falloff2[name] = float(10 * np.log10(sig[lo] / sig[hi]))
    depths = np.arange(0.0, 20.5, 1.0)
    otf = otf_profiles(depths, edges)
    extra = {f"{z:g}": float(20 * np.log10(otf[i, lo] / otf[i, hi]) - 20 * np.log10(otf[0, lo] / otf[0, hi]))
             for i, z in enumerate(depths) if min(otf[i, lo], otf[i, hi]) > 0}
    zeros = {f"{z:g}": first_zero(float(z)) for z in depths}
    spread = max(falloff.values()) - min(falloff.values())
    short = {n: n.split("__")[1] if "__" in n else n for n in names}
    kernel, negative, max_ratio, min_otf0 = lookalike_kernel(2.0)
    noise_ratio = synthetic_noise_ratio()
    noise_matched = synthetic_noise_ratio(noise="matched")
    crossings = [[short[j], short[i]] for i in names for j in names if i != j and falloff[j] > falloff2[i]]
    result = {
        "band_cycle_per_px": [float(centre[lo]), float(centre[hi])],
        "snr_db": SNR_DB,
        "field_falloff_db": {short[n]: v for n, v in falloff.items()},
        "field_falloff_spread_db": spread,
        "defocus_extra_falloff_db": extra,
        "otf_first_zero_cycle_per_px": zeros,
        "first_zero_gap_18_20um_in_84px_bins": (None if zeros["18"] is None or zeros["20"] is None
                                                else abs(zeros["18"] - zeros["20"]) / BIN),
        "lookalike_2um": {
            "kernel_negative_mass": negative, "max_otf_ratio": max_ratio, "min_abs_otf_in_focus": min_otf0,
            "field_falloff_at_2um_db": {short[n]: v for n, v in falloff2.items()},
            "crossings_infocus_blurrier_than_2um": crossings,
            "best_threshold_balanced_accuracy": best_threshold_accuracy(list(falloff.values()),
                                                                        list(falloff2.values())),
        },
        "synthetic_noise_power_ratio": {"band_edges_cycle_per_px": np.linspace(0.0, 0.5, 11).tolist(),
                                        "levels": noise_ratio, "levels_matched": noise_matched},
        "otf_radial": {"freq_cycle_per_px": centre.tolist(),
                       "depth_um": depths.tolist(), "abs_otf": otf.round(5).tolist()},
    }
    if bias is not None:
        both = sorted(set(bias) & set(result["field_falloff_db"]))
        if len(both) < 3:
            ap.error(f"--depth-bias: fields {sorted(bias)} share fewer than 3 with "
                     f"{sorted(result['field_falloff_db'])}; give the depth_bias.py JSON of these fields")
        x = np.array([result["field_falloff_db"][n] for n in both])
        y = np.array([bias[n] for n in both])
        result["reading_at_focus_um"] = {n: float(v) for n, v in zip(both, y)}
        result["falloff_vs_reading_r"] = float(np.corrcoef(x, y)[0, 1])
    summary = {"band": result["band_cycle_per_px"], "field_falloff_db": result["field_falloff_db"],
               "spread_db": round(spread, 2),
               "extra_falloff_db": {k: round(v, 2) for k, v in extra.items() if float(k) <= 4},
               "first_zero": {k: zeros[k] for k in ("1", "2", "3", "4", "18", "20")},
               "gap_18_20_bins": result["first_zero_gap_18_20um_in_84px_bins"],
               "lookalike_negative_mass": round(negative, 5), "min_abs_otf_in_focus": round(min_otf0, 4),
               "falloff_at_2um_db": {short[n]: round(v, 2) for n, v in falloff2.items()},
               "crossings": len(crossings),
               "synthetic_noise_ratio_lowest_highest_band": {k: [v[0], v[-1]] for k, v in noise_ratio.items()},
               "matched_noise_ratio_range": [min(min(v) for v in noise_matched.values()),
                                             max(max(v) for v in noise_matched.values())],
               "best_threshold_balanced_accuracy": result["lookalike_2um"]["best_threshold_balanced_accuracy"],
               "falloff_vs_reading_r": result.get("falloff_vs_reading_r")}
    write_result(result, args.output, summary=summary)


if __name__ == "__main__":
    main()
