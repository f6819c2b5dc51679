"""The napari dock widget: restore the selected image layer and show where it is out of focus.

A magicgui container around `napari_layers`: pick the image layer and the settings, press
Restore; the restore runs in a worker thread (napari's `thread_worker`) block by block, a
progress bar follows it and Cancel stops it between blocks, leaving the viewer as it was. The
results replace the layers of an earlier run of the same source (no pile-up). Layers the
plugin cannot restore get one viewer notification saying why (`napari_layers.check_layer`).

    pip install 'lbdvd-jax[napari]'
    napari -w lbdvd-jax            # File > Open Sample > lbdvd-jax for the bundled pair
"""

from __future__ import annotations

import threading
import warnings

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, LineEdit, ProgressBar, PushButton

from lbdvd_jax.errors import InputError
from lbdvd_jax.napari_layers import LayerOptions, check_layer, restore_layer_data, result_layers

__all__ = ["RestoreWidget", "make_restore_widget"]


class _Cancelled(Exception):
    pass


def _notify(message: str):
    from napari.utils.notifications import show_warning

    show_warning(message)


def _parse_iterations(text: str):
    text = text.strip()
    if not text or text == "default":
        return None
    parts = [int(p) for p in text.split(",")]
    if len(parts) == 1:
        return parts[0]
    if len(parts) != 11:
        raise InputError("iterations: one count or 11 comma-separated counts (one per level)")
    return tuple(parts)


class RestoreWidget(Container):
    """The lbdvd dock widget (module docstring)."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.layer = ComboBox(label="image", choices=self._image_layers)
        self.mode = ComboBox(label="mode", choices=["dv", "di", "soft"], value="dv",
                             tooltip="dv: each patch with its own level's PSF; di: the in-focus PSF everywhere; "
                                     "soft: the probability-weighted mixture of the level PSFs")
        self.defocus = ComboBox(label="defocus", choices=["levels", "continuous"], value="levels",
                                tooltip="levels: the paper's 11 PSFs; continuous: each patch's own depth "
                                        "from a smooth depth surface (mode dv)")
        self.iterations = LineEdit(label="RL iterations", value="default",
                                   tooltip="'default' (1 at levels 0-1, 15 above), one count, or 11 counts")
        self.weights = ComboBox(label="montage", choices=["triangular", "rectangular"], value="triangular")
        self.background = LineEdit(label="background", value="auto",
                                   tooltip="'auto' (the 0.5th percentile) or counts subtracted before RL")
        self.pixel_um = FloatSpinBox(label="pixel size (µm)", value=0.65, min=0.01, max=100.0, step=0.01)
        self.planes = ComboBox(label="planes", choices=["current", "all"], value="current",
                               tooltip="stacks: restore the plane shown or all planes")
        self.note = Label(value="")
        self.progress = ProgressBar(label="progress", value=0, max=100)
        self.run_button = PushButton(text="Restore")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self.layer, self.mode, self.defocus, self.iterations, self.weights,
                                  self.background, self.pixel_um, self.planes, self.note, self.progress,
                                  self.run_button, self.cancel_button])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.layer.changed.connect(self._layer_changed)
        self.pixel_um.changed.connect(self._check_pixel)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self._cancel = threading.Event()
        self._state = {"done": 0, "total": 1}
        self.worker = None
        self._model = None
        self._timer = None
        self._refresh()

    # ---------------------------------------------------------------- choices and notes
    def _image_layers(self, _widget=None):
        return [layer.name for layer in self.viewer.layers
                if not layer.name.endswith((" restored", " defocus levels", " certainty", " depth (µm)"))]

    def _refresh(self, *_):
        self.layer.reset_choices()
        self._layer_changed()

    def _layer_changed(self, *_):
        name = self.layer.value
        if name is None or name not in self.viewer.layers:
            return
        layer = self.viewer.layers[name]
        scale = float(layer.scale[-1])
        if scale != 1.0:
            self.pixel_um.value = scale
            self.note.value = ""
        else:
            self.pixel_um.value = 0.65
            self.note.value = "layer has no scale: assumed 0.65 µm/px"
        self.planes.visible = getattr(layer, "ndim", 2) == 3
        self._check_pixel()

    def _check_pixel(self, *_):
        from lbdvd_jax import io

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            io.check_pixel_size(float(self.pixel_um.value), 0.65, name=str(self.layer.value))
        if caught:
            self.note.value = str(caught[0].message)

    def options(self) -> LayerOptions:
        bg = self.background.value.strip()
        return LayerOptions(mode=self.mode.value, defocus=self.defocus.value,
                            num_iter=_parse_iterations(self.iterations.value), weights=self.weights.value,
                            background="auto" if bg in ("", "auto") else float(bg),
                            pixel_um=float(self.pixel_um.value), planes=self.planes.value)

    # ---------------------------------------------------------------- running
    def _model_once(self):
        if self._model is None:
            from lbdvd_jax.checkpoint import load_delpnet

            self._model = load_delpnet()
        return self._model

    def run(self, *_):
        """Start a restore of the selected layer (returns the worker, or None when refused)."""
        from napari.qt.threading import create_worker

        name = self.layer.value
        if name is None:
            _notify("lbdvd: open an image first (File > Open Sample > lbdvd-jax for the bundled pair)")
            return None
        layer = self.viewer.layers[name]
        kind = type(layer).__name__.lower()
        problem = check_layer(kind, tuple(layer.data.shape), rgb=bool(getattr(layer, "rgb", False)))
        if problem:
            _notify(f"lbdvd: {name}: {problem}")
            return None
        try:
            options = self.options()
        except ValueError as err:
            _notify(f"lbdvd: {err}")
            return None
        if options.defocus == "continuous" and options.mode != "dv":
            _notify("lbdvd: continuous defocus works with mode dv")
            return None
        current = int(self.viewer.dims.current_step[0]) if layer.ndim == 3 else 0
        data = layer.data
        self._cancel.clear()
        self._state.update(done=0, total=1)
        source = {"name": name, "scale": tuple(layer.scale), "translate": tuple(layer.translate),
                  "metadata": dict(layer.metadata), "shape": tuple(layer.data.shape)}

        def progress(done, total):
            self._state.update(done=done, total=total)
            if self._cancel.is_set():
                raise _Cancelled

        def job():
            model = self._model_once() if options.mode in ("dv", "soft") else None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return restore_layer_data(data, model=model, options=options, current=current,
                                              progress=progress)
            except _Cancelled:
                return None

        self.worker = worker = create_worker(job)
        worker.returned.connect(lambda result: self._finish(result, source))
        worker.errored.connect(lambda err: _notify(f"lbdvd: restore failed: {type(err).__name__}: {err}"))
        worker.finished.connect(self._stopped)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self._start_timer()
        worker.start()
        return worker

    def cancel(self, *_):
        """Stop the running restore after its current block; the viewer keeps its layers."""
        self._cancel.set()

    def _start_timer(self):
        from qtpy.QtCore import QTimer

        if self._timer is None:
            self._timer = QTimer()
            self._timer.setInterval(100)
            self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _tick(self):
        total = max(int(self._state["total"]), 1)
        self.progress.value = int(100 * min(self._state["done"], total) / total)

    def _stopped(self):
        if self._timer is not None:
            self._timer.stop()
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _finish(self, result, source):
        if result is None:  # cancelled: nothing added, nothing replaced
            self.progress.value = 0
            return
        index, results = result
        tuples = result_layers(source["name"], index, results, scale=source["scale"],
                               translate=source["translate"], metadata=source["metadata"], shape=source["shape"])
        for data, kwargs, kind in tuples:
            name = kwargs["name"]
            if name in self.viewer.layers:  # a rerun replaces its own layers
                self.viewer.layers.remove(name)
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.progress.value = 100


def make_restore_widget(viewer=None):
    """npe2 widget factory (napari passes the viewer)."""
    if viewer is None:
        import napari

        viewer = napari.current_viewer()
    return RestoreWidget(viewer)
