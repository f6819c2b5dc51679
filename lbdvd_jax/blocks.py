"""Blocks of an image restored on their own and equal to the whole-image restore.

A block [r0, r1) x [c0, c1) of the output depends only on the patches that cover it, and each of
those on its window (patch + context px around it). `restore_block` gathers those patches
from a slab of the image (the block plus `halo` px), pads the image border exactly as the
whole-image restore pads it, and runs the streaming engine's sums over the region
(`streaming.accumulate_patches`): the block equals the same pixels of `restore`'s output (the
montage adds the same terms in another order: equal to float32 rounding). The patch list is
padded to one length (`BlockSetup.slots`) and the region to one shape, so that every block of an
image runs one compiled program. Used by `restore` for large images (bounded memory) and by
`dask_restore.restore_dask` (one task per block).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lbdvd_jax.constants import PATCH_SIZE
from lbdvd_jax.optics import Optics
from lbdvd_jax.restore_plan import RestorePlan, patch_kernels
from lbdvd_jax.streaming import accumulate_patches

__all__ = ["BlockSetup", "RUNTIME_BYTES", "block_slices", "covering", "halo", "max_slots", "merge_chunks",
           "predict_peak_memory", "restore_block", "restore_blockwise"]


@dataclasses.dataclass(frozen=True)
class BlockSetup:
    """What every block task needs: shipped to each worker once (one graph node)."""

    model: object
    psfs: np.ndarray
    optics: Optics
    mode: str
    stride: int
    context: int
    weights: str
    chunk_size: int | None
    pad_mode: str
    psf_size: int
    image_shape: tuple
    block: tuple
    slots: int
    shard: bool = False


def block_slices(length, chunks):
    """[(start, stop)] of consecutive chunks along one axis."""
    edges = np.concatenate([[0], np.cumsum(chunks)]).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def merge_chunks(chunks, minimum):
    """Merge consecutive chunks until each block is >= `minimum` px (blocks stay unions of whole
    chunks, so that writing a block never touches another block's chunk)."""
    out, acc = [], 0
    for c in chunks:
        acc += c
        if acc >= minimum:
            out.append(acc)
            acc = 0
    if acc:
        if out:
            out[-1] += acc
        else:
            out.append(acc)
    return tuple(out)


def covering(starts, patch, lo, hi):
    """Indices of grid starts whose patch [s, s + patch) meets [lo, hi)."""
    return np.flatnonzero((starts + patch > lo) & (starts < hi))


@functools.partial(jax.jit, static_argnames=("context", "weights", "num_iter", "chunk_size", "shard"))
def _block_core(padded, origins, valid, kernels, active, iters, background, *, context, weights,
                num_iter, chunk_size, shard=False):
    num, den = accumulate_patches(padded, origins, kernels, active, iters, valid=valid,
                                  background=background, patch=PATCH_SIZE, context=context,
                                  weights=weights, num_iter=num_iter, chunk_size=chunk_size, shard=shard)
    c = context
    region = padded[c:padded.shape[0] - c, c:padded.shape[1] - c]
    good = den > 0
    return jnp.where(good, region + num / jnp.where(good, den, 1), 0)


def halo(setup):
    return PATCH_SIZE + setup.context


def restore_block(slab, setup: BlockSetup, plan: RestorePlan, background, origins, r0, r1, c0, c1, s0, t0):
    """One output block [r0, r1) x [c0, c1) from `slab` = image[s0:, t0:] (the block + halo)."""
    h, w = setup.image_shape
    c = setup.context
    rows_s, cols_s = np.unique(origins[:, 0]), np.unique(origins[:, 1])
    ri = covering(rows_s, PATCH_SIZE, r0, r1)
    ci = covering(cols_s, PATCH_SIZE, c0, c1)
    idx = (ri[:, None] * len(cols_s) + ci[None, :]).ravel()
    slab = np.asarray(slab, np.float32)
    sh, sw = slab.shape
    pads = []
    for start, size, length in ((s0, sh, h), (t0, sw, w)):
        lo = c if start == 0 else 0
        hi = c if start + size == length else 0
        pads.append((lo, hi))
    region = np.pad(slab, pads, mode=setup.pad_mode)
    # interior sides: `c` px never read; then one shape for every block
    full_h, full_w = setup.block[0] + 2 * halo(setup) + 2 * c, setup.block[1] + 2 * halo(setup) + 2 * c
    top = c - pads[0][0]
    left = c - pads[1][0]
    padded = np.zeros((max(full_h, region.shape[0] + top), max(full_w, region.shape[1] + left)), np.float32)
    padded[top:top + region.shape[0], left:left + region.shape[1]] = region
    n = len(idx)
    slots = max(setup.slots, n)
    org = np.zeros((slots, 2), np.int32)
    org[:n] = origins[idx] - np.array([s0, t0])
    valid = np.zeros(slots, bool)
    valid[:n] = True
    active = np.zeros(slots, bool)
    active[:n] = plan.active[idx]
    kern = patch_kernels(plan, idx, mode=setup.mode, psfs=setup.psfs, optics=setup.optics,
                         psf_size=setup.psf_size, dtype=jnp.float32)
    kernels = jnp.concatenate([kern, jnp.broadcast_to(kern[:1], (slots - n,) + kern.shape[1:])])
    iters = None
    if plan.iters is not None:
        iters = np.zeros(slots, np.int32)
        iters[:n] = plan.iters[idx]
    out = _block_core(jnp.asarray(padded), jnp.asarray(org), jnp.asarray(valid), kernels,
                      jnp.asarray(active), None if iters is None else jnp.asarray(iters),
                      jnp.asarray(background, jnp.float32), context=c, weights=setup.weights,
                      num_iter=plan.max_iter, chunk_size=setup.chunk_size, shard=setup.shard)
    # region coordinates: row 0 of `out` is image row s0
    return np.asarray(out)[r0 - s0:r1 - s0, c0 - t0:c1 - t0]


def max_slots(origins, shape, rblocks, cblocks):
    rows_s, cols_s = np.unique(origins[:, 0]), np.unique(origins[:, 1])
    nr = max(len(covering(rows_s, PATCH_SIZE, a, b)) for a, b in rblocks)
    nc = max(len(covering(cols_s, PATCH_SIZE, a, b)) for a, b in cblocks)
    return nr * nc


def _release_freed_memory():
    """Hand the heap memory XLA freed back to the OS (glibc keeps it otherwise: the resident size
    of a blockwise 8192² restore grew by ~1 GB over its blocks without this)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def restore_blockwise(image, plan, background, origins, *, psfs, mode, optics, stride, context, weights,
                       chunk_size, pad_mode, psf_size, shard, progress, block):
    """The deconvolution of a whole image block by block (`restore_block`), blocks of `block` px
    (a short last block is merged into its neighbour): the same pixels as the whole-image engine,
    with memory bounded by the image, the output and one block. `progress(done, total)` is called
    with block counts after each block (it may raise to stop)."""
    img = np.asarray(image, np.float32)
    h, w = img.shape
    rb = block_slices(h, [block] * (h // block) + ([h % block] if h % block else []))
    cb = block_slices(w, [block] * (w // block) + ([w % block] if w % block else []))
    rb = rb[:-2] + [(rb[-2][0], rb[-1][1])] if len(rb) > 1 and rb[-1][1] - rb[-1][0] < block // 2 else rb
    cb = cb[:-2] + [(cb[-2][0], cb[-1][1])] if len(cb) > 1 and cb[-1][1] - cb[-1][0] < block // 2 else cb
    setup = BlockSetup(None, np.asarray(psfs), optics, mode, int(stride), int(context), weights, chunk_size,
                       pad_mode, psf_size, (h, w), (max(b - a for a, b in rb), max(b - a for a, b in cb)),
                       max_slots(origins, (h, w), rb, cb), bool(shard))
    pad = halo(setup)
    out = np.empty((h, w), np.float32)
    total = len(rb) * len(cb)
    for k, ((r0, r1), (c0, c1)) in enumerate((r, c) for r in rb for c in cb):
        s0, t0 = max(0, r0 - pad), max(0, c0 - pad)
        slab = img[s0:min(h, r1 + pad), t0:min(w, c1 + pad)]
        out[r0:r1, c0:c1] = restore_block(slab, setup, plan, float(background), origins, r0, r1, c0, c1, s0, t0)
        _release_freed_memory()
        if progress is not None:
            progress(k + 1, total)
    return jnp.asarray(out, copy=False)  # aliases the buffer on a CPU: no second image-sized copy


#: resident memory of a process that has imported JAX, loaded the estimator and compiled the
#: restore programs (measured on the 2-core CPU: README "Big images and clusters")
RUNTIME_BYTES = 0.75 * 2**30


def predict_peak_memory(shape, *, block: int | None = None, context: int = 24, input_itemsize: int = 4) -> int:
    """Predicted peak resident bytes of a restore of one (H, W) image.

    In process (`block` None): the input, the float32 image, the output and its copy (4 float32
    images; the blockwise path keeps one block's working set beside them) plus `RUNTIME_BYTES`.
    One dask task (`block` px): about 12 float32 copies of the block with its halo on each side,
    plus `RUNTIME_BYTES`.
    """
    h, w = int(shape[-2]), int(shape[-1])
    if block is None:
        side = min(2048, h, w) + 2 * (PATCH_SIZE + context)
        return int(RUNTIME_BYTES + (3 * 4 + input_itemsize) * h * w + 12 * 4 * side * side)
    side = min(block, max(h, w)) + 2 * (PATCH_SIZE + context) + 2 * context
    return int(RUNTIME_BYTES + 12 * 4 * side * side)
