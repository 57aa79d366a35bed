"""Rules on a run's training curve: loss not decreasing, an oscillating or spiking loss, clipping on
most steps, and when a run has converged (so that small updates and a flat loss are expected).

Each reads network-level rows of the :class:`gradlab.diagnosis.table.Table` (``loss``, ``clipped``,
``grad_norm_total``) and returns raw findings like the rules of :mod:`gradlab.diagnosis.rules`.
Steps are labels only: nothing here depends on their magnitude or sign.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradlab.diagnosis.rules import first_window_median, group_ids, sustained
from gradlab.diagnosis.table import Rows, Table
from gradlab.diagnosis.thresholds import Thresholds


@dataclass
class LossCurve:
    """The finite loss rows of every run, with their running medians and each run's starting loss.

    ``start[r]`` is the median loss over run ``r``'s first ``window`` recorded steps (NaN without a
    loss), robust to minibatch noise: what a plateau is measured against. ``scale[r]`` is the larger of
    it and the first recorded loss (at initialisation): the size of the problem, which spikes and
    convergence are measured against — a loss that falls steeply within the first window would
    otherwise make ordinary noise look like spikes. ``trailing`` is the median over the ``window``
    steps ending at each row; ``before`` over the ``window`` steps before it (NaN at a run's first
    row); ``converged`` where ``trailing`` is below ``converged_loss`` × ``scale``.
    """

    rows: Rows
    gid: np.ndarray
    start: np.ndarray
    scale: np.ndarray
    trailing: np.ndarray
    before: np.ndarray
    converged: np.ndarray


def loss_curve(t: Table, th: Thresholds) -> LossCurve:
    """The prepared loss curve of every run (see :class:`LossCurve`)."""
    rows = t.get("loss")
    empty = np.zeros(0)
    if rows is None:
        rows = Rows(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), empty)
    rows = rows.take(np.isfinite(rows.v) & (t.layer_pos[rows.l] < 0))  # the network level's rows
    gid = group_ids(rows.r)
    start = np.full(len(t.runs), np.nan)
    if len(rows.r) == 0:
        return LossCurve(rows, gid, start, start.copy(), empty, empty, np.zeros(0, dtype=bool))
    first = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    start[rows.r[first]] = first_window_median(gid, rows.v, th.window)
    scale = start.copy()
    scale[rows.r[first]] = np.maximum(start[rows.r[first]], rows.v[first])
    s = pd.Series(rows.v)
    trailing = s.groupby(gid).rolling(th.window, min_periods=1).median().to_numpy()
    before = np.r_[np.nan, trailing[:-1]]
    before[first] = np.nan
    converged = trailing < th.converged_loss * scale[rows.r]
    return LossCurve(rows, gid, start, scale, trailing, before, converged)


def converged_at(curve: LossCurve, r: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Whether run ``r[i]`` had converged by ``step[i]``: at its latest loss row at or before it."""
    out = np.zeros(len(r), dtype=bool)
    lr, ls = curve.rows.r, curve.rows.step
    if len(r) == 0 or len(lr) == 0:
        return out
    # dense ranks of the steps, so that one sorted key covers (run, step) whatever the steps' size
    _, rank = np.unique(np.concatenate([ls, step]), return_inverse=True)
    n = np.int64(rank.max() + 1)
    key_loss = lr * n + rank[: len(ls)]
    key_q = r * n + rank[len(ls):]
    j = np.searchsorted(key_loss, key_q, side="right") - 1
    ok = (j >= 0) & (lr[np.clip(j, 0, None)] == r)
    out[ok] = curve.converged[j[ok]]
    return out


def rule_plateau(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray], curve: LossCurve) -> list[dict]:
    """``loss_plateau``: by the run's end its loss has fallen by less than ``loss_drop`` of the start.

    Judged on window medians (minibatch losses are noisy), at every step with a full window of
    ``window`` steps; the run must record at least two windows, so that its last window and its first
    are apart, and the final stretch of such steps must span a window itself (a plateau that has just
    begun is not one yet). The finding's step is where that stretch began (the start of its first
    window): step 0 for a run that never learned, later for one whose loss came back up. ``value``
    is the fraction the loss fell by (negative: it rose).
    """
    rows, gid, w = curve.rows, curve.gid, th.window
    out: list[dict] = []
    if len(rows.r) == 0:
        return out
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    ends = np.r_[starts[1:], len(gid)]
    for a, b in zip(starts, ends, strict=True):
        if b - a < 2 * w:
            continue
        r = int(rows.r[a])
        checked["loss_plateau"][r] = True
        drop = 1 - curve.trailing[a:b] / curve.start[r]
        hit = (drop < th.loss_drop) & ~curve.converged[a:b]
        hit[: w - 1] = False  # no full window yet
        if not hit[-1]:
            continue
        miss = np.flatnonzero(~hit)
        first = (miss[-1] + 1) if len(miss) else w - 1
        if len(hit) - first < w:
            continue
        lo = max(first - w + 1, 0)
        out.append({
            "r": r, "kind": "loss_plateau", "rule": "loss_plateau", "l": -1, "layers": [],
            "step": int(rows.step[a + lo]), "value": float(drop[-1]), "op": "<",
            "threshold": th.loss_drop, "start_loss": float(curve.start[r]),
            "end_loss": float(curve.trailing[b - 1]), "lo": int(rows.step[a + lo]),
            "hi": int(rows.step[b - 1]),
        })
    return out


def rule_oscillation(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray],
                     curve: LossCurve) -> list[dict]:
    """``oscillating_loss``: spikes (the loss above the median of the ``window`` steps before it by
    more than ``spike_rise`` × the loss's scale at the start) on more than ``spike_frac`` of some
    window's steps."""
    rows, gid = curve.rows, curve.gid
    if len(rows.r) < 2:
        return []
    rise = (rows.v - curve.before) / curve.scale[rows.r]
    valid = np.isfinite(rise)
    checked["oscillating_loss"][np.unique(rows.r[valid])] = True
    hit = valid & (np.nan_to_num(rise, nan=-np.inf) > th.spike_rise)
    found = sustained(gid, rows.step, hit, np.where(hit, 1.0, 0.0), th.window, th.spike_frac)
    out = []
    for f in found.itertuples():
        r = int(rows.r[f.row])
        win = (rows.r == r) & (rows.step >= f.lo) & (rows.step <= f.hi)
        out.append({
            "r": r, "kind": "oscillating_loss", "rule": "loss_spikes", "l": -1, "layers": [],
            "step": int(f.step), "value": f.hits / f.span, "op": ">", "threshold": th.spike_frac,
            "hits": int(f.hits), "span": int(f.span), "lo": int(f.lo), "hi": int(f.hi),
            "rise": float(np.nanmax(np.where(win & valid, rise, np.nan))),
            "start_loss": float(curve.scale[r]), "rise_threshold": th.spike_rise,
        })
    return out


def rule_clipping(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray]) -> list[dict]:
    """``clipping``: gradient clipping fired (``clipped`` > 0) on more than ``clip_frac`` of the run's
    recorded steps that made an update (a run's last step makes none). Over the whole run, not a
    window: clipping the large gradients of the first steps is what clipping is for. The step is the
    first at which it fired. Evidence: the median global
    norm ‖g‖ before clipping, and the median norm clipping left on the steps it fired (the clip
    threshold, for norm clipping)."""
    rows = t.get("clipped")
    if rows is None:
        return []
    rows = rows.take(np.isfinite(rows.v) & (t.layer_pos[rows.l] < 0))
    if len(rows.r) == 0:
        return []
    checked["clipping"][np.unique(rows.r)] = True
    total, clipped, upd = t.get("grad_norm_total"), t.get("grad_norm_clipped"), t.get("update_ratio")
    out = []
    for r in np.unique(rows.r):
        mine = rows.r == r
        if upd is not None and (upd.r == r).any():  # steps after the last update clipped nothing
            mine &= rows.step <= upd.step[upd.r == r].max()
        hit, steps = rows.v[mine] > 0, rows.step[mine]
        if not (len(hit) and hit.mean() > th.clip_frac):
            continue
        lo, hi = int(steps[0]), int(steps[-1])
        out.append({
            "r": int(r), "kind": "clipping", "rule": "clip_most_steps", "l": -1, "layers": [],
            "step": int(steps[hit][0]), "value": float(hit.mean()), "op": ">", "threshold": th.clip_frac,
            "hits": int(hit.sum()), "span": len(hit), "lo": lo, "hi": hi,
            "g": _median_at(total, int(r), lo, hi), "clip": _median_at(clipped, int(r), lo, hi, steps[hit]),
        })
    return out


def _median_at(rows: Rows | None, r: int, lo: int, hi: int, steps: np.ndarray | None = None) -> float:
    """Median finite value of run ``r``'s rows in steps ``lo``..``hi`` (only ``steps`` when given)."""
    if rows is None:
        return float("nan")
    m = (rows.r == r) & (rows.step >= lo) & (rows.step <= hi) & np.isfinite(rows.v)
    if steps is not None:
        m &= np.isin(rows.step, steps)
    return float(np.median(rows.v[m])) if m.any() else float("nan")
