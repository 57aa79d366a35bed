"""The diagnosis rules: pure, vectorised checks over the tidy metrics frame, each with named thresholds.

Every rule turns metric rows into a per-row *hit* (the measured value is past its threshold) and
then asks whether the hit is *sustained*: within some window of ``window`` consecutive recorded
steps (the whole run if it recorded fewer), more than ``majority`` of the steps hit. A finding
reports the first step that hit inside the first such window, and the median of the measured
value over that window (so the median is past the threshold too). A run that recorded only step 0
is judged on that one step. Rows whose value is NaN or ±Inf are not observations (``diverged``
covers those). The rules read a :class:`gradlab.diagnosis.table.Table` (the metrics prepared once);
:func:`gradlab.diagnosis.verdicts.diagnose` is the public entry point; the thresholds are
:class:`gradlab.diagnosis.thresholds.Thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from gradlab.diagnosis.table import Rows, Table
from gradlab.diagnosis.thresholds import Thresholds


def group_ids(*keys: np.ndarray) -> np.ndarray:
    """0-based ids of the runs of equal keys in arrays already sorted by those keys."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.cumsum(change) - 1


def sustained(gid: np.ndarray, step: np.ndarray, hit: np.ndarray, value: np.ndarray,
              window: int, majority: float) -> pd.DataFrame:
    """Groups (sorted ``gid``, steps ascending) where ``hit`` holds for most of some window.

    Returns one row per qualifying group: ``row`` (index of the group's first row), ``step`` (first
    hit in the first qualifying window), ``lo``/``hi`` (that window's steps), ``value`` (median of
    ``value`` over it), ``hits`` and ``span`` (hits and steps in it).
    """
    cols = ["row", "step", "lo", "hi", "value", "hits", "span"]
    n = len(gid)
    if n == 0:
        return pd.DataFrame({c: np.zeros(0) for c in cols})
    hit = hit.astype(np.int64)
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    grp = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    size = np.diff(np.r_[starts, n])
    i = np.arange(n)
    idx = i - starts[grp]
    w_eff = np.minimum(window, size)[grp]
    cum = np.cumsum(hit)
    base = (cum[starts] - hit[starts])[grp]
    before = np.where(idx >= window, cum[np.clip(i - window, 0, None)], base)
    in_win = cum - before
    qual = (idx + 1 >= w_eff) & (in_win > majority * w_eff)
    qi = np.flatnonzero(qual)
    if len(qi) == 0:
        return pd.DataFrame({c: np.zeros(0) for c in cols})
    g, first = np.unique(grp[qi], return_index=True)
    hi = qi[first]
    lo = hi - w_eff[hi] + 1
    hp = np.flatnonzero(hit)
    start = hp[np.searchsorted(hp, lo)]
    lens = hi - lo + 1
    rows = np.repeat(lo - np.r_[0, np.cumsum(lens)[:-1]], lens) + np.arange(lens.sum())
    med = pd.Series(value[rows]).groupby(np.repeat(np.arange(len(g)), lens)).median().to_numpy()
    return pd.DataFrame({"row": starts[g], "step": step[start], "lo": step[lo], "hi": step[hi],
                         "value": med, "hits": in_win[hi], "span": w_eff[hi]})


def first_window_median(gid: np.ndarray, v: np.ndarray, window: int) -> np.ndarray:
    """Per group (sorted ``gid``, steps ascending): the median of its first ``window`` values."""
    if len(gid) == 0:
        return np.zeros(0)
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    idx = np.arange(len(gid)) - np.repeat(starts, np.diff(np.r_[starts, len(gid)]))
    head = idx < window
    return pd.Series(v[head]).groupby(gid[head]).median().to_numpy()


def _noun(t: Table, codes: np.ndarray) -> str:
    """``"dense layers"`` when the layers share a kind, else ``"layers"``."""
    kinds = set(t.layer_kind[np.asarray(codes, dtype=np.int64)].tolist())
    return f"{kinds.pop()} layers" if len(kinds) == 1 else "layers"


def layer_findings(t: Table, th: Thresholds, kind: str, rule: str, rows: Rows, hit: np.ndarray,
                   threshold: float, op: str, checked: Mapping[str, np.ndarray],
                   majority: float | None = None, value: np.ndarray | None = None) -> list[dict]:
    """Per-layer findings of a rule whose ``hit`` (per row of ``rows``) is sustained in a layer.

    Each carries ``n_checked`` (how many of its run's layers the rule could check) and ``noun``;
    :func:`aggregate_layers` merges them into one finding per run and rule. ``value`` (default the
    rows' values) is what the median is taken of."""
    if len(rows.r) == 0:
        return []
    checked[kind][np.unique(rows.r)] = True
    n_l = np.int64(len(t.layer_names))
    pairs = np.unique(rows.r * n_l + rows.l)
    pr, pl = np.divmod(pairs, n_l)
    n_checked = np.bincount(pr, minlength=len(t.runs))
    layers_of = pd.Series(pl).groupby(pr).agg(list)
    gid = group_ids(rows.r, rows.l)
    val = rows.v if value is None else value
    found = sustained(gid, rows.step, hit, val, th.window, th.majority if majority is None else majority)
    out = []
    for f in found.itertuples():
        r, l = int(rows.r[f.row]), int(rows.l[f.row])
        out.append({
            "r": r, "kind": kind, "rule": rule, "l": l, "layers": [l], "step": int(f.step),
            "value": float(f.value), "op": op, "threshold": threshold, "hits": int(f.hits),
            "span": int(f.span), "lo": int(f.lo), "hi": int(f.hi), "row": int(f.row),
            "windowed": bool(rows.flag[f.row]) if rows.flag is not None else False,
            "n_checked": int(n_checked[r]), "noun": _noun(t, layers_of[r]),
        })
    return out


# -- the rules ---------------------------------------------------------------------------------
# Each returns a list of plain dicts (raw findings): run (code), kind, rule, layer (code or -1),
# layers (codes), step, value, op, threshold, plus evidence used in the message.


def rule_ratio(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray]) -> list[dict]:
    """``vanishing`` / ``exploding``: ‖∂L/∂y‖ of the first weighted layer over the output layer (every
    weighted kind of the layers table: dense, conv, embedding, weighted)."""
    go = t.get("grad_out_norm")
    if go is None:
        return []
    d = go.take(t.weighted[go.l])
    d = d.take(np.isfinite(d.v))
    if len(d.r) == 0:
        return []
    pos = t.layer_pos[d.l]
    df = pd.DataFrame({"r": d.r, "l": d.l, "step": d.step, "v": d.v, "pos": pos})
    by_run = df.groupby("r")["pos"]
    df["lo"], df["hi"] = by_run.transform("min").to_numpy(), by_run.transform("max").to_numpy()
    df = df[df["lo"] < df["hi"]]  # needs two weighted layers
    last = df[df["pos"] == df["hi"]][["r", "step", "v"]].rename(columns={"v": "v_last"})
    df = df.merge(last, on=["r", "step"], how="inner", sort=False)
    df = df[df["v_last"] > 0]
    df["rel"] = df["v"] / df["v_last"]
    df = df.sort_values(["r", "l", "step"], kind="stable")
    for kind in ("vanishing", "exploding"):
        checked[kind][df["r"].unique()] = True
    first = df[df["pos"] == df["lo"]]
    first_step = first.groupby("r")["step"].min()
    last_layer = df[df["pos"] == df["hi"]].groupby("r")["l"].first()
    n_weighted = df.groupby("r")["l"].nunique()
    noun = {r: _noun(t, ls) for r, ls in df.groupby("r")["l"].unique().items()}
    gid_run = group_ids(first["r"].to_numpy())
    gid_layer = group_ids(df["r"].to_numpy(), df["l"].to_numpy())
    out: list[dict] = []
    for kind, thr, below in (("vanishing", th.vanishing_ratio, True),
                             ("exploding", th.exploding_ratio, False)):
        ratio = first["rel"].to_numpy()
        hit = ratio < thr if below else ratio > thr
        found = sustained(gid_run, first["step"].to_numpy(), hit, ratio, th.window, th.majority)
        if found.empty:
            continue
        rel = df["rel"].to_numpy()
        lhit = (rel < thr) if below else (rel > thr)
        per_layer = sustained(gid_layer, df["step"].to_numpy(), lhit, rel, th.window, th.majority)
        aff = df.iloc[per_layer["row"].to_numpy()][["r", "l", "pos"]].sort_values(["r", "pos"])
        affected = aff.groupby("r")["l"].agg(list)
        for f in found.itertuples():
            r = int(first["r"].iat[f.row])
            out.append({
                "r": r, "kind": kind, "rule": f"{kind}_ratio", "l": -1,
                "layers": affected.get(r, []), "step": int(f.step), "value": float(f.value),
                "op": "<" if below else ">", "threshold": thr, "hits": int(f.hits), "span": int(f.span),
                "lo": int(f.lo), "hi": int(f.hi), "first": int(first["l"].iat[f.row]),
                "last": int(last_layer[r]), "n_weighted": int(n_weighted[r]), "noun": noun[r],
                "at_init": int(f.step) == int(first_step[r]),
            })
    return out


def rule_growth(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray]) -> list[dict]:
    """``exploding``: the global gradient norm grows ``growth_factor``-fold within ``window`` steps, to
    above its level at the start (median of the first window): a converged run's tiny ‖g‖ rising
    back towards ordinary values is not an explosion."""
    g = t.get("grad_norm_total")
    if g is None:
        return []
    g = g.take(np.isfinite(g.v) & (g.v > 0))
    if len(g.r) == 0:
        return []
    checked["exploding"][np.unique(g.r)] = True
    gid = group_ids(g.r)
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    idx = np.arange(len(gid)) - starts[gid]
    logv = np.log(g.v)
    best = np.full(len(gid), -np.inf)
    back = np.zeros(len(gid), dtype=np.int64)
    for k in range(1, th.window + 1):
        ok = idx >= k
        d = np.full(len(gid), -np.inf)
        d[ok] = logv[ok] - logv[np.flatnonzero(ok) - k]
        better = d > best
        best[better], back[better] = d[better], k
    start = first_window_median(gid, g.v, th.window)
    hits = np.flatnonzero((best >= math.log(th.growth_factor)) & (g.v > start[gid]))
    out: list[dict] = []
    if len(hits) == 0:
        return out
    _, first = np.unique(gid[hits], return_index=True)
    for i in hits[first]:
        j = i - back[i]
        out.append({
            "r": int(g.r[i]), "kind": "exploding", "rule": "exploding_growth", "l": -1, "layers": [],
            "step": int(g.step[j]), "value": float(math.exp(best[i])), "op": "≥",
            "threshold": th.growth_factor, "g0": float(g.v[j]), "g1": float(g.v[i]),
            "s0": int(g.step[j]), "s1": int(g.step[i]), "k": int(back[i]),
        })
    return out


def rule_layerwise(t: Table, th: Thresholds, checked: Mapping[str, np.ndarray],
                   exempt: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """``saturation``, ``dead_units`` and ``update_ratio``: one finding per affected layer.

    ``exempt[rule]`` (aligned with the metric's prepared rows) marks rows that cannot hit, e.g. the
    steps of a converged run for ``update_ratio_low``. See :func:`layer_findings` for the rest.
    """
    out: list[dict] = []
    specs: list[tuple[str, str, Rows, float, str]] = []
    sat = t.get("saturation")
    if sat is not None:
        specs.append(("saturation", "saturation", sat, th.saturation, "≥"))
    dead = t.get("dead")
    if dead is not None:
        specs.append(("dead_units", "dead_units", dead, th.dead_frac, "≥"))
    upd = t.get("update_ratio")
    if upd is not None:
        specs.append(("update_ratio", "update_ratio_low", upd, th.update_ratio_low, "<"))
        specs.append(("update_ratio", "update_ratio_high", upd, th.update_ratio_high, ">"))
    for kind, rule, rows, thr, op in specs:
        finite = np.isfinite(rows.v)
        skip = (exempt or {}).get(rule)
        rows = rows.take(finite)
        hit = rows.v < thr if op == "<" else rows.v > thr if op == ">" else rows.v >= thr
        if skip is not None:
            hit &= ~skip[finite]
        out += layer_findings(t, th, kind, rule, rows, hit, thr, op, checked)
    return out


def aggregate_layers(found: list[dict], layer_pos: np.ndarray) -> list[dict]:
    """One finding per (run, rule) from :func:`rule_layerwise`'s per-layer ones.

    ``l``/``value`` (and the window evidence) are the *worst* layer's — the lowest value for a
    ``<`` rule, the highest otherwise; on a tie the first in forward order — so ``value op
    threshold`` still holds for a real layer. ``layers`` lists every affected layer in forward order,
    ``step`` is the earliest step at which any of them held, and ``per_layer`` keeps the originals.
    """
    groups: dict[tuple[int, str], list[dict]] = {}
    for f in found:
        groups.setdefault((f["r"], f["rule"]), []).append(f)
    out = []
    for g in groups.values():
        g.sort(key=lambda f: layer_pos[f["l"]])
        sign = 1.0 if g[0]["op"] == "<" else -1.0
        worst = min(g, key=lambda f: sign * f["value"])
        out.append({**worst, "layers": [f["l"] for f in g], "step": min(f["step"] for f in g),
                    "per_layer": g, "windowed_all": all(f["windowed"] for f in g),
                    "windowed_any": any(f["windowed"] for f in g)})
    return out


def rule_diverged(t: Table, runs: pd.DataFrame | None, code: Mapping[str, int],
                  checked: Mapping[str, np.ndarray]) -> list[dict]:
    """``diverged``: the first step with a non-finite value, and the layer where it started.

    From the runs table (``diverged_step``/``diverged_layer``, recorded by the loop as it happened)
    when given. From the metrics alone: the lowest step with ``nonfinite > 0`` (or a non-finite
    loss or global gradient norm); its layer is the earliest in *forward* order whose output was
    non-finite or whose Σy² overflowed (no finite ``act_std`` at that step), else — the forward pass
    being finite — the layer nearest the output with a non-finite or overflowing gradient (the first
    the backward pass reached), else "" (the loss). This mirrors the monitor's own rule.

    Its value is what went non-finite, first found of: the global gradient norm at that step
    (``metric`` "grad_norm_total", op "is", threshold NaN), the loss (likewise), the layer's count of
    NaN/Inf entries (``metric`` "nonfinite", op ">", threshold 0); else NaN (nothing recorded there).
    """
    events: dict[int, dict] = {}
    for name in ("nonfinite", "loss", "grad_norm_total"):
        if name in t.present:
            checked["diverged"] |= t.present[name]
        rows = t.get(name)
        if rows is None:
            continue
        bad = rows.v > 0 if name == "nonfinite" else ~np.isfinite(rows.v)
        for r, s in pd.Series(rows.step[bad]).groupby(rows.r[bad]).min().items():
            if int(r) not in events or s < events[int(r)]["step"]:
                events[int(r)] = {"step": int(s), "source": "metrics"}
    if runs is not None and "run" in runs.columns:
        has_step = "diverged_step" in runs.columns
        for _, row in runs.iterrows():
            r = code.get(str(row["run"]))
            if r is None:
                continue
            step = row["diverged_step"] if has_step else pd.NA
            status = row.get("status", "")
            if pd.isna(step) and not (isinstance(status, str) and status == "diverged"):
                continue
            checked["diverged"][r] = True
            ev = events.setdefault(r, {"step": None, "source": "runs"})
            if not pd.isna(step):
                ev["step"], ev["source"] = int(step), "runs"
            layer = row.get("diverged_layer", pd.NA)
            if isinstance(layer, str) and not pd.isna(layer):
                ev["layer_name"] = layer
    out: list[dict] = []
    if not events:
        return out
    # Only the rows at each run's divergence step matter: look those up, not whole columns.
    step_of = {r: ev["step"] for r, ev in events.items() if ev["step"] is not None}
    at = {m: t.at(m, step_of) for m in ("nonfinite", "act_std", "grad_in_norm", "grad_norm", "loss",
                                        "grad_norm_total")}
    has_std = t.present.get("act_std", np.zeros(len(t.runs), dtype=bool))
    empty = Rows(*(np.zeros(0, dtype=np.int64),) * 3, np.zeros(0))

    def rows_at(metric: str, r: int, s: int) -> Rows:
        x = at[metric] if at[metric] is not None else empty
        return x.take((x.r == r) & (x.step == s))

    for r, ev in events.items():
        s = ev["step"]
        nfr = rows_at("nonfinite", r, s) if s is not None else empty
        cand, counts = nfr.l, nfr.v
        # The monitor's rule: a layer's output is bad when it holds a non-finite entry or its
        # Σy² overflows — exactly when act_std is non-finite (or dropped as NaN).
        std = rows_at("act_std", r, s) if s is not None else empty
        fwd = ~np.isin(cand, std.l[np.isfinite(std.v)]) if has_std[r] else np.zeros(len(cand), bool)
        grads = [rows_at(m, r, s) for m in ("grad_in_norm", "grad_norm")] if s is not None else []
        overflow = np.concatenate([g.l[~np.isfinite(g.v)] for g in grads] + [np.zeros(0, np.int64)])
        bwd = (counts > 0) | np.isin(cand, overflow)
        if "layer_name" in ev:
            name = ev["layer_name"]
            mine = t.layer_names[cand] == name
            origin = "forward" if fwd[mine].any() else "backward" if bwd[mine].any() else "runs"
        elif fwd.any():
            origin = "forward"
            name = str(t.layer_names[cand[np.argmin(np.where(fwd, t.layer_pos[cand], np.inf))]])
        elif bwd.any():  # the backward pass runs from the output: the first it reached
            origin = "backward"
            name = str(t.layer_names[cand[np.argmax(np.where(bwd, t.layer_pos[cand], -1))]])
        else:
            name, origin = "", "loss"
        count = math.nan
        if name and len(cand):
            hit = [c for c, n in zip(counts, t.layer_names[cand], strict=True) if n == name]
            count = float(hit[0]) if hit else math.nan
        net: dict[str, float | None] = {}
        for m in ("grad_norm_total", "loss"):
            v = rows_at(m, r, s).v if s is not None else np.zeros(0)
            net[m] = float(v[0]) if len(v) else None  # None: not recorded at that step
        f = {"r": r, "kind": "diverged", "rule": "diverged", "l": -1, "layer_name": name, "layers": [],
             "step": s, "value": math.nan, "metric": "", "op": "", "threshold": math.nan,
             "source": ev["source"], "origin": origin, "count": count, "g": net["grad_norm_total"],
             "loss": net["loss"]}
        bad = [m for m in ("grad_norm_total", "loss") if net[m] is not None and not math.isfinite(net[m])]
        if bad:
            f.update(value=net[bad[0]], metric=bad[0], op="is")
        elif count > 0:
            f.update(value=count, metric="nonfinite", op=">", threshold=0.0)
        out.append(f)
    return out
