"""Every Python block of README.md runs as written, in order, in one namespace."""

import os
import pathlib
import re
import warnings

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)  # files the snippets write land here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, code in enumerate(blocks):
                exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert (tmp_path / "restored.tif").exists()
