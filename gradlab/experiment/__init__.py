"""Config → data, network and optimizer → training run → sweep → results folder."""

from __future__ import annotations

from gradlab.experiment.config import Config, ConfigError
from gradlab.experiment.runner import run_sweep
from gradlab.experiment.store import load_hists, load_layers, load_results
from gradlab.experiment.sweep import Sweep, SweepError, load_sweep
from gradlab.experiment.train import RunResult, run, train_loop

__all__ = [
    "Config",
    "ConfigError",
    "RunResult",
    "Sweep",
    "SweepError",
    "load_hists",
    "load_layers",
    "load_results",
    "load_sweep",
    "run",
    "run_sweep",
    "train_loop",
]
