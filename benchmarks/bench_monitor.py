"""Cost of the default monitor as users run it: ``gradlab.train_loop`` with the :class:`GradientMonitor`
that ``gradlab.run`` attaches (every statistic, every layer, every step, default histogram schedule),
against the bare loop, and — when PyTorch is installed — the same networks in PyTorch CPU, bare and
with forward and full backward hooks computing the same statistics two ways: ``.item()`` per
statistic, and "lean": every statistic kept on the device, stacked and transferred once per step.

One call = one run of ``--steps`` steps (plus the final measurement, as ``train_loop`` does), so the
histogram schedule is paid in proportion; times are per step, medians of interleaved repeats in one
process, float32, one BLAS thread. "no hists" is the default monitor without its histogram schedule;
"hooks only" a stacked monitor that computes nothing (the machinery's own cost: the floor).

Run: ``python benchmarks/bench_monitor.py [--steps N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLASSES, blas_description, interleaved_medians, torch_mlp

import gradlab
from gradlab.experiment.config import Config
from gradlab.experiment.train import default_monitor
from gradlab.nn.hooks import Monitor
from gradlab.nn.losses import softmax_cross_entropy

SHAPES = [(10, 64, 128, "relu"), (50, 128, 64, "tanh"), (20, 256, 128, "relu")]  # issue 14's three


class HooksOnly(Monitor):
    """A stacked monitor that computes nothing: the cost of the hook machinery itself (dispatch, the
    stacked workspace, the optimizer's ‖ΔW‖²), the floor under any statistic."""

    stacked = True


def gradlab_run(depth: int, width: int, batch: int, act: str, steps: int, mode: str):
    """A closure training ``steps`` steps through ``train_loop``: bare, ``"default"`` monitor,
    ``"nohist"`` (the default monitor without histograms) or ``"hooks"`` (:class:`HooksOnly`)."""
    init = "he_normal" if act == "relu" else "glorot_uniform"
    net = gradlab.mlp(width, CLASSES, depth=depth, width=width, activation=act, init=init, dtype="float32")
    x = np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, CLASSES, batch)
    config = Config(depth=depth, width=width, activation=act, steps=steps, batch_size=batch, lr=1e-4)

    def call() -> None:
        opt = gradlab.SGD(1e-4)
        stream = itertools.repeat((x, y))
        if mode == "bare":
            gradlab.train_loop(net, stream, softmax_cross_entropy, opt, steps)
            return
        monitor = HooksOnly() if mode == "hooks" else default_monitor(config, "bench")
        if mode == "nohist":
            monitor.observer.hist_schedule = lambda s: False
        with net.attach(monitor):
            gradlab.train_loop(net, stream, softmax_cross_entropy, opt, steps)

    return call


def torch_run(depth: int, width: int, batch: int, act: str, steps: int, mode: str):
    """A closure of ``steps + 1`` PyTorch steps: ``"bare"``, ``"item"`` (a ``.item()`` per statistic) or
    ``"lean"`` (statistics stacked on the device, one transfer per step)."""
    import torch

    model, opt = torch_mlp(depth, width, act)
    x, y = torch.randn(batch, width), torch.randint(0, CLASSES, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    rows: list[list[float]] = []
    row: list = []
    put = (lambda t: row.append(t.item())) if mode == "item" else row.append
    hooked = mode != "bare"

    def fwd(mod, inp, out):
        o = out.detach()
        put(o.mean())
        put(o.std())
        if isinstance(mod, torch.nn.ReLU):
            inactive = o <= 0
            put(inactive.float().mean())
            put(inactive.all(dim=0).float().mean())
        elif isinstance(mod, torch.nn.Tanh):
            put((o.abs() > 0.99).float().mean())
        put((~torch.isfinite(o)).sum().float())

    def bwd(mod, grad_in, grad_out):
        for g in (*grad_in, *grad_out):
            if g is not None:
                put(g.norm())

    if hooked:
        for m in model:
            m.register_forward_hook(fwd)
            m.register_full_backward_hook(bwd)
    xin = x.requires_grad_(hooked)  # full backward hooks need a grad-requiring input

    def step() -> None:
        row.clear()
        opt.zero_grad(set_to_none=False)
        out = model(xin)
        loss = loss_fn(out, y)
        loss.backward()
        if hooked:
            for m in model:
                if isinstance(m, torch.nn.Linear):
                    gw = m.weight.grad
                    wn, gn = m.weight.norm(), gw.norm()
                    for t in (gn, m.bias.grad.norm(), wn, 1e-4 * gn / wn):  # SGD: ΔW = −lr·∇W
                        put(t)
            put((out.argmax(1) == y).float().mean())
            put(loss.detach())
        opt.step()
        if mode == "lean":
            rows.append(torch.stack([t.float() for t in row]).tolist())  # one transfer
        else:
            rows.append(list(row))

    def call() -> None:
        rows.clear()
        for _ in range(steps + 1):
            step()

    return call


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100, help="steps per run (histograms: default schedule)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    has_torch = torch_mlp(1, 2, "relu") is not None
    with threadpool_limits(1):
        print(f"BLAS: {blas_description()}; {args.steps}-step runs, {args.repeats} interleaved repeats")
        head = (f"{'shape':<18}{'bare ms':>9}{'monitored':>11}{'overhead':>10}{'no hists':>10}"
                f"{'hooks only':>12}")
        if has_torch:
            head += f"{'torch ms':>10}{'+.item()':>10}{'+lean':>9}{'vs .item()':>12}{'vs lean':>9}"
        print(head)
        for depth, width, batch, act in SHAPES:
            fns = {m: gradlab_run(depth, width, batch, act, args.steps, m)
                   for m in ("bare", "default", "nohist", "hooks")}
            if has_torch:
                for m in ("bare", "item", "lean"):
                    fns[f"torch_{m}"] = torch_run(depth, width, batch, act, args.steps, m)
            med = interleaved_medians(fns, args.repeats, warmup=1)
            m = {k: v / (args.steps + 1) * 1e3 for k, v in med.items()}  # ms per step
            line = (
                f"{f'{depth}×{width}×{batch} {act}':<18}{m['bare']:9.2f}{m['default']:11.2f}"
                f"{m['default'] / m['bare'] - 1:+10.1%}{m['nohist'] / m['bare'] - 1:+10.1%}"
                f"{m['hooks'] / m['bare'] - 1:+12.1%}"
            )
            if has_torch:
                line += (
                    f"{m['torch_bare']:10.2f}{m['torch_item']:10.2f}{m['torch_lean']:9.2f}"
                    f"{m['default'] / m['torch_item']:11.2f}×{m['default'] / m['torch_lean']:8.2f}×"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
