"""The words a fix is said in: the run's language, its term table, and numbers sized by measurements.

A run's *language* comes from its runs-table row: ``framework == "torch"`` speaks PyTorch
(``nn.init.kaiming_normal_``, ``torch.nn.utils.clip_grad_norm_``…), ``"numpy"`` (a user's loop seen
by the Observer) plain terms, and anything else — gradlab's own runs, a missing column — gradlab's
config keys (``init='he_normal'``, ``clip_norm=1``). Changes of a number (the learning rate, the init
scale, the clip threshold) are sized by what was measured — e.g. lr × target/measured update ratio —
and said to be estimates. The fixes themselves are in :mod:`gradlab.diagnosis.recipes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from gradlab.diagnosis.thresholds import Thresholds

TERMS: dict[str, dict[str, str]] = {
    "gradlab": {
        "he": "He init (init='he_normal')", "glorot": "Glorot init (init='glorot_uniform')",
        "bn": "batch norm (batch_norm=true)", "ln": "layer norm (layer_norm=true)",
        "residual": "residual connections (residual=true)",
        "relu": "a ReLU-family activation (activation='relu')", "tanh": "tanh (activation='tanh')",
        "leaky": "leaky ReLU (activation='leaky_relu')", "elu": "ELU (activation='elu')",
        "adam": "Adam at lr=1e-3 (optimizer='adam', lr=0.001)",
        "decay": "weight decay (weight_decay=5e-4, a common start)",
        "f64": "train in float64 (dtype='float64')",
        "scale": "init scale (weight_scale)",
        "unfreeze": "check that the learning rate is representable in the run's dtype",
        "no_grad": "nothing reaches it from the loss: every unit after it is dead or saturated",
    },
    "torch": {
        "he": "He init (nn.init.kaiming_normal_(layer.weight, nonlinearity='relu'))",
        "glorot": "Glorot init (nn.init.xavier_uniform_(layer.weight))",
        "bn": "batch norm (nn.BatchNorm1d/2d after each linear/conv layer)",
        "ln": "layer norm (nn.LayerNorm after each linear layer)",
        "residual": "a residual connection (x + block(x)) around each block",
        "relu": "a ReLU-family activation (nn.ReLU)", "tanh": "nn.Tanh",
        "leaky": "nn.LeakyReLU", "elu": "nn.ELU",
        "adam": "Adam at lr=1e-3 (torch.optim.Adam(model.parameters(), lr=1e-3))",
        "decay": "weight decay (weight_decay=5e-4 in the optimizer; AdamW with Adam)",
        "f64": "train in float64 (model.double())", "scale": "init std",
        "unfreeze": "check the layer's requires_grad and that its parameters are in the optimizer's "
                    "param_groups",
        "no_grad": "check for .detach() or torch.no_grad() around it, and for dead units after it",
    },
    "plain": {
        "he": "He init (W ~ N(0, 2/fan_in))", "glorot": "Glorot init (W ~ U(±√(6/(fan_in + fan_out))))",
        "bn": "batch normalisation before each activation",
        "ln": "layer normalisation before each activation",
        "residual": "residual connections (x + f(x))",
        "relu": "a ReLU-family activation", "tanh": "tanh", "leaky": "leaky ReLU", "elu": "ELU",
        "adam": "Adam at lr=1e-3",
        "decay": "weight decay (an L2 penalty, ~5e-4)", "f64": "compute in float64",
        "scale": "init scale",
        "unfreeze": "check that your loop applies the layer's update",
        "no_grad": "check that the layer's output reaches the loss, and for dead units after it",
    },
}
"""Language → the words for each thing a fix names (an init, a layer, an activation, a check)."""
ESTIMATE = "an estimate"


def language(config: Mapping[str, Any] | None) -> str:
    """``"torch"``, ``"plain"`` (``framework == "numpy"`` or another) or ``"gradlab"`` (no framework)."""
    fw = (config or {}).get("framework")
    if not isinstance(fw, str) or fw in ("", "gradlab"):
        return "gradlab"
    return "torch" if fw == "torch" else "plain"


def config_number(cfg: Mapping[str, Any], key: str) -> float | None:
    """``cfg[key]`` as a float; None when missing, NA or not a number."""
    v = cfg.get(key)
    try:
        return None if v is None or pd.isna(v) else float(v)
    except (TypeError, ValueError):
        return None


def measured(x: Any) -> bool:
    """Whether ``x`` is a usable measurement: a finite number above 0."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v > 0


def round_estimate(x: float) -> str:
    """An estimate's digits: two between 0.1 and 10 (1.4, 0.71), else one (3e-05, 40)."""
    digits = 2 if 0.1 <= abs(x) < 10 else 1
    return f"{float(f'{x:.{digits}g}'):g}"


def factor_text(factor: float) -> str:
    """``×1000`` or ``÷30`` (one significant digit)."""
    return f"×{round_estimate(factor)}" if factor >= 1 else f"÷{round_estimate(1 / factor)}"


def lr_change(cfg: Mapping[str, Any], factor: float, lang: str, sized: bool = True) -> str:
    """The learning rate scaled by ``factor``, in the run's terms: `` (lr=1e-07 → ~0.0001, ×1000)``."""
    lr = config_number(cfg, "lr")
    tail = f": {ESTIMATE}" if sized else ""
    if not lr:
        return f" (~{factor_text(factor)}{tail})"
    new = f"{lr:g} → ~{round_estimate(lr * factor)}"
    what = {"gradlab": f"lr={new}", "torch": f"the optimizer's lr: {new}"}.get(lang, new)
    return f" ({what}, {factor_text(factor)}{tail})"


def clip_text(value: float | None, lang: str) -> str:
    """Clipping the global gradient norm at ``value`` (None: at 1), in the run's terms."""
    v = round_estimate(value) if value else "1"
    return {"gradlab": f"clip_norm={v}",
            "torch": f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={v})"}.get(
        lang, f"clip the global gradient norm at {v}")


def scale_text(cfg: Mapping[str, Any], gain: float, lang: str) -> str:
    """The init scale divided by the measured per-layer ``gain``."""
    ws, by = config_number(cfg, "weight_scale"), factor_text(1 / gain)
    why = f"the measured gain per layer is {gain:.2g}: {ESTIMATE}"
    if lang == "gradlab" and ws:
        return f"the init scale (weight_scale={ws:g} → ~{round_estimate(ws / gain)}, {by}; {why})"
    return f"the {TERMS[lang]['scale']} {by} ({why})"


def update_factor(ev: Mapping[str, Any], th: Thresholds, default: float,
                  low: bool = False) -> tuple[float, bool]:
    """(lr factor, sized?): target / measured typical update ratio when measured and on the right
    side of the target; else ``default``."""
    u = ev.get("update_ratio")
    if measured(u):
        f = th.update_ratio_target / u
        if (f > 1) if low else (f < 1):
            return (f if low else min(f, default)), True
    return default, False


__all__ = ["ESTIMATE", "TERMS", "clip_text", "config_number", "factor_text", "language", "lr_change",
           "measured", "round_estimate", "scale_text", "update_factor"]
