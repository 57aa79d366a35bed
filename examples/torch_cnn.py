"""A deep sigmoid CNN whose gradient vanishes, and the same CNN as Conv → BatchNorm → ReLU, which trains;
watched by gradlab, saved into one results folder, diagnosed and reported. Units of a conv layer are its
channels: a channel is dead when it is off at every sample and every position.

    python examples/torch_cnn.py [OUT]      # OUT defaults to runs/torch_cnn; report in OUT/report
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import gradlab
import gradlab.torch

CONVS, CHANNELS, STEPS, BATCH, LR = 10, 16, 120, 64, 0.05


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 8×8 digits shipped with gradlab as (N, 1, 8, 8) images in [0, 1]."""
    from gradlab.experiment.data import load_digits_raw

    images, labels = load_digits_raw()
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return x, torch.tensor(labels, dtype=torch.long)


def cnn(batch_norm: bool) -> nn.Sequential:
    """CONVS 3×3 convolutions (sigmoid, or BatchNorm + ReLU) and a linear head."""
    layers: list[nn.Module] = []
    for i in range(CONVS):
        layers.append(nn.Conv2d(1 if i == 0 else CHANNELS, CHANNELS, 3, padding=1))
        layers += [nn.BatchNorm2d(CHANNELS), nn.ReLU()] if batch_norm else [nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(CHANNELS * 64, 10))


def train(name: str, model: nn.Module, out: Path) -> gradlab.torch.Watch:
    """A plain PyTorch loop; the two gradlab lines are marked."""
    x, y = digits()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    with gradlab.torch.watch(model, opt, run=name, every=2) as w:  # gradlab: every other step
        for _ in range(STEPS):
            idx = torch.randint(0, len(x), (BATCH,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if not w.step(loss):  # gradlab
                break
    w.save(out)
    return w


def main(out: Path) -> None:
    torch.manual_seed(0)
    train("sigmoid-cnn", cnn(batch_norm=False), out)
    train("conv-bn-relu", cnn(batch_norm=True), out)
    runs, metrics = gradlab.load_results(out)
    findings = gradlab.diagnose(metrics, runs, layers=gradlab.load_layers(out))
    print(gradlab.format_findings(findings, runs=runs))
    print(f"report: {gradlab.load_and_report(out, out / 'report')}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/torch_cnn"))
