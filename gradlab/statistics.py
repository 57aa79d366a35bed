"""The statistic table: every per-layer statistic gradlab records, defined once.

Each :class:`Statistic` names its group, the layers it applies to, the arrays it reads and its
*reference definition*, written against the Python array API standard (``xp`` is the arrays' own
namespace, via ``array_api_compat``), so the same definition runs on NumPy arrays and on torch tensors.
The recorder, the Observer, ``docs/data.md`` and the tests all read this table; adding a statistic is
one entry here plus its test. The Observer computes the statistics it knows (:data:`FAST_PATH`) with a
measured NumPy fast path, tested equal to these definitions; any other entry is computed from its
definition.

A *unit* is axis 1 of an output (a feature of a dense layer, a channel of a conv layer); a unit is
*dead* when it is inactive for every sample (and every position) of the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Arrays = Mapping[str, Any]
"""A layer's arrays by role: ``output`` y, ``input`` x, ``grad_out`` ∂L/∂y, ``grad_in`` ∂L/∂x,
``weight`` W, ``weight_grad`` ∂L/∂W, ``bias_grad`` ∂L/∂b, ``update`` ΔW; missing roles are absent."""

APPLIES = ("all", "params", "bounded", "rectifier")
"""Which layers a statistic applies to: every layer, layers with parameters, activations with a
saturation rule (bounded), activations with an inactivity rule (rectifiers)."""


@dataclass(frozen=True)
class Statistic:
    """One per-layer statistic: name, group, which layers, which arrays, meaning and definition.

    ``define(xp, arrays, act)`` returns a 0-d array (or None when a needed array is missing); ``act``
    is the layer's :class:`gradlab.nn.activations.ActivationFn` or None. ``define`` is None for a
    statistic that needs the layer's history (it is computed by the Observer's own bookkeeping).
    """

    name: str
    group: str
    applies: str
    needs: tuple[str, ...]
    meaning: str
    define: Callable[[Any, Arrays, Any], Any] | None


def _f64(xp: Any, a: Any) -> Any:
    return xp.astype(a, xp.float64)


def _norm(xp: Any, a: Any) -> Any:
    a = _f64(xp, a)
    return xp.sqrt(xp.sum(a * a))


def _frac(xp: Any, mask: Any) -> Any:
    return xp.mean(_f64(xp, mask))


def unit_all(xp: Any, mask: Any) -> Any:
    """Per unit (axis 1), whether ``mask`` holds for every sample and position; 1-D masks are per unit."""
    if mask.ndim <= 1:
        return mask
    return xp.all(mask, axis=tuple(i for i in range(mask.ndim) if i != 1))


def _mask(kind: str, a: Arrays, act: Any) -> Any:
    """The activation's ``saturated`` or ``inactive`` rule applied to y (and x); None without a rule."""
    rule = getattr(act, kind, None) if act is not None else None
    return None if rule is None else rule(a["output"], a.get("input"))


def _saturation(xp: Any, a: Arrays, act: Any) -> Any:
    m = _mask("saturated", a, act)
    return None if m is None else _frac(xp, m)


def _inactive_frac(xp: Any, a: Arrays, act: Any) -> Any:
    m = _mask("inactive", a, act)
    return None if m is None else _frac(xp, m)


def _dead_frac(xp: Any, a: Arrays, act: Any) -> Any:
    m = _mask("inactive", a, act)
    return None if m is None else _frac(xp, unit_all(xp, m))


def _ratio(xp: Any, num: Any, den: Any) -> Any:
    return num / den if float(den) != 0 and bool(xp.isfinite(den)) else xp.asarray(float("nan"))


def _nonfinite(xp: Any, a: Arrays, act: Any) -> Any:
    roles = [k for k in ("output", "grad_in", "weight_grad", "bias_grad") if k in a]
    return sum((xp.sum(_f64(xp, ~xp.isfinite(a[k]))) for k in roles), xp.asarray(0.0))


STATISTICS: tuple[Statistic, ...] = (
    Statistic("grad_norm", "gradients", "params", ("weight_grad",),
              "‖∂L/∂W‖_F of the layer's weight (Dense: W; BatchNorm/LayerNorm: γ)",
              lambda xp, a, act: _norm(xp, a["weight_grad"])),
    Statistic("grad_b_norm", "gradients", "params", ("bias_grad",),
              "‖∂L/∂b‖ of the layer's bias (Dense: b; BatchNorm/LayerNorm: β)",
              lambda xp, a, act: _norm(xp, a["bias_grad"])),
    Statistic("weight_norm", "weights", "params", ("weight",),
              "‖W‖_F (Dense: W; BatchNorm/LayerNorm: γ)",
              lambda xp, a, act: _norm(xp, a["weight"])),
    Statistic("update_ratio", "weights", "params", ("update", "weight"),
              "‖ΔW‖/‖W‖ of the update the optimizer applied (after clipping, momentum, decay)",
              lambda xp, a, act: _ratio(xp, _norm(xp, a["update"]), _norm(xp, a["weight"]))),
    Statistic("grad_in_norm", "gradients", "all", ("grad_in",),
              "‖∂L/∂x‖_F over the batch, x the layer's input (the signal it sends backward)",
              lambda xp, a, act: _norm(xp, a["grad_in"])),
    Statistic("grad_out_norm", "gradients", "all", ("grad_out",),
              "‖∂L/∂y‖_F over the batch, y the layer's output (the signal it receives)",
              lambda xp, a, act: _norm(xp, a["grad_out"])),
    Statistic("act_mean", "activations", "all", ("output",),
              "mean of the layer's output y over batch and units",
              lambda xp, a, act: xp.mean(_f64(xp, a["output"]))),
    Statistic("act_std", "activations", "all", ("output",),
              "standard deviation of y over batch and units",
              lambda xp, a, act: xp.std(_f64(xp, a["output"]))),
    Statistic("nonfinite", "gradients", "all", (),
              "count of NaN/±Inf entries in y, ∂L/∂x and the parameter gradients of the layer",
              _nonfinite),
    Statistic("saturation", "units", "bounded", ("output",),
              "fraction of (sample, unit) outputs at a bound (tanh/sigmoid/elu rule in activations.py)",
              _saturation),
    Statistic("inactive_frac", "units", "rectifier", ("output",),
              "fraction of (sample, unit) outputs in the inactive region (ReLU family)",
              _inactive_frac),
    Statistic("dead_frac", "units", "rectifier", ("output",),
              "fraction of units inactive for every sample of the batch (ReLU family)",
              _dead_frac),
    Statistic("dead_frac_window", "units", "rectifier", ("output",),
              "fraction of units inactive for every sample of the last `window` recorded steps",
              None),
)
"""Every per-layer statistic, in the order the recorder lays out a layer's columns."""

BY_NAME: dict[str, Statistic] = {s.name: s for s in STATISTICS}

NETWORK_METRICS: dict[str, str] = {
    "loss": "training loss of the step's batch",
    "accuracy": "training accuracy of the step's batch (classification only)",
    "grad_norm_total": "global ‖∂L/∂θ‖ over all parameters before clipping",
    "grad_norm_clipped": "global gradient norm after clipping (equals grad_norm_total when it did not fire)",
    "clipped": "1 when gradient clipping fired this step, else 0",
    "lr": "learning rate used this step",
}
"""Network-level metrics (``layer == ""``): name and meaning."""

STAT_GROUPS: dict[str, tuple[str, ...]] = {
    g: tuple(s.name for s in STATISTICS if s.group == g) for g in dict.fromkeys(s.group for s in STATISTICS)
}
"""Statistics by group; ``gradients`` (with ``nonfinite``, the divergence guard) is always recorded."""


def stat_metrics(stats: Sequence[str] | str | None) -> frozenset[str]:
    """The layer metrics the named groups record (None: every group); unknown groups list the allowed."""
    if stats is None:
        return frozenset(BY_NAME)
    names = [stats] if isinstance(stats, str) else list(stats)
    unknown = [g for g in names if g not in STAT_GROUPS]
    if unknown:
        raise ValueError(f"stats={unknown!r}: unknown group(s); allowed: {', '.join(STAT_GROUPS)}")
    return frozenset(m for g in ("gradients", *names) for m in STAT_GROUPS[g])


def layer_statistics(
    has_params: bool, bounded: bool, rectifier: bool, stats: Sequence[str] | str | None = None
) -> tuple[str, ...]:
    """The statistics a layer records, in table order: by what it has, within the ``stats`` groups."""
    ok = {"all": True, "params": has_params, "bounded": bounded, "rectifier": rectifier}
    wanted = stat_metrics(stats)
    return tuple(s.name for s in STATISTICS if ok[s.applies] and s.name in wanted)


def reference(name: str, arrays: Arrays, act: Any = None) -> float | None:
    """A statistic's value by its table definition, computed in the arrays' own library (float64)."""
    from array_api_compat import array_namespace

    stat = BY_NAME[name]
    if stat.define is None:
        raise ValueError(f"{name} depends on the layer's history; it has no one-step definition")
    given = {k: v for k, v in arrays.items() if v is not None}
    if any(k not in given for k in stat.needs) or not given:
        return None
    xp = array_namespace(*given.values())
    value = stat.define(xp, given, act)
    return None if value is None else float(value)


FAST_PATH = frozenset(BY_NAME)
"""Statistics the Observer computes with its NumPy fast path (every entry today; a new entry without
a fast path is computed from its definition)."""
