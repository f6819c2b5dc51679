"""A fresh `lbdvd` process, end to end: without and with the persistent compilation cache.

    python benchmarks/bench_cli_start.py [--repeats 3] [--image lbdvd_jax/data/a01_z00.tif]

Each run is a new process (`lbdvd restore IMAGE -o TMP --overwrite -q`), as a user calls it
from a shell or a batch script: interpreter start, imports, weights, compilation, the restore,
the TIFF write. Baseline: LBDVD_CACHE_DIR=off (every program compiled anew); cached: a folder
filled by one untimed run first. Also the shipped weights' load alone in a fresh process, built
from `nnx.eval_shape` against the former eager random initialisation first. Medians of
`repeats` runs each, interleaved, so load changes hit both alike. Last line: one JSON object.
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit, environment  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
LBDVD = [sys.executable, "-m", "lbdvd_jax"]


# the shipped weights loaded as now (module structure from nnx.eval_shape), and as before this
# change (an eagerly initialised module, then the arrays), each in a fresh process after imports
LOAD = """
import time, jax
from flax import nnx
from lbdvd_jax.checkpoint import load_delpnet
from lbdvd_jax.estimator import DefocusEstimator
jax.numpy.zeros(1).block_until_ready()
t = time.perf_counter(); m = load_delpnet(); a = time.perf_counter() - t
t = time.perf_counter(); DefocusEstimator(m.config, rngs=nnx.Rngs(0)); m = load_delpnet()
print(a, time.perf_counter() - t)
"""


def _run(argv, env):
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {out.stderr[-2000:]}")
    return took, out.stdout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--image", default=str(ROOT / "lbdvd_jax" / "data" / "a01_z00.tif"))
    args = ap.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")
            and k != "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(pathlib.Path(tmp) / "restored.tif")
        cmd = LBDVD + ["restore", args.image, "-o", out, "--overwrite", "-q"]
        envs = {"no_cache": {**base, "LBDVD_CACHE_DIR": "off"},
                "cache": {**base, "LBDVD_CACHE_DIR": str(pathlib.Path(tmp) / "xla")}}
        _run(cmd, envs["cache"])  # fills the cache (untimed)
        times = {k: [] for k in envs}
        for _ in range(args.repeats):
            for name, env in envs.items():
                times[name].append(_run(cmd, env)[0])
        load = [[float(v) for v in _run([sys.executable, "-c", LOAD], envs["no_cache"])[1].split()[-2:]]
                for _ in range(args.repeats)]
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    result = {"benchmark": "cli_start", "image": pathlib.Path(args.image).name, "repeats": args.repeats,
              "restore_process_s": med, "runs_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
              "speedup_cache": round(med["no_cache"] / med["cache"], 2),
              "load_weights_s": {"eval_shape_load": round(statistics.median(v[0] for v in load), 3),
                                 "random_init_then_load": round(statistics.median(v[1] for v in load), 3)},
              "environment": environment()}
    emit(result)


if __name__ == "__main__":
    main()
