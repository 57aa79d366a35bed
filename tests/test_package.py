"""The public surface: everything in __all__ resolves, and importing gradlab stays light."""

import subprocess
import sys

import gradlab


def test_every_public_name_resolves():
    for name in gradlab.__all__:
        assert getattr(gradlab, name) is not None, name


def test_import_loads_neither_matplotlib_nor_pandas():
    code = "import sys, gradlab; print('matplotlib' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
