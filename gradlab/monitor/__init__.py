"""Arrays → numbers: the per-layer statistics, the Observer any training loop can feed, and the
GradientMonitor that drives it from a gradlab Network's hooks."""

from __future__ import annotations

from gradlab.monitor.gradient_monitor import GradientMonitor
from gradlab.monitor.observer import Observer

__all__ = ["GradientMonitor", "Observer"]
