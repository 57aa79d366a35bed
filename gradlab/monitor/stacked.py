"""Statistics of a stacked pass: every layer of a workspace group measured in a few batched calls.

:class:`gradlab.monitor.gradient_monitor.GradientMonitor` hands each pass's
:class:`gradlab.nn.workspace.Workspace` here. The values are those of
:meth:`gradlab.monitor.observer.Observer.forward_stats` and ``backward_stats`` (the same definitions,
summed in a different order); each group's values of a pass go into the row in one indexed write.
The row passed in has one spare column at the end, where statistics a layer does not record land.
"""

from __future__ import annotations

import numpy as np

from gradlab.monitor.observer import PARAM_KEYS, Observer
from gradlab.monitor.stats import count_nonfinite, sq_norm
from gradlab.nn.workspace import Group, Workspace, row_sq_norms

Array = np.ndarray
_NEVER = -(1 << 62)  # "never active so far", as in Observer
FORWARD = ("act_mean", "act_std", "nonfinite", "saturation", "inactive_frac", "dead_frac", "dead_frac_window")
BACKWARD = ("grad_out_norm", "grad_in_norm", "weight_norm", "grad_norm", "grad_b_norm")


def _row(ws: Workspace, name: str) -> Array:
    """∂L/∂y of a stacked layer."""
    group, k = ws.slot[name]
    return group.g[k]


def _count_rows(mask: Array) -> Array:
    """True entries of each member of a stacked boolean mask."""
    return np.array([np.count_nonzero(m) for m in mask], np.float64)


class _Compiled:
    """A group's row columns, unit-activity state and rule, worked out once per workspace group."""

    def __init__(self, obs: Observer, group: Group, spare: int) -> None:
        self.group = group
        self.slots = [obs.slots.get(n) for n in group.names]
        self.watched = [n for n, s in zip(group.names, self.slots, strict=True) if s is not None]

        def cols(stats: tuple[str, ...]) -> Array:
            out = np.full((len(stats), len(self.slots)), spare, np.intp)
            for k, slot in enumerate(self.slots):
                for i, stat in enumerate(stats):
                    c = -1 if slot is None else getattr(slot, f"c_{stat}")
                    out[i, k] = c if c >= 0 else spare
            return out

        self.fwd_cols, self.bwd_cols = cols(FORWARD), cols(BACKWARD)
        self.nonfinite_cols = self.fwd_cols[FORWARD.index("nonfinite")]
        first = next((s for s in self.slots if s is not None), None)
        act = first.act if first is not None else None
        self.saturated = act.saturated if act is not None and (self.fwd_cols[3] != spare).any() else None
        self.inactive = act.inactive if act is not None and (self.fwd_cols[4] != spare).any() else None
        self.relu = bool(first is not None and first.relu)
        self.keys = PARAM_KEYS.get(group.layers[0].kind)
        self.last_active: Array | None = None
        self._rows: list[Array | None] | None = None  # the views of last_active the slots hold
        self._ones: dict[tuple[int, str], Array] = {}
        shape = group.y.shape[1:]
        for name in self.watched:  # activations learn their width on first sight
            obs.note_shape(name, shape, shape)

    def ones(self, n: int, dtype: np.dtype) -> Array:
        """A cached vector of ``n`` ones (sums as BLAS products)."""
        key = (n, np.dtype(dtype).str)
        if key not in self._ones:
            self._ones[key] = np.ones(n, dtype)
        return self._ones[key]

    def activity_state(self, units: int) -> Array:
        """Per member and unit, the last tick it was active, shared with the Observer's slots (whose
        rows another plan of the same layers, e.g. a smaller last batch, may have taken over)."""
        rows = self._rows
        if rows is None or self.last_active.shape[1] != units or any(
                s is not None and s.last_active is not r for s, r in zip(self.slots, rows, strict=True)):
            last = np.full((len(self.slots), units), _NEVER, np.int64)
            for k, slot in enumerate(self.slots):
                if slot is not None:
                    if slot.last_active is not None and slot.last_active.size == units:
                        last[k] = slot.last_active
                    slot.last_active = last[k]
            self.last_active = last
            self._rows = [s.last_active if s is not None else None for s in self.slots]
        return self.last_active


class StackedStats:
    """Computes a workspace's statistics into a monitor's scratch row; returns the layers that went bad."""

    def __init__(self, observer: Observer) -> None:
        self.obs = observer
        self._compiled: dict[Group, _Compiled] = {}

    def _groups(self, ws: Workspace, spare: int, grads: bool = False) -> list[_Compiled]:
        out = []
        for group in ws.groups:
            if grads and group.g is None:
                continue
            comp = self._compiled.get(group)
            if comp is None:
                if len(self._compiled) > 32:
                    self._compiled.clear()
                comp = self._compiled[group] = _Compiled(self.obs, group, spare)
            if comp.watched:
                out.append(comp)
        return out

    def forward(self, ws: Workspace, row: Array, tick: int) -> list[str]:
        """Output statistics of every stacked layer; the names whose output is non-finite or overflows."""
        bad_names: list[str] = []
        for comp in self._groups(ws, len(row) - 1):
            group = comp.group
            n = len(group.names)
            y = group.y.reshape(n, -1)
            size = y.shape[1]
            vals = np.full((len(FORWARD), n), np.nan)
            mean = np.matmul(y, comp.ones(size, y.dtype)).astype(np.float64)
            mean /= size
            ss = row_sq_norms(y)
            vals[0] = mean
            np.sqrt(np.maximum(ss / size - mean * mean, 0.0), out=vals[1])
            vals[2] = 0.0
            finite = bool(np.isfinite(ss).all())
            if not finite:
                for k in np.flatnonzero(~np.isfinite(ss)):
                    vals[2, k] = count_nonfinite(group.y[k], ss[k])
                bad_names += [group.names[k] for k in np.flatnonzero((vals[2] > 0) | ~np.isfinite(ss))
                              if comp.slots[k] is not None]
            if comp.saturated is not None:
                vals[3] = _count_rows(self._mask(ws, comp, comp.saturated)) / size
            if comp.inactive is not None:
                self._activity(ws, comp, vals, tick, finite)
            row[comp.fwd_cols] = vals
        return bad_names

    def _activity(self, ws: Workspace, comp: _Compiled, vals: Array, tick: int, finite: bool) -> None:
        """Inactive fraction, dead units and dead units over the window (rows 4–6 of ``vals``)."""
        group = comp.group
        n = len(group.names)
        y3 = group.y.reshape(n, group.y.shape[1], -1)  # (member, sample, unit)
        size = y3[0].size
        if comp.relu:
            active = y3 > 0
            vals[4] = 1.0 - _count_rows(active) / size
            if finite:  # ReLU outputs are ≥ 0: a unit's batch sum is 0 iff it is 0 on every sample
                dead = np.matmul(comp.ones(y3.shape[1], y3.dtype), y3) == 0  # (a BLAS gemv: 4× any())
            else:  # a NaN sums to NaN: decide by the comparison, as Observer does
                dead = ~active.any(axis=1)
        else:
            mask = self._mask(ws, comp, comp.inactive).reshape(y3.shape)
            vals[4] = _count_rows(mask) / size
            dead = mask.all(axis=1)
        units = dead.shape[1]
        vals[5] = dead.sum(axis=1) / units
        last = comp.activity_state(units)
        np.putmask(last, ~dead, tick)
        vals[6] = (last <= tick - self.obs.dead_window).sum(axis=1) / units

    @staticmethod
    def _mask(ws: Workspace, comp: _Compiled, rule) -> Array:
        """The rule's mask over the whole stack; per member with its input when the rule needs it."""
        mask = rule(comp.group.y, None)
        if mask is None:
            names = comp.group.names
            mask = np.stack([rule(y, ws.inputs[name]) for y, name in zip(comp.group.y, names, strict=True)])
        return mask

    def backward(self, ws: Workspace, row: Array) -> list[str]:
        """Gradient and parameter statistics of every stacked layer; the names whose gradients went bad."""
        comps = self._groups(ws, len(row) - 1, grads=True)
        gsq = {comp.group: row_sq_norms(comp.group.g.reshape(len(comp.group.names), -1)) for comp in comps}
        bad_names: list[str] = []
        for comp in comps:
            group = comp.group
            n = len(group.names)
            vals = np.full((len(BACKWARD), n), np.nan)
            vals[0] = gsq[group]
            bad, over = np.zeros(n), np.zeros(n, bool)
            for k, name in enumerate(group.names):  # ∂L/∂x is the stacked predecessor's ∂L/∂y
                pred = ws.pred[name]
                if pred is not None:
                    pgroup, pk = ws.slot[pred]
                    vals[1, k] = gsq[pgroup][pk] if pgroup in gsq else sq_norm(pgroup.g[pk])
                else:
                    vals[1, k] = sq_norm(ws.loose_grad_in[name])
            if not np.isfinite(vals[1]).all():
                for k in np.flatnonzero(~np.isfinite(vals[1])):
                    pred = ws.pred[group.names[k]]
                    gin = ws.loose_grad_in[group.names[k]] if pred is None else _row(ws, pred)
                    bad[k] += count_nonfinite(gin, vals[1, k])
                    over[k] = True
            if comp.keys is not None:
                self._params(comp, vals, bad, over)
            np.sqrt(vals, out=vals)
            row[comp.bwd_cols] = vals
            prev = row[comp.nonfinite_cols]
            row[comp.nonfinite_cols] = np.where(np.isnan(prev), 0.0, prev) + bad
            if over.any() or bad.any():
                bad_names += [group.names[k] for k in np.flatnonzero((bad > 0) | over)
                              if comp.slots[k] is not None]
        return bad_names

    @staticmethod
    def _params(comp: _Compiled, vals: Array, bad: Array, over: Array) -> None:
        """‖W‖², ‖∂L/∂W‖², ‖∂L/∂b‖² of each member into rows 2–4 (before clipping and the update)."""
        group = comp.group
        wkey, bkey = comp.keys
        for i, (key, grads) in enumerate(((wkey, False), (wkey, True), (bkey, True)), start=2):
            stack = group.stacked(key, grads)
            if stack is not None:
                vals[i] = row_sq_norms(stack.reshape(len(stack), -1))
            else:
                vals[i] = [sq_norm((la.grads if grads else la.params)[key]) for la in group.layers]
        if np.isfinite(vals[3:5]).all():
            return
        for i, key, counts_over in ((3, wkey, True), (4, bkey, False)):
            for k in np.flatnonzero(~np.isfinite(vals[i])):
                bad[k] += count_nonfinite(group.layers[k].grads[key], vals[i, k])
                over[k] = over[k] or counts_over
