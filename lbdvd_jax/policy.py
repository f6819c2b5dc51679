"""The deconvolution policy: which PSF depth and how many RL iterations each patch gets.

The paper deconvolves a level-l patch with the 2l µm PSF for 15 iterations. Measured here on
the training fields, a policy that follows the estimate's reliability does better: in-focus
patches are often read as level 1, so level-1 calls get one iteration with the in-focus PSF;
with `defocus='continuous'` each patch's own depth (a fitted depth surface) is mapped through the
same table by linear interpolation between the levels.
"""

from typing import NamedTuple

import numpy as np

from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM, NUM_LEVELS, PATCH_SIZE

__all__ = ["CONTINUOUS_POLICY", "DEFAULT_ITERATIONS", "DEFAULT_PSF_DEPTH_UM", "LEVEL_POLICY",
           "PolicyTable", "choose_policy", "continuous_depths", "policy_psf_depth"]

PATCH = PATCH_SIZE

#: RL iterations per level used by default: 1 at levels 0-1, the paper's 15 from level 2 on.
#: Chosen on the training fields with the true PSF (`evaluation.tune_iterations`, README): at
#: level 1, 15 iterations lose 3.1 dB against the input where 1 gains 1.0 dB.
DEFAULT_ITERATIONS = (1, 1) + (15,) * (NUM_LEVELS - 2)
#: Depth (µm) of the PSF used for a patch of each level (the deconvolution policy). A level-1
#: call is deconvolved with the in-focus PSF: in-focus patches are often read as level 1, and on
#: the five training fields (`examples/psf_policy.py`) one RL iteration with the 2 µm PSF costs
#: -3.36 dB on level-0 fields where the 0 µm PSF gains +1.89 dB; on level-1 fields they gain
#: +2.01 and +0.85 dB. Mean over both: +1.37 dB for 0 µm, the best of 0-2 µm x 1-2 iterations.
DEFAULT_PSF_DEPTH_UM = (0.0, 0.0) + tuple(2.0 * level for level in range(2, NUM_LEVELS))


class PolicyTable(NamedTuple):
    """A deconvolution policy for real-valued depths: piecewise linear over knots (µm).

    Attributes:
        z_um: knot depths (the 11 levels, 0..20 µm).
        psf_depth_um: depth of the PSF used at each knot.
        iterations: RL iterations at each knot (real-valued; rounded per patch, 0 = passed through).
    """

    z_um: tuple
    psf_depth_um: tuple
    iterations: tuple

    def psf_depth(self, z_um):
        """PSF depth (µm) for depths `z_um` (linear between knots, constant beyond)."""
        return np.interp(np.nan_to_num(np.asarray(z_um, np.float64)), self.z_um, self.psf_depth_um)

    def iteration_counts(self, z_um):
        """Integer RL iterations for depths `z_um`."""
        return np.rint(np.interp(np.nan_to_num(np.asarray(z_um, np.float64)), self.z_um,
                                 self.iterations)).astype(np.int32)


#: The table `defocus='continuous'` starts from before a fit: the level policy's PSF depths and
#: iteration counts at the knots (what `policy_psf_depth` and the nearest level give).
LEVEL_POLICY = PolicyTable(tuple(LEVEL_STEP_UM * np.arange(NUM_LEVELS)), DEFAULT_PSF_DEPTH_UM,
                           tuple(float(v) for v in DEFAULT_ITERATIONS))
#: The policy of `defocus='continuous'`: fitted by gradient through RL and the PSF on the
#: training fields (`python examples/fit_policy.py`, `benchmarks/results/policy_fit.json`,
#: 1 024 windows, the mean patch PSNR as the objective); at the 0 and 2 µm knots the level
#: policy's rule (in-focus PSF, 1 iteration) is kept, chosen on the validation field a01: there
#: the fit lost 0.55 dB, this table gains +0.3 dB at 0-4 µm, +1.2 dB at 4-12 µm, +0.3 / +0.05
#: dB at 12-16 / 16-20 µm over the level policy (PSNR of 384 validation patches).
CONTINUOUS_POLICY = PolicyTable(
    z_um=(0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0),
    psf_depth_um=(0.0, 0.0, 3.835, 6.049, 7.788, 9.642, 11.436, 13.391, 15.25, 17.076, 18.967),
    iterations=(1.0, 1.0, 5.498, 8.848, 11.91, 14.355, 16.051, 17.189, 18.11, 18.929, 19.689))


def choose_policy(mode, defocus, num_iter, psf_depth_um, z_um=None):
    """`CONTINUOUS_POLICY` for real-valued depths (`defocus='continuous'` in 'dv' mode, or
    'oracle' with a depth map `z_um`) when the caller gave neither an iteration table nor PSF
    depths; else None (the per-level tables apply)."""
    continuous = (mode == "dv" and defocus == "continuous") or (mode == "oracle" and z_um is not None)
    if continuous and num_iter is None and psf_depth_um is None:
        return CONTINUOUS_POLICY
    return None


def policy_psf_depth(z_um, psf_depth_um=None):
    """The PSF depth (µm) for real-valued depths: the per-level table, linear in between."""
    table = np.asarray(DEFAULT_PSF_DEPTH_UM if psf_depth_um is None else psf_depth_um, np.float64)
    return np.interp(np.nan_to_num(np.asarray(z_um, np.float64)),
                     LEVEL_STEP_UM * np.arange(NUM_LEVELS), table)


def continuous_depths(dmap, origins, shape, surface_degree):
    """Per-patch depth (µm) for `defocus='continuous'`.

    With a surface (`surface_degree` not None): a certainty-weighted robust polynomial fitted to
    each patch's own most probable depth (`estimator.most_probable_depth` of `dmap.own_probs`,
    unclipped, weighted by their own certainty). Without: the most probable depth of the pooled
    probabilities. Clipped to the levels' range [0, 20] µm.

    Chosen on the validation field (examples/continuous_defocus.py, README): the expected z of
    the pooled probabilities, which this replaced, is pulled toward the middle of the range by
    any spread (a field at focus read ~1 µm deep) and pooling before the fit counted each patch
    up to nine times.
    """
    from lbdvd_jax.estimator import most_probable_depth
    from lbdvd_jax.pooling import own_depth_surface

    fg = dmap.labels != BG_LABEL
    z = np.where(fg, most_probable_depth(dmap.probs), np.nan)
    surface = None
    if surface_degree is None:
        needed = np.inf
    else:
        needed = 2 if surface_degree == "auto" else (surface_degree + 1) * (surface_degree + 2)
    if fg.sum() >= needed:
        own = dmap.probs if dmap.own_probs is None else dmap.own_probs
        surface = own_depth_surface(own, fg, origins, shape, degree=surface_degree)[2]
        z = np.where(fg, surface.z_patches, np.nan)
    return np.clip(z, 0.0, LEVEL_STEP_UM * (NUM_LEVELS - 1)), surface
