"""The statistics engine: :class:`Observer` computes every per-layer statistic from arrays.

A user's own NumPy loop calls :meth:`Observer.observe` once per layer per step with the arrays it has;
:class:`gradlab.monitor.gradient_monitor.GradientMonitor` drives the same :meth:`Observer.forward_stats` and
:meth:`Observer.backward_stats` from gradlab's hooks, so a hand-written network and gradlab's
``Network`` with the same weights produce the same frame. Metric names: ``gradlab.records.METRICS``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gradlab.atomic import write_frame
from gradlab.monitor.inputs import checked_step, is_text, measurable, shape_of
from gradlab.monitor.stats import count_nonfinite, log2_hist, moments, ratio, relu_stats, rule_stats, sq_norm
from gradlab.nn.activations import ActivationFn, get_activation
from gradlab.nn.hooks import Schedule, schedule_fn
from gradlab.records import LAYER_KINDS, LAYERS_DTYPES, NETWORK_METRICS, WEIGHTED_KINDS, Recorder
from gradlab.statistics import BY_NAME, FAST_PATH, STATISTICS, layer_statistics, reference, stat_metrics

if TYPE_CHECKING:
    import pandas as pd

Array = np.ndarray

PARAM_KEYS = {"dense": ("W", "b"), "batchnorm": ("gamma", "beta"), "layernorm": ("gamma", "beta")}
"""The (weight, bias) parameter names of gradlab's layer kinds that have parameters."""


def layer_metrics(
    kind: str,
    activation: ActivationFn | None,
    stats: Sequence[str] | None = None,
    has_params: bool | None = None,
) -> tuple[str, ...]:
    """The metrics recorded for a layer of this kind (and activation rule), within ``stats`` groups."""
    params = kind in PARAM_KEYS if has_params is None else has_params
    bounded = activation is not None and activation.saturated is not None
    rectifier = activation is not None and activation.inactive is not None
    return layer_statistics(params, bounded, rectifier, stats)


class _Slot:
    """Where one layer's metrics go (column ``c_<metric>``, −1 when absent) and its recent unit activity."""

    __slots__ = ("act", "extra", "kind", "last_active", "name", "relu", "rule_inactive", "rule_saturated",
                 *(f"c_{s.name}" for s in STATISTICS))

    def __init__(self, name: str, kind: str, act: ActivationFn | None, cols: dict[str, int]) -> None:
        self.name, self.kind, self.act = name, kind, act
        for stat in STATISTICS:
            setattr(self, f"c_{stat.name}", cols.get(stat.name, -1))
        # table entries without a NumPy fast path: computed from their definitions
        self.extra = tuple((cols[m], BY_NAME[m]) for m in cols if m not in FAST_PATH)
        self.relu = act is not None and act.name == "relu"
        self.rule_saturated = act.saturated if act is not None else None
        self.rule_inactive = act.inactive if act is not None else None
        self.last_active: Array | None = None  # per unit: the last step it was active in


class Observer:
    """Computes the statistics of named layers from the arrays a training loop already has.

    Call :meth:`observe` once per layer per step and :meth:`observe_network` once per step (in any
    order within a step; steps are integers from 0 to 2**63 − 1 that never decrease), then :meth:`frame`
    for the tidy frame. Arrays of any real dtype are measured in float64; complex, text, object and
    empty arrays are refused with a one-line error.
    """

    def __init__(
        self,
        run: str = "",
        dead_window: int = 10,
        hist_every: Schedule | None = None,
        stats: Sequence[str] | None = None,
    ) -> None:
        if isinstance(dead_window, bool) or not isinstance(dead_window, int) or dead_window < 1:
            raise ValueError(f"dead_window={dead_window!r} must be an integer >= 1")
        if not is_text(run):
            raise ValueError(f"run={run!r} must be a string")
        stat_metrics(stats)
        self.stats = None if stats is None else tuple([stats] if isinstance(stats, str) else stats)
        self.run = run
        self.dead_window = dead_window
        self.hist_schedule = (lambda s: False) if not hist_every else schedule_fn(hist_every)
        self.recorder = Recorder(run=run)
        self.slots: dict[str, _Slot] = {}
        self._layers: dict[str, list] = {}  # name → [kind, position, activation, fan_in, fan_out, n_params]
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

    def add_layer(
        self,
        name: str,
        kind: str,
        activation: str | ActivationFn | None = None,
        *,
        has_params: bool | None = None,
        fan_in: int | None = None,
        fan_out: int | None = None,
        n_params: int | None = None,
    ) -> None:
        """Declare a layer, next in forward order (optional: :meth:`observe` declares unseen layers on
        first use, in the order it first sees them)."""
        if name in self.slots:
            return
        if not is_text(name) or not name:
            raise ValueError(f"layer={name!r} must be a non-empty string (\"\" names the network-level rows)")
        act = get_activation(activation) if activation is not None else None
        if has_params is None:
            has_params = kind in PARAM_KEYS or kind in WEIGHTED_KINDS
        cols = {m: self._add_column(name, m) for m in layer_metrics(kind, act, self.stats, has_params)}
        self.slots[name] = _Slot(name, kind, act, cols)
        table_kind = "activation" if act is not None else kind
        position = len(self._layers)
        self._layers[name] = [table_kind, position, act.name if act else "", fan_in, fan_out, n_params]

    def note_shape(self, name: str, x_shape: tuple[int, ...] | None, y_shape: tuple[int, ...] | None) -> None:
        """Fill a layer's unknown fan-in/fan-out from the units (axis 1) of its input and output shapes."""
        info = self._layers[name]
        if info[3] is None and x_shape is not None and len(x_shape) > 1:
            info[3] = int(x_shape[1])
        if info[4] is None and y_shape is not None and len(y_shape) > 1:
            info[4] = int(y_shape[1])

    def row_for(self, step: int) -> Array:
        """The row of ``step`` (a view into the recorder), started when ``step`` is new."""
        if self._row_step != step:
            step = checked_step(step)
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
        step = checked_step(step)
        given = {"output": output, "weight": weight, "weight_grad": weight_grad, "bias_grad": bias_grad,
                 "update": update, "grad_out": grad_out, "grad_in": grad_in, "preactivation": preactivation}
        output, weight, weight_grad, bias_grad, update, grad_out, grad_in, preactivation = (
            measurable(role, layer, a) for role, a in given.items())
        if layer not in self.slots:
            if kind is not None and activation is None and kind not in LAYER_KINDS:
                raise ValueError(f"kind={kind!r} of layer {layer!r} is not a layer kind; allowed: "
                                 f"{', '.join(LAYER_KINDS)}")
            # any parameter array makes it a layer with parameters (a bias alone included)
            given = any(a is not None for a in (weight, weight_grad, bias_grad, update))
            if kind is None:
                kind = ("activation" if activation is not None else "dense" if weight is not None
                        else "weighted" if given else "layer")
            n_params = None
            if weight is not None:
                n_params = int(weight.size) + (int(bias_grad.size) if bias_grad is not None else 0)
            self.add_layer(layer, kind, activation, has_params=True if given else None, n_params=n_params)
            x_like = grad_in if preactivation is None else preactivation
            self.note_shape(layer, shape_of(x_like), shape_of(output))
            self.note_shape(layer, None, shape_of(grad_out))
        slot = self.slots[layer]
        row = self.row_for(step)
        tick = self.recorder.n_steps - 1
        y_bad = self.forward_stats(slot, row, output, preactivation, tick)
        g_bad = self.backward_stats(slot, row, grad_in, grad_out, weight, weight_grad, bias_grad, update)
        if (y_bad or g_bad) and self.divergence is None:
            self.divergence = (step, layer)
        if self.hist_schedule(step):
            self.hists_of(step, layer, output, grad_out)

    def forward_stats(self, slot: _Slot, row: Array, y: Array | None, x: Array | None, tick: int) -> bool:
        """Statistics of a layer's output y (and input x); True when y is non-finite or overflows."""
        if y is None:
            return False
        if self._layers[slot.name][4] is None:
            self.note_shape(slot.name, shape_of(x), y.shape)
        mean, std, ss = moments(y)
        if slot.c_act_mean >= 0:
            row[slot.c_act_mean] = mean
            row[slot.c_act_std] = std
        bad = count_nonfinite(y, ss)
        row[slot.c_nonfinite] = bad
        if slot.c_saturation >= 0:
            sat = rule_stats(y, x, slot.rule_saturated, per_unit=False)
            if sat is not None:
                row[slot.c_saturation] = sat[0]
        if slot.c_inactive_frac >= 0:
            act = relu_stats(y) if slot.relu else rule_stats(y, x, slot.rule_inactive)
            if act is not None:
                self._activity(slot, row, act[0], act[1], tick)
        if slot.extra:
            self._by_definition(slot, row, {"output": y, "input": x})
        return bad > 0 or not math.isfinite(ss)

    def backward_stats(
        self,
        slot: _Slot,
        row: Array,
        gin: Array | None,
        gout: Array | None,
        W: Array | None = None,
        dW: Array | None = None,
        db: Array | None = None,
        upd: Array | None = None,
        sq_of: dict[int, tuple[Array, float]] | None = None,
    ) -> bool:
        """Statistics of a layer's gradients and parameters; True when a gradient is non-finite or
        overflows. ``sq_of`` caches Σg² by array object, as a layer's grad_out is the next one's grad_in
        (the network hands both as the same read-only view)."""
        bad, over = 0, False
        for a, col in ((gin, slot.c_grad_in_norm), (gout, slot.c_grad_out_norm)):
            if a is None:
                continue
            if sq_of is None:
                v = sq_norm(a)
            else:  # keyed by the array object, kept alive so its id is not reused within the step
                hit = sq_of.get(id(a))
                if hit is not None and hit[0] is a:
                    v = hit[1]
                else:
                    v = sq_norm(a)
                    sq_of[id(a)] = (a, v)
            row[col] = math.sqrt(v)
            if a is gin:
                bad += count_nonfinite(a, v)
                over = over or not math.isfinite(v)
        if slot.c_weight_norm >= 0:
            if W is not None:
                row[slot.c_weight_norm] = math.sqrt(sq_norm(W))
            if upd is not None:
                self.update_ratio(slot, row, sq_norm(upd))
        if slot.c_grad_norm >= 0:
            if dW is not None:
                v = sq_norm(dW)
                row[slot.c_grad_norm] = math.sqrt(v)
                bad += count_nonfinite(dW, v)
                over = over or not math.isfinite(v)
            if db is not None:
                v = sq_norm(db)
                row[slot.c_grad_b_norm] = math.sqrt(v)
                bad += count_nonfinite(db, v)
        else:  # a layer declared without parameters: its gradients still count as its NaNs
            for g in (dW, db):
                if g is not None:
                    bad += count_nonfinite(g, sq_norm(g))
        prev = row[slot.c_nonfinite]
        row[slot.c_nonfinite] = bad + (0 if math.isnan(prev) else prev)
        if slot.extra:
            arrays = {"grad_in": gin, "grad_out": gout, "weight": W, "weight_grad": dW, "bias_grad": db,
                      "update": upd}
            self._by_definition(slot, row, arrays)
        return bad > 0 or over

    @staticmethod
    def _by_definition(slot: _Slot, row: Array, arrays: dict[str, Array | None]) -> None:
        """Statistics with no fast path, from the table's definitions, when their arrays are at hand."""
        for col, stat in slot.extra:
            if stat.needs and all(arrays.get(k) is not None for k in stat.needs):
                value = reference(stat.name, arrays, slot.act)
                if value is not None:
                    row[col] = value

    @staticmethod
    def update_ratio(slot: _Slot, row: Array, update_sq: float) -> None:
        """‖ΔW‖/‖W‖ from ‖ΔW‖², against the ``weight_norm`` already in ``row``."""
        row[slot.c_update_ratio] = ratio(math.sqrt(update_sq), row[slot.c_weight_norm])

    def _activity(self, slot: _Slot, row: Array, inactive_frac: float, dead: Array, tick: int) -> None:
        row[slot.c_inactive_frac] = inactive_frac
        n = dead.size
        row[slot.c_dead_frac] = np.count_nonzero(dead) / n
        if slot.last_active is None or slot.last_active.size != n:
            slot.last_active = np.full(n, -(1 << 62))  # never active so far
        np.putmask(slot.last_active, ~dead, tick)
        # dead over the window: inactive in each of the last `dead_window` recorded steps (or in
        # every step so far, before the window fills)
        row[slot.c_dead_frac_window] = np.count_nonzero(slot.last_active <= tick - self.dead_window) / n

    def hists_of(self, step: int, layer: str, y: Array | None, gout: Array | None) -> None:
        """Keep log-magnitude histograms of a layer's output and of ∂L/∂y at its output."""
        if y is not None:
            self.recorder.add_hist(step, layer, "act", log2_hist(y))
        if gout is not None:
            self.recorder.add_hist(step, layer, "grad", log2_hist(gout))

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
        row = self.row_for(step)
        c = self._net_cols
        if grad_norm_clipped is None and grad_norm_total is not None and not clipped:
            grad_norm_clipped = grad_norm_total
        values = (loss, accuracy, grad_norm_total, grad_norm_clipped, clipped, lr)
        for metric, v in zip(NETWORK_METRICS, values, strict=True):
            if v is not None:
                try:
                    row[c[metric]] = float(v)
                except (TypeError, ValueError):
                    raise TypeError(f"{metric}={v!r} must be a real number (or None: not measured)") from None
        bad = any(v is not None and not math.isfinite(float(v)) for v in (loss, grad_norm_total))
        if bad and self.divergence is None:
            self.divergence = (step, "")

    # -- output ----------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """The tidy metrics frame ``run, step, layer, metric, value``."""
        return self.recorder.frame()

    def layers_frame(self) -> pd.DataFrame:
        """The layers table: per declared layer its kind, forward position, activation and shape."""
        import pandas as pd

        rows = [[self.run, name, *info] for name, info in self._layers.items()]
        df = pd.DataFrame(rows, columns=list(LAYERS_DTYPES))
        return df.astype(LAYERS_DTYPES)

    def hist_frame(self) -> pd.DataFrame:
        """The tidy log-magnitude histogram frame."""
        return self.recorder.hist_frame()

    def save(self, path: str | Path) -> Path:
        """Write the metrics frame to ``path`` as Parquet (atomically), the layers table beside it as
        ``<stem>.layers.parquet`` and the histograms, if any were recorded, as ``<stem>.hists.parquet``."""
        path = Path(path)
        write_frame(path, self.frame())
        write_frame(path.with_name(f"{path.stem}.layers.parquet"), self.layers_frame())
        hists = self.hist_frame()
        if len(hists):
            write_frame(path.with_name(f"{path.stem}.hists.parquet"), hists)
        return path
