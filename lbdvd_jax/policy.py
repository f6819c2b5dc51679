"""The deconvolution policy: which PSF depth and how many RL iterations each patch gets.

The paper deconvolves a level-l patch with the 2l µm PSF for 15 iterations. Measured here on
the training fields, a policy that follows the estimate's reliability does better: in-focus
patches are often read as level 1, so level-1 calls get one iteration with the in-focus PSF;
with `defocus='continuous'` each patch's own depth (a fitted depth surface) is mapped through the
same table by linear interpolation between the levels.
"""

import numpy as np

from lbdvd_jax.constants import BG_LABEL, LEVEL_STEP_UM, NUM_LEVELS, PATCH_SIZE
from lbdvd_jax.depth_surface import fit_depth_surface

__all__ = ["DEFAULT_ITERATIONS", "DEFAULT_PSF_DEPTH_UM", "continuous_depths", "policy_psf_depth"]

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


def policy_psf_depth(z_um, psf_depth_um=None):
    """The PSF depth (µm) for real-valued depths: the per-level table, linear in between."""
    table = np.asarray(DEFAULT_PSF_DEPTH_UM if psf_depth_um is None else psf_depth_um, np.float64)
    return np.interp(np.nan_to_num(np.asarray(z_um, np.float64)),
                     LEVEL_STEP_UM * np.arange(NUM_LEVELS), table)


def continuous_depths(dmap, origins, shape, surface_degree):
    """Per-patch depth (µm) for `defocus='continuous'`: the pooled expected z, replaced by a
    certainty-weighted robust polynomial surface unless `surface_degree` is None."""
    fg = dmap.labels != BG_LABEL
    z = np.where(fg, dmap.z_um, np.nan)
    surface = None
    if surface_degree is None:
        needed = np.inf
    else:
        needed = 2 if surface_degree == "auto" else (surface_degree + 1) * (surface_degree + 2)
    if fg.sum() >= needed:
        centres = origins + PATCH / 2.0
        surface = fit_depth_surface(z, dmap.certainty * fg, centres, shape, degree=surface_degree)
        z = np.where(fg, surface.z_patches, np.nan)
    return np.clip(z, 0.0, LEVEL_STEP_UM * (NUM_LEVELS - 1)), surface
