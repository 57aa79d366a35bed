"""Rules on a run's layers beyond the gradient profile: a poor initialisation, frozen layers, units
that die during training, and weights that grow without bound.

Layers are told apart by the layers table (kind and forward position), never by their names. Each
rule returns raw findings like those of :mod:`gradlab.diagnosis.rules`; the per-layer ones are
merged per run and rule by :func:`gradlab.diagnosis.rules.aggregate_layers`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from gradlab.diagnosis.rules import group_ids, layer_findings
from gradlab.diagnosis.table import Rows, Table
from gradlab.diagnosis.thresholds import Thresholds

INIT_DEPTH = 10
"""``poor_init``'s spread must also be a trend of more than ``init_spread``× per this many layers."""


def rule_poor_init(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray]) -> list[dict]:
    """``poor_init``: at step 0, the spread (max/min) of the hidden weighted layers' output variance.

    The first weighted layer (its scale is the data's) and the last (the output) are left out, so a
    run needs four weighted layers with ``act_std`` at step 0. The spread must also be a depth-wise
    trend: the per-layer gain g of the activations' scale (geometric fit of ``act_std`` over the
    hidden layers, by least squares) must change the variance by more than ``init_spread``× every
    :data:`INIT_DEPTH` layers (g^(2·10) beyond it): a critical tanh net's variance decays only
    polynomially with depth (Schoenholz et al. 2017), and deep ones pass SageMaker's spread alone.
    Evidence: the layers with the smallest and largest variance, and g, which sizes the fix.
    """
    rows = t.get("act_std")
    if rows is None:
        return []
    rows = rows.take((rows.step == 0) & np.isfinite(rows.v))
    out: list[dict] = []
    df = pd.DataFrame({"r": rows.r, "l": rows.l, "pos": t.layer_pos[rows.l], "std": rows.v})
    for r, g in df.sort_values(["r", "pos"], kind="stable").groupby("r", sort=False):
        hidden = g.iloc[1:-1]
        if len(hidden) < 2:
            continue
        checked["poor_init"][int(r)] = True
        std = hidden["std"].to_numpy()
        lo_i, hi_i = int(np.argmin(std)), int(np.argmax(std))
        spread = math.inf if std[lo_i] == 0 else float((std[hi_i] / std[lo_i]) ** 2)
        gain = math.nan
        if (std > 0).all():
            gain = float(math.exp(np.polyfit(np.arange(len(std)), np.log(std), 1)[0]))
        # the spread must also be a depth-wise trend: a variance changing > init_spread× per
        # INIT_DEPTH layers, not finite-width scatter or a critical net's slow (polynomial) decay
        trend = abs(math.log(gain)) * 2 * INIT_DEPTH if gain == gain else math.inf
        if not (spread > th.init_spread and trend > math.log(th.init_spread)):
            continue
        ends = {int(hidden["l"].iat[lo_i]), int(hidden["l"].iat[hi_i])}
        layers = sorted(ends, key=lambda x: t.layer_pos[x])
        out.append({
            "r": int(r), "kind": "poor_init", "rule": "init_spread", "l": -1, "layers": layers,
            "step": 0, "value": spread, "op": ">", "threshold": th.init_spread,
            "low": int(hidden["l"].iat[lo_i]), "high": int(hidden["l"].iat[hi_i]),
            "std_low": float(std[lo_i]), "std_high": float(std[hi_i]), "gain": gain,
            "n_hidden": len(hidden),
        })
    return out


def rule_frozen(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray]) -> list[dict]:
    """``frozen``, per layer: its gradient is exactly 0 (``frozen_grad``), or its update is exactly 0
    while its gradient is not (``frozen_update``), on most steps of some window."""
    out: list[dict] = []
    grad = t.get("grad_norm")
    if grad is not None:
        g = grad.take(np.isfinite(grad.v))
        out += layer_findings(t, th, "frozen", "frozen_grad", g, g.v <= th.frozen_grad, th.frozen_grad, "≤",
                              checked)
    upd = t.get("update_ratio")
    if upd is not None and grad is not None:
        u = upd.take(np.isfinite(upd.v))
        gn = _aligned(grad, u)
        moving = np.isfinite(gn) & (gn > th.frozen_grad)
        out += layer_findings(t, th, "frozen", "frozen_update", u, moving & (u.v <= th.frozen_update),
                              th.frozen_update, "≤", checked)
        for f in out:
            if f["rule"] == "frozen_update":
                m = (u.r == f["r"]) & (u.l == f["l"]) & (u.step >= f["lo"]) & (u.step <= f["hi"])
                f["grad"] = float(np.nanmedian(gn[m])) if m.any() else math.nan
    return out


def rule_dying(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray],
               dead_window: Mapping[int, int] | None = None) -> list[dict]:
    """``dying_units``, per ReLU-family layer: of the units alive at its first recorded step, the
    fraction now dead, (dead − dead₀) / (1 − dead₀), reaches ``dying_frac`` on most steps of a window.

    ``dead`` is ``dead_frac_window`` where recorded (a unit inactive on every sample of each of the
    last ``dead_window`` recorded steps), else ``dead_frac``. The window metric confirms a death
    ``dead_window`` − 1 recorded steps after the unit last fired, so the finding's step — when the
    units died — is that many rows before the first step the rule held (``confirmed``);
    ``dead_window`` per run code (default 10, gradlab's and the Observer's default).
    """
    rows = t.get("dead")
    if rows is None:
        return []
    rows = rows.take(np.isfinite(rows.v))
    gid = group_ids(rows.r, rows.l)
    if len(gid) == 0:
        return []
    first = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    d0 = rows.v[first][gid]
    alive = d0 < 1
    rows, d0 = rows.take(alive), d0[alive]
    died = (rows.v - d0) / (1 - d0)
    found = layer_findings(t, th, "dying_units", "dying_units", rows, died >= th.dying_frac, th.dying_frac,
                           "≥", checked, value=died)
    for f in found:
        m = (rows.r == f["r"]) & (rows.l == f["l"])
        f["dead0"] = float(d0[m][0])
        w = m & (rows.step >= f["lo"]) & (rows.step <= f["hi"])
        f["dead"] = float(np.median(rows.v[w]))
        f["confirmed"] = f["step"]
        if f["windowed"]:
            steps = rows.step[m]
            k = int(np.searchsorted(steps, f["step"])) - ((dead_window or {}).get(f["r"], 10) - 1)
            f["step"] = int(steps[max(k, 1)])  # row 0 is the baseline: alive there
    return found


def rule_weight_growth(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray]) -> list[dict]:
    """``weight_growth``, per weighted layer: ‖W‖ at least ``weight_growth`` × its first recorded value
    on most steps of a window. Evidence: whether it was still rising over the run's last window, and
    its mean growth rate per step (``rate``), which sizes the weight decay that would balance it."""
    rows = t.get("weight_norm")
    if rows is None:
        return []
    rows = rows.take(np.isfinite(rows.v) & t.weighted[rows.l])
    gid = group_ids(rows.r, rows.l)
    if len(gid) == 0:
        return []
    first = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    w0 = rows.v[first][gid]
    growth = np.where(w0 > 0, rows.v / np.where(w0 > 0, w0, 1.0), np.nan)
    ok = np.isfinite(growth)
    rows, growth = rows.take(ok), growth[ok]
    found = layer_findings(t, th, "weight_growth", "weight_growth", rows, growth >= th.weight_growth,
                           th.weight_growth, "≥", checked, value=growth)
    for f in found:
        m = (rows.r == f["r"]) & (rows.l == f["l"])
        g, steps = growth[m], rows.step[m]
        f["last"] = float(g[-1])
        f["rising"] = bool(g[-1] > g[max(len(g) - 1 - th.window, 0)])
        span = float(steps[-1]) - float(steps[0])  # as floats: any step magnitude
        f["rate"] = math.expm1(math.log(g[-1]) / span) if span > 0 and g[-1] > 0 else math.nan
    return found


def _aligned(src: Rows, dst: Rows) -> np.ndarray:
    """``src``'s value at each row of ``dst`` with the same run, layer and step (NaN where none)."""
    a = pd.DataFrame({"r": src.r, "l": src.l, "step": src.step, "v": src.v})
    b = pd.DataFrame({"r": dst.r, "l": dst.l, "step": dst.step})
    return b.merge(a.drop_duplicates(["r", "l", "step"]), on=["r", "l", "step"], how="left")["v"].to_numpy()
