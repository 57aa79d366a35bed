"""Cost of the full default monitor: training steps with and without GradientMonitor, side by side in
one process, and — when PyTorch is installed — the same networks in PyTorch CPU with forward and full
backward hooks computing the same statistics. float32, one BLAS thread, every statistic every step.

"lean" is the monitor restricted to the gradient and weight statistics (``stats=("weights",)``:
no activation moments, saturation or dead units).

Run: ``python benchmarks/bench_monitor.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLASSES, SHAPES, blas_description, interleaved_medians, torch_mlp

import gradlab
from gradlab.monitor.gradient_monitor import GradientMonitor
from gradlab.nn.hooks import StepInfo
from gradlab.nn.losses import accuracy, softmax_cross_entropy
from gradlab.nn.optim import global_norm


def gradlab_step(depth: int, width: int, batch: int, act: str, monitored: bool, stats=None):
    """A closure running one gradlab step, bare or with the monitor (all statistic groups, or ``stats``)."""
    init = "he_normal" if act == "relu" else "glorot_uniform"
    net = gradlab.mlp(width, CLASSES, depth=depth, width=width, activation=act, init=init, dtype="float32")
    opt = gradlab.SGD(1e-4)
    x = np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, CLASSES, batch)
    params, grads = net.params(), net.grads()
    if monitored:
        net.attach(GradientMonitor(hist_every=None, stats=stats))
        opt.measure_updates = True  # as gradlab.experiment.train.train_loop does with a monitor attached
    counter = iter(range(1 << 40))

    def step() -> None:
        s = next(counter)
        net.begin_step(s)
        out = net.forward(x)
        loss, g = softmax_cross_entropy(out, y)
        net.backward(g)
        total = global_norm(grads)
        upd = opt.step(params, grads)
        sq = opt.update_sq_norms if monitored else {}
        net.end_step(s, StepInfo(loss, accuracy(out, y), opt.lr, total, total, False, params, grads, upd, sq))

    return step


def torch_steps(depth: int, width: int, batch: int, act: str):
    """Closures (bare, hooked) of the same network in PyTorch, or None without torch."""
    if torch_mlp(1, 2, act) is None:
        return None
    import torch

    def build(hooked: bool):
        model, opt = torch_mlp(depth, width, act)
        x, y = torch.randn(batch, width), torch.randint(0, CLASSES, (batch,))
        loss_fn = torch.nn.CrossEntropyLoss()
        rows: list[list[float]] = []
        row: list[float] = []

        def fwd(mod, inp, out):
            o = out.detach()
            row.extend([o.mean().item(), o.std().item()])
            if isinstance(mod, torch.nn.ReLU):
                inactive = o <= 0
                row.extend([inactive.float().mean().item(), inactive.all(dim=0).float().mean().item()])
            elif isinstance(mod, torch.nn.Tanh):
                row.append((o.abs() > 0.99).float().mean().item())
            row.append(float((~torch.isfinite(o)).sum().item()))

        def bwd(mod, grad_in, grad_out):
            for g in (*grad_in, *grad_out):
                if g is not None:
                    row.append(g.norm().item())

        if hooked:
            for m in model:
                m.register_forward_hook(fwd)
                m.register_full_backward_hook(bwd)

        def step() -> None:
            row.clear()
            opt.zero_grad(set_to_none=False)
            xin = x.requires_grad_(hooked)  # full backward hooks need a grad-requiring input
            out = model(xin)
            loss = loss_fn(out, y)
            loss.backward()
            if hooked:
                for m in model:
                    if isinstance(m, torch.nn.Linear):
                        w, gw = m.weight, m.weight.grad
                        wn = w.norm().item()
                        row.extend(
                            [gw.norm().item(), m.bias.grad.norm().item(), wn, 1e-4 * gw.norm().item() / wn]
                        )  # SGD: ΔW = −lr·∇W
                row.append((out.argmax(1) == y).float().mean().item())
            opt.step()
            rows.append(list(row))

        return step

    return build(False), build(True)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    with threadpool_limits(1):
        print(f"BLAS: {blas_description()}")
        print(
            f"{'shape':<22}{'bare ms':>9}{'monitored':>11}{'overhead':>10}{'lean':>8}"
            f"{'torch ms':>10}{'torch+hooks':>13}{'overhead':>10}{'gradlab/torch (hooked)':>24}"
        )
        for depth, width, batch, act in SHAPES:
            fns = {
                "bare": gradlab_step(depth, width, batch, act, False),
                "mon": gradlab_step(depth, width, batch, act, True),
                "lean": gradlab_step(depth, width, batch, act, True, stats=("weights",)),
            }
            t = torch_steps(depth, width, batch, act)
            if t is not None:
                fns["torch"], fns["torch_hooks"] = t
            reps = max(5, args.repeats if width < 1024 else args.repeats // 4)
            m = interleaved_medians(fns, reps)
            shape = f"{depth}×{width}×{batch} {act}"
            line = (
                f"{shape:<22}{m['bare'] * 1e3:9.2f}{m['mon'] * 1e3:11.2f}{(m['mon'] / m['bare'] - 1):+10.1%}"
                f"{(m['lean'] / m['bare'] - 1):+8.1%}"
            )
            if t is not None:
                line += (
                    f"{m['torch'] * 1e3:10.2f}{m['torch_hooks'] * 1e3:13.2f}"
                    f"{(m['torch_hooks'] / m['torch'] - 1):+10.1%}{m['mon'] / m['torch_hooks']:23.2f}×"
                )
            print(line)


if __name__ == "__main__":
    main()
