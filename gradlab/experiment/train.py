"""The training loop, and ``run(config)``: build data, network and optimizer from a Config and train.

Step t measures the network after t updates (step 0 = at initialisation), then applies update t+1,
except at the last step. A loss or gradient that turns non-finite ends the run cleanly with status
``diverged``: a result, not an exception.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gradlab.experiment.config import Config
from gradlab.experiment.data import Dataset, batches, make_dataset
from gradlab.monitor.gradient_monitor import GradientMonitor
from gradlab.nn.hooks import StepInfo
from gradlab.nn.losses import accuracy, mse, softmax_cross_entropy
from gradlab.nn.network import Network, mlp
from gradlab.nn.optim import Optimizer, clip_grad_norm, clip_grad_value, global_norm, make_optimizer

if TYPE_CHECKING:
    import pandas as pd

Array = np.ndarray
LossFn = Callable[[Array, Array], tuple[float, Array]]


@dataclass
class LoopResult:
    """How a training loop ended."""

    status: str  # "ok" | "diverged"
    steps_done: int  # updates applied
    diverged_step: int | None = None
    final_loss: float = math.nan


def train_loop(
    net: Network,
    stream: Iterator[tuple[Array, Array]],
    loss_fn: LossFn,
    optimizer: Optimizer,
    steps: int,
    *,
    clip_norm: float = 0.0,
    clip_value: float = 0.0,
    classification: bool = True,
) -> LoopResult:
    """Measure and update ``steps`` times, then measure once more; stop early on non-finite values.

    Attached monitors see every step through ``net.begin_step`` / ``net.end_step``.
    """
    params, grads = net.params(), net.grads()
    optimizer.measure_updates = bool(net.monitors)
    loss = math.nan
    for step in range(steps + 1):
        x, y = next(stream)
        net.begin_step(step)
        with np.errstate(all="ignore"):  # overflow in an exploding net is a result to record
            out = net.forward(x)
            loss, g = loss_fn(out, y)
            net.backward(g)
            total = global_norm(grads)
            finite = math.isfinite(loss) and math.isfinite(total)
            if not finite and not _all_watch(net, step):
                # Off the monitors' schedule: measure the step it diverged at all the same, on
                # the same batch and parameters (no update was applied).
                net.begin_step(None)
                out = net.forward(x)
                loss, g = loss_fn(out, y)
                net.backward(g)
                total = global_norm(grads)
            last = step == steps or not finite
            clipped, post = False, total
            if not last and clip_norm > 0:
                _, clipped = clip_grad_norm(grads, clip_norm)
            if not last and clip_value > 0:
                _, fired = clip_grad_value(grads, clip_value)
                clipped = clipped or fired
            if clipped:
                post = global_norm(grads)
            updates = {} if last else optimizer.step(params, grads)
            acc = accuracy(out, y) if classification and finite else math.nan
            sq = optimizer.update_sq_norms if updates and optimizer.measure_updates else {}
            info = StepInfo(loss, acc, optimizer.lr, total, post, clipped, params, grads, updates, sq)
            net.end_step(step, info)
        if not finite:
            return LoopResult("diverged", step, step, loss)
    return LoopResult("ok", steps, None, loss)


def _all_watch(net: Network, step: int) -> bool:
    """Whether every attached monitor observes ``step``."""
    return all(getattr(m, "wants_step", lambda s: True)(step) for m in net.monitors)


@dataclass
class RunResult:
    """One run's outcome: status, divergence, timing, and its tidy frames."""

    config: Config
    run: str
    status: str
    steps_done: int
    diverged_step: int | None
    diverged_layer: str | None
    final_loss: float
    wall_time_s: float
    metrics: pd.DataFrame = field(repr=False)
    hists: pd.DataFrame = field(repr=False)
    layers: pd.DataFrame = field(repr=False)


def build(config: Config) -> tuple[Dataset, Network, Optimizer]:
    """The dataset, network and optimizer a config describes, each from its own seeded stream."""
    ds = make_dataset(
        config.dataset,
        n_samples=config.n_samples,
        input_dim=config.input_dim or None,
        n_classes=config.n_classes or None,
        seed=config.seed,
        dtype=config.dtype,
    )
    init_seq = np.random.SeedSequence(config.seed, spawn_key=(1,))
    net = mlp(
        ds.input_dim,
        ds.output_dim,
        depth=config.depth,
        width=config.width,
        activation=config.activation,
        init=config.init,
        weight_scale=config.weight_scale,
        bias_scale=config.bias_scale,
        batch_norm=config.batch_norm,
        layer_norm=config.layer_norm,
        residual=config.residual,
        dropout=config.dropout,
        dtype=config.dtype,
        rng=np.random.default_rng(init_seq),
    )
    kwargs: dict[str, float] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer in ("sgd", "momentum", "nesterov") and config.momentum > 0:
        kwargs["momentum"] = config.momentum
    return ds, net, make_optimizer(config.optimizer, **kwargs)


def batch_stream(ds: Dataset, config: Config) -> Iterator[tuple[Array, Array]]:
    """Minibatches from a stream that depends on the seed only: arms with one seed see one sequence."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2,)))
    return batches(ds, config.batch_size, rng)


def default_monitor(config: Config, run_id: str = "") -> GradientMonitor:
    """The :class:`GradientMonitor` that :func:`run` attaches for ``config`` (schedules included)."""
    return GradientMonitor(
        run=run_id,
        layers=list(config.record_layers),
        every=_with_last(config.record_every, config.steps),
        hist_every=config.hist_every or _default_hist_schedule(config.steps),
        dead_window=config.dead_window,
        stats=[g for g in config.record_stats if g != "gradients"],
    )


def run(config: Config, run_id: str | None = None) -> RunResult:
    """Train one config with the full :class:`GradientMonitor` attached and return its result."""
    t0 = time.perf_counter()
    run_id = run_id or config.key()
    ds, net, opt = build(config)
    monitor = default_monitor(config, run_id)
    classification = ds.task == "classification"
    loss_fn = softmax_cross_entropy if classification else mse
    with net.attach(monitor):
        res = train_loop(
            net,
            batch_stream(ds, config),
            loss_fn,
            opt,
            config.steps,
            clip_norm=config.clip_norm,
            clip_value=config.clip_value,
            classification=classification,
        )
    div = monitor.divergence
    return RunResult(
        config=config,
        run=run_id,
        status=res.status,
        steps_done=res.steps_done,
        diverged_step=res.diverged_step,
        diverged_layer=(div[1] or None) if div is not None and res.status == "diverged" else None,
        final_loss=res.final_loss,
        wall_time_s=time.perf_counter() - t0,
        metrics=monitor.frame(),
        hists=monitor.hist_frame(),
        layers=monitor.layers_frame(),
    )


def _with_last(every: int, steps: int) -> Callable[[int], bool]:
    """Every k-th step, plus the last one (so the trained network is always measured)."""
    return lambda s: s % every == 0 or s == steps


def _default_hist_schedule(steps: int) -> Callable[[int], bool]:
    """Histograms at initialisation, after ~10% of training, and at the end."""
    marks = {0, steps, max(1, steps // 10)} if steps else {0}
    return lambda s: s in marks
