"""The built-in monitor: :class:`GradientMonitor` hooks a gradlab Network and records every statistic
of :data:`gradlab.records.METRICS` per layer per step, through :class:`gradlab.monitor.observer.Observer`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gradlab.monitor.observer import PARAM_KEYS, Observer
from gradlab.monitor.stacked import StackedStats
from gradlab.monitor.stats import log2_hist, log2_hist_rows, sq_norm
from gradlab.nn.activations import ActivationFn
from gradlab.nn.hooks import Monitor, Schedule, StepInfo
from gradlab.nn.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

Array = np.ndarray


class GradientMonitor(Monitor):
    """Records every statistic of :data:`gradlab.records.METRICS` for each layer of a gradlab Network.

    Attach with ``with net.attach(monitor): ...``; the training loop calls ``net.begin_step(step)``
    and ``net.end_step(step, info)`` around each step. Each layer's statistics are computed in its
    hook, while its arrays are still in cache, except for the layers the network stacks
    (:mod:`gradlab.nn.workspace`): those are measured a group at a time after each pass
    (:mod:`gradlab.monitor.stacked`), a few batched calls instead of a dozen Python-level calls per
    layer. Gradient norms are before clipping, weights before the update.
    """

    stacked = True

    def __init__(
        self,
        run: str = "",
        layers: str | Sequence[str] | None = None,
        every: Schedule = 1,
        hist_every: Schedule | None = None,
        dead_window: int = 10,
        stats: Sequence[str] | None = None,
    ) -> None:
        super().__init__(layers=layers, every=every)
        self.observer = Observer(run=run, dead_window=dead_window, hist_every=hist_every, stats=stats)
        self._scratch: Array | None = None
        self._stacked_stats = StackedStats(self.observer)
        self._ws_fwd: Workspace | None = None  # this step's stacked passes (for histograms)
        self._ws_bwd: Workspace | None = None
        self._sq: dict[int, tuple[Array, float]] = {}
        self._ratio_keys: list[str] = []  # per layer with an update ratio: its weight's key, columns
        self._ratio_cols = self._weight_cols = np.zeros(0, np.intp)
        self._outputs: dict[str, tuple[Array, Array | None]] = {}  # for histograms: (y, grad_out)
        self._bad_out: list[str] = []
        self._bad_grad: list[str] = []

    def on_attach(self, layer_names: Sequence[str], layers: Mapping[str, Any]) -> None:
        """Declare the columns of every layer this monitor watches."""
        obs = self.observer
        for name in layer_names:
            if not self.wants_layer(name):
                continue
            layer = layers[name]
            act = getattr(layer, "fn", None)
            keys = PARAM_KEYS.get(layer.kind)
            fan_in = fan_out = n_params = None
            if keys is not None:
                w = layer.params[keys[0]]
                fan_in, fan_out = (w.shape[0], w.shape[-1]) if w.ndim > 1 else (w.size, w.size)
                n_params = sum(int(v.size) for v in layer.params.values())
            obs.add_layer(name, layer.kind, act if isinstance(act, ActivationFn) else None,
                          fan_in=fan_in, fan_out=fan_out, n_params=n_params)
        ratio = [(f"{name}.{PARAM_KEYS[s.kind][0]}", s.c_update_ratio, s.c_weight_norm)
                 for name, s in obs.slots.items() if s.kind in PARAM_KEYS and s.c_update_ratio >= 0]
        self._ratio_keys = [k for k, _, _ in ratio]
        self._ratio_cols = np.array([c for _, c, _ in ratio], np.intp)
        self._weight_cols = np.array([c for _, _, c in ratio], np.intp)
        # one spare column at the end: where the stacked path writes what a layer does not record
        self._scratch = np.full(len(obs.recorder.columns) + 1, np.nan)

    def on_forward(self, name: str, layer: Any, x: Array, y: Array) -> None:
        """Statistics of the layer's output, taken while it is hot in cache."""
        obs = self.observer
        if obs.forward_stats(obs.slots[name], self._scratch, y, x, obs.recorder.n_steps):
            self._bad_out.append(name)
        self._outputs[name] = (y, None)

    def on_backward(self, name: str, layer: Any, grad_in: Array, grad_out: Array) -> None:
        """Statistics of the layer's gradients and parameters, right after its backward pass."""
        slot = self.observer.slots[name]
        keys = PARAM_KEYS.get(slot.kind)
        W = dW = db = None
        if keys is not None:
            W, dW, db = layer.params[keys[0]], layer.grads[keys[0]], layer.grads[keys[1]]
        if self.observer.backward_stats(slot, self._scratch, grad_in, grad_out, W, dW, db, None, self._sq):
            self._bad_grad.append(name)
        y = self._outputs.get(name, (None, None))[0]
        self._outputs[name] = (y, grad_out)

    def on_stacked_forward(self, ws: Workspace) -> None:
        """Output statistics of every stacked layer, a group at a time."""
        obs = self.observer
        self._bad_out += self._stacked_stats.forward(ws, self._scratch, obs.recorder.n_steps)
        self._ws_fwd = ws

    def on_stacked_backward(self, ws: Workspace) -> None:
        """Gradient and parameter statistics of every stacked layer, a group at a time."""
        self._bad_grad += self._stacked_stats.backward(ws, self._scratch)
        self._ws_bwd = ws

    def on_step(self, step: int, info: StepInfo) -> None:
        """Add update ratios and network-level metrics; commit the step's row."""
        obs = self.observer
        scratch = self._scratch
        if info.updates and self._ratio_keys:
            known, updates = info.update_sq_norms, info.updates
            sq = np.array([known.get(k, math.nan) for k in self._ratio_keys])
            for i in np.flatnonzero(np.isnan(sq)):  # not measured by the optimizer: measure it here
                upd = updates.get(self._ratio_keys[i])
                if upd is not None:
                    sq[i] = sq_norm(upd)
            w = scratch[self._weight_cols]
            with np.errstate(all="ignore"):  # ‖ΔW‖/‖W‖, NaN where ‖W‖ is 0 or not finite (as ratio())
                r = np.where((w != 0) & np.isfinite(w), np.sqrt(sq) / w, math.nan)
            keep = ~np.isnan(sq)
            scratch[self._ratio_cols[keep]] = r[keep]
        row = obs.row_for(step)
        row[:] = scratch[:-1]
        if obs.divergence is None and (self._bad_out or self._bad_grad):
            # Forward trouble starts at the earliest layer; backward trouble nearest the output
            # (the backward pass meets it first).
            order = {name: i for i, name in enumerate(obs.slots)}
            first = (min(self._bad_out, key=order.__getitem__) if self._bad_out
                     else max(self._bad_grad, key=order.__getitem__))
            obs.divergence = (step, first)
        obs.observe_network(
            step,
            info.loss,
            info.accuracy,
            info.grad_norm_total,
            info.grad_norm_clipped,
            info.clipped,
            info.lr,
        )
        if obs.hist_schedule(step):
            self._hists(step)
        scratch.fill(np.nan)
        self._sq.clear()
        self._outputs.clear()
        self._bad_out.clear()
        self._bad_grad.clear()
        self._ws_fwd = self._ws_bwd = None

    def _hists(self, step: int) -> None:
        """Histograms of each watched layer's output and ∂L/∂y, in the order forward hooks fire (a
        stacked group's in one call per quantity)."""
        obs, fwd, bwd = self.observer, self._ws_fwd, self._ws_bwd
        stacked: dict[tuple[str, str], Array] = {}
        for ws, quantity in ((fwd, "act"), (bwd, "grad")):
            for group in ws.groups if ws is not None else ():
                stack = group.y if quantity == "act" else group.g
                if stack is not None and any(name in obs.slots for name in group.names):
                    rows = log2_hist_rows(stack.reshape(len(stack), -1))
                    stacked.update(((name, quantity), r) for name, r in zip(group.names, rows, strict=True))
        names = fwd.hook_order if fwd is not None else list(self._outputs)
        for name in names:
            if name not in obs.slots:
                continue
            y, gout = self._outputs.get(name, (None, None))
            for quantity, a in (("act", y), ("grad", gout)):
                counts = stacked.get((name, quantity))
                if counts is not None:
                    obs.recorder.add_hist(step, name, quantity, counts)
                elif a is not None:
                    obs.recorder.add_hist(step, name, quantity, log2_hist(a))

    @property
    def divergence(self) -> tuple[int, str] | None:
        """(step, layer) where a non-finite value first appeared, or None."""
        return self.observer.divergence

    def frame(self) -> pd.DataFrame:
        """The tidy metrics frame."""
        return self.observer.frame()

    def hist_frame(self) -> pd.DataFrame:
        """The tidy histogram frame."""
        return self.observer.hist_frame()

    def layers_frame(self) -> pd.DataFrame:
        """The layers table (kind, forward position, activation, shape of each recorded layer)."""
        return self.observer.layers_frame()

    def save(self, path: str | Path) -> Path:
        """Write the recorded frames as Parquet (see :meth:`Observer.save`)."""
        return self.observer.save(path)
