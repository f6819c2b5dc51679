import pathlib

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "real"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled, without flipping it globally."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def data_dir():
    if not DATA.exists():
        pytest.skip(f"real data folder not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def real_fields():
    """(1, H, W) float32: the bundled real in-focus BBBC006 field a01 (ships with the package)."""
    from lbdvd_jax.io import read_tiff
    from lbdvd_jax.synthesis import bundled_path
    return read_tiff(bundled_path("a01_infocus.tif")).data[None].astype(np.float32)
