"""A residual MLP trained with a learning rate that makes it diverge, and the fix (a learning rate thirty
times lower, plus gradient clipping at 5); watched by gradlab, saved into one folder, diagnosed, reported.

    python examples/torch_residual.py [OUT]   # OUT defaults to runs/torch_residual; report in OUT/report
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import gradlab
import gradlab.torch

BLOCKS, WIDTH, STEPS, BATCH = 8, 64, 150, 128


class Block(nn.Module):
    """x + W₂ ReLU(W₁ LayerNorm(x)): a pre-norm residual block."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.act, self.fc2 = nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


def resmlp() -> nn.Sequential:
    """An input projection, BLOCKS residual blocks and a linear head."""
    return nn.Sequential(nn.Linear(64, WIDTH), *(Block(WIDTH) for _ in range(BLOCKS)), nn.Linear(WIDTH, 10))


def train(name: str, lr: float, clip: float | None, out: Path) -> gradlab.torch.Watch:
    """A plain PyTorch loop; the two gradlab lines are marked."""
    from gradlab.experiment.data import load_digits_raw

    images, labels = load_digits_raw()
    x, y = torch.tensor(images / 16.0, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)
    torch.manual_seed(0)
    model = resmlp()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    with gradlab.torch.watch(model, opt, run=name) as w:  # gradlab
        for _ in range(STEPS):
            idx = torch.randint(0, len(x), (BATCH,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if not w.step(loss):  # gradlab: False once the loss or a gradient is not finite
                break
    w.save(out)
    return w


def main(out: Path) -> None:
    train("lr-3", lr=3.0, clip=None, out=out)
    train("lr-0.1-clip-5", lr=0.1, clip=5.0, out=out)
    runs, metrics = gradlab.load_results(out)
    findings = gradlab.diagnose(metrics, runs, layers=gradlab.load_layers(out))
    print(gradlab.format_findings(findings, runs=runs))
    print(f"report: {gradlab.load_and_report(out, out / 'report')}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/torch_residual"))
