"""The public surface: every name in every ``__all__`` is the object that defines it, in any order of
first use, and importing gradlab stays light."""

import subprocess
import sys

import pytest

import gradlab

PACKAGES = ["gradlab", "gradlab.nn", "gradlab.monitor", "gradlab.experiment", "gradlab.diagnosis",
            "gradlab.theory", "gradlab.plots", "gradlab.report"]
try:  # the PyTorch adapter is an optional extra
    import torch  # noqa: F401

    PACKAGES.append("gradlab.torch")
except ImportError:
    pass

_CHECK = r"""
import importlib, inspect, sys, types
pkgs = [importlib.import_module(p) for p in sys.argv[2:]]
names = [(p, n) for p in pkgs for n in p.__all__]
if sys.argv[1] == "reverse":
    names.reverse()
for p, n in names:                      # first use of every name, in this order
    getattr(p, n)
bad = []
for p, n in names:                      # then each one must still be what defines it
    obj = getattr(p, n)
    if isinstance(obj, types.ModuleType):
        if n != "theory":
            bad.append(f"{p.__name__}.{n} is the module {obj.__name__}")
        continue
    home = getattr(obj, "__module__", None)
    if inspect.isfunction(obj) or inspect.isclass(obj):
        if getattr(importlib.import_module(home), obj.__name__, None) is not obj:
            bad.append(f"{p.__name__}.{n} is not {home}.{obj.__name__}")
print("\n".join(bad))
"""


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_every_public_name_resolves_to_its_definition_in_any_order(order):
    out = subprocess.run([sys.executable, "-c", _CHECK, order, *PACKAGES], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_diagnose_stays_callable_after_the_report_is_loaded():
    code = ("import gradlab; gradlab.Thresholds; gradlab.load_and_report; import gradlab.diagnosis.verdicts;"
            "print(callable(gradlab.diagnose), gradlab.diagnose is gradlab.diagnosis.verdicts.diagnose)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True"]


def test_no_public_name_shares_its_name_with_a_root_submodule():
    import pkgutil

    submodules = {m.name for m in pkgutil.iter_modules(gradlab.__path__)}
    clashes = sorted(n for n in gradlab.__all__ if n in submodules and n != "theory")
    assert not clashes, clashes


def test_import_loads_neither_matplotlib_nor_pandas_nor_torch():
    code = "import sys, gradlab; print(*(m in sys.modules for m in ('matplotlib', 'pandas', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]
