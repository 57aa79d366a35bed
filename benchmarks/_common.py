"""Shared helpers of the benchmark scripts: BLAS description, timing by interleaved medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

SHAPES = [
    # (depth, width, batch, activation)
    (10, 64, 128, "relu"),
    (20, 256, 128, "relu"),
    (5, 1024, 256, "relu"),
    (50, 128, 64, "tanh"),
]


CLASSES = 10


def torch_mlp(depth: int, width: int, act: str):
    """The benchmark network in PyTorch (seeded, one thread) with its SGD optimizer, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers: list = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU() if act == "relu" else torch.nn.Tanh()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, CLASSES))
    return model, torch.optim.SGD(model.parameters(), lr=1e-4)


def blas_description() -> str:
    """Which BLAS library, kernel and thread count numpy uses here."""
    from threadpoolctl import threadpool_info

    parts = []
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            parts.append(
                f"{info.get('internal_api')} {info.get('version')} kernel={info.get('architecture')} "
                f"threads={info.get('num_threads')}"
            )
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def interleaved_medians(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 3
) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation so machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}
