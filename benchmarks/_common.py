"""Shared benchmark plumbing: timing with compile apart, environment record, one JSON line out."""

import json
import os
import platform
import statistics
import sys
import time


def environment():
    """jax version, backend, device kind and the machine's load (the CPU is often shared)."""
    import jax

    dev = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }


def block(x):
    import jax

    return jax.block_until_ready(x)


def time_call(fn, *, repeats=5, warmup=1):
    """Time fn() (which must block): first call = compile + run, then `repeats` steady runs.

    Returns dict with first_call_s, median_s, min_s, max_s, iqr_s.
    """
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {
        "first_call_s": first,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "iqr_s": q[2] - q[0],
        "repeats": repeats,
    }


def emit(result):
    """Print the result as ONE JSON object on the last line of stdout."""
    result.setdefault("loadavg_1m_after", round(os.getloadavg()[0], 2))
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True, default=float))


def write_result(result, path):
    """Write the result as indented JSON to `path` (folders made) and print it as the last line."""
    import pathlib

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
