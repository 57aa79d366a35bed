"""``gradlab.torch.watch(model, optimizer)``: gradlab's per-layer statistics for any PyTorch model.

One line in the loop, after ``optimizer.step()``: ``w.step(loss)``. On a step the schedule records,
the watch arms its hooks before the forward pass: forward pre-hooks and hooks on the watched modules
(statistics of each output, and tensor hooks for ∂L/∂x and ∂L/∂y), hooks on the parameters'
accumulated gradients (norms before any clipping) and the optimizer's step hooks (the update it
actually applied). ``w.step`` gathers the step's statistics in one device→host transfer (a second on
the steps that keep histograms, :func:`log_steps` unless ``hist_every`` says otherwise) and disarms
every hook, so a step the schedule skips costs nothing. Forward passes without autograd
(``torch.no_grad()``, evaluation) are not recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from gradlab.nn.hooks import Schedule, schedule_fn
from gradlab.records import LAYERS_DTYPES, NETWORK_METRICS, Recorder
from gradlab.statistics import stat_metrics
from gradlab.torch.collect import StepStats, norm
from gradlab.torch.discover import Layer, discover, uncovered
from gradlab.torch.hooks import Hooks
from gradlab.torch.results import manifest, save

if TYPE_CHECKING:
    import pandas as pd

ON_DIVERGE = ("stop", "raise", "continue")


class DivergedError(FloatingPointError):
    """Raised by ``Watch.step`` when the run diverged and ``on_diverge="raise"``."""


class Watch(Hooks):
    """A handle on a watched model: call :meth:`step` once per optimisation step, then :meth:`frame`,
    :meth:`layers_frame` or :meth:`save`; :meth:`remove` (or leaving the ``with`` block) detaches."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: Schedule = 1,
        layers: str | Sequence[str] | None = None,
        run: str | None = None,
        stats: Sequence[str] | None = None,
        dead_window: int = 10,
        on_diverge: str = "stop",
        verbose: bool = True,
        hist_every: Schedule | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            kind = type(optimizer).__name__
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {kind}")
        if on_diverge not in ON_DIVERGE:
            raise ValueError(f"on_diverge={on_diverge!r}; allowed: {', '.join(ON_DIVERGE)}")
        if isinstance(dead_window, bool) or not isinstance(dead_window, int) or dead_window < 1:
            raise ValueError(f"dead_window={dead_window!r} must be an integer >= 1")
        self.wanted = stat_metrics(stats)
        self.model, self.optimizer, self.on_diverge = model, optimizer, on_diverge
        self.schedule = schedule_fn(every)
        self.hist_schedule = schedule_fn(hist_every) if hist_every is not None else log_steps
        self._hists_now = False
        self.run = run or f"{type(model).__name__.lower()}-{id(model) & 0xFFFFFF:06x}"
        self.layers = discover(model, layers)
        self.notes = uncovered(self.layers)
        if not any(lay.kind == "activation" for lay in self.layers):
            self.notes.append("no activation modules: activations called as functions (F.relu, torch.tanh) "
                              "get no saturation or dead-unit statistics")
        if verbose and self.notes:
            print("gradlab.torch.watch: " + "; ".join(self.notes))
        self.recorder = Recorder(run=self.run)
        self._cols: dict[tuple[str, str], int] = {}
        self._net = {m: self.recorder.add_column("", m) for m in NETWORK_METRICS}
        self.stats = StepStats(self._column, dead_window)
        self._order: dict[str, int] = {}  # layer name → forward position (first recorded pass)
        self._units: dict[str, tuple[int | None, int | None]] = {}
        self._outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id(output) → (layer, output), this step
        self._feeds: dict[str, list[str]] = {}  # layer → the layers whose input is its output
        self._calls: dict[str, int] = {}  # module name → calls this step (a reused module: name@2, …)
        self._handles: list[Any] = []
        self._grad_norms: torch.Tensor | None = None  # per parameter, before clipping
        self._grad_params: list[nn.Parameter] = []
        self._param_norms: dict[nn.Parameter, torch.Tensor] = {}
        self._grads_queued = False
        self._clipped: torch.Tensor | None = None
        self._bad_step = None  # device tensor: first step whose loss was not finite (−1: none)
        self.step_no = 0
        self.divergence: tuple[int, str] | None = None
        self.batch_size: int | None = None
        self.final_loss = math.nan
        self._t0 = time.perf_counter()
        self._attached = True
        self._wants = {lay.name: self._metrics_of(lay) for lay in self.layers}
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._signals = any(w & {"grad_out_norm", "grad_in_norm"} for w in self._wants.values())
        self._param_owner = {id(p): (lay, metric) for lay in self.layers
                             for p, metric in ((lay.weight, "grad_norm"), (lay.bias, "grad_b_norm"))
                             if p is not None}
        self._updated = [lay for lay in self.layers if lay.weight is not None
                         and "update_ratio" in self._wants[lay.name]]
        self._snap: list[Layer] = []
        self._before: list[torch.Tensor] = []
        if self.schedule(0):
            self._arm()

    # -- columns and hooks -------------------------------------------------------------------------
    def _column(self, layer: str, metric: str) -> int:
        i = self._cols.get((layer, metric))
        if i is None:
            i = self._cols[(layer, metric)] = self.recorder.add_column(layer, metric)
        return i

    # -- the step ----------------------------------------------------------------------------------
    def step(self, loss: torch.Tensor | float | None = None, *, accuracy: float | None = None) -> bool:
        """Close this optimisation step (call it after ``optimizer.step()``); False once the run
        diverged and ``on_diverge="stop"``: break out of the loop then."""
        if not self._attached:
            raise RuntimeError("this watch was removed; start a new one with gradlab.torch.watch")
        step = self.step_no
        if isinstance(loss, torch.Tensor):
            loss_t = loss.detach().reshape(())
            bad = ~torch.isfinite(loss_t)
            first = torch.where(bad, step, -1)
            self._bad_step = first if self._bad_step is None else torch.where(self._bad_step < 0, first,
                                                                              self._bad_step)
        recorded = bool(self._handles)
        if recorded:
            self._record(step, loss, accuracy)
        self.step_no += 1
        diverged = self._check_divergence(step, loss, recorded)
        if diverged and self.on_diverge == "raise":
            self.remove()
            raise DivergedError(f"{self.run} diverged at step {self.divergence[0]} in "
                                f"{self.divergence[1] or 'the loss'}")
        if diverged and self.on_diverge == "stop":
            self._disarm()
            return False
        upcoming = self.schedule(self.step_no)
        if recorded and not upcoming:
            self._disarm()
        elif recorded:  # consecutive recorded steps keep their hooks
            self._begin()
        elif upcoming:
            self._arm()
        return True

    def _record(self, step: int, loss: Any, accuracy: float | None) -> None:
        if self.optimizer is None:  # no update to measure: the weights as they stand
            for lay in self.layers:
                wants = "weight_norm" in self._wants[lay.name]
                if lay.weight is not None and lay.name in self._order and wants:
                    self.stats.put(lay.name, "weight_norm", norm(lay.weight.detach()))
        extra: list[tuple[str, Any]] = []
        if self._grad_norms is None and self._param_norms:
            self._grad_params = list(self._param_norms)
            self._grad_norms = torch.stack(list(self._param_norms.values()))
            self._param_norms.clear()
        if self._grad_norms is not None:
            extra.append(("grad_norm_total", norm(self._grad_norms)))
            self._param_grad_stats()
        if self._clipped is not None:
            extra.append(("grad_norm_clipped", self._clipped))
        if isinstance(loss, torch.Tensor):
            extra.append(("loss", loss.detach().reshape(())))
        for metric, v in extra:
            self.stats.put("", metric, v)
        cols, values, bad = self.stats.gather()
        for layer, quantity, counts in self.stats.gather_hists():
            self.recorder.add_hist(step, layer, quantity, counts)
        counts = dict.fromkeys((layer for layer, _, _ in self.stats.checks), 0)
        for layer, _, n in bad:
            counts[layer] += n
        nonfinite = {name: self._column(name, "nonfinite") for name in counts}
        row = self.recorder.new_row(step)
        keep = cols >= 0
        row[cols[keep]] = values[keep]
        for name, n in counts.items():
            row[nonfinite[name]] = n
        c = self._net
        if loss is not None and not isinstance(loss, torch.Tensor):
            row[c["loss"]] = float(loss)
        if accuracy is not None:
            row[c["accuracy"]] = float(accuracy)
        total, clipped = row[c["grad_norm_total"]], row[c["grad_norm_clipped"]]
        if not math.isnan(total):
            if math.isnan(clipped):
                row[c["grad_norm_clipped"]] = clipped = total
            row[c["clipped"]] = float(clipped < total * (1 - 1e-6))
        if self.optimizer is not None:
            row[c["lr"]] = float(self.optimizer.param_groups[0]["lr"])
        if not math.isnan(row[c["loss"]]):
            self.final_loss = float(row[c["loss"]])
        if self.divergence is None:
            self._locate(step, bad, cols[keep][~np.isfinite(values[keep])])

    def _locate(self, step: int, bad: list[tuple[str, str, int]], overflowed: np.ndarray) -> None:
        """The first non-finite layer: earliest in forward order for an output, else the backward
        pass's first (nearest the output) for a gradient, as gradlab's own monitor decides. A norm or
        moment that overflowed with every entry finite counts too."""
        bad_out = [layer for layer, role, _ in bad if role == "output"]
        bad_grad = [layer for layer, role, _ in bad if role != "output"]
        for col in overflowed.tolist():
            layer, metric = self.recorder.columns[col]
            if layer:
                (bad_out if metric in ("act_mean", "act_std") else bad_grad).append(layer)
        if bad_out:
            self.divergence = (step, min(bad_out, key=lambda n: self._order.get(n, 1 << 30)))
        elif bad_grad:
            self.divergence = (step, max(bad_grad, key=lambda n: self._order.get(n, -1)))

    def _check_divergence(self, step: int, loss: Any, recorded: bool) -> bool:
        if self.divergence is not None:
            return True
        if loss is not None and not isinstance(loss, torch.Tensor) and not math.isfinite(float(loss)):
            self.divergence = (step, "")
        elif recorded and self._bad_step is not None:
            first = int(self._bad_step.item())  # one sync, on recorded steps only
            if first >= 0:
                self.divergence = (first, "")
        return self.divergence is not None

    # -- results -----------------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """The tidy metrics frame ``run, step, layer, metric, value`` (docs/data.md)."""
        return self.recorder.frame()

    def layers_frame(self) -> pd.DataFrame:
        """The layers table: kind, forward position, activation and shape of every recorded layer."""
        import pandas as pd

        by_name = {lay.name: lay for lay in self.layers}
        rows = []
        for name, pos in sorted(self._order.items(), key=lambda kv: kv[1]):
            lay = by_name[name.split("@")[0]] if name not in by_name else by_name[name]
            act = lay.rules.name if lay.kind == "activation" and lay.rules is not None else ""
            seen_in, seen_out = self._units.get(name, (None, None))
            fan_in = lay.fan_in if lay.fan_in is not None else seen_in
            fan_out = lay.fan_out if lay.fan_out is not None else seen_out
            rows.append([self.run, name, lay.kind, pos, act, fan_in, fan_out, lay.n_params or None])
        return pd.DataFrame(rows, columns=list(LAYERS_DTYPES)).astype(LAYERS_DTYPES)

    def save(self, out: str | Path) -> Path:
        """Write this run into the results folder ``out`` (several runs may share one); ``gradlab
        diagnose`` and ``gradlab report`` read it. Returns the run's own folder."""
        about = manifest(run=self.run, model=self.model, optimizer=self.optimizer, status=self.status,
                         steps_done=self.step_no, divergence=self.divergence, final_loss=self.final_loss,
                         wall_time_s=self.wall_time_s, batch_size=self.batch_size, notes=self.notes)
        return save(out, about, self.frame(), self.layers_frame(), self.recorder.hist_frame())

    @property
    def wall_time_s(self) -> float:
        """Seconds since the watch started."""
        return time.perf_counter() - self._t0

    @property
    def status(self) -> str:
        """``ok`` or ``diverged``."""
        return "diverged" if self.divergence is not None else "ok"

    def remove(self) -> None:
        """Detach every hook; calling it again does nothing. The recorded frames stay readable."""
        self._disarm()
        self._attached = False

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    every: Schedule = 1,
    layers: str | Sequence[str] | None = None,
    run: str | None = None,
    stats: Sequence[str] | None = None,
    dead_window: int = 10,
    on_diverge: str = "stop",
    verbose: bool = True,
    hist_every: Schedule | None = None,
) -> Watch:
    """Watch a PyTorch model: gradlab's per-layer statistics every ``every`` steps (an int or a
    step → bool function), for the modules whose qualified names match ``layers`` (globs), in the
    statistic groups ``stats`` (None: all). Call ``w.step(loss)`` after ``optimizer.step()``.

    Args:
        run: the run's name in the results (default: the model's class and a short id).
        on_diverge: at the first non-finite loss or statistic, ``"stop"`` (``w.step`` returns False and
            recording stops), ``"raise"`` (:class:`DivergedError`) or ``"continue"`` (keep recording).
        verbose: print, once, which layers get no unit statistics.
        hist_every: the recorded steps that also keep log-magnitude histograms of each layer's output
            and ∂L/∂y (an int or a step → bool function); None: steps 0, 1, 10, 100, 1000, …
    """
    return Watch(model, optimizer, every=every, layers=layers, run=run, stats=stats, dead_window=dead_window,
                 on_diverge=on_diverge, verbose=verbose, hist_every=hist_every)


def log_steps(step: int) -> bool:
    """Steps 0, 1, 10, 100, 1000, …: histograms at initialisation and then once per decade."""
    if step < 2:
        return True
    while step % 10 == 0:
        step //= 10
    return step == 1
