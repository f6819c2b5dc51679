"""The napari plugin: manifest, sample data, the dock widget (restore, rerun, cancel, bad layers).

Headless: pytest-xvfb starts Xvfb when it is installed (CI installs it, README 'Tests');
without a display these tests are skipped.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("napari tests need a display: install xvfb (pytest-xvfb then starts one)", allow_module_level=True)

from lbdvd_jax import napari_widget  # noqa: E402
from lbdvd_jax.napari_layers import RESULT_SUFFIXES, check_layer  # noqa: E402
from lbdvd_jax.napari_sample import bbbc006_a01_pair  # noqa: E402
from lbdvd_jax.napari_widget import RestoreWidget  # noqa: E402

TIMEOUT_MS = 240_000


def test_manifest_validates():
    npe2 = pathlib.Path(sys.executable).parent / "npe2"
    proc = subprocess.run([str(npe2), "validate", "lbdvd-jax"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


@pytest.fixture
def viewer_with_widget(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    notes = []
    monkeypatch.setattr(napari_widget, "_notify", notes.append)
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="lbdvd")
    return viewer, widget, notes


def _run(qtbot, widget):
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=TIMEOUT_MS)
    return worker


def test_sample_data_opens_from_the_menu_entry(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("lbdvd-jax", "bbbc006_a01")
    names = [layer.name for layer in viewer.layers]
    assert names == ["a01 z00 (out of focus)", "a01 in focus"]
    assert tuple(viewer.layers[0].scale) == (0.65, 0.65)


def test_widget_restores_sample_and_rerun_replaces_without_recompiling(viewer_with_widget, qtbot):
    from helpers import count_compilations

    viewer, widget, notes = viewer_with_widget
    for data, kwargs, kind in bbbc006_a01_pair():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    src = viewer.layers["a01 z00 (out of focus)"]
    widget.layer.value = src.name
    assert widget.pixel_um.value == pytest.approx(0.65)
    _run(qtbot, widget)
    assert notes == []
    restored = viewer.layers[src.name + RESULT_SUFFIXES["image"]]
    levels = viewer.layers[src.name + RESULT_SUFFIXES["levels"]]
    certainty = viewer.layers[src.name + RESULT_SUFFIXES["certainty"]]
    assert restored.data.shape == src.data.shape and restored.data.dtype == np.float32
    assert isinstance(levels, napari.layers.Labels) and levels.data.shape == src.data.shape
    assert set(np.unique(levels.data)) <= set(range(12)) and levels.data.max() >= 10  # z00: far out of focus
    for layer in (restored, levels, certainty):
        assert tuple(layer.scale) == tuple(src.scale) and tuple(layer.translate) == tuple(src.translate)
    assert restored.metadata["source"] == src.metadata["source"]
    assert widget.progress.value == 100
    n_layers = len(viewer.layers)
    with count_compilations() as compiled:
        _run(qtbot, widget)  # same shape again: replaced, not piled up, nothing recompiled
    assert len(viewer.layers) == n_layers
    assert compiled["n"] == 0, compiled["names"]


def test_cancel_leaves_viewer_unchanged(viewer_with_widget, qtbot):
    viewer, widget, notes = viewer_with_widget
    data = bbbc006_a01_pair()[0][0]
    viewer.add_image(np.stack([data, data[::-1], data[:, ::-1]]), name="stack", scale=(1.0, 0.65, 0.65))
    widget.layer.value = "stack"
    widget.planes.value = "all"
    before = [layer.name for layer in viewer.layers]
    worker = widget.run()
    widget.cancel()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == before
    assert widget.progress.value == 0 and not widget.cancel_button.enabled
    assert worker is not None and notes == []


def test_stack_current_plane(viewer_with_widget, qtbot):
    viewer, widget, notes = viewer_with_widget
    data = bbbc006_a01_pair()[1][0][:200, :300]
    viewer.add_image(np.stack([data, data[::-1]]), name="pair", scale=(2.0, 0.65, 0.65))
    viewer.dims.set_current_step(0, 1)
    widget.layer.value = "pair"
    widget.planes.value = "current"
    widget.mode.value = "di"
    _run(qtbot, widget)
    out = viewer.layers["pair" + RESULT_SUFFIXES["image"]]
    assert out.data.shape == (1, 200, 300)
    assert tuple(out.translate)[0] == pytest.approx(2.0)  # sits at plane 1 of the source


def test_dask_backed_layer(viewer_with_widget, qtbot):
    da = pytest.importorskip("dask.array")
    viewer, widget, notes = viewer_with_widget
    data = bbbc006_a01_pair()[1][0]
    viewer.add_image(da.from_array(data, chunks=(128, 128)), name="lazy", scale=(0.65, 0.65))
    widget.layer.value = "lazy"
    widget.mode.value = "di"
    _run(qtbot, widget)
    assert notes == []
    assert viewer.layers["lazy" + RESULT_SUFFIXES["image"]].data.shape == data.shape


@pytest.mark.parametrize("kind", ["labels", "rgb", "volume", "small"])
def test_bad_layers_notify_once_and_add_nothing(viewer_with_widget, kind):
    viewer, widget, notes = viewer_with_widget
    if kind == "labels":
        viewer.add_labels(np.zeros((200, 200), np.uint8), name="bad")
    elif kind == "rgb":
        viewer.add_image(np.zeros((200, 200, 3), np.uint8), name="bad", rgb=True)
    elif kind == "volume":
        viewer.add_image(np.zeros((2, 3, 200, 200), np.float32), name="bad")
    else:
        viewer.add_image(np.zeros((50, 60), np.float32), name="bad")
    widget.layer.value = "bad"
    n = len(viewer.layers)
    assert widget.run() is None
    assert len(notes) == 1 and notes[0].startswith("lbdvd: bad: ")
    assert len(viewer.layers) == n


def test_check_layer_messages():
    assert check_layer("image", (520, 696)) is None
    assert "labels layer" in check_layer("labels", (520, 696))
    assert "RGB" in check_layer("image", (520, 696, 3), rgb=True)
    assert "shape (2, 3, 200, 200)" in check_layer("image", (2, 3, 200, 200))
    assert "smaller than one 84x84" in check_layer("image", (50, 60))
