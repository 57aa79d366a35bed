"""One recorded step's statistics, computed on the tensors' own device and gathered in one transfer.

The hooks of :class:`gradlab.torch.handle.Watch` hand detached tensors to :class:`StepStats`, which
queues 0-d tensors (no ``.item()``, no synchronisation): raw sums and counts, each with the divisor
that turns it into the statistic on the host. :meth:`StepStats.gather` stacks them by dtype and moves
them to the host once. The definitions are gradlab's statistic table (:mod:`gradlab.statistics`),
computed the way gradlab's NumPy fast path does (mean and std from Σy and ‖y‖; a unit's "inactive at
every sample" as one max-reduce against the rule's threshold) and tested equal to the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gradlab.records import HIST_BINS, HIST_LOG2_MAX, HIST_LOG2_MIN
from gradlab.torch.discover import Threshold, UnitRules

NEVER_ACTIVE = -(1 << 62)


def norm(t: torch.Tensor) -> torch.Tensor:
    """‖t‖ accumulated in float64: in float32, a vanishing gradient's squares underflow (entries of
    1e-25 give a norm of exactly 0) or turn denormal (20× slower on a CPU)."""
    return torch.linalg.vector_norm(t, dtype=torch.float64)


def norms(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`norm` of each tensor, in one fused call."""
    return torch._foreach_norm(ts, 2, dtype=torch.float64)


def log2_hist(t: torch.Tensor) -> torch.Tensor:
    """gradlab's log-magnitude histogram (:func:`gradlab.monitor.stats.log2_hist`) on ``t``'s device:
    index 0 counts exact zeros, then one bin per binary order of magnitude; non-finite entries are
    left out."""
    flat = t.reshape(-1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.to(torch.float32)  # half, bfloat16, integers: exact in float32 for the exponent
    flat = flat[torch.isfinite(flat)]
    _, e = torch.frexp(flat)
    idx = e.clamp(HIST_LOG2_MIN, HIST_LOG2_MAX) - (HIST_LOG2_MIN - 1)
    idx[flat == 0] = 0
    return torch.bincount(idx.to(torch.int64), minlength=len(HIST_BINS) + 1)


def unit_max(t: torch.Tensor) -> torch.Tensor:
    """Per unit (axis 1: a feature, or a conv channel over every position), the max over the batch;
    a 1-D tensor is per unit already."""
    if t.ndim <= 1:
        return t
    return t.amax(dim=0) if t.ndim == 2 else t.amax(dim=(0, *range(2, t.ndim)))


def _count(t: torch.Tensor, rule: Threshold, above: bool = False) -> torch.Tensor:
    if above:
        mask = t >= rule.value if rule.inclusive else t > rule.value
    else:
        mask = t <= rule.value if rule.inclusive else t < rule.value
    return torch.count_nonzero(mask)  # measured: 1.7× faster than mask.sum(), which casts to int64


class StepStats:
    """The queued statistics of one recorded step, by (layer, metric).

    Measured: stacking same-shaped outputs to reduce them together at the end of the step cost more
    than it saved (the stack is a copy: +80% on a small CNN, a few percent gained on a 20×64 MLP), and
    an output may be overwritten in place after its hook; so each output is reduced in its own hook.
    """

    def __init__(self, column: Callable[[str, str], int], dead_window: int) -> None:
        self.column = column
        self.dead_window = dead_window
        self.last_active: dict[str, torch.Tensor] = {}
        self.reset(0)

    def reset(self, tick: int) -> None:
        """Start the step whose row index in the recorder is ``tick``."""
        self.keys: list[tuple[str, str]] = []
        self.vals: list[torch.Tensor] = []
        self.divisors: list[float] = []
        self.vectors: list[tuple[list[tuple[str, str]], torch.Tensor]] = []
        self.checks: list[tuple[str, str, torch.Tensor]] = []  # (layer, role, tensor): non-finite counts
        self.hists: list[tuple[str, str, torch.Tensor]] = []  # (layer, "act" | "grad", counts)
        self.tick = tick

    def put(self, layer: str, metric: str, value: torch.Tensor, divisor: float = 1.0) -> None:
        """Queue a 0-d tensor; the statistic is ``value / divisor`` (``layer`` "" for the network; a
        metric "" is a probe, not recorded; "_norm" is ‖y‖, from which the host derives act_std)."""
        self.keys.append((layer, metric))
        self.vals.append(value)
        self.divisors.append(divisor)

    def put_many(self, layers: list[str], metric: str, values: torch.Tensor) -> None:
        """Queue a 1-D tensor: one value of ``metric`` per layer."""
        self.vectors.append(([(layer, metric) for layer in layers], values))

    def put_vector(self, layers: list[str], metrics: list[str], values: torch.Tensor) -> None:
        """Queue a 1-D tensor: the value of ``metrics[i]`` of ``layers[i]`` at ``values[i]``."""
        self.vectors.append((list(zip(layers, metrics, strict=True)), values))

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, layer: str, y: torch.Tensor, x: torch.Tensor | None, rules: UnitRules | None,
                moments: bool, units: bool) -> None:
        """Statistics of a layer's output y (and input x): moments, and unit rules for activations.

        Measured at once, in the hook: an in-place module or ``out += identity`` may overwrite y later.
        """
        self.checks.append((layer, "output", y))
        if y.numel():
            self._measure(layer, y, x, rules, moments, units)

    def _measure(self, layer: str, y: torch.Tensor, x: torch.Tensor | None, rules: UnitRules | None,
                 moments: bool, units: bool) -> None:
        n = y.numel()
        if moments:
            self.put(layer, "act_mean", y.sum(), n)
            self.put(layer, "_norm", norm(y), n)
        else:  # a probe: a finite Σy proves every entry finite
            self.put(layer, "", y.sum())
        if rules is None or not units:
            return
        lo, hi = rules.low, rules.high
        if lo is not None and hi is not None and lo.value == -hi.value and not (lo.inclusive or hi.inclusive):
            self.put(layer, "saturation", torch.count_nonzero(y.abs() > hi.value), n)  # tanh: one compare
        elif lo is not None or hi is not None:
            hits = [_count(y, r, above) for r, above in ((lo, False), (hi, True)) if r is not None]
            self.put(layer, "saturation", hits[0] if len(hits) == 1 else hits[0] + hits[1], n)
        off = rules.inactive
        src = y if off is not None and off.source == "y" else x
        if off is not None and src is not None:
            self.put(layer, "inactive_frac", _count(src, off), src.numel())
            top = unit_max(src)  # off at every sample ⇔ the unit's largest value is in the inactive region
            self._dead(layer, top <= off.value if off.inclusive else top < off.value)

    def _dead(self, layer: str, dead: torch.Tensor) -> None:
        """dead_frac and dead_frac_window of a layer whose units are ``dead`` (per unit) this step."""
        n = dead.numel()
        self.put(layer, "dead_frac", torch.count_nonzero(dead), n)
        last = self.last_active.get(layer)
        if last is None or last.numel() != n or last.device != dead.device:
            last = torch.full((n,), NEVER_ACTIVE, dtype=torch.int64, device=dead.device)
        last = self.last_active[layer] = torch.where(dead, last, self.tick)
        # dead over the window: inactive in each of the last `dead_window` recorded steps
        self.put(layer, "dead_frac_window", torch.count_nonzero(last <= self.tick - self.dead_window), n)

    def hist(self, layer: str, quantity: str, t: torch.Tensor) -> None:
        """Queue the log-magnitude histogram of a layer's output (``"act"``) or ∂L/∂y (``"grad"``)."""
        if t.numel():
            self.hists.append((layer, quantity, log2_hist(t)))

    def gather_hists(self) -> list[tuple[str, str, np.ndarray]]:
        """The queued histograms on the host, in one transfer (only steps with histograms pay it)."""
        if not self.hists:
            return []
        counts = torch.stack([c.to(self.hists[0][2].device) for _, _, c in self.hists]).cpu().numpy()
        return [(layer, q, row) for (layer, q, _), row in zip(self.hists, counts, strict=True)]

    # -- backward and parameters ------------------------------------------------------------------
    def grad(self, layer: str, metric: str, g: torch.Tensor, size: torch.Tensor | None = None) -> None:
        """‖g‖ (``size`` when already taken) of a signal (grad_in_norm, grad_out_norm) or a parameter
        gradient (grad_norm, grad_b_norm)."""
        self.put(layer, metric, norm(g) if size is None else size)
        if metric != "grad_out_norm":  # the layer's own ∂L/∂x and parameter gradients count as its NaNs
            self.checks.append((layer, metric, g))

    # -- one transfer -----------------------------------------------------------------------------
    def gather(self) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str, int]]]:
        """(columns, float64 values, NaN/±Inf entry counts per (layer, role)) on the host, in one transfer.

        Counting entries costs a second pass, only on a step where some value came back non-finite;
        otherwise the list is empty.
        """
        keys = list(self.keys)
        divisors = list(self.divisors)
        for vkeys, _ in self.vectors:  # 1-D entries go after the scalars, as they are (divisor 1)
            keys += vkeys
            divisors += [1.0] * len(vkeys)
        if not keys:
            return np.zeros(0, np.int64), np.zeros(0), []
        groups: dict[tuple[Any, Any], list[int]] = {}
        for i, v in enumerate(self.vals):
            groups.setdefault((v.dtype, v.device), []).append(i)
        order = [i for idx in groups.values() for i in idx] + list(range(len(self.vals), len(keys)))
        parts = [torch.stack([self.vals[i] for i in idx]).to(torch.float64) for idx in groups.values()]
        parts += [vec.to(torch.float64) for _, vec in self.vectors]
        flat = torch.cat([t.to(parts[0].device) for t in parts]) if len(parts) > 1 else parts[0]
        raw = np.empty(len(order))
        raw[order] = flat.cpu().numpy()
        values = raw / np.asarray(divisors)
        cols = np.empty(len(keys), dtype=np.int64)
        mean: dict[str, float] = {}
        for i, (layer, metric) in enumerate(keys):
            if metric == "act_mean":
                mean[layer] = values[i]
            cols[i] = -1 if not metric or metric == "_norm" else self.column(layer, metric)
        for i, (layer, metric) in enumerate(keys):  # var = ‖y‖²/n − mean², as gradlab's NumPy fast path
            if metric == "_norm":
                ss_n = raw[i] ** 2 / divisors[i]
                cols[i] = self.column(layer, "act_std")
                values[i] = math.sqrt(max(ss_n - mean[layer] ** 2, 0.0))  # max keeps NaN
        bad: list[tuple[str, str, int]] = []
        if not np.isfinite(raw).all():
            for layer, role, t in self.checks:
                k = int(t.numel() - torch.isfinite(t).sum().item())
                if k:
                    bad.append((layer, role, k))
        return cols, values, bad
