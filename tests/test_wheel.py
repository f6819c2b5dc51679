"""The package as a user installs it: a wheel in a fresh venv, run outside the repository.

The venv gets the package from the wheel only (`pip install --no-deps`); its dependencies are
borrowed from the test environment through a path file (installing jax & co. again is not what
is tested). Nothing of the repository is importable there: the test checks that `lbdvd_jax`
comes from the venv's copy.
"""

import os
import pathlib
import subprocess
import sys
import sysconfig
import venv

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIELDS = ROOT.parent / "shared" / "data" / "real" / "bbbc006" / "infocus"


@pytest.fixture(scope="session")  # session: kept across pytest-xdist's interleaved modules
def wheel_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("lbdvd_jax-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the test environment's dependencies, but not its editable lbdvd_jax (a plain path line:
    # the .pth files in that folder, the editable finder among them, are not processed)
    pathlib.Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    work = tmp / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LBDVD_INFOCUS")}
    return env_dir, work, env


def _run(wheel_env, *args, timeout=600):
    env_dir, work, env = wheel_env
    return subprocess.run([str(env_dir / "bin" / a) if i == 0 else a for i, a in enumerate(args)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repository(wheel_env):
    env_dir, work, _ = wheel_env
    where = _run(wheel_env, "python", "-c", "import lbdvd_jax; print(lbdvd_jax.__file__)")
    assert where.returncode == 0, where.stderr
    assert pathlib.Path(where.stdout.strip()).is_relative_to(env_dir)  # the wheel's copy, not the repo's
    shipped = _run(wheel_env, "python", "-c",
                   "from lbdvd_jax import load_delpnet; from lbdvd_jax.checkpoint import load_delpnet as L;"
                   "import lbdvd_jax.estimator_weights as W; print(W.SHIPPED_ESTIMATOR.is_file())")
    assert shipped.stdout.strip() == "True", shipped.stderr
    help_ = _run(wheel_env, "lbdvd", "train", "--help")
    assert help_.returncode == 0 and help_.stdout.startswith("usage: lbdvd train"), help_.stderr
    assert "examples/" not in help_.stdout


@pytest.mark.slow
def test_wheel_trains_twenty_steps(wheel_env):
    if not FIELDS.is_dir():
        pytest.skip(f"in-focus fields not found at {FIELDS}")
    res = _run(wheel_env, "lbdvd", "train", "--out", "run", "--fields", str(FIELDS), "--max-steps", "20",
               "--total-steps", "40", "--cooldown-steps", "10", "--eval-every", "20", "--per-level", "4",
               "--batch-size", "16")
    assert res.returncode == 0, res.stderr[-2000:]
    run = wheel_env[1] / "run"
    assert (run / "best.npz").is_file() and (run / "history.json").is_file()
    assert '"step": 20' in (run / "history.json").read_text()
