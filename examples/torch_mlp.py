"""A 20-layer sigmoid MLP whose gradient vanishes, and a He-initialised ReLU MLP that trains, watched by
gradlab in a plain PyTorch loop; both saved into one results folder, diagnosed and reported.

    python examples/torch_mlp.py [OUT]      # OUT defaults to runs/torch_mlp; report in OUT/report
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import gradlab
import gradlab.torch
from gradlab.experiment.data import load_digits_raw

DEPTH, WIDTH, STEPS, BATCH, LR = 20, 64, 150, 128, 0.1


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 8×8 digits shipped with gradlab, pixels scaled to [0, 1]."""
    images, labels = load_digits_raw()
    return torch.tensor(images / 16.0, dtype=torch.float32), torch.tensor(labels, dtype=torch.long)


def mlp(activation: type[nn.Module], init: str) -> nn.Sequential:
    """DEPTH hidden Linear → activation blocks and a Linear head, initialised as ``init`` says."""
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        layers += [nn.Linear(64 if i == 0 else WIDTH, WIDTH), activation()]
    model = nn.Sequential(*layers, nn.Linear(WIDTH, 10))
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if init == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:  # Glorot & Bengio's "standard" init: U(−1/√fan_in, 1/√fan_in)
                bound = 1 / m.in_features**0.5
                nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    return model


def train(name: str, model: nn.Module, out: Path) -> gradlab.torch.Watch:
    """A plain PyTorch loop; the two gradlab lines are marked."""
    x, y = digits()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    with gradlab.torch.watch(model, opt, run=name) as w:  # gradlab
        for _ in range(STEPS):
            idx = torch.randint(0, len(x), (BATCH,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            if not w.step(loss):  # gradlab: False once the run diverged
                break
    w.save(out)
    return w


def main(out: Path) -> None:
    torch.manual_seed(0)
    train("sigmoid-standard", mlp(nn.Sigmoid, "standard"), out)
    train("relu-he", mlp(nn.ReLU, "he"), out)
    runs, metrics = gradlab.load_results(out)
    findings = gradlab.diagnose(metrics, runs, layers=gradlab.load_layers(out))
    print(gradlab.format_findings(findings, runs=runs))
    print(f"report: {gradlab.load_and_report(out, out / 'report')}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/torch_mlp"))
