"""The hook contract: what a monitor sees, when, and how it is attached and always detached.

A monitor observes and never mutates. :class:`gradlab.nn.network.Network` calls, for each layer it
runs, ``on_forward(name, layer, x, y)`` after the layer's forward and ``on_backward(name, layer,
grad_in, grad_out)`` after its backward (``grad_in`` = ∂L/∂x, ``grad_out`` = ∂L/∂y), then once per
optimisation step ``on_step(step, info)``. Arrays handed to hooks are read-only views.

A monitor that sets ``stacked = True`` instead gets whole passes for the layers the network can stack
(:mod:`gradlab.nn.workspace`): ``on_stacked_forward(ws)`` after the forward and ``on_stacked_backward(ws)``
after the backward, and per-layer hooks for the rest. The network stacks only while every active
monitor is stacked, since the buffers are reused each step.

*When* to observe is separate from *how*: ``every`` (an int k, or a ``step -> bool`` function) picks
the steps, ``layers`` (names or glob patterns) picks the layers.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Array = np.ndarray
Schedule = int | Callable[[int], bool]


@dataclass
class StepInfo:
    """Network-level facts of one optimisation step, handed to ``Monitor.on_step``.

    ``updates`` holds the change the optimizer actually applied to each parameter (after clipping,
    momentum and decay); it is empty for a measurement-only step. ``update_sq_norms`` may carry
    ‖ΔW‖² per parameter, measured by the optimizer while each update was still in cache.
    """

    loss: float = float("nan")
    accuracy: float = float("nan")
    lr: float = float("nan")
    grad_norm_total: float = float("nan")
    grad_norm_clipped: float = float("nan")
    clipped: bool = False
    params: Mapping[str, Array] = field(default_factory=dict)
    grads: Mapping[str, Array] = field(default_factory=dict)
    updates: Mapping[str, Array] = field(default_factory=dict)
    update_sq_norms: Mapping[str, float] = field(default_factory=dict)


def schedule_fn(every: Schedule) -> Callable[[int], bool]:
    """Turn ``every`` (a positive int k, or a step → bool function) into a step → bool function."""
    if callable(every):
        return every
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every={every!r} must be a positive int or a callable step -> bool")
    if every == 1:
        return lambda step: True
    return lambda step: step % every == 0


def layer_filter(layers: str | Sequence[str] | None) -> Callable[[str], bool]:
    """Turn layer names or glob patterns (``"dense_*"``) into a name → bool predicate; None = all."""
    if layers is None:
        return lambda name: True
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"layers={layers!r} must be a name, a glob pattern or a list of them")
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


class Monitor:
    """Base class for hooks: override what you need; every method returns nothing."""

    stacked = False  # True: take stacked passes (on_stacked_forward / on_stacked_backward) where possible

    def __init__(self, layers: str | Sequence[str] | None = None, every: Schedule = 1) -> None:
        self.wants_layer = layer_filter(layers)
        self.wants_step = schedule_fn(every)

    def on_attach(self, layer_names: Sequence[str], layers: Mapping[str, Any]) -> None:
        """Called once when attached, with every layer name in forward order."""

    def on_forward(self, name: str, layer: Any, x: Array, y: Array) -> None:
        """Called after a layer's forward pass with its input and output."""

    def on_backward(self, name: str, layer: Any, grad_in: Array, grad_out: Array) -> None:
        """Called after a layer's backward pass with ∂L/∂x (``grad_in``) and ∂L/∂y (``grad_out``)."""

    def on_step(self, step: int, info: StepInfo) -> None:
        """Called once per optimisation step, after the update."""

    def on_stacked_forward(self, ws: Any) -> None:
        """(``stacked`` monitors) After a forward pass, with its :class:`gradlab.nn.workspace.Workspace`."""

    def on_stacked_backward(self, ws: Any) -> None:
        """(``stacked`` monitors) After a backward pass, with the same workspace."""

    def on_detach(self) -> None:
        """Called once when detached (always, even after an exception)."""


def readonly(a: Array) -> Array:
    """A read-only view of ``a`` (the array itself stays writable for its owner)."""
    v = a.view()
    v.flags.writeable = False
    return v


class Handle:
    """Returned by ``attach``: a context manager that detaches its monitors on exit, or ``remove()``."""

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove: Callable[[], None] | None = remove

    def remove(self) -> None:
        """Detach now; calling it again does nothing."""
        if self._remove is not None:
            fn, self._remove = self._remove, None
            fn()

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def as_monitors(monitors: Iterable[Any]) -> list[Any]:
    """Check that each object has the three hook methods; return them as a list."""
    out = list(monitors)
    for m in out:
        missing = [h for h in ("on_forward", "on_backward", "on_step") if not callable(getattr(m, h, None))]
        if missing:
            raise TypeError(f"{type(m).__name__} is not a monitor: missing {', '.join(missing)}")
    return out
