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
    controller makes the folder, workers and subprocesses inherit it through the environment,
    and it is removed at the end. A JAX_COMPILATION_CACHE_DIR of the user's is left as is."""
    if hasattr(config, "workerinput") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        path = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    else:
        path = tempfile.mkdtemp(prefix="lbdvd-jax-tests-xla-")
        config._lbdvd_xla_cache = path
        os.environ["JAX_COMPILATION_CACHE_DIR"] = path
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")))


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
