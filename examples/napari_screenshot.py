"""The README's napari screenshot: the lbdvd widget, a restored field and its defocus level map.

The field is the bundled in-focus a01 blurred by the demo's tilted depth map (0-20 µm across the
field, `demo.synthesize_defocus`), so that the level map shows the depth gradient.

Headless: xvfb-run -a python examples/napari_screenshot.py [-o docs/napari_widget.png]
"""

import argparse
import pathlib
import time
import warnings


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(pathlib.Path(__file__).resolve().parents[1] / "docs"
                                                  / "napari_widget.png"))
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from lbdvd_jax.napari_sample import bbbc006_a01_pair
    from lbdvd_jax.napari_widget import RestoreWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 900)
    from lbdvd_jax.synthesis import synthesize_defocus

    focus = bbbc006_a01_pair()[1][0]
    tilted, _ = synthesize_defocus(focus, seed=1)
    viewer.add_image(tilted, name="a01 tilted", scale=(0.65, 0.65), colormap="gray")
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="lbdvd: restore", area="right")
    widget.layer.value = "a01 tilted"
    widget.run()
    t0 = time.time()
    while not widget.run_button.enabled and time.time() - t0 < 600:
        QApplication.processEvents()
        time.sleep(0.05)
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    viewer.layers["a01 tilted"].visible = False
    restored = viewer.layers["a01 tilted restored"]
    restored.contrast_limits = [float(v) for v in np.percentile(restored.data, [0.5, 99.9])]
    levels = viewer.layers["a01 tilted defocus levels"]
    levels.opacity = 0.3
    viewer.layers.selection.active = levels
    viewer.reset_view()
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"wrote {out}")
    viewer.close()


if __name__ == "__main__":
    main()
