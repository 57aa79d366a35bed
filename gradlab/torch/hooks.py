"""The hooks behind :class:`gradlab.torch.handle.Watch`, armed only on the steps the schedule records.

Forward hooks on the watched modules measure each output (and, for in-place modules, a pre-hook
hooks ∂L/∂x before the module overwrites x); tensor hooks on outputs measure ∂L/∂y, which is also
∂L/∂x of the next watched module when it consumes that output; as the backward pass ends, one fused
call takes every parameter gradient's norm (before the loop can clip them); the optimizer's step
hooks measure the update it applied. Every value goes to :class:`gradlab.torch.collect.StepStats`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradlab.statistics import layer_statistics
from gradlab.torch.collect import StepStats, norm, norms
from gradlab.torch.discover import Layer


def units_of(t: torch.Tensor | None) -> int | None:
    return int(t.shape[1]) if t is not None and t.ndim > 1 else None


class Hooks:
    """The hook half of a Watch: what runs inside the user's forward, backward and optimizer step.

    The Watch initialises the state these methods share (``layers``, ``stats``, ``_wants`` …).
    """

    stats: StepStats
    step_no: int
    hist_schedule: Callable[[int], bool]
    _hists_now: bool  # this step keeps histograms
    layers: list[Layer]
    wanted: frozenset[str]
    optimizer: torch.optim.Optimizer | None

    def _metrics_of(self, lay: Layer) -> frozenset[str]:
        rules = lay.rules
        bounded = rules is not None and rules.saturated is not None
        rectifier = rules is not None and rules.inactive is not None
        return frozenset(layer_statistics(lay.weight is not None, bounded, rectifier)) & self.wanted

    def _arm(self) -> None:
        """Register the hooks of a recorded step (a step the schedule skips has none)."""
        self._begin()
        for lay in self.layers:
            wants = self._wants[lay.name]
            if getattr(lay.module, "inplace", False) and "grad_in_norm" in wants:
                # an in-place module overwrites x: ∂L/∂x must be hooked before it runs
                self._handles.append(lay.module.register_forward_pre_hook(self._pre_hook(lay)))
            self._handles.append(lay.module.register_forward_hook(self._post_hook(lay, wants)))
        if not self._signals:  # no ∂L/∂y hook to end the backward pass with: one hook per parameter
            for p in self._params:
                self._handles.append(p.register_post_accumulate_grad_hook(self._grad_hook))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(self._before_update))
            self._handles.append(self.optimizer.register_step_post_hook(self._after_update))

    def _begin(self) -> None:
        self.stats.reset(self.recorder.n_steps)
        self._hists_now = self.hist_schedule(self.step_no)
        self._calls.clear()
        self._outputs.clear()
        self._feeds.clear()
        self._grad_norms = None
        self._grads_queued = False
        self._clipped = None

    def _disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outputs.clear()

    def _call_name(self, lay: Layer, count: bool) -> str:
        n = self._calls.get(lay.name, 0) + 1
        if count:
            self._calls[lay.name] = n
        return lay.name if n == 1 else f"{lay.name}@{n}"

    def _input_signal(self, name: str, x: torch.Tensor) -> None:
        """Measure ∂L/∂x of layer ``name``: through its producer's ∂L/∂y hook when x is the output of
        a watched module (one norm, not two), else with a hook of its own."""
        producer = self._outputs.get(id(x))
        if producer is not None and producer[1] is x:
            self._feeds.setdefault(producer[0], []).append(name)
        else:
            x.register_hook(self._signal(name, "grad_in_norm"))

    def _pre_hook(self, lay: Layer) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if torch.is_grad_enabled() and x is not None and x.requires_grad:
                self._input_signal(self._call_name(lay, count=False), x)
        return hook

    def _post_hook(self, lay: Layer, wants: frozenset[str]) -> Callable[..., None]:
        moments = "act_mean" in wants
        units = bool(wants & {"saturation", "inactive_frac"})
        signal_out = "grad_out_norm" in wants
        signal_in = "grad_in_norm" in wants and not getattr(lay.module, "inplace", False)

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not torch.is_grad_enabled():
                return
            name = self._call_name(lay, count=True)
            if name not in self._order:
                self._order[name] = len(self._order)
            y = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(y, torch.Tensor):
                return
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if name not in self._units:  # units (axis 1) of input and output, for the layers table
                self._units[name] = (units_of(x), units_of(y))
                if self.batch_size is None and x is not None and x.ndim > 0:
                    self.batch_size = int(x.shape[0])
            if signal_in and x is not None and x.requires_grad:
                self._input_signal(name, x)
            self.stats.forward(name, y.detach(), None if x is None else x.detach(), lay.rules, moments, units)
            if self._hists_now:  # now: an in-place module may overwrite y later
                self.stats.hist(name, "act", y.detach())
            if y.requires_grad:
                self._outputs[id(y)] = (name, y)  # kept until the step ends, so the id stays its own
                if signal_out:
                    y.register_hook(self._signal(name, "grad_out_norm"))
        return hook

    def _signal(self, name: str, metric: str) -> Callable[[torch.Tensor], None]:
        def hook(g: torch.Tensor) -> None:
            if not self._grads_queued:  # once per backward pass: the parameters' gradients at its end
                self._grads_queued = True
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
            g = g.detach()
            size = norm(g)
            self.stats.grad(name, metric, g, size)
            if metric == "grad_out_norm" and self._hists_now:
                self.stats.hist(name, "grad", g)
            if metric == "grad_out_norm":
                for consumer in self._feeds.get(name, ()):
                    self.stats.grad(consumer, "grad_in_norm", g, size)
        return hook

    def _end_of_backward(self) -> None:
        """Every parameter gradient's norm, in one fused call, as the backward pass ends: before the
        loop can clip them. (Gradient accumulation: the last backward pass of the step counts.)"""
        self._grads_queued = False
        have = [p for p in self._params if p.grad is not None]
        if not have:
            return
        self._grad_norms = torch.stack(norms([p.grad.detach() for p in have]))
        self._grad_params = have

    def _grad_hook(self, p: nn.Parameter) -> None:
        """The per-parameter fallback of :meth:`_end_of_backward` (no ∂L/∂y hook this step)."""
        self._param_norms[p] = norm(p.grad.detach())

    def _before_update(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        grads = [p.grad.detach() for p in self._params if p.grad is not None]
        if grads:  # after any clipping: with the norms before it, whether clipping fired
            self._clipped = torch.linalg.vector_norm(torch.stack(norms(grads)))
        self._snap = [lay for lay in self._updated if lay.name in self._order]
        if self._snap:
            self._before = torch._foreach_mul([lay.weight.detach() for lay in self._snap], 1.0)  # copies

    def _after_update(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._snap:
            return
        after = [lay.weight.detach() for lay in self._snap]
        w = torch.stack(norms(self._before))
        dw = torch.stack(norms(torch._foreach_sub(after, self._before)))
        names = [lay.name for lay in self._snap]
        self.stats.put_many(names, "weight_norm", w)
        self.stats.put_many(names, "update_ratio", dw / w)  # 0 when a float32 update rounded away
        self._snap, self._before = [], []

    def _param_grad_stats(self) -> None:
        """grad_norm and grad_b_norm of the recorded layers, from the per-parameter norms, one vector."""
        names, metrics, index = [], [], []
        for i, p in enumerate(self._grad_params):
            owner = self._param_owner.get(id(p))
            if owner is not None and owner[0].name in self._order and owner[1] in self._wants[owner[0].name]:
                names.append(owner[0].name)
                metrics.append(owner[1])
                index.append(i)
        if index:
            picked = self._grad_norms[torch.tensor(index, device=self._grad_norms.device)]
            self.stats.put_vector(names, metrics, picked)
            for name, metric, i in zip(names, metrics, index, strict=True):
                g = self._grad_params[i].grad
                if g is not None:
                    self.stats.checks.append((name, metric, g))
