"""Device plumbing: split a batch-parallel function's leading axis over the local devices.

Used by the deconvolution engine and by the classifiers' inference; on a CPU, two forced host
devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`, which the `lbdvd` command sets)
let XLA's FFTs use both cores.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sharded_map"]


def sharded_map(fn, *, devices=None):
    """Split the leading (batch) axis of every argument of ``fn`` over devices with shard_map.

    ``fn`` must be batch-parallel (e.g. a vmapped deconvolution). The batch is zero-padded to
    a multiple of the device count and cropped back. On CPU, start Python with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` to use two cores for XLA's FFTs,
    which otherwise keep about one core busy.
    """
    devices = list(jax.local_devices() if devices is None else devices)
    if len(devices) == 1:
        return fn
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    spec = jax.sharding.PartitionSpec("batch")
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec)

    def run(*args):
        n = args[0].shape[0]
        pad = (-n) % len(devices)
        args = [jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in args]
        return mapped(*args)[:n]

    return run
