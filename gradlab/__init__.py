"""gradlab: find where gradients vanish or explode in deep networks, why, and which fix works.

The public surface. ``import gradlab`` loads numpy only; pandas-based pieces (diagnosis, reports)
load on first use, and matplotlib only when a chart is drawn.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gradlab.experiment.config import Config, ConfigError
from gradlab.experiment.runner import run_sweep
from gradlab.experiment.store import load_hists, load_layers, load_results
from gradlab.experiment.sweep import Sweep, SweepError, load_sweep
from gradlab.experiment.train import RunResult, run, train_loop
from gradlab.monitor.gradient_monitor import GradientMonitor
from gradlab.monitor.observer import Observer
from gradlab.nn.activations import ACTIVATIONS, Activation, get_activation
from gradlab.nn.hooks import Handle, Monitor, StepInfo
from gradlab.nn.init import INITS, calculate_gain, init_weights
from gradlab.nn.layers import BatchNorm, Dense, Dropout, Layer, LayerNorm, Residual
from gradlab.nn.losses import binary_cross_entropy_with_logits, mse, softmax_cross_entropy
from gradlab.nn.network import Network, mlp
from gradlab.nn.optim import SGD, Adam, AdamW, clip_grad_norm, clip_grad_value, make_optimizer
from gradlab.records import METRICS
from gradlab.version import __version__

_LAZY = {
    "diagnose": ("gradlab.diagnosis", "diagnose"),
    "Thresholds": ("gradlab.diagnosis", "Thresholds"),
    "format_findings": ("gradlab.diagnosis", "format_findings"),
    "findings_to_json": ("gradlab.diagnosis", "findings_to_json"),
    "run_verdicts": ("gradlab.diagnosis", "run_verdicts"),
    "write_report": ("gradlab.report", "write_report"),
    "load_and_report": ("gradlab.report", "load_and_report"),
    "theory": ("gradlab.theory", None),
    "expected_vs_measured": ("gradlab.theory", "expected_vs_measured"),
    "fix": ("gradlab.repair", "fix"),
}


def __getattr__(name: str) -> Any:
    """Load the pandas-based parts (diagnosis, reports) and theory on first use."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")


__all__ = [
    "ACTIVATIONS",
    "INITS",
    "METRICS",
    "SGD",
    "Activation",
    "Adam",
    "AdamW",
    "BatchNorm",
    "Config",
    "ConfigError",
    "Dense",
    "Dropout",
    "GradientMonitor",
    "Handle",
    "Layer",
    "LayerNorm",
    "Monitor",
    "Network",
    "Observer",
    "Residual",
    "RunResult",
    "StepInfo",
    "Sweep",
    "SweepError",
    "Thresholds",
    "__version__",
    "binary_cross_entropy_with_logits",
    "calculate_gain",
    "clip_grad_norm",
    "clip_grad_value",
    "diagnose",
    "expected_vs_measured",
    "findings_to_json",
    "fix",
    "format_findings",
    "get_activation",
    "init_weights",
    "load_and_report",
    "load_hists",
    "load_layers",
    "load_results",
    "load_sweep",
    "make_optimizer",
    "mlp",
    "mse",
    "run",
    "run_sweep",
    "run_verdicts",
    "softmax_cross_entropy",
    "theory",
    "train_loop",
    "write_report",
]
