import glob

import numpy as np
import pytest
import scipy.signal
import tifffile
from reference import psf_quad

from lbdvd_jax import Optics
from lbdvd_jax.fit import fit_defocus


@pytest.fixture(scope="module")
def crop(data_dir):
    img = tifffile.imread(data_dir / "bbbc006/infocus/BBBC006_z_aligned__a01__s1__w1_10.tif")
    return img[150:300, 250:400].astype(np.float64)


def test_recovers_defocus_of_synthetic_pair(crop):
    psf = psf_quad(41, 7.3)  # independent float64 quad PSF
    observed = 0.8 * scipy.signal.fftconvolve(crop - 110.0, psf, mode="same") + 104.0
    res = fit_defocus(observed, crop, z_grid_um=np.arange(0.0, 16.0, 1.0), size=41, background=110.0,
                      num_steps=80, learning_rate=0.1)
    assert float(res.z_um) == pytest.approx(7.3, abs=0.1)
    assert float(res.gain) == pytest.approx(0.8, rel=0.02)
    assert float(res.offset) == pytest.approx(104.0, abs=1.0)
    assert float(res.correlation) > 0.999


def test_bead_fits_defocus_and_na():
    truth = Optics(na=0.46)
    size = 41
    bead = np.zeros((61, 61))
    bead[30, 30] = 1.0
    psf = psf_quad(size, 5.5, na=0.46)
    observed = scipy.signal.fftconvolve(bead, psf, mode="same") * 5e4 + 100.0
    res = fit_defocus(observed, bead, z_grid_um=np.arange(0.0, 12.0, 1.0), fit=("z_um", "na"), size=size,
                      background=0.0, border=0, num_steps=300, learning_rate=0.05)
    assert float(res.z_um) == pytest.approx(5.5, abs=0.15)
    assert float(res.optics.na) == pytest.approx(float(truth.na), abs=0.01)


def test_real_bbbc006_pair_is_far_out_of_focus(data_dir):
    ref = tifffile.imread(data_dir / "bbbc006/infocus/BBBC006_z_aligned__a01__s1__w1_10.tif")
    obs = tifffile.imread(glob.glob(str(data_dir / "bbbc006/z00/00_*a01*"))[0])
    res = fit_defocus(obs[100:420, 100:600].astype(float), ref[100:420, 100:600].astype(float),
                      z_grid_um=np.arange(20.0, 56.0, 2.0), num_steps=30, learning_rate=0.2)
    # The data README measures the best Eq. 2 match at about 40 µm (Pearson 0.987).
    assert 36.0 < float(res.z_um) < 44.0
    assert float(res.correlation) > 0.98


def test_bad_input(crop):
    with pytest.raises(ValueError, match="same shape"):
        fit_defocus(crop, crop[:100])
    with pytest.raises(ValueError, match="2-D"):
        fit_defocus(crop[None], crop[None])
    bad = crop.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_defocus(bad, crop)
    with pytest.raises(ValueError, match="fit must include"):
        fit_defocus(crop, crop, fit=("na",))
    with pytest.raises(ValueError, match="kernel size"):
        fit_defocus(crop[:40, :40], crop[:40, :40])


def test_learning_rate_does_not_recompile(rng):
    """A float learning rate is traced, not static: a second value reuses the program."""
    from lbdvd_jax import fit as F
    from lbdvd_jax.optics import Optics
    from lbdvd_jax.psf import defocus_psf
    ref = 100 + 500 * rng.random((40, 40))
    psf = np.asarray(defocus_psf(Optics(), 4.0, size=15))
    from scipy.signal import fftconvolve
    obs = fftconvolve(ref - 100, psf, mode="same") + 100
    kw = dict(size=15, num_steps=3, border=8)
    from helpers import count_compilations
    F.fit_defocus(obs, ref, learning_rate=0.1, **kw)
    with count_compilations() as compiled:
        F.fit_defocus(obs, ref, learning_rate=0.05, **kw)
    assert compiled["n"] == 0
