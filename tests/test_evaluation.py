"""evaluation.tune_iterations: the per-level RL iteration table (Fig. 8 protocol)."""

import numpy as np

from lbdvd_jax.evaluation import tune_iterations
from lbdvd_jax.io import read_tiff
from lbdvd_jax.synthesis import bundled_path


def test_tune_iterations_picks_the_best_candidate_per_level():
    field = read_tiff(bundled_path("a01_infocus.tif")).data.astype(np.float32)[None, :300, :300]
    res = tune_iterations(field, candidates=(0, 1, 6), per_level=3, seed=2)
    gains = np.asarray(res["gain_db"])
    assert gains.shape == (11, 3) and res["candidates"] == [0, 1, 6]
    np.testing.assert_array_equal(gains[:, 0], 0.0)  # 0 iterations: the input itself
    assert res["table"] == [res["candidates"][j] for j in gains.argmax(axis=1)]
    # deconvolving the true PSF pays at strong defocus (levels 6-10)
    assert all(t > 0 for t in res["table"][6:])
