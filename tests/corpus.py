"""The labelled corpus of issue 12: runs whose verdicts are known by construction, and their score.

Shared by ``tests/test_corpus.py`` (which asserts every run's verdict set) and
``benchmarks/score_verdicts.py`` (which prints the confusion table). Each :class:`Case` is one run —
made by ``gradlab.run(gradlab.Config(...))``, or by a plain NumPy loop observed with
:class:`gradlab.Observer` (``framework = "numpy"``) where the pathology is built in on purpose (a layer
frozen, units killed, weights pushed to grow) — with the verdict set ``run_verdicts`` must give
(``{"healthy"}`` for a healthy run) and how that truth is known. Where a verdict is honestly
ambiguous, ``ambiguous`` says so and why the label is what it is.

Small nets (width 32, 512 samples, batches of 64) and short runs keep the whole corpus to seconds.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import gradlab
from gradlab.diagnosis import diagnose, run_verdicts
from gradlab.experiment.data import make_dataset
from gradlab.monitor.observer import Observer

BASE = {"width": 32, "n_samples": 512, "batch_size": 64, "steps": 150, "dataset": "spirals"}
HE_RELU = {"activation": "relu", "init": "he_normal"}

Made = tuple[pd.DataFrame, pd.DataFrame, dict]
"""A run's metrics frame, layers table and runs-table row."""


@dataclass(frozen=True)
class Case:
    """One corpus run: its expected verdict set, how that is known, and how to make the run."""

    name: str
    truth: frozenset[str]
    why: str
    make: Callable[[], Made] = field(repr=False)
    ambiguous: str = ""


def gradlab_run(name: str, **fields: object) -> Callable[[], Made]:
    """A maker for ``gradlab.run(gradlab.Config(**BASE, **fields))``."""

    def make() -> Made:
        res = gradlab.run(gradlab.Config(**{**BASE, **fields}), run_id=name)
        row = {"run": name, **res.config.to_dict(), "status": res.status,
               "diverged_step": res.diverged_step, "diverged_layer": res.diverged_layer or ""}
        return res.metrics, res.layers, row

    return make


def numpy_run(name: str, *, steps: int = 150, lr: float = 0.05, frozen: tuple[int, ...] = (),
              kill: tuple[int, int] | None = None, grow: float = 0.0, seed: int = 0) -> Callable[[], Made]:
    """A maker for a hand-written NumPy MLP (2 → 32 → 32 → 3, ReLU, softmax cross-entropy, SGD) on the
    spirals, observed layer by layer with :class:`gradlab.Observer`.

    Args:
        frozen: dense layers (0, 1, 2) the loop never updates, as when fine-tuning.
        kill: (layer, step): from that step on, the dense layer's biases are -1e3, so the ReLU after it
            is inactive on every sample — its units, alive at initialisation, die at that step.
        grow: each step multiplies fc0's weights by (1 + grow) — weight decay with its sign flipped —
            and a parameter-free layer norm follows fc0, so the loss does not see fc0's scale (only its
            effective learning rate shrinks, as 1/‖W‖²: van Laarhoven 2017).
    """

    def make() -> Made:
        rng = np.random.default_rng(seed)
        ds = make_dataset("spirals", n_samples=512, seed=seed)
        sizes = [2, 32, 32, 3]
        W = [rng.standard_normal((a, b)) * np.sqrt(2 / a) for a, b in itertools.pairwise(sizes)]
        b = [np.zeros(n) for n in sizes[1:]]
        obs = Observer(run=name)
        for step in range(steps + 1):
            idx = rng.choice(len(ds.x), 64, replace=False)
            x, y = ds.x[idx], ds.y[idx]
            if kill is not None and step == kill[1]:
                b[kill[0]] = np.full_like(b[kill[0]], -1e3)
            hs, zs = [x], []
            for i in range(3):
                zs.append(hs[-1] @ W[i] + b[i])
                if i == 0 and grow:
                    mu, sd = zs[0].mean(axis=1, keepdims=True), zs[0].std(axis=1, keepdims=True)
                    normed = (zs[0] - mu) / sd
                hs.append(np.maximum(normed if i == 0 and grow else zs[-1], 0) if i < 2 else zs[-1])
            p = np.exp(zs[-1] - zs[-1].max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-300)))
            g = p.copy()
            g[np.arange(len(y)), y] -= 1
            g /= len(y)  # ∂L/∂z of the output layer
            grads = [None] * 3
            douts = [None] * 3
            for i in reversed(range(3)):
                douts[i] = g
                grads[i] = (hs[i].T @ g, g.sum(axis=0))  # ∂L/∂W = xᵀ δ, ∂L/∂b = Σ δ
                gin = g @ W[i].T  # ∂L/∂x
                if i > 0:
                    g = gin * (hs[i] > 0)  # through the ReLU before layer i
                if i == 1 and grow:  # through the layer norm: (g − mean g − y·mean(g·y)) / σ
                    proj = (g * normed).mean(axis=1, keepdims=True)
                    g = (g - g.mean(axis=1, keepdims=True) - normed * proj) / sd
                grads[i] = (*grads[i], gin)
            total = float(np.sqrt(sum(np.sum(gw**2) + np.sum(gb**2) for gw, gb, _ in grads)))
            last = step == steps
            for i in range(3):
                gw, gb, gin = grads[i]
                new = W[i] if i in frozen else (W[i] - lr * gw) * (1 + (grow if i == 0 else 0))
                upd = None if last else new - W[i]  # the change the loop applies
                obs.observe(step, f"fc{i}", output=zs[i], weight=W[i], weight_grad=gw, bias_grad=gb,
                            update=upd, grad_in=gin, grad_out=douts[i], kind="dense")
                if i < 2:
                    obs.observe(step, f"act{i}", output=hs[i + 1], activation="relu",
                                grad_in=grads[i + 1][2] * (hs[i + 1] > 0), grad_out=grads[i + 1][2])
                if not last and i not in frozen:
                    W[i], b[i] = new, b[i] - lr * gb
            obs.observe_network(step, loss=loss, grad_norm_total=total, lr=lr)
        return obs.frame(), obs.layers_frame(), {"run": name, "framework": "numpy", "status": "ok", "lr": lr}

    return make


def torch_cnn(name: str, *, batch_norm: bool, steps: int = 40, lr: float = 0.02) -> Callable[[], Made]:
    """A maker for a PyTorch CNN on the 8×8 digits — 8 convolutions of 8 channels, each followed by a
    sigmoid or by BatchNorm2d + ReLU, then a linear head; SGD with momentum 0.9 — watched by
    ``gradlab.torch.watch`` (``framework = "torch"``; conv layers' kind ``conv``)."""

    def make() -> Made:
        import torch
        from torch import nn

        import gradlab.torch
        from gradlab.experiment.data import load_digits_raw

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny net: more threads only fight over the cores
        try:
            images, labels = load_digits_raw()
            x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
            y = torch.tensor(labels, dtype=torch.long)
            torch.manual_seed(0)
            layers: list[nn.Module] = []
            for i in range(8):
                layers.append(nn.Conv2d(1 if i == 0 else 8, 8, 3, padding=1))
                layers += [nn.BatchNorm2d(8), nn.ReLU()] if batch_norm else [nn.Sigmoid()]
            model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(8 * 64, 10))
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            g = torch.Generator().manual_seed(0)
            with gradlab.torch.watch(model, opt, run=name) as w:
                for _ in range(steps):
                    idx = torch.randint(0, len(x), (64,), generator=g)
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                    loss.backward()
                    opt.step()
                    if not w.step(loss):
                        break
        finally:
            torch.set_num_threads(threads)
        row = {"run": name, "framework": "torch", "status": w.status, "optimizer": "sgd", "lr": lr,
               "momentum": 0.9}
        return w.frame(), w.layers_frame(), row

    return make


HAS_TORCH = importlib.util.find_spec("torch") is not None


def _truth(*kinds: str) -> frozenset[str]:
    return frozenset(kinds)


CASES: list[Case] = [
    # -- healthy runs: variance-preserving inits at moderate learning rates -----------------------------
    Case("healthy_relu_sgd", _truth("healthy"), "He init keeps ReLU signals' scale (He et al. 2015); lr "
         "0.05 gives update ratios ~1e-3", gradlab_run("healthy_relu_sgd", depth=6, lr=0.05, **HE_RELU)),
    Case("healthy_relu_converged", _truth("healthy"), "the blobs are separable: the loss falls to 0.06 % of "
         "its start, after which tiny updates are expected (issue 12's first defect)",
         gradlab_run("healthy_relu_converged", depth=6, lr=0.1, dataset="blobs", steps=300, **HE_RELU)),
    Case("healthy_tanh_momentum", _truth("healthy"), "Glorot init for tanh, SGD with momentum 0.9 at lr 0.02",
         gradlab_run("healthy_tanh_momentum", depth=6, activation="tanh", init="glorot_uniform", lr=0.02,
                     momentum=0.9)),
    Case("healthy_relu_nesterov", _truth("healthy"), "He init, Nesterov momentum 0.9 at lr 0.01",
         gradlab_run("healthy_relu_nesterov", depth=6, optimizer="nesterov", momentum=0.9, lr=0.01,
                     **HE_RELU)),
    Case("healthy_relu_adam", _truth("healthy"), "He init, Adam at lr 3e-3; converges",
         gradlab_run("healthy_relu_adam", depth=6, optimizer="adam", lr=0.003, **HE_RELU)),
    Case("healthy_relu_adamw", _truth("healthy"), "He init, AdamW (decoupled decay 0.01) at lr 3e-3",
         gradlab_run("healthy_relu_adamw", depth=6, optimizer="adamw", weight_decay=0.01, lr=0.003,
                     **HE_RELU)),
    Case("healthy_tanh_batchnorm", _truth("healthy"), "batch norm before each tanh, 8 layers (shallow "
         "enough that batch norm's gradient growth stays far below the threshold)",
         gradlab_run("healthy_tanh_batchnorm", depth=8, activation="tanh", init="glorot_uniform",
                     batch_norm=True, lr=0.05)),
    Case("healthy_sigmoid_batchnorm", _truth("healthy"), "batch norm rescues a 10-layer sigmoid net",
         gradlab_run("healthy_sigmoid_batchnorm", depth=10, activation="sigmoid", init="standard",
                     batch_norm=True, lr=0.1)),
    Case("healthy_deep_tanh_digits", _truth("healthy"), "20 tanh layers with Glorot init on the digits (the "
         "quick sweep's healthy arm): near the edge of chaos, the signal keeps its scale (ratio ~0.4)",
         gradlab_run("healthy_deep_tanh_digits", depth=20, width=64, activation="tanh", init="glorot_uniform",
                     lr=0.005, momentum=0.9, dataset="digits")),
    Case("healthy_regression", _truth("healthy"), "He/ReLU regression on the teacher data (MSE)",
         gradlab_run("healthy_regression", depth=4, lr=0.05, dataset="teacher", **HE_RELU)),
    Case("healthy_numpy_loop", _truth("healthy"), "a hand-written NumPy MLP with He init and lr 0.05, "
         "observed with the Observer", numpy_run("healthy_numpy_loop")),
    # -- the gradient profile at initialisation ------------------------------------------------------
    Case("vanishing_sigmoid", _truth("vanishing"), "15 sigmoid layers with U[±1/√n] weights: σ′ ≤ 1/4 and "
         "σ_w² = 1/3 shrink ‖∂L/∂y‖ ~7× per layer (Glorot & Bengio 2010); the loss stays at chance",
         gradlab_run("vanishing_sigmoid", depth=15, activation="sigmoid", init="standard", lr=0.1)),
    Case("vanishing_tanh_small_init", _truth("vanishing", "poor_init"), "tanh with σ_w = 0.5: mean field "
         "shrinks the forward and backward signal ×0.5 per layer (χ₁ = σ_w² < 1) — both the gradient "
         "profile and the activations' scale",
         gradlab_run("vanishing_tanh_small_init", depth=15, activation="tanh", init="normal",
                     weight_scale=0.5, lr=0.01)),
    Case("exploding_large_init", _truth("exploding", "poor_init"), "ReLU with σ_w = 2 (He's is √2): the "
         "signal grows ×√2 per layer, forward and backward", gradlab_run(
             "exploding_large_init", depth=15, init="normal", weight_scale=2.0, activation="relu", lr=1e-4,
             steps=60)),
    Case("exploding_batchnorm", _truth("exploding"), "20 ReLU layers with batch norm: gradients explode "
         "backwards at initialisation (Yang et al. 2019), though the forward pass is normalised",
         gradlab_run("exploding_batchnorm", depth=20, batch_norm=True, lr=0.005, momentum=0.9, steps=60,
                     **HE_RELU)),
    # -- the optimiser ------------------------------------------------------------------------------------
    Case("diverging_lr", _truth("diverged", "exploding"), "a linear net at lr 100: gradient descent on a "
         "quadratic diverges when lr > 2/λ_max; the loss overflows within a few steps, the gradient norm "
         "first grows ×1000", gradlab_run("diverging_lr", depth=4, activation="identity",
                                          init="glorot_normal", lr=100.0, steps=30)),
    Case("stalled_tiny_lr", _truth("update_ratio"), "lr 1e-7 makes ‖ΔW‖/‖W‖ ~1e-8: nothing moves; the flat "
         "loss is its consequence", gradlab_run("stalled_tiny_lr", depth=6, lr=1e-7, **HE_RELU)),
    Case("oscillating_high_lr", _truth("oscillating_loss"), "lr 0.8, 16× the healthy run's: the loss jumps "
         "by 0.5–2× its starting value again and again, short of divergence",
         gradlab_run("oscillating_high_lr", depth=4, lr=0.8, **HE_RELU),
         ambiguous="'too high' is read off the loss curve, not derived: the run still learns (1.0 → 0.6)"),
    Case("healthy_relu_digits", _truth("healthy"), "8 He/ReLU layers on the digits at lr 0.02: a smooth "
         "descent (the same net at lr 0.05 is the next case)",
         gradlab_run("healthy_relu_digits", depth=8, width=64, lr=0.02, dataset="digits", **HE_RELU)),
    Case("spiky_relu_digits", _truth("oscillating_loss"), "the same net at lr 0.05: three times the loss "
         "jumps from ~0.2 back to ~1.9 before recovering",
         gradlab_run("spiky_relu_digits", depth=8, width=64, lr=0.05, dataset="digits", **HE_RELU),
         ambiguous="the run still ends at 2 % of its starting loss, and lr 0.05 is a common default: we call "
                   "it oscillating because its curve is (edge-of-stability spikes) and lr 0.02 removes them"),
    Case("clipping_every_step", _truth("clipping"), "clip_norm 0.01 is far below ‖g‖ (~0.5): clipping fires "
         "on every step, the optimizer's arithmetic", gradlab_run("clipping_every_step", depth=6, lr=0.1,
                                                                  clip_norm=0.01, **HE_RELU)),
    Case("frozen_lr_underflow", _truth("frozen"), "lr 1e-300 rounds to 0 in float32: every update is exactly "
         "0 while the gradients are not", gradlab_run("frozen_lr_underflow", depth=4, activation="tanh",
                                                      init="glorot_uniform", lr=1e-300, dtype="float32")),
    Case("frozen_layer_numpy", _truth("frozen"), "the loop never updates fc0 (fine-tuning style); the other "
         "layers learn", numpy_run("frozen_layer_numpy", frozen=(0,))),
    # -- units and weights during training ----------------------------------------------------------
    Case("dying_relu_adam", _truth("dying_units"), "Adam at lr 0.05 (50× its default) drives biases "
         "negative: most units alive at initialisation stop firing for good, while the loss still falls",
         gradlab_run("dying_relu_adam", depth=6, optimizer="adam", lr=0.05, **HE_RELU)),
    Case("dying_relu_numpy", _truth("dying_units"), "at step 40 the loop sets fc1's biases to -1e3: act1's "
         "units, all alive until then, die at once (the gradients before them become exactly 0, frozen as "
         "a consequence)", numpy_run("dying_relu_numpy", kill=(1, 40))),
    Case("weight_growth_numpy", _truth("weight_growth"), "weight decay with its sign flipped multiplies "
         "fc0's weights by 1.018 per step (×14 over 150 steps); a layer norm after fc0 hides its scale "
         "from the loss", numpy_run("weight_growth_numpy", grow=0.018)),
    Case("loss_plateau_noise_labels", _truth("loss_plateau"), "labels drawn independently of the inputs "
         "(the gaussian data set): no function of x beats the chance loss ln 3, and updates are of a "
         "healthy size", gradlab_run("loss_plateau_noise_labels", depth=3, activation="tanh",
                                     init="glorot_uniform", lr=0.01, momentum=0.9, dataset="gaussian",
                                     n_samples=1024)),
]

if HAS_TORCH:  # conv layers, and the torch adapter's records, once PyTorch is installed
    CASES += [
        Case("torch_sigmoid_cnn", _truth("vanishing"), "8 sigmoid convolutions in PyTorch: σ′ ≤ 1/4 at every "
             "layer shrinks the back-propagated signal ~1e-7× over the conv stack", torch_cnn(
                 "torch_sigmoid_cnn", batch_norm=False)),
        Case("torch_conv_bn_relu", _truth("healthy"), "the same convolutions with BatchNorm2d and ReLU "
             "(PyTorch's default init) at lr 0.02", torch_cnn("torch_conv_bn_relu", batch_norm=True)),
    ]


def diagnose_case(case: Case) -> tuple[pd.DataFrame, frozenset[str]]:
    """Make the run, diagnose it with its runs-table row and layers table; its findings and verdict set."""
    metrics, layers, row = case.make()
    findings = diagnose(metrics, pd.DataFrame([row]), layers=layers)
    return findings, frozenset(run_verdicts(findings).iat[0].split(", "))


def score(truth: dict[str, frozenset[str]], got: dict[str, frozenset[str]]) -> pd.DataFrame:
    """Per verdict: runs labelled with it, runs flagged with it, TP, FP, FN, precision and recall."""
    kinds = sorted(set().union(*truth.values(), *got.values()))
    rows = []
    for k in kinds:
        tp = sum(k in truth[r] and k in got[r] for r in truth)
        fp = sum(k not in truth[r] and k in got[r] for r in truth)
        fn = sum(k in truth[r] and k not in got[r] for r in truth)
        rows.append({"verdict": k, "labelled": tp + fn, "flagged": tp + fp, "TP": tp, "FP": fp, "FN": fn,
                     "precision": tp / (tp + fp) if tp + fp else float("nan"),
                     "recall": tp / (tp + fn) if tp + fn else float("nan")})
    return pd.DataFrame(rows)


def confusion(truth: dict[str, frozenset[str]], got: dict[str, frozenset[str]]) -> pd.DataFrame:
    """Rows: labelled verdicts. Diagonal: runs flagged with their label; off the diagonal: runs
    labelled (row) and flagged with a verdict they are not labelled with (column); "missed": runs
    labelled (row) and not flagged with it. A perfect score is a diagonal table with no misses."""
    kinds = sorted(set().union(*truth.values(), *got.values()))
    table = pd.DataFrame(0, index=pd.Index(kinds, name="labelled \\ flagged"), columns=[*kinds, "missed"])
    for run, labels in truth.items():
        for t in labels:
            table.loc[t, t if t in got[run] else "missed"] += 1
            for g in got[run] - labels:
                table.loc[t, g] += 1
    return table.reset_index()


def markdown(table: pd.DataFrame) -> str:
    """The score table as Markdown (precision and recall to two decimals, "—" when undefined)."""
    head = list(table.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in table.to_dict("records"):
        cells = [f"{v:.2f}" if isinstance(v, float) and v == v else "—" if isinstance(v, float) else str(v)
                 for v in rec.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
