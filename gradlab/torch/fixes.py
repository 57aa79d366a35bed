"""``try_fixes``: rerun a user's own PyTorch training under each candidate fix and rank them the way
``gradlab.fix`` ranks gradlab's runs (:func:`gradlab.diagnosis.ranking.rank_fixes`).

The user gives ``make_model()`` (a fresh model; seeded by ``try_fixes``) and ``train(model, trial)``,
which builds its optimizer through ``trial.optimizer(params, Class, **kwargs)``, calls
``trial.clip(model)`` between ``backward()`` and ``step()``, and ``trial.step(loss)`` after each step
(False: stop). Model-level fixes are applied to the model before training: an activation swap
(modules of the activation types), He/Glorot init of Linear and Conv weights, and batch norm after each
Linear of an ``nn.Sequential``; the learning rate, Adam and clipping go through ``trial``. A candidate
fix with a change this cannot make (residual connections, layer norm…) is left out and named in
``skipped``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from gradlab.diagnosis import diagnose
from gradlab.diagnosis.candidates import Fix, candidate_fixes
from gradlab.diagnosis.ranking import BASELINE, FIX_PREFIX, rank_fixes
from gradlab.torch.handle import watch

_ACTS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
_INITS: dict[str, Callable[[torch.Tensor], Any]] = {
    "he_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "glorot_uniform": nn.init.xavier_uniform_,
}
SUPPORTED = ("activation", "init", "batch_norm", "lr", "optimizer", "momentum", "clip_norm", "weight_scale")


@dataclass
class Trial:
    """What ``train(model, trial)`` uses to apply a fix's optimiser changes and report each step."""

    model: nn.Module
    changes: Mapping[str, Any]
    run: str
    handle: Any = None
    base_lr: float | None = None

    def optimizer(self, params: Iterable[Any], cls: type[torch.optim.Optimizer], **kwargs: Any) -> Any:
        """The user's optimizer, with the fix's learning rate (× its factor) or Adam; starts the watch."""
        self.base_lr = kwargs.get("lr")
        if self.changes.get("optimizer") == "adam":
            cls, kwargs = torch.optim.Adam, {"lr": self.changes.get("lr", 1e-3)}
        elif "lr_factor" in self.changes and "lr" in kwargs:
            kwargs = {**kwargs, "lr": kwargs["lr"] * self.changes["lr_factor"]}
        opt = cls(params, **kwargs)
        self.handle = watch(self.model, opt, run=self.run)
        return opt

    def clip(self, model: nn.Module) -> None:
        """Clip the global gradient norm when the fix says so (call between backward and step)."""
        if self.changes.get("clip_norm"):
            nn.utils.clip_grad_norm_(model.parameters(), float(self.changes["clip_norm"]))

    def step(self, loss: torch.Tensor) -> bool:
        """Record one step; False once training diverged."""
        if self.handle is None:
            raise RuntimeError("train must build its optimizer with trial.optimizer(...) before trial.step")
        return bool(self.handle.step(loss))


@dataclass
class TryResult:
    """The ranked fixes, the fixes tried and left out, and every run's records."""

    ranked: pd.DataFrame
    fixes: list[Fix]
    skipped: list[str] = field(default_factory=list)
    runs: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None
    findings: pd.DataFrame | None = None


def _apply(model: nn.Module, changes: Mapping[str, Any]) -> nn.Module:
    """The model with the fix's model-level changes made (in place where possible)."""
    act = changes.get("activation")
    if act:
        for parent in model.modules():
            for name, child in parent.named_children():
                if isinstance(child, tuple(_ACTS.values())):
                    setattr(parent, name, _ACTS[act]())
    init = _INITS.get(str(changes.get("init")))
    scale = float(changes.get("weight_scale") or 1.0)
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            with torch.no_grad():
                if init is not None:
                    init(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                m.weight.mul_(scale)
    if changes.get("batch_norm") and isinstance(model, nn.Sequential):
        layers = list(model)
        last = max(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
        out: list[nn.Module] = []
        for i, m in enumerate(layers):
            out.append(m)
            if isinstance(m, nn.Linear) and i != last:
                out.append(nn.BatchNorm1d(m.out_features))
        model = nn.Sequential(*out)
    return model


def _torch_changes(fix: Fix, base_lr: float | None) -> dict[str, Any] | None:
    """The fix's changes as try_fixes applies them (lr as a factor), or None when one is unsupported."""
    if any(k not in SUPPORTED for k, v in fix.changes.items() if v is not False):
        return None
    if fix.changes.get("batch_norm") is False:
        return None
    out = dict(fix.changes)
    if "lr" in out and out.get("optimizer") != "adam":
        if not base_lr:
            return None
        out["lr_factor"] = out.pop("lr") / base_lr
    return out


def try_fixes(make_model: Callable[[], nn.Module], train: Callable[[nn.Module, Trial], Any],
              fixes: Iterable[Fix] | None = None, seeds: Iterable[int] = (0, 1)) -> TryResult:
    """Train the baseline and each fix on paired ``seeds``, diagnose and rank them (see module doc).

    Args:
        fixes: the fixes to try (:class:`gradlab.diagnosis.candidates.Fix`); None: the candidates of
            the baseline's findings on its first seed.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds=[] must name at least one seed")
    frames: list[pd.DataFrame] = []
    layers: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []

    def one(name: str, changes: Mapping[str, Any], seed: int) -> float | None:
        torch.manual_seed(seed)
        run = f"{name} s{seed}"
        model = _apply(make_model(), changes)
        trial = Trial(model, changes, run)
        train(model, trial)
        if trial.handle is None:
            raise RuntimeError("train never called trial.optimizer(...): gradlab cannot watch it")
        frames.append(trial.handle.frame())
        layers.append(trial.handle.layers_frame())
        lr = trial.base_lr
        rows.append({"run": run, "name": name, "seed": seed, "status": trial.handle.status,
                     "framework": "torch", "lr": lr, "optimizer": "sgd"})
        return lr

    base_lr = None
    for s in seeds:
        base_lr = one(BASELINE, {}, s) or base_lr
    metrics = pd.concat(frames, ignore_index=True)
    runs = pd.DataFrame(rows)
    if fixes is None:
        first = runs["run"].iloc[:1]
        found = diagnose(metrics[metrics["run"].isin(first)], runs.iloc[:1], layers=pd.concat(layers[:1]))
        found = found[found["severity"].isin(["error", "warning"]) & found["cause"].eq("")]
        kinds = list(zip(found["kind"].astype(str), found["rule"].astype(str), strict=True))
        fixes = candidate_fixes(kinds, {"framework": "torch", "lr": base_lr}, None)
    tried, skipped = [], []
    for f in fixes:
        changes = _torch_changes(f, base_lr)
        if changes is None:
            skipped.append(f.name)
            continue
        tried.append(f)
        for s in seeds:
            one(FIX_PREFIX + f.name, changes, s)
    runs, metrics = pd.DataFrame(rows), pd.concat(frames, ignore_index=True)
    lay = pd.concat(layers, ignore_index=True)
    findings = diagnose(metrics, runs, layers=lay)
    ranked = rank_fixes(runs, metrics, findings)
    return TryResult(ranked, tried, skipped, runs, metrics, findings)


__all__ = ["Trial", "TryResult", "try_fixes"]
