"""Stacked buffers for one pass: the network's hidden outputs and their gradients, grouped by kind and shape.

A monitor that sets ``stacked = True`` gets, instead of one hook call per layer, the whole pass at once
(``on_stacked_forward(ws)`` and ``on_stacked_backward(ws)``): layer i of a group writes its output into
``group.y[i]`` and the next layer's backward writes ∂L/∂y into ``group.g[i]`` (gradients of large layers
stay out: those layers get their per-layer backward hooks), so one statistic over a
whole group is one batched call instead of one Python-level call per layer. Only top-level Dense and
Activation layers whose successor can also write in place are stacked; the others keep per-layer hooks.
The buffers are reused every step: they are valid until the next forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gradlab.nn.activations import Activation
from gradlab.nn.layers import BatchNorm, Dense, Dropout, Layer, LayerNorm, Residual

Array = np.ndarray

_IN_PLACE = (Dense, Activation)  # layers whose forward and backward accept ``out=``
GRAD_STACK_MAX = 1 << 14
"""Gradients of more entries than this a layer stay out of the stacks and are measured in their layer's
hook, in cache: measured on 20 layers of 128×256, stacking them cost ~0.5 ms a step in cache misses
(each layer writing a fresh region instead of reusing a hot block) and read them back cold."""
_SAME_SHAPE = (Activation, BatchNorm, LayerNorm, Dropout, Residual)


@dataclass(eq=False)
class Group:
    """Same-kind, same-shape layers (in forward order) with their stacked outputs and output gradients."""

    kind: str
    names: tuple[str, ...]
    layers: tuple[Layer, ...]
    y: Array  # (n, *shape): y[i] is layer i's output
    g: Array | None  # (n, *shape): g[i] is ∂L/∂y at layer i's output (None: too large to stack)
    _stacks: dict[tuple[str, bool], tuple[tuple[Array, ...], Array | None]] = field(default_factory=dict)

    def stacked(self, key: str, grads: bool = False) -> Array | None:
        """The (n, ...) array whose rows are the members' parameter ``key`` (or its gradient), when they
        share one (see :func:`stack_parameters`); None otherwise."""
        arrays = tuple((la.grads if grads else la.params)[key] for la in self.layers)
        cached = self._stacks.get((key, grads))
        if cached is None or any(a is not b for a, b in zip(arrays, cached[0], strict=True)):
            cached = self._stacks[(key, grads)] = (arrays, common_stack(arrays))
        return cached[1]


@dataclass(eq=False)
class Workspace:
    """The stacking plan of one input shape and dtype, and the pass's arrays that live outside the stacks."""

    groups: list[Group]
    slot: dict[str, tuple[Group, int]]  # stacked layer → (its group, its index in the group)
    grad_slot: dict[str, tuple[Group, int]]  # the same, for the layers whose ∂L/∂y is stacked too
    y_out: dict[int, Array]  # top-level index → where that layer writes its output
    g_out: dict[int, Array]  # top-level index → where that layer's backward writes ∂L/∂x
    pred: dict[str, str | None]  # grad-stacked layer → the grad-stacked layer feeding it, or None
    hook_order: tuple[str, ...]  # every layer, in the order per-layer forward hooks would fire
    inputs: dict[str, Array] = field(default_factory=dict)  # this pass: each stacked layer's input x
    loose_grad_in: dict[str, Array] = field(default_factory=dict)  # this pass: ∂L/∂x not in a stack


def row_sq_norms(a: Array) -> Array:
    """Σ a² of each row of a 2-D array, as float64 (a batched BLAS dot: faster than einsum here)."""
    return np.matmul(a[:, None, :], a[:, :, None]).reshape(len(a)).astype(np.float64)


def common_stack(arrays: Sequence[Array]) -> Array | None:
    """The array whose rows are exactly ``arrays``, in order, or None."""
    base = arrays[0].base
    if base is None or base.shape != (len(arrays), *arrays[0].shape) or not base.flags.c_contiguous:
        return None
    start, step = base.__array_interface__["data"][0], base.strides[0]
    for k, a in enumerate(arrays):
        if a.base is not base or a.shape != base.shape[1:] or a.strides != base.strides[1:]:
            return None
        if a.__array_interface__["data"][0] != start + k * step:
            return None
    return base


def stack_parameters(layers: Sequence[Layer]) -> None:
    """Give same-shaped layers' parameters and gradients one stacked array each, the layers keeping
    views of its rows, so a monitor can measure them all in one call. Values are unchanged; call it
    before an optimizer or a Residual block holds the old arrays."""
    by_shape: dict[tuple, list[Layer]] = {}
    for layer in layers:
        key = tuple((k, v.shape, v.dtype.str) for k, v in layer.params.items())
        by_shape.setdefault((type(layer), key), []).append(layer)
    for members in by_shape.values():
        if len(members) < 2:
            continue
        for table in ("params", "grads"):
            for key in getattr(members[0], table):
                stack = np.stack([getattr(la, table)[key] for la in members])
                for k, la in enumerate(members):
                    getattr(la, table)[key] = stack[k]


def _out_shape(layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The output shape of ``layer`` on an input of ``shape``, when it is known without running it."""
    if isinstance(layer, Dense):
        return (shape[0], layer.fan_out) if len(shape) == 2 and shape[1] == layer.fan_in else None
    return shape if isinstance(layer, _SAME_SHAPE) else None


def _same_dtype(layer: Layer, dtype: np.dtype) -> bool:
    return all(p.dtype == dtype for p in layer.params.values())


def plan(entries: Sequence[tuple[str, Layer]], shape: tuple[int, ...], dtype: np.dtype) -> Workspace | None:
    """Stack the top-level layers of ``entries`` for an input of ``shape`` and ``dtype``; None when no
    layer can be stacked (or a mixed-dtype layer would make in-place outputs change the arithmetic)."""
    dtype = np.dtype(dtype)
    shapes: list[tuple[int, ...] | None] = []
    current: tuple[int, ...] | None = tuple(shape)
    for _, layer in entries:
        current = None if current is None else _out_shape(layer, current)
        shapes.append(current)
    if dtype.kind != "f" or not all(_same_dtype(la, dtype) for _, la in entries if isinstance(la, Dense)):
        return None
    members: dict[tuple, list[int]] = {}
    for i, (_, layer) in enumerate(entries[:-1]):  # the network's output is the caller's: never stacked
        nxt = entries[i + 1][1]
        if shapes[i] is not None and isinstance(layer, _IN_PLACE) and isinstance(nxt, _IN_PLACE):
            params = tuple((k, v.shape) for k, v in layer.params.items())  # so parameters can stack too
            members.setdefault((layer.kind, shapes[i], params), []).append(i)
    if not members:
        return None
    groups, slot, grad_slot, y_out, g_out = [], {}, {}, {}, {}
    for (kind, shp, _), idx in members.items():
        y = np.empty((len(idx), *shp), dtype)
        g = np.empty((len(idx), *shp), dtype) if math.prod(shp) <= GRAD_STACK_MAX else None
        group = Group(kind, tuple(entries[i][0] for i in idx), tuple(entries[i][1] for i in idx), y, g)
        groups.append(group)
        for k, i in enumerate(idx):
            slot[entries[i][0]] = (group, k)
            y_out[i] = y[k]
            if g is not None:
                grad_slot[entries[i][0]] = (group, k)
                g_out[i + 1] = g[k]
    pred = {name: (entries[i - 1][0] if i > 0 and entries[i - 1][0] in grad_slot else None)
            for i, (name, _) in enumerate(entries) if name in grad_slot}
    return Workspace(groups, slot, grad_slot, y_out, g_out, pred, tuple(_hook_order(entries)))


def _hook_order(entries: Sequence[tuple[str, Layer]]) -> list[str]:
    """Layer names in the order their forward hooks fire (a residual block after its body)."""
    out: list[str] = []
    for name, layer in entries:
        if isinstance(layer, Residual):
            out += _hook_order(layer.body)
        out.append(name)
    return out
