"""Per-layer gradient statistics: the built-in :class:`GradientMonitor` and the framework-neutral
:class:`Observer` that a user's own NumPy loop calls once per layer per step.

Both fill the same columns through :meth:`Observer.observe`, so a hand-written network and gradlab's
``Network`` with the same weights produce the same frame. Metric names: ``gradlab.records.METRICS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gradlab.activations import ActivationFn, get_activation
from gradlab.hooks import Monitor, Schedule, StepInfo, schedule_fn
from gradlab.records import NETWORK_METRICS, Recorder
from gradlab.stats import count_nonfinite, dead_units, fraction, log2_hist, moments, ratio, sq_norm

if TYPE_CHECKING:
    import pandas as pd

Array = np.ndarray

_FLOW = ("grad_in_norm", "grad_out_norm", "act_mean", "act_std", "nonfinite")
_PARAM = ("grad_norm", "grad_b_norm", "weight_norm", "update_ratio")
_PARAM_KEYS = {"dense": ("W", "b"), "batchnorm": ("gamma", "beta"), "layernorm": ("gamma", "beta")}


def layer_metrics(kind: str, activation: ActivationFn | None) -> tuple[str, ...]:
    """The metrics recorded for a layer of this kind (and activation rule, for activations)."""
    metrics = list(_FLOW)
    if kind in _PARAM_KEYS:
        metrics = list(_PARAM) + metrics
    if activation is not None:
        if activation.saturated is not None:
            metrics.append("saturation")
        if activation.inactive is not None:
            metrics += ["inactive_frac", "dead_frac", "dead_frac_window"]
    return tuple(metrics)


class _Slot:
    """Where one layer's metrics go, and its sliding window of per-unit activity."""

    __slots__ = ("act", "cols", "kind", "name", "recent", "recent_pos")

    def __init__(self, name: str, kind: str, act: ActivationFn | None, cols: dict[str, int]) -> None:
        self.name, self.kind, self.act, self.cols = name, kind, act, cols
        self.recent: Array | None = None  # (window, units) ring buffer of "active in this batch"
        self.recent_pos = 0


class Observer:
    """Computes the statistics of named layers from the arrays a training loop already has.

    Call :meth:`observe` once per layer per step and :meth:`observe_network` once per step (in any
    order within a step; steps must not decrease), then :meth:`frame` for the tidy frame.
    """

    def __init__(self, run: str = "", dead_window: int = 10, hist_every: Schedule | None = None) -> None:
        if isinstance(dead_window, bool) or not isinstance(dead_window, int) or dead_window < 1:
            raise ValueError(f"dead_window={dead_window!r} must be an integer >= 1")
        self.run = run
        self.dead_window = dead_window
        self.hist_schedule = (lambda s: False) if not hist_every else schedule_fn(hist_every)
        self.recorder = Recorder([], run=run)
        self.slots: dict[str, _Slot] = {}
        self._row: Array | None = None
        self._row_step: int | None = None
        self._net_cols = {m: self._add_column("", m) for m in NETWORK_METRICS}
        self.divergence: tuple[int, str] | None = None

    # -- layout ----------------------------------------------------------------------------
    def _add_column(self, layer: str, metric: str) -> int:
        i = self.recorder.add_column(layer, metric)
        if self._row is not None:  # the buffer was reallocated: re-take the current row
            self._row = self.recorder.values()[-1]
        return i

    def add_layer(self, name: str, kind: str, activation: str | ActivationFn | None = None) -> None:
        """Declare a layer (optional: :meth:`observe` declares unseen layers on first use)."""
        if name in self.slots:
            return
        act = get_activation(activation) if activation is not None else None
        cols = {m: self._add_column(name, m) for m in layer_metrics(kind, act)}
        self.slots[name] = _Slot(name, kind, act, cols)

    def _row_for(self, step: int) -> Array:
        if self._row_step != step:
            if self._row_step is not None and step < self._row_step:
                raise ValueError(f"step={step} comes after step {self._row_step}; steps must not decrease")
            self._row = self.recorder.new_row(step)
            self._row_step = step
        return self._row

    # -- statistics ------------------------------------------------------------------------
    def observe(
        self,
        step: int,
        layer: str,
        *,
        output: Array | None = None,
        weight: Array | None = None,
        weight_grad: Array | None = None,
        bias_grad: Array | None = None,
        update: Array | None = None,
        grad_out: Array | None = None,
        grad_in: Array | None = None,
        activation: str | ActivationFn | None = None,
        preactivation: Array | None = None,
        kind: str | None = None,
    ) -> None:
        """Record one layer's statistics for ``step`` from whichever arrays are given.

        Args:
            output: the layer's output y (batch, units); activation statistics, saturation, dead units.
            weight, weight_grad, bias_grad: W, ∂L/∂W, ∂L/∂b (before clipping).
            update: the change ΔW the optimizer applied this step (for ``update_ratio``).
            grad_out: ∂L/∂y at the layer's output; grad_in: ∂L/∂x at its input.
            activation: the activation's name when ``output`` is an activation's output.
            preactivation: the activation's input (only GELU's inactivity rule needs it).
            kind: "dense" (the default when a weight is given), "activation", or another layer kind.
        """
        if layer not in self.slots:
            if kind is None:
                kind = "activation" if activation is not None else "dense" if weight is not None else "layer"
            self.add_layer(layer, kind, activation)
        slot = self.slots[layer]
        row = self._row_for(step)
        bad = self._fill(
            slot, row, output, preactivation, weight, weight_grad, bias_grad, update, grad_in, grad_out
        )
        if any(bad) and self.divergence is None:
            self.divergence = (step, layer)
        if self.hist_schedule(step):
            self._hists(step, layer, output, grad_out)

    def _fill(
        self,
        slot: _Slot,
        row: Array,
        y: Array | None,
        x: Array | None,
        W: Array | None,
        dW: Array | None,
        db: Array | None,
        upd: Array | None,
        gin: Array | None,
        gout: Array | None,
        sq_cache: dict[int, float] | None = None,
    ) -> tuple[int, int]:
        """Write one layer's statistics into ``row``; return the non-finite counts (output, gradients)."""
        cols = slot.cols

        def gnorm(a: Array) -> float:
            if sq_cache is None:
                return math.sqrt(sq_norm(a))
            key = id(a.base if a.base is not None else a)
            v = sq_cache.get(key)
            if v is None:
                v = sq_cache[key] = sq_norm(a)
            return math.sqrt(v)

        if W is not None and "weight_norm" in cols:
            w = math.sqrt(sq_norm(W))
            row[cols["weight_norm"]] = w
            if upd is not None:
                row[cols["update_ratio"]] = ratio(math.sqrt(sq_norm(upd)), w)
        if dW is not None and "grad_norm" in cols:
            row[cols["grad_norm"]] = math.sqrt(sq_norm(dW))
        if db is not None and "grad_b_norm" in cols:
            row[cols["grad_b_norm"]] = math.sqrt(sq_norm(db))
        if gin is not None:
            row[cols["grad_in_norm"]] = gnorm(gin)
        if gout is not None:
            row[cols["grad_out_norm"]] = gnorm(gout)
        if y is not None:
            row[cols["act_mean"]], row[cols["act_std"]] = moments(y)
            act = slot.act
            if act is not None:
                if act.saturated is not None:
                    row[cols["saturation"]] = fraction(act.saturated(y, x))
                if act.inactive is not None:
                    self._activity(slot, row, act.inactive(y, x))
        y_bad, g_bad = count_nonfinite(y), count_nonfinite(gin, dW, db)
        row[cols["nonfinite"]] = y_bad + g_bad
        return y_bad, g_bad

    def _hists(self, step: int, layer: str, y: Array | None, gout: Array | None) -> None:
        if y is not None:
            self.recorder.add_hist(step, layer, "act", log2_hist(y))
        if gout is not None:
            self.recorder.add_hist(step, layer, "grad", log2_hist(gout))

    def _activity(self, slot: _Slot, row: Array, inactive: Array | None) -> None:
        if inactive is None:  # the rule needs an input that was not given
            return
        cols = slot.cols
        row[cols["inactive_frac"]] = fraction(inactive)
        dead = dead_units(inactive)
        row[cols["dead_frac"]] = fraction(dead)
        if slot.recent is None or slot.recent.shape[1] != dead.size:
            slot.recent = np.zeros((self.dead_window, dead.size), dtype=bool)
            slot.recent_pos = 0
            slot.recent[:] = ~dead  # until the window fills, earlier steps count as this one
        slot.recent[slot.recent_pos % self.dead_window] = ~dead
        slot.recent_pos += 1
        row[cols["dead_frac_window"]] = fraction(~slot.recent.any(axis=0))

    def observe_network(
        self,
        step: int,
        loss: float | None = None,
        accuracy: float | None = None,
        grad_norm_total: float | None = None,
        grad_norm_clipped: float | None = None,
        clipped: bool | None = None,
        lr: float | None = None,
    ) -> None:
        """Record the network-level metrics of ``step`` (None: not measured)."""
        row = self._row_for(step)
        c = self._net_cols
        if grad_norm_clipped is None and grad_norm_total is not None and not clipped:
            grad_norm_clipped = grad_norm_total
        values = (loss, accuracy, grad_norm_total, grad_norm_clipped, clipped, lr)
        for metric, v in zip(NETWORK_METRICS, values, strict=True):
            if v is not None:
                row[c[metric]] = float(v)
        bad = any(v is not None and not math.isfinite(v) for v in (loss, grad_norm_total))
        if bad and self.divergence is None:
            self.divergence = (step, "")

    # -- output ----------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """The tidy metrics frame ``run, step, layer, metric, value``."""
        return self.recorder.frame()

    def hist_frame(self) -> pd.DataFrame:
        """The tidy log-magnitude histogram frame."""
        return self.recorder.hist_frame()


class GradientMonitor(Monitor):
    """Records every statistic of :data:`gradlab.records.METRICS` for each layer of a gradlab Network.

    Attach with ``with net.attach(monitor): ...``; the training loop calls ``net.begin_step(step)``
    and ``net.end_step(step, info)`` around each step. Statistics of a layer are taken right after
    its backward pass, so gradient norms are before clipping and weights before the update.
    """

    def __init__(
        self,
        run: str = "",
        layers: str | Sequence[str] | None = None,
        every: Schedule = 1,
        hist_every: Schedule | None = None,
        dead_window: int = 10,
    ) -> None:
        super().__init__(layers=layers, every=every)
        self.observer = Observer(run=run, dead_window=dead_window, hist_every=hist_every)
        self._y: dict[str, Array] = {}
        self._x: dict[str, Array] = {}
        self._scratch: Array | None = None
        self._sq: dict[int, float] = {}
        self._gout: dict[str, Array] = {}
        self._bad_out: set[str] = set()
        self._bad_grad: list[str] = []

    def on_attach(self, layer_names: Sequence[str], layers: Mapping[str, Any]) -> None:
        """Declare the columns of every layer this monitor watches."""
        obs = self.observer
        for name in layer_names:
            if not self.wants_layer(name):
                continue
            layer = layers[name]
            act = getattr(layer, "fn", None) if getattr(layer, "kind", "") not in _PARAM_KEYS else None
            obs.add_layer(name, layer.kind, act if isinstance(act, ActivationFn) else None)
        self._scratch = np.full(len(obs.recorder.columns), np.nan)

    def on_forward(self, name: str, layer: Any, x: Array, y: Array) -> None:
        """Keep references to the layer's input and output until its backward pass."""
        self._y[name] = y
        self._x[name] = x

    def on_backward(self, name: str, layer: Any, grad_in: Array, grad_out: Array) -> None:
        """Compute the layer's statistics (gradients before clipping, weights before the update)."""
        slot = self.observer.slots[name]
        keys = _PARAM_KEYS.get(slot.kind)
        W = dW = db = None
        if keys is not None:
            W, dW, db = layer.params[keys[0]], layer.grads[keys[0]], layer.grads[keys[1]]
        y_bad, g_bad = self.observer._fill(
            slot,
            self._scratch,
            self._y.get(name),
            self._x.get(name),
            W,
            dW,
            db,
            None,
            grad_in,
            grad_out,
            self._sq,
        )
        if y_bad:
            self._bad_out.add(name)
        if g_bad:
            self._bad_grad.append(name)
        self._gout[name] = grad_out

    def on_step(self, step: int, info: StepInfo) -> None:
        """Add update ratios and network-level metrics; commit the step's row."""
        obs = self.observer
        scratch = self._scratch
        if info.updates:
            for name, slot in obs.slots.items():
                keys = _PARAM_KEYS.get(slot.kind)
                upd = info.updates.get(f"{name}.{keys[0]}") if keys else None
                if upd is not None:
                    scratch[slot.cols["update_ratio"]] = ratio(
                        math.sqrt(sq_norm(upd)), scratch[slot.cols["weight_norm"]]
                    )
        row = obs._row_for(step)
        row[:] = scratch
        if obs.divergence is None and (self._bad_out or self._bad_grad):
            # Forward trouble starts at the earliest layer; backward trouble nearest the output.
            first = next((n for n in obs.slots if n in self._bad_out), None)
            obs.divergence = (step, first if first is not None else self._bad_grad[0])
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
            for name in obs.slots:
                obs._hists(step, name, self._y.get(name), self._gout.get(name))
        scratch.fill(np.nan)
        self._sq.clear()
        self._y.clear()
        self._x.clear()
        self._gout.clear()
        self._bad_out.clear()
        self._bad_grad.clear()

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
