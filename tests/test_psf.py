import jax
import jax.numpy as jnp
import jax.test_util  # noqa: F401  (check_grads)
import numpy as np
import pytest
import scipy.special
import tifffile
from reference import psf_quad

from lbdvd_jax import DEFOCUS_LEVELS_UM, Optics, defocus_psf, j0, j1, kernel_size_for, psf_stack
from lbdvd_jax.psf import enclosed_energy, radial_psf

X = np.concatenate([np.linspace(0.0, 10.0, 5001), np.linspace(10.0, 400.0, 20001)])


# --- J0 / J1 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fn, ref", [(j0, scipy.special.j0), (j1, scipy.special.j1)])
def test_bessel_float64_matches_scipy(x64, fn, ref):
    out = fn(jnp.asarray(X))
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out), ref(X), rtol=0, atol=5e-16)


@pytest.mark.parametrize("fn, ref", [(j0, scipy.special.j0), (j1, scipy.special.j1)])
def test_bessel_float32_matches_scipy(fn, ref):
    x32 = X.astype(np.float32)
    out = fn(jnp.asarray(x32))
    assert out.dtype == jnp.float32
    assert not np.any(np.isnan(np.asarray(out)))
    np.testing.assert_allclose(np.asarray(out, np.float64), ref(x32.astype(np.float64)), rtol=0, atol=1e-6)


def test_bessel_negative_arguments_and_parity(x64):
    x = jnp.linspace(-60.0, 60.0, 1201)
    np.testing.assert_allclose(np.asarray(j0(x)), scipy.special.j0(np.asarray(x)), atol=5e-16)
    np.testing.assert_allclose(np.asarray(j1(x)), scipy.special.j1(np.asarray(x)), atol=5e-16)


def test_bessel_derivatives(x64):
    x = jnp.asarray(np.linspace(0.0, 150.0, 3001))
    d0 = jax.vmap(jax.grad(j0))(x)
    d1 = jax.vmap(jax.grad(j1))(x)
    np.testing.assert_allclose(np.asarray(d0), -scipy.special.j1(np.asarray(x)), atol=1e-15)
    np.testing.assert_allclose(np.asarray(d1), scipy.special.jvp(1, np.asarray(x)), atol=1e-12)
    assert float(jax.grad(jax.grad(j0))(0.0)) == pytest.approx(-0.5)
    jax.test_util.check_grads(j0, (jnp.asarray([0.0, 0.3, 4.9, 5.1, 80.0]),), order=2, modes=("fwd", "rev"))


def test_bessel_float32_gradient_finite_at_zero():
    g = jax.grad(lambda x: j0(x) + j1(x))(jnp.float32(0.0))
    assert np.isfinite(float(g))


# --- Eq. 2 against quad ----------------------------------------------------------------------

def test_yang_point_values(x64):
    optics = Optics(wavelength_um=0.5, na=0.5, n=1.0)
    got = radial_psf(optics, jnp.asarray([0.0, 1.0]), jnp.asarray([0.0, 1.0]))
    assert float(got[0, 0]) == pytest.approx(0.25, rel=1e-12)
    assert float(got[1, 0]) == pytest.approx(0.20264, abs=5e-6)
    assert float(got[0, 1]) == pytest.approx(0.00114255, abs=1e-8)  # Yang gives 6 digits


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-6), ("float32", 1e-5)])
def test_stack_matches_quad_at_every_level(dtype, tol):
    with jax.enable_x64(dtype == "float64"):
        stack = np.asarray(psf_stack(Optics(), size=49), np.float64)
        assert stack.dtype == np.float64
        assert psf_stack(Optics(), size=49).dtype == jnp.dtype(dtype)
    for level, z in enumerate(DEFOCUS_LEVELS_UM):
        ref = psf_quad(49, z)
        rel = np.linalg.norm(stack[level] - ref) / np.linalg.norm(ref)
        assert rel <= tol, (level, rel)


def test_float64_reaches_near_machine_precision():
    with jax.enable_x64(True):
        stack = np.asarray(psf_stack(Optics(), size=49))
    worst = max(np.linalg.norm(stack[i] - psf_quad(49, z)) / np.linalg.norm(psf_quad(49, z))
                for i, z in enumerate(DEFOCUS_LEVELS_UM))
    assert worst < 1e-11


def test_golden_psf_of_yang(data_dir, x64):
    golden = tifffile.imread(data_dir / "reference_yang_golden" / "psf.tif").astype(np.float64)
    optics = Optics(wavelength_um=0.5, na=0.5, n=1.0, pixel_um=5.0 / 21.0)
    psf = np.asarray(defocus_psf(optics, 4.0, size=21))
    ours = psf / psf.max() * 65535.0
    assert np.max(np.abs(ours - golden)) <= 1.5  # uint16 rounding + 1.6e-5 of max
    assert np.unravel_index(np.argmax(psf), psf.shape) in {(8, 8), (8, 12), (12, 8), (12, 12),
                                                           (8, 10), (10, 8), (10, 12), (12, 10)}
    assert psf[10, 10] < 1e-3 * psf.max()  # first axial zero at z = 4 µm


def test_convergence_in_nodes(x64):
    ref = psf_quad(49, 20.0)
    errs = [np.linalg.norm(np.asarray(defocus_psf(Optics(), 20.0, size=49, num_nodes=m)) - ref)
            for m in (16, 32, 64, 128)]
    assert errs[0] > errs[1] > errs[2] >= errs[3]
    assert errs[2] / np.linalg.norm(ref) < 1e-6


# --- physics invariants ----------------------------------------------------------------------

def test_normalised_centred_symmetric():
    stack = np.asarray(psf_stack(Optics(), size=49))
    np.testing.assert_allclose(stack.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    for h in stack:
        np.testing.assert_allclose(h, h.T, atol=1e-9)
        np.testing.assert_allclose(h, h[::-1, :], atol=1e-9)
        np.testing.assert_allclose(h, np.rot90(h), atol=1e-9)
    assert np.argmax(stack[0]) == 24 * 49 + 24
    assert stack[0, 24, 24] > stack[10, 24, 24]  # defocus spreads energy


def test_oversampling_integrates_pixel_area(x64):
    coarse = np.asarray(defocus_psf(Optics(), 0.0, size=49))
    fine = np.asarray(defocus_psf(Optics(), 0.0, size=49, oversample=5))
    finer = np.asarray(defocus_psf(Optics(), 0.0, size=49, oversample=9))
    assert coarse[24, 24] > fine[24, 24]  # pixel-centre sampling over-weights the peak
    assert np.abs(fine - finer).max() < np.abs(coarse - finer).max() / 5
    # pixel average of the radial profile computed independently (1-D quad per sub-sample)
    sub = (np.arange(9) + 0.5) / 9 - 0.5
    ref_centre = np.mean([_point(0.65 * np.hypot(a, b)) for a in sub for b in sub])
    ratio = finer[24, 24] / finer[24, 25]
    ref_ratio = ref_centre / np.mean([_point(0.65 * np.hypot(1 + a, b)) for a in sub for b in sub])
    assert ratio == pytest.approx(ref_ratio, rel=1e-6)


def _point(r):
    from reference import eq2_point_quad
    return eq2_point_quad(r, 0.0, 0.451, 0.5, 1.0)


def test_kernel_size_helper():
    assert kernel_size_for(Optics(), 20.0) == 49
    assert enclosed_energy(Optics(), 20.0, 33) == pytest.approx(0.973, abs=0.002)
    assert enclosed_energy(Optics(), 20.0, 49) >= 0.99
    assert kernel_size_for(Optics(), 10.0) < 49
    assert kernel_size_for(Optics(pixel_um=0.325), 20.0) > 49
    assert psf_stack(Optics()).shape == (11, 49, 49)  # the default size


# --- transformations -------------------------------------------------------------------------

def _loss(z, na, wavelength, n):
    psf = defocus_psf(Optics(wavelength_um=wavelength, na=na, n=n), z, size=49)
    weights = jnp.linspace(0.0, 1.0, 49 * 49).reshape(49, 49)
    return jnp.sum(psf * weights) + jnp.sum(psf ** 2) * 10.0


@pytest.mark.parametrize("argnum, name", [(0, "z_um"), (1, "na"), (2, "wavelength_um"), (3, "n")])
def test_grad_matches_central_differences(x64, argnum, name):
    args = [7.3, 0.5, 0.451, 1.0]
    g = jax.grad(_loss, argnums=argnum)(*args)
    h = 1e-6 * max(1.0, abs(args[argnum]))
    up, down = list(args), list(args)
    up[argnum] += h
    down[argnum] -= h
    fd = (_loss(*up) - _loss(*down)) / (2 * h)
    assert float(g) == pytest.approx(float(fd), rel=1e-5), name


def test_grad_finite_at_focus_and_axis(x64):
    f = lambda z: defocus_psf(Optics(), z, size=49)[24, 24]  # noqa: E731  r = 0
    assert np.isfinite(float(jax.grad(f)(0.0)))
    g = jax.grad(lambda o: jnp.sum(defocus_psf(o, 0.0, size=49) ** 2))(Optics())
    assert all(np.isfinite(float(v)) for v in jax.tree_util.tree_leaves(g))
    with jax.enable_x64(False):
        g32 = jax.grad(lambda z: defocus_psf(Optics(), z, size=49)[24, 24])(jnp.float32(0.0))
        assert np.isfinite(float(g32))


def test_jit_vmap_and_no_recompile():
    traces = []

    def f(optics, z):
        traces.append(1)
        return psf_stack(optics, z, size=49)

    jf = jax.jit(f)
    a = jf(Optics(), jnp.asarray([0.0, 4.0]))
    b = jf(Optics(na=0.45), jnp.asarray([2.0, 6.0]))
    assert len(traces) == 1
    np.testing.assert_allclose(np.asarray(a), np.asarray(psf_stack(Optics(), [0.0, 4.0], size=49)), atol=1e-7)
    assert not np.allclose(np.asarray(a), np.asarray(b))
    many = jax.vmap(lambda z: defocus_psf(Optics(), z, size=33))(jnp.asarray([0.0, 2.0, 4.0]))
    loop = np.stack([np.asarray(defocus_psf(Optics(), z, size=33)) for z in (0.0, 2.0, 4.0)])
    np.testing.assert_allclose(np.asarray(many), loop, atol=1e-7)


# --- bad input -------------------------------------------------------------------------------

def test_bad_input():
    with pytest.raises(ValueError, match="size must be an odd"):
        psf_stack(Optics(), size=48)
    with pytest.raises(ValueError, match="oversample"):
        defocus_psf(Optics(), 2.0, size=49, oversample=0)
    with pytest.raises(ValueError, match="Optics.na"):
        psf_stack(Optics(na=-0.5), size=49)
    with pytest.raises(ValueError, match="smaller than Optics.n"):
        psf_stack(Optics(na=1.2, n=1.0), size=49)
    with pytest.raises(ValueError, match="z_um"):
        psf_stack(Optics(), [0.0, np.nan], size=49)
    with pytest.raises(ValueError, match="scalar"):
        defocus_psf(Optics(), jnp.zeros(3), size=49)
    with pytest.raises(TypeError, match="size="):
        jax.jit(lambda z: defocus_psf(Optics(), z))(1.0)
    with pytest.raises(ValueError, match="energy"):
        kernel_size_for(Optics(), 20.0, energy=1.5)
