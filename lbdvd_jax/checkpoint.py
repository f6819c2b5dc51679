"""Orbax training checkpoints, the shipped-weights format, and ``load_delpnet``.

Two formats:

* training checkpoints (orbax ``CheckpointManager`` under ``<run>/ckpt/<step>/``) hold the whole
  training state: step, parameters, BN statistics, optimizer state, RNG key; they resume exactly.
* exported weights (one ``.npz`` file) hold only parameters and BN statistics plus the architecture
  (``DelpNetConfig`` as JSON) and free metadata; this is what ships in ``lbdvd_jax/weights/``.
"""

from __future__ import annotations

import json
import pathlib
import zipfile
from typing import TYPE_CHECKING

import jax
import numpy as np
from flax import nnx

if TYPE_CHECKING:  # orbax is imported where training needs it, not by inference
    import orbax.checkpoint as ocp

from lbdvd_jax.errors import InputError
from lbdvd_jax.model import DelpNet, DelpNetConfig

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
SHIPPED_WEIGHTS = WEIGHTS_DIR / "delpnet.npz"
PAPER_DELPNET = SHIPPED_WEIGHTS  #: the paper's DelpNet, trained on this CPU (see README)


def checkpoint_manager(directory, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """An orbax ``CheckpointManager`` for training states in ``directory`` (created if missing)."""
    directory = pathlib.Path(directory).resolve()
    import orbax.checkpoint as ocp  # training only: inference never pays its import (~0.7 s)

    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))


def _as_tree(state):
    """A NamedTuple state as the dict of its fields (the on-disk layout), a dict as is."""
    return state._asdict() if hasattr(state, "_asdict") else state


def save_train_state(mgr: ocp.CheckpointManager, state) -> None:
    """Save a training state (a NamedTuple such as `train.TrainState`, or a dict) at its own step
    (asynchronously; ``mgr.wait_until_finished()``). On disk it is the dict of its fields."""
    tree = _as_tree(state)
    step = int(tree["step"])
    if step in mgr.all_steps():
        return
    import orbax.checkpoint as ocp

    mgr.save(step, args=ocp.args.StandardSave(tree))


def restore_train_state(mgr: ocp.CheckpointManager, like, *, step: int | None = None):
    """Restore the training state saved at ``step`` (default latest) with the structure of ``like``.

    Args:
        mgr: checkpoint manager of the run.
        like: a freshly initialised state of the same model and optimizer (gives structure/dtypes).
        step: checkpoint step; None is the latest.

    Returns:
        the restored state, of the type of ``like``.

    Raises:
        FileNotFoundError: no checkpoint in the directory.
        ValueError: the checkpoint holds another architecture or optimizer.
    """
    step = mgr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {mgr.directory}; train first or pass another directory.")
    if step not in mgr.all_steps():
        raise FileNotFoundError(f"no checkpoint of step {step} in {mgr.directory}; "
                                f"available steps: {sorted(mgr.all_steps())}.")
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _as_tree(like))
    try:
        tree = mgr.restore(step, args=ocp.args.StandardRestore(abstract))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(
            f"checkpoint {mgr.directory}/{step} does not match this model/optimizer ({e}); "
            "resume with the same DelpNetConfig and TrainConfig preset it was trained with, "
            "or start a new run directory."
        ) from e
    # orbax hands back arrays committed to a device; a fresh state's are not, and jit keys its
    # cache on that: without this a resumed run compiles its training step twice more
    tree = jax.tree.map(lambda a: jax.numpy.asarray(np.asarray(a)) if isinstance(a, jax.Array) else a, tree)
    return type(like)(**tree) if hasattr(like, "_asdict") else tree


def _flatten(tree, prefix: str) -> dict:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        flat[f"{prefix}/{name}"] = leaf if isinstance(leaf, jax.ShapeDtypeStruct) else np.asarray(leaf)
    return flat


def export_weights(path, model_config: DelpNetConfig, params, batch_stats, *, metadata: dict | None = None):
    """Write parameters and BN statistics (no optimizer state) to one ``.npz`` file.

    Args:
        path: output file (``.npz``).
        model_config: the architecture, stored as JSON so that loading can rebuild and check it.
        params: ``nnx.State`` of ``nnx.Param`` (or its pure dict).
        batch_stats: ``nnx.State`` of ``nnx.BatchStat`` (use re-estimated statistics).
        metadata: JSON-serialisable extras (training command, metrics...).

    Returns:
        the path written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pure = lambda s: nnx.to_pure_dict(s) if isinstance(s, nnx.State) else s
    arrays = {**_flatten(to_pure(params), "params"), **_flatten(to_pure(batch_stats), "batch_stats")}
    arrays["__config__"] = np.frombuffer(json.dumps(model_config.to_dict()).encode(), np.uint8)
    arrays["__metadata__"] = np.frombuffer(json.dumps(metadata or {}).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def read_weights(path) -> tuple[DelpNetConfig, dict, dict]:
    """Read an exported weights file.

    Returns:
        ``(config, arrays, metadata)`` where ``arrays`` maps ``params/...`` and
        ``batch_stats/...`` names to NumPy arrays.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a DelpNet weights file, or corrupt.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found; pass the .npz written by "
                                "export_weights (or path=None for the shipped weights).")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{str(path)!r} is not a readable DelpNet weights file (corrupt or truncated: {e}); "
                         "re-export it with export_weights or re-install the package.") from e
    if "__config__" not in arrays:
        raise InputError(f"{str(path)!r} has no DelpNet architecture record ('__config__'); it was not written "
                         "by lbdvd_jax.checkpoint.export_weights.")
    try:
        config = DelpNetConfig.from_dict(json.loads(arrays.pop("__config__").tobytes().decode()))
        metadata = json.loads(arrays.pop("__metadata__").tobytes().decode()) if "__metadata__" in arrays else {}
    except (ValueError, TypeError) as e:
        raise InputError(f"{str(path)!r} holds an unreadable architecture record ({e}).") from e
    return config, arrays, metadata


def _is_estimator_file(path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__config__" not in z.files:
                return False
            return json.loads(z["__config__"].tobytes().decode()).get("kind") == "defocus_estimator"
    except Exception:  # unreadable files are reported by read_weights with the full message
        return False


def load_delpnet(path=None, *, config: DelpNetConfig | None = None):
    """Load the shipped defocus estimator, or a trained DelpNet, from exported weights.

    Args:
        path: ``.npz`` written by :func:`export_weights` (a DelpNet) or by
            ``estimator_weights.export_estimator`` (a ``DefocusEstimator``), or a run directory
            holding ``best.npz``; None loads the most accurate shipped model, the defocus
            estimator in ``lbdvd_jax/weights/estimator.npz`` (offline). The paper's DelpNet
            stays available as ``load_delpnet(PAPER_DELPNET)``.
        config: optional expected architecture; a file of another architecture raises.

    Returns:
        a ``DefocusEstimator``, or a ``DelpNet`` with the stored parameters and BN statistics in
        ``eval()`` mode.

    Raises:
        FileNotFoundError: missing file.
        ValueError: corrupt file, or weights of another architecture (names or shapes differ).

    Examples:
        >>> import numpy as np
        >>> from lbdvd_jax import load_delpnet, classify_patches
        >>> model = load_delpnet()                     # the shipped defocus estimator
        >>> patches = np.full((2, 84, 84), 120, np.uint16)  # (n, 84, 84) raw values
        >>> labels, probs = classify_patches(model, patches)
        >>> probs.shape, labels.tolist()               # constant patches are bg (11)
        ((2, 12), [11, 11])
    """
    from lbdvd_jax.estimator_weights import SHIPPED_ESTIMATOR, load_estimator

    if path is None:
        path = SHIPPED_ESTIMATOR if config is None and SHIPPED_ESTIMATOR.is_file() else SHIPPED_WEIGHTS
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "best.npz"
    if _is_estimator_file(path):
        if config is not None:
            raise InputError(f"path: {str(path)!r} holds a defocus estimator, not a DelpNet of {config}; "
                             "load it without config= or pass DelpNet weights (PAPER_DELPNET)")
        return load_estimator(path)
    stored_config, arrays, metadata = read_weights(path)
    if config is not None and config != stored_config:
        raise InputError(f"{str(path)!r} holds another DelpNet architecture: stored {stored_config}, "
                         f"expected {config}; load it without config= or pass the matching file.")
    # abstract shapes only: random initialisation would compile and run every initialiser (seconds)
    model = nnx.eval_shape(lambda: DelpNet(stored_config, rngs=nnx.Rngs(0)))
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    expected = {**_flatten(nnx.to_pure_dict(params), "params"),
                **_flatten(nnx.to_pure_dict(batch_stats), "batch_stats")}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    bad = [(k, arrays[k].shape, v.shape) for k, v in expected.items() if k in arrays and arrays[k].shape != v.shape]
    if missing or extra or bad:
        raise InputError(
            f"{str(path)!r} does not match the DelpNet architecture it declares "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, shape mismatches {bad[:3]}); "
            "it is a checkpoint of another architecture or was edited; re-export it with export_weights."
        )

    def fill(state, prefix):
        pure = nnx.to_pure_dict(state)
        leaves_with_path = jax.tree_util.tree_flatten_with_path(pure)
        names = ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p) for p, _ in leaves_with_path[0]]
        new = jax.tree_util.tree_unflatten(
            leaves_with_path[1],
            [jax.numpy.asarray(arrays[f"{prefix}/{n}"], dtype=leaf.dtype) for n, (_, leaf) in
             zip(names, leaves_with_path[0])],
        )
        nnx.replace_by_pure_dict(state, new)
        return state

    model = nnx.merge(graphdef, fill(params, "params"), fill(batch_stats, "batch_stats"))
    model.eval()
    return model
