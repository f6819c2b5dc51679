"""A fresh `lbdvd` process, end to end: without and with the persistent compilation cache.

    python benchmarks/bench_cli_start.py [--repeats 3] [--image lbdvd_jax/data/a01_z00.tif]

Each run is a new process (`lbdvd restore IMAGE -o TMP --overwrite -q`), as a user calls it
from a shell or a batch script: interpreter start, imports, weights, compilation, the restore,
the TIFF write. Baseline: LBDVD_CACHE_DIR=off (every program compiled anew); cached: a folder
filled by one untimed run first. Also the weights load alone (`load_delpnet()` in a fresh
process). Medians of `repeats` runs each, interleaved, so load changes hit both alike. Last
line: one JSON object.
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
        load = [float(_run([sys.executable, "-c", "import time; t = time.perf_counter(); "
                            "from lbdvd_jax import load_delpnet; load_delpnet(); "
                            "print(time.perf_counter() - t)"], envs["no_cache"])[1].split()[-1])
                for _ in range(args.repeats)]
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    result = {"benchmark": "cli_start", "image": pathlib.Path(args.image).name, "repeats": args.repeats,
              "restore_process_s": med, "runs_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
              "speedup_cache": round(med["no_cache"] / med["cache"], 2),
              "load_weights_s_median": round(statistics.median(load), 3), "environment": environment()}
    emit(result)


if __name__ == "__main__":
    main()
