"""Plumbing shared by the example scripts: the estimator and the BBBC006 fields, JSON out.

The scripts put their own folder first on `sys.path` and import this module by name, as
`benchmarks/` does with its `_common.py`.
"""

import json
import os
import pathlib
import warnings

#: in-focus BBBC006 fields (train a03-a07, val a01, test a02 by `fields.split_fields`)
DEFAULT_FIELDS = os.environ.get("LBDVD_INFOCUS", "../shared/data/real/bbbc006/infocus")


def add_model_and_fields(ap, *, model=True):
    """--model (estimator weights; default the shipped one) and --fields on an ArgumentParser."""
    if model:
        ap.add_argument("--model", default=None, help="estimator weights (.npz); default the shipped one")
    ap.add_argument("--fields", default=DEFAULT_FIELDS, help="folder of in-focus BBBC006 fields")


def estimator_and_fields(args, *, quiet=True):
    """(model, fields, names, split) for `args.model` / `args.fields`; with `quiet` the
    estimator's domain warnings are silenced (the scripts measure, they do not advise)."""
    from lbdvd_jax.checkpoint import load_delpnet
    from lbdvd_jax.defocus_map import EstimatorDomainWarning
    from lbdvd_jax.fields import load_infocus_fields, split_fields

    if quiet:
        warnings.simplefilter("ignore", EstimatorDomainWarning)
    model = load_delpnet(getattr(args, "model", None))
    fields, names = load_infocus_fields(args.fields)
    return model, fields, names, split_fields(names, seed=0)


def write_result(result, path, *, summary=None):
    """Write `result` as indented JSON to `path` when one is given (through a temporary file
    renamed into place: an interrupted run leaves no half-written file), then print `summary`
    (default: `result`) as one JSON line, the scripts' last line."""
    if path:
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)
    print(json.dumps(result if summary is None else summary))
