import os
import pathlib
import shutil
import tempfile

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "real"


def pytest_configure(config):
    """One persistent XLA compilation cache for the run: the many subprocesses (CLI, wheel, dask
    workers) and pytest-xdist workers compile the same programs; each is compiled once. The
    controller makes the folder and turns the cache on as the `lbdvd` command does; workers and
    subprocesses inherit it through the environment (JAX reads it at import), and it is removed
    at the end. A JAX_COMPILATION_CACHE_DIR of the user's is left as is."""
    from lbdvd_jax.cli import use_compilation_cache

    if not hasattr(config, "workerinput") and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        config._lbdvd_xla_cache = os.environ["LBDVD_CACHE_DIR"] = tempfile.mkdtemp(prefix="lbdvd-jax-tests-xla-")
        use_compilation_cache()


def pytest_unconfigure(config):
    path = getattr(config, "_lbdvd_xla_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


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
