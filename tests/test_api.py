"""The public API holds to its conventions (dm-pix style): every public name documented,
optional arguments keyword-only, no hidden **kwargs pass-throughs, except the listed ones."""

import inspect

import lbdvd_jax

# name -> why it may break a rule (reviewed; keep short and honest)
POSITIONAL_OPTIONAL_OK = {
    "load_delpnet": "the weights path is the call's one subject: load_delpnet('w.npz')",
    "load_estimator": "the weights path is the call's one subject",
    "psf_stack": "the depths are the subject beside the optics: psf_stack(optics, z)",
}
KWARGS_OK = {
    "defocus_crops": "forwards synth_batch's documented noise/bg keywords",
    "make_eval_set": "forwards synth_batch's documented keywords",
    "depth_invariant_deconvolve": "forwards depth_variant_deconvolve's documented keywords",
}


def _public_callables():
    for name in lbdvd_jax.__all__:
        obj = getattr(lbdvd_jax, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield name, obj


def test_every_public_name_is_documented():
    missing = [n for n, o in _public_callables() if not (o.__doc__ or "").strip()]
    assert not missing, f"undocumented public names: {missing}"


def test_optional_arguments_are_keyword_only():
    bad = []
    for name, obj in _public_callables():
        if not inspect.isfunction(obj) or name in POSITIONAL_OPTIONAL_OK:
            continue
        params = inspect.signature(obj).parameters.values()
        if any(p.kind == p.POSITIONAL_OR_KEYWORD and p.default is not p.empty for p in params):
            bad.append(name)
    assert not bad, f"optional arguments that are positional: {bad}"


def test_no_hidden_kwargs():
    bad = [n for n, o in _public_callables() if inspect.isfunction(o) and n not in KWARGS_OK
           and any(p.kind == p.VAR_KEYWORD for p in inspect.signature(o).parameters.values())]
    assert not bad, f"**kwargs pass-throughs: {bad}"


def test_all_is_sorted_and_resolves():
    assert list(lbdvd_jax.__all__) == sorted(lbdvd_jax.__all__)
    for name in lbdvd_jax.__all__:
        getattr(lbdvd_jax, name)


def test_results_are_named_tuples(tmp_path):
    """Multi-part results unpack as before and name their parts (as optax's states do)."""
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx
    from helpers import TINY

    from lbdvd_jax import BlindDeconvolution, Classification, blind_richardson_lucy, classify_patches
    from lbdvd_jax import checkpoint as C
    from lbdvd_jax import train as T
    from lbdvd_jax.model import DelpNet

    img = jnp.ones((16, 16)) + jnp.eye(16)
    res = blind_richardson_lucy(img, jnp.ones((3, 3)) / 9, num_iter=2)
    assert isinstance(res, BlindDeconvolution) and res.image.shape == (16, 16) and res.psf.shape == (3, 3)
    cls = classify_patches(DelpNet(TINY, rngs=nnx.Rngs(0)), np.full((3, 16, 16), 500.0))
    assert isinstance(cls, Classification) and cls.labels.shape == (3,) and cls.probs.shape == (3, 12)
    cfg = T.TrainConfig(total_steps=2, warmup_steps=1, cooldown_steps=1, batch_size=8)
    setup = T.init_state(TINY, cfg)
    assert isinstance(setup, T.TrainSetup) and isinstance(setup.state, T.TrainState)
    assert int(setup.state.step) == 0
    # a NamedTuple state round-trips through an orbax checkpoint as itself (fit's TrainResult:
    # tests/test_checkpoint.py)
    saved = setup.state._replace(step=jnp.asarray(2, jnp.int32))
    with C.checkpoint_manager(tmp_path / "ckpt") as mgr:
        C.save_train_state(mgr, saved)
        mgr.wait_until_finished()
        back = C.restore_train_state(mgr, setup.state)
    assert isinstance(back, T.TrainState) and int(back.step) == 2


APPLICATIONS = {"__main__", "cli", "cli_checks", "cli_commands", "cli_scale", "demo", "evaluation",
                "train_estimator_app", "train_delpnet_app", "napari_widget", "napari_sample"}
LEAVES = {"constants", "errors"}


def _package_imports(path):
    """Modules of lbdvd_jax imported anywhere in `path` (top level or inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lbdvd_jax"):
            if node.module == "lbdvd_jax":
                found |= {a.name for a in node.names}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("lbdvd_jax.")}
    return found


def test_imports_run_one_way():
    """Library modules import no application module (the CLI, demo, evaluation, training apps,
    napari entry points); the leaves import nothing of the package."""
    import pathlib

    import lbdvd_jax

    pkg = pathlib.Path(lbdvd_jax.__file__).parent
    modules = {p.stem for p in pkg.glob("*.py")}
    bad = []
    for p in pkg.glob("*.py"):
        if p.stem in APPLICATIONS or p.stem == "__init__":
            continue
        imported = _package_imports(p) & modules
        if p.stem in LEAVES and imported:
            bad.append(f"{p.stem} (a leaf) imports {sorted(imported)}")
        if imported & APPLICATIONS:
            bad.append(f"{p.stem} imports the application module(s) {sorted(imported & APPLICATIONS)}")
    assert bad == []
