"""Cost of ``gradlab.torch.watch`` on PyTorch CPU training steps, side by side in one process (one torch
thread, float32, interleaved repeats, medians): the bare step; watch every step with every statistic;
watch every 10th step; and two hand-written instrumentations computing the same statistics with forward
hooks and ``register_full_backward_hook`` — the usual recipe (``.item()`` per statistic) and an expert's
(statistics stacked on the device, one transfer per step).

Run: ``python benchmarks/bench_torch.py [--repeats N]``. Prints a Markdown table (the README's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_medians

import gradlab.torch as gt

BATCH = 128


def mlp() -> nn.Module:
    """20 Linear(64, 64) → Tanh blocks and a head: the issue's 20×64 MLP."""
    layers: list[nn.Module] = []
    for _ in range(20):
        layers += [nn.Linear(64, 64), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def cnn() -> nn.Module:
    """A small CNN on 1×16×16 inputs: four Conv(3×3) → BatchNorm → ReLU blocks, pooling and a head."""
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else 16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10))


def batch(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (BATCH, 1, 16, 16) if isinstance(model[0], nn.Conv2d) else (BATCH, 64)
    return torch.randn(*shape, generator=g), torch.randint(0, 10, (BATCH,), generator=g)


def trainer(build, instrument: str):
    """A closure running one SGD step of a fresh model, instrumented as ``instrument`` says."""
    torch.manual_seed(0)
    model = build()
    x, y = batch(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    watch = None
    if instrument == "watch":
        watch = gt.watch(model, opt, verbose=False)
    elif instrument == "watch/10":
        watch = gt.watch(model, opt, every=10, verbose=False)
    elif instrument in ("recipe", "expert"):
        hand_hooks(model, expert=instrument == "expert")
    elif instrument.startswith("wandb"):
        import wandb

        wandb.watch(model, log="all", log_freq=1 if instrument == "wandb" else 10)
    sink: list = []

    def step() -> None:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if watch is not None:
            watch.step(loss)
        elif instrument in ("recipe", "expert"):
            model._gradlab_bench_flush(sink, loss)
        elif instrument.startswith("wandb"):
            import wandb

            wandb.log({"loss": loss.item()})

    return step


def hand_hooks(model: nn.Module, expert: bool) -> None:
    """Forward hooks and full backward hooks computing mean, std, ‖∂L/∂y‖, ‖∂L/∂x‖ per module and
    ‖∂L/∂W‖, ‖W‖ per parameter: with ``.item()`` each (the usual recipe) or stacked (expert)."""
    pending: list[torch.Tensor] = []
    leaves = [m for m in model.modules() if not list(m.children())]

    def keep(t: torch.Tensor) -> None:
        pending.append(t.detach() if expert else t.detach().item())

    def fwd(m, args, out):
        keep(out.mean())
        keep(out.std())

    def bwd(m, grad_in, grad_out):
        keep(grad_out[0].norm())
        if grad_in[0] is not None:
            keep(grad_in[0].norm())

    for m in leaves:
        m.register_forward_hook(fwd)
        m.register_full_backward_hook(bwd)

    def flush(sink: list, loss: torch.Tensor) -> None:
        for p in model.parameters():
            keep(p.grad.norm())
            keep(p.norm())
        keep(loss)
        if expert:
            sink.append(torch.stack(pending).tolist())
        else:
            sink.append(list(pending))
        pending.clear()
        if len(sink) > 100:
            sink.clear()

    model._gradlab_bench_flush = flush


def wandb_ready() -> bool:
    """wandb, if installed, in offline mode (no account, no network) writing under a temp folder."""
    try:
        import wandb
    except ImportError:
        return False
    import os
    import tempfile

    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=tempfile.mkdtemp())
    wandb.init(project="gradlab-bench", mode="offline")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, float32, batch {BATCH}; "
          f"medians of {args.repeats} interleaved steps\n")
    cols = ["bare", "watch", "watch/10", "recipe", "expert"]
    print("| model | bare step | watch, every step | watch, every 10 | hand-written recipe | expert hooks "
          "| watch vs recipe overhead |")
    print("|---|---|---|---|---|---|---|")
    for label, build in (("MLP 20×64, tanh", mlp), ("CNN 4×(conv-BN-ReLU), 16 ch", cnn)):
        t = interleaved_medians({c: trainer(build, c) for c in cols}, args.repeats, warmup=10)
        over = {c: t[c] / t["bare"] - 1 for c in cols}
        print(f"| {label} | {t['bare'] * 1e3:.2f} ms | {t['watch'] * 1e3:.2f} ms (+{over['watch']:.0%}) "
              f"| {t['watch/10'] * 1e3:.2f} ms (+{over['watch/10']:.0%}) "
              f"| {t['recipe'] * 1e3:.2f} ms (+{over['recipe']:.0%}) "
              f"| {t['expert'] * 1e3:.2f} ms (+{over['expert']:.0%}) "
              f"| {over['watch'] / over['recipe']:.2f}× |")
    # wandb runs a service process that takes CPU from everything else: measured apart, after the rest
    if not wandb_ready():
        print("\n(wandb is not installed: no wandb.watch comparison)")
        return
    print("\n| model | bare step | wandb.watch(log='all'), log_freq=1 | log_freq=10 |")
    print("|---|---|---|---|")
    for label, build in (("MLP 20×64, tanh", mlp), ("CNN 4×(conv-BN-ReLU), 16 ch", cnn)):
        fns = {c: trainer(build, c) for c in ("bare", "wandb", "wandb/10")}
        t = interleaved_medians(fns, args.repeats, 10)
        over = {c: t[c] / t["bare"] - 1 for c in t}
        print(f"| {label} | {t['bare'] * 1e3:.2f} ms | {t['wandb'] * 1e3:.2f} ms (+{over['wandb']:.0%}) "
              f"| {t['wandb/10'] * 1e3:.2f} ms (+{over['wandb/10']:.0%}) |")


if __name__ == "__main__":
    main()
