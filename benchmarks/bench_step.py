"""One training step (forward, loss, backward, SGD update) of the bare network, against the step's
matrix products alone (the GEMM floor) and, when installed, PyTorch CPU — float32, one BLAS thread.

Run: ``python benchmarks/bench_step.py [--repeats N]``. Prints medians (ms) and ratios measured side
by side, interleaved, in one process.
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
from gradlab.nn.losses import softmax_cross_entropy


def gradlab_step(depth: int, width: int, batch: int, act: str):
    """A closure running one gradlab training step."""
    net = gradlab.mlp(width, CLASSES, depth=depth, width=width, activation=act, dtype="float32", rng=0)
    opt = gradlab.SGD(1e-4)
    x = np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, CLASSES, batch)
    params, grads = net.params(), net.grads()

    def step() -> None:
        _, g = softmax_cross_entropy(net.forward(x), y)
        net.backward(g)
        opt.step(params, grads)

    return step


def gemm_floor(depth: int, width: int, batch: int, act: str):
    """A closure running only the step's matrix products, into preallocated outputs."""
    rng = np.random.default_rng(0)
    Ws = [rng.standard_normal((width, width)).astype(np.float32) for _ in range(depth)]
    Ws.append(rng.standard_normal((width, CLASSES)).astype(np.float32))
    hs = [rng.standard_normal((batch, width)).astype(np.float32) for _ in range(depth + 1)]
    outs = [np.empty((batch, W.shape[1]), np.float32) for W in Ws]
    dWs = [np.empty_like(W) for W in Ws]
    dxs = [np.empty((batch, width), np.float32) for _ in Ws]

    def step() -> None:
        for h, W, o in zip(hs, Ws, outs, strict=True):
            np.matmul(h, W, out=o)
        for h, W, o, dW, dx in zip(hs, Ws, outs, dWs, dxs, strict=True):
            np.matmul(h.T, o, out=dW)
            np.matmul(o, W.T, out=dx)

    return step


def torch_step(depth: int, width: int, batch: int, act: str):
    """A closure running the same network's step in PyTorch (CPU), or None without torch."""
    built = torch_mlp(depth, width, act)
    if built is None:
        return None
    import torch

    model, opt = built
    x = torch.randn(batch, width)
    y = torch.randint(0, CLASSES, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    with threadpool_limits(1):
        print(f"BLAS: {blas_description()}")
        header = f"{'shape':<26}{'gradlab ms':>11}{'GEMM ms':>9}{'torch ms':>9}{'/GEMM':>7}{'/torch':>8}"
        print(header)
        for depth, width, batch, act in SHAPES:
            fns = {
                "gradlab": gradlab_step(depth, width, batch, act),
                "gemm": gemm_floor(depth, width, batch, act),
            }
            t = torch_step(depth, width, batch, act)
            if t is not None:
                fns["torch"] = t
            reps = max(5, args.repeats if width < 1024 else args.repeats // 4)
            m = interleaved_medians(fns, reps)
            torch_ms = f"{m['torch'] * 1e3:9.2f}" if "torch" in m else f"{'—':>9}"
            vs_torch = f"{m['gradlab'] / m['torch']:7.2f}×" if "torch" in m else f"{'—':>8}"
            shape = f"{depth}×{width}×{batch} {act}"
            print(
                f"{shape:<26}{m['gradlab'] * 1e3:11.2f}{m['gemm'] * 1e3:9.2f}{torch_ms}"
                f"{m['gradlab'] / m['gemm']:6.2f}×{vs_torch}"
            )


if __name__ == "__main__":
    main()
