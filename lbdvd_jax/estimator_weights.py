"""Shipped-weights format of the defocus estimator: parameters and architecture, one .npz.

No optimiser state and no training checkpoints: `export_estimator` writes what inference needs,
`load_estimator` rebuilds the module and checks every array against the declared architecture.
"""

from __future__ import annotations

import json
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lbdvd_jax.errors import InputError
from lbdvd_jax.estimator import DefocusEstimator, EstimatorConfig

__all__ = ["SHIPPED_ESTIMATOR", "estimator_metadata", "export_estimator", "load_estimator"]

SHIPPED_ESTIMATOR = pathlib.Path(__file__).resolve().parent / "weights" / "estimator.npz"


def _names(tree):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p) for p, _ in leaves]
    return names, [v for _, v in leaves], treedef


def export_estimator(path, config: EstimatorConfig, params, *, metadata: dict | None = None):
    """Write `params` (an `nnx.State` of the estimator) and `config` to `path` (.npz), atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pure = nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params
    names, leaves, _ = _names(pure)
    arrays = {f"params/{n}": np.asarray(v) for n, v in zip(names, leaves)}
    arrays["__config__"] = np.frombuffer(json.dumps(config.to_dict()).encode(), np.uint8)
    arrays["__metadata__"] = np.frombuffer(json.dumps(metadata or {}).encode(), np.uint8)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def load_estimator(path=None) -> DefocusEstimator:
    """The defocus estimator stored at `path` (default: the shipped weights).

    Raises:
        FileNotFoundError: no such file.
        ValueError: corrupt file, a DelpNet or other model's file, or arrays that do not match
            the declared architecture; the message says what to pass instead.
    """
    path = pathlib.Path(SHIPPED_ESTIMATOR if path is None else path)
    if path.is_dir():
        path = path / "best.npz"
    if not path.is_file():
        raise FileNotFoundError(f"path: estimator weights {str(path)!r} not found; pass a .npz "
                                "written by export_estimator (or None for the shipped weights)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        config = json.loads(arrays.pop("__config__").tobytes().decode())
        arrays.pop("__metadata__", None)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, UnicodeDecodeError) as e:
        raise InputError(f"path: {str(path)!r} is not a readable estimator weights file ({e}); "
                         "re-export it with export_estimator or reinstall the package") from None
    if config.get("kind") != "defocus_estimator":
        raise InputError(f"path: {str(path)!r} holds another model ({config.get('kind', 'DelpNet')!r} "
                         "weights), not a defocus estimator; load it with load_delpnet, or pass "
                         "estimator weights")
    config = EstimatorConfig.from_dict(config)
    # abstract shapes only: random initialisation would compile and run every initialiser (seconds)
    model = nnx.eval_shape(lambda: DefocusEstimator(config, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model)
    names, leaves, treedef = _names(nnx.to_pure_dict(params))
    want = {f"params/{n}": v for n, v in zip(names, leaves)}
    bad = sorted(set(want) ^ set(arrays)) + [k for k in want if k in arrays and arrays[k].shape != want[k].shape]
    if bad:
        raise InputError(f"path: {str(path)!r} does not match the estimator architecture it declares "
                         f"({bad[:3]}); it was edited or written by another version: re-export it")
    pure = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[f"params/{n}"], v.dtype)
                                                  for n, v in zip(names, leaves)])
    nnx.replace_by_pure_dict(params, pure)
    return nnx.merge(graphdef, params)


def estimator_metadata(path=None) -> dict:
    """The metadata stored with estimator weights (training step, held-out accuracy, ...)."""
    path = pathlib.Path(SHIPPED_ESTIMATOR if path is None else path)
    with np.load(path, allow_pickle=False) as z:
        return json.loads(z["__metadata__"].tobytes().decode()) if "__metadata__" in z.files else {}
