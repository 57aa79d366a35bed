"""Network: a named sequence of layers with forward/backward, params/grads and hook dispatch; ``mlp``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gradlab.nn.activations import Activation, get_activation
from gradlab.nn.hooks import Handle, StepInfo, as_monitors, readonly
from gradlab.nn.init import get_init, init_weights
from gradlab.nn.layers import BatchNorm, Dense, Dropout, Layer, LayerNorm, Residual
from gradlab.nn.workspace import Workspace, plan, stack_parameters

Array = np.ndarray
DTYPES = {"float32": np.float32, "float64": np.float64}


def resolve_dtype(dtype: Any) -> type:
    """Map "float32"/"float64" (or the numpy types) to a numpy scalar type."""
    try:
        dt = np.dtype(dtype).name
    except TypeError:
        dt = None
    if dt not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; allowed: float32, float64")
    return DTYPES[dt]


class Network:
    """Layers run in order; monitors attached with :meth:`attach` see every layer once per pass."""

    def __init__(self, layers: Sequence[tuple[str, Layer]]) -> None:
        self.layers: list[tuple[str, Layer]] = list(layers)
        names = [n for n, _ in self.named_layers()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"layer names must be unique; repeated: {', '.join(dup)}")
        # Only ever replaced (attach/detach), never mutated in place: begin_step compares it by identity.
        self._monitors: list[Any] = []
        self._fwd: dict[str, list] = {}
        self._bwd: dict[str, list] = {}
        self._step_hooks: list = []
        self._active: list[Any] | None = None
        self._active_of: list[Any] | None = None
        self._stacked = False
        self._plans: dict[tuple, Workspace | None] = {}
        self._ws: Workspace | None = None  # the last forward's workspace, for the backward that follows
        self._ws_hooks: tuple[dict[str, list], dict[str, list]] = ({}, {})
        self._ws_hooks_of: Workspace | None = None
        self.training = True

    # -- structure -------------------------------------------------------------------------
    def named_layers(self) -> Iterator[tuple[str, Layer]]:
        """Every layer in forward order (a residual block before the layers of its body)."""

        def walk(entries: Sequence[tuple[str, Layer]]) -> Iterator[tuple[str, Layer]]:
            for name, layer in entries:
                yield name, layer
                if isinstance(layer, Residual):
                    yield from walk(layer.body)

        return walk(self.layers)

    def _leaves(self) -> Iterator[tuple[str, Layer]]:
        return ((n, la) for n, la in self.named_layers() if not isinstance(la, Residual))

    def params(self) -> dict[str, Array]:
        """Every parameter, keyed ``"layer.param"`` (e.g. ``"dense_0.W"``); the arrays themselves."""
        return {f"{n}.{k}": v for n, la in self._leaves() for k, v in la.params.items()}

    def grads(self) -> dict[str, Array]:
        """Every gradient, with the same keys as :meth:`params`."""
        return {f"{n}.{k}": v for n, la in self._leaves() for k, v in la.grads.items()}

    def train(self, mode: bool = True) -> Network:
        """Set training mode on every layer."""
        self.training = mode
        for _, layer in self.layers:
            layer.train(mode)
        return self

    def eval(self) -> Network:
        """Set evaluation mode on every layer."""
        return self.train(False)

    def __repr__(self) -> str:
        return "Network(" + ", ".join(n for n, _ in self.named_layers()) + ")"

    # -- passes ----------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        """Run every layer; monitors see ``(name, layer, x, y)`` as each layer finishes."""
        ws = self._workspace_for(x)
        y = self._forward(self.layers, x, ws)
        if ws is not None:
            for m in self._active:
                m.on_stacked_forward(ws)
        self._ws = ws
        return y

    def _forward(self, entries: Sequence[tuple[str, Layer]], x: Array, ws: Workspace | None = None) -> Array:
        fwd = self._fwd if ws is None else self._ws_hooks[0]
        views = _Views()
        for i, (name, layer) in enumerate(entries):
            if isinstance(layer, Residual):
                y = layer.merge(x, self._forward(layer.body, x))  # y = x + f(x), body layers hooked
            elif ws is not None and i in ws.y_out:
                ws.inputs[name] = x
                y = layer.forward(x, out=ws.y_out[i])
            else:
                y = layer.forward(x)
            hooks = fwd.get(name)
            if hooks:
                seen_x, seen_y = views.of(x), views.of(y)
                for hook in hooks:
                    hook(name, layer, seen_x, seen_y)
            x = y
        return x

    def backward(self, grad_out: Array) -> Array:
        """Back-propagate ∂L/∂output; fills every layer's grads and returns ∂L/∂input."""
        ws, self._ws = self._ws, None
        if ws is not None and grad_out.dtype != ws.groups[0].y.dtype:
            ws = None  # in place would cast: this pass runs unstacked, every layer through its hooks
        g = self._backward(self.layers, grad_out, ws)
        if ws is not None:
            for m in self._active:
                m.on_stacked_backward(ws)
        return g

    def _backward(self, entries: Sequence[tuple[str, Layer]], g: Array, ws: Workspace | None = None) -> Array:
        bwd = self._bwd if ws is None else self._ws_hooks[1]
        views = _Views()
        for i in range(len(entries) - 1, -1, -1):
            name, layer = entries[i]
            if isinstance(layer, Residual):
                gin = layer.merge_grad(g, self._backward(layer.body, g))  # dx = g + J_fᵀ g
            elif ws is not None and i in ws.g_out:
                gin = layer.backward(g, out=ws.g_out[i])
            else:
                gin = layer.backward(g)
                if ws is not None and name in ws.grad_slot:
                    ws.loose_grad_in[name] = gin
            hooks = bwd.get(name)
            if hooks:
                seen_g, seen_in = views.of(g), views.of(gin)
                for hook in hooks:
                    hook(name, layer, seen_in, seen_g)
            g = gin
        return g

    def _workspace_for(self, x: Array) -> Workspace | None:
        """The stacked workspace of this input's shape, when every active monitor takes stacked passes."""
        if not self._stacked:
            return None
        key = (x.shape, x.dtype.str)
        if key not in self._plans:
            if len(self._plans) >= 4:  # e.g. a last partial batch: keep a few shapes, not every one
                self._plans.clear()
            self._plans[key] = plan(self.layers, x.shape, x.dtype)
        ws = self._plans[key]
        if ws is not None:
            ws.inputs.clear()
            ws.loose_grad_in.clear()
            if self._ws_hooks_of is not ws:
                self._ws_hooks = (self._hook_table("on_forward", ws), self._hook_table("on_backward", ws))
                self._ws_hooks_of = ws
        return ws

    def _hook_table(self, method: str, ws: Workspace | None) -> dict[str, list]:
        """Per layer, the active monitors' ``method`` hooks (stacked layers excepted when ``ws`` is given)."""
        table: dict[str, list] = {}
        stacked = {} if ws is None else ws.slot if method == "on_forward" else ws.grad_slot
        for name, _ in self.named_layers():
            if name in stacked:
                continue
            hooks = [getattr(m, method) for m in self._active if _wants_layer(m, name)]
            if hooks:
                table[name] = hooks
        return table

    # -- hooks -----------------------------------------------------------------------------
    def attach(self, *monitors: Any) -> Handle:
        """Attach monitors; use as ``with net.attach(m): ...`` so they are always detached."""
        new = as_monitors(monitors)
        for i, m in enumerate(new):
            if any(m is o for o in [*self._monitors, *new[:i]]):
                # a monitor's on_attach declares its layers and its buffers once: twice would reset them
                raise ValueError(f"this {type(m).__name__} is already attached to this network; attach a "
                                 "monitor once (a second monitor records the same layers twice)")
        names = [n for n, _ in self.named_layers()]
        layers = dict(self.named_layers())
        attached: list[Any] = []
        try:
            for m in new:
                if hasattr(m, "on_attach"):
                    m.on_attach(names, layers)
                attached.append(m)
        except BaseException:
            _notify_detach(attached)  # nothing was hooked yet: only undo the on_attach calls that ran
            raise
        self._monitors = self._monitors + new
        self.begin_step(None)
        return Handle(lambda: self._detach(new))

    def _detach(self, monitors: list[Any]) -> None:
        self._monitors = [m for m in self._monitors if all(m is not d for d in monitors)]
        self.begin_step(None)
        _notify_detach(monitors)

    @property
    def monitors(self) -> tuple[Any, ...]:
        """The attached monitors."""
        return tuple(self._monitors)

    def begin_step(self, step: int | None) -> None:
        """Select the monitors whose schedule includes ``step`` (None: all) for the coming passes."""
        active = [m for m in self._monitors if step is None or _wants_step(m, step)]
        # Rebuild only if the active monitors changed or one was attached/detached since the last build.
        # `is` detects the latter because attach/detach replace _monitors with a new list, never mutate it.
        if self._active == active and self._active_of is self._monitors:
            return
        self._active, self._active_of = active, self._monitors
        self._fwd, self._bwd = self._hook_table("on_forward", None), self._hook_table("on_backward", None)
        self._step_hooks = [m.on_step for m in active]
        # Stacked passes only when every active monitor takes them: the buffers are reused every step,
        # and another monitor may keep the arrays it is handed.
        self._stacked = bool(active) and all(getattr(m, "stacked", False) for m in active)
        self._ws_hooks_of = None

    def end_step(self, step: int, info: StepInfo) -> None:
        """Hand the step's network-level facts to the active monitors."""
        for hook in self._step_hooks:
            hook(step, info)


class _Views:
    """One read-only view per array within a pass (a layer's y is the next one's x, its ∂L/∂x the
    previous one's ∂L/∂y), so a monitor sees the same object at both and measures it once."""

    __slots__ = ("array", "view")

    def __init__(self) -> None:
        self.array: Array | None = None
        self.view: Array | None = None

    def of(self, a: Array) -> Array:
        if a is not self.array:
            self.array, self.view = a, readonly(a)
        return self.view


def _notify_detach(monitors: Sequence[Any]) -> None:
    for m in monitors:
        if hasattr(m, "on_detach"):
            m.on_detach()


def _wants_step(m: Any, step: int) -> bool:
    f = getattr(m, "wants_step", None)
    return True if f is None else bool(f(step))


def _wants_layer(m: Any, name: str) -> bool:
    f = getattr(m, "wants_layer", None)
    return True if f is None else bool(f(name))


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def mlp(
    in_dim: int,
    out_dim: int,
    depth: int = 3,
    width: int = 64,
    activation: str = "relu",
    init: str = "he_normal",
    weight_scale: float = 1.0,
    bias_scale: float = 0.0,
    batch_norm: bool = False,
    layer_norm: bool = False,
    residual: bool = False,
    dropout: float = 0.0,
    dtype: Any = "float64",
    rng: np.random.Generator | int | None = 0,
) -> Network:
    """A multilayer perceptron of ``depth`` hidden layers of ``width`` units and an output Dense.

    Hidden layer: Dense → [BatchNorm | LayerNorm] → activation → [Dropout]; with ``residual``, every
    hidden layer after the first is wrapped as ``x + f(x)``. Weights: with ``init="normal"``,
    W ~ N(0, weight_scale²/fan_in) (the mean-field σ_w convention); any other init is multiplied by
    ``weight_scale``. Biases ~ N(0, bias_scale²). Names give kind and position: ``dense_0``, ``tanh_1``…
    """
    in_dim = _positive_int("in_dim", in_dim)
    out_dim = _positive_int("out_dim", out_dim)
    depth = _positive_int("depth", depth, minimum=0)
    width = _positive_int("width", width)
    get_activation(activation)
    get_init(init)
    if not np.isfinite(weight_scale) or weight_scale < 0:
        raise ValueError(f"weight_scale={weight_scale!r} must be a finite number >= 0")
    if not np.isfinite(bias_scale) or bias_scale < 0:
        raise ValueError(f"bias_scale={bias_scale!r} must be a finite number >= 0")
    if batch_norm and layer_norm:
        raise ValueError("batch_norm=True and layer_norm=True: choose at most one normalisation")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
    dt = resolve_dtype(dtype)
    if rng is None or isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(rng)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")
    # Independent streams: initialisation must not shift when dropout draws, and vice versa.
    init_rng, dropout_rng = rng.spawn(2)

    counter = iter(range(1 << 30))

    def named(layer: Layer) -> tuple[str, Layer]:
        return f"{layer.kind}_{next(counter)}", layer

    def dense(fan_in: int, fan_out: int) -> tuple[str, Layer]:
        if init == "normal":
            W = init_weights("normal", (fan_in, fan_out), init_rng, std=weight_scale / np.sqrt(fan_in))
        else:
            W = init_weights(init, (fan_in, fan_out), init_rng) * weight_scale
        b = init_rng.normal(0.0, bias_scale, size=fan_out) if bias_scale > 0 else np.zeros(fan_out)
        return named(Dense(W.astype(dt), b.astype(dt)))

    def hidden(fan_in: int) -> list[tuple[str, Layer]]:
        block = [dense(fan_in, width)]
        if batch_norm:
            block.append(named(BatchNorm(width, dtype=dt)))
        if layer_norm:
            block.append(named(LayerNorm(width, dtype=dt)))
        block.append(named(Activation(activation)))
        if dropout > 0:
            block.append(named(Dropout(dropout, dropout_rng)))
        return block

    layers: list[tuple[str, Layer]] = []
    for i in range(depth):
        if residual and i > 0:
            res_name = f"residual_{next(counter)}"
            layers.append((res_name, Residual(hidden(width))))
        else:
            layers.extend(hidden(in_dim if i == 0 else width))
    layers.append(dense(width if depth else in_dim, out_dim))
    stack_parameters([la for _, la in layers if isinstance(la, Dense)])
    return Network(layers)


__all__ = ["Network", "StepInfo", "mlp", "resolve_dtype"]
