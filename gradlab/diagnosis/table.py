"""The metrics a diagnosis reads, prepared once: the needed rows of the tidy frame as integer-coded arrays.

:func:`prepare` selects the metrics the rules need (:data:`NEEDED`), codes runs and layers as
integers (each run's layers with their kind and forward position from the layers table) and sorts each
metric's rows by (run, layer, step) into a :class:`Rows`; the :class:`Table` holds them, plus what
:func:`gradlab.diagnosis.rules.rule_diverged` looks up lazily. The rules themselves are in
:mod:`gradlab.diagnosis.rules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradlab.records import METRIC_COLUMNS, WEIGHTED_KINDS, layers_for

NEEDED = ("grad_out_norm", "grad_norm_total", "loss", "nonfinite", "saturation", "dead_frac",
          "dead_frac_window", "update_ratio", "act_std", "weight_norm", "grad_norm", "clipped",
          "grad_norm_clipped")
READ = (*NEEDED, "grad_in_norm")
"""Every metric a diagnosis reads (``grad_in_norm`` only at a diverged run's step): what readers load."""


@dataclass
class Rows:
    """One metric's rows as arrays sorted by (run, layer, step); ``flag`` marks a variant source."""

    r: np.ndarray
    l: np.ndarray
    step: np.ndarray
    v: np.ndarray
    flag: np.ndarray | None = None

    def of_run(self, r: int) -> Rows:
        """Run ``r``'s rows (a slice: the rows are sorted by run)."""
        lo, hi = np.searchsorted(self.r, [r, r + 1])
        flag = self.flag[lo:hi] if self.flag is not None else None
        return Rows(self.r[lo:hi], self.l[lo:hi], self.step[lo:hi], self.v[lo:hi], flag)

    def take(self, mask: np.ndarray) -> Rows:
        """The rows where ``mask`` holds."""
        flag = self.flag[mask] if self.flag is not None else None
        return Rows(self.r[mask], self.l[mask], self.step[mask], self.v[mask], flag)


@dataclass
class Table:
    """The metrics a diagnosis needs, as integer-coded arrays.

    A layer code is one layer of one run: ``layer_names``, ``layer_kind`` (its kind, or its
    activation's name for activation layers), ``layer_pos`` (forward position; -1 for the network
    level) and ``weighted`` (a weighted kind: its ‖∂L/∂y‖ enters the gradient-flow profile) by code.

    ``rows["dead"]`` holds ``dead_frac_window`` rows (flag True) and, for layers without them,
    ``dead_frac`` rows; ``rows["nonfinite"]`` only its rows > 0; ``rows["act_std"]`` and
    ``rows["grad_out_norm"]`` only weighted layers' rows. Other metrics are looked up lazily with
    :meth:`at` (only diverged runs need them) from the coded columns kept in ``raw``.
    ``present[metric]`` tells which runs recorded a metric at all.
    """

    runs: list[str]
    layer_names: np.ndarray
    layer_kind: np.ndarray
    layer_pos: np.ndarray
    weighted: np.ndarray
    rows: dict[str, Rows]
    raw: dict[str, Any]
    present: dict[str, np.ndarray]

    def get(self, metric: str) -> Rows | None:
        """The rows of ``metric``, or None when it was not recorded."""
        return self.rows.get(metric)

    def at(self, metric: str, step_of: Mapping[int, int]) -> Rows | None:
        """All rows of ``metric`` of run ``r`` at step ``step_of[r]`` (None: never recorded).

        Compares each row's step with its own run's step, whatever their magnitude or sign."""
        raw = self.raw
        k = raw["metric_code"].get(metric)
        if k is None:
            return None
        i = raw["by_metric"][raw["bounds"][k + 1]:raw["bounds"][k + 2]]
        i = i[raw["r"][i] >= 0]
        want, has = np.zeros(len(self.runs), dtype=np.int64), np.zeros(len(self.runs), dtype=bool)
        for r, s in step_of.items():
            want[r], has[r] = s, True
        r = raw["r"][i]
        i = i[has[r] & (raw["step"][i] == want[r])]
        return Rows(raw["r"][i], raw["l"][i], raw["step"][i], raw["v"][i])

    def truncate(self, limit: Mapping[int, int]) -> None:
        """Drop every prepared row of run ``r`` at or after step ``limit[r]`` (its divergence): what a
        network computes from NaN weights is not a measurement (a NaN output is "100 % dead")."""
        if not limit:
            return
        stop, has = np.zeros(len(self.runs), dtype=np.int64), np.zeros(len(self.runs), dtype=bool)
        for r, s in limit.items():
            stop[r], has[r] = s, True
        for name, rows in self.rows.items():
            self.rows[name] = rows.take(~(has[rows.r] & (rows.step >= stop[rows.r])))


def prepare(
    metrics: pd.DataFrame, extra_runs: list[str] | None = None, layers: pd.DataFrame | None = None
) -> Table:
    """Select the needed rows and code runs and layers as integers; kinds and positions come from the
    layers table (``None``: inferred, see :func:`gradlab.records.layers_for`)."""
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    if missing:
        raise ValueError(f"metrics frame lacks column(s) {missing}; expected {METRIC_COLUMNS}")
    # Factorize whole columns once (cheap on categorical or Arrow strings); then split rows by
    # metric with one stable sort, and do everything else on each metric's own rows.
    m_codes, m_uniq = pd.factorize(metrics["metric"])
    r_codes, r_uniq = pd.factorize(metrics["run"])
    n_codes, n_uniq = pd.factorize(metrics["layer"])
    all_runs = [str(r) for r in r_uniq]
    known = set(all_runs)
    runs = all_runs + [r for r in dict.fromkeys(extra_runs or []) if r not in known]
    # a layer code per (run, layer name): two runs may give one name different kinds or positions
    n_names = np.int64(len(n_uniq) + 1)
    n_codes[n_codes < 0] = n_names - 1  # NA → ""
    key = r_codes.astype(np.int64)  # in place: a row per metric value, each array ~300 MB on 1,000 runs
    key *= n_names
    key += n_codes
    del n_codes
    l_codes, pair = pd.factorize(key)
    del key
    # the codes and row numbers kept for the rules in 32 bits: half the memory
    r_codes, l_codes = r_codes.astype(np.int32), l_codes.astype(np.int32)
    row_t = np.int32 if len(metrics) < 2**31 else np.int64
    pair_run, pair_name = np.divmod(np.asarray(pair, dtype=np.int64), n_names)
    all_names = np.array([str(u) for u in n_uniq] + [""], dtype=object)
    names = all_names[pair_name]
    kind, pos = _layer_info(metrics, layers, [all_runs[r] if r >= 0 else "" for r in pair_run], names)
    step_all = metrics["step"].to_numpy(dtype=np.int64)
    v_all = metrics["value"].to_numpy(dtype=np.float64)
    small = np.uint8 if len(m_uniq) < 255 else np.uint16 if len(m_uniq) < 65535 else np.int64
    by_metric = np.argsort((m_codes + 1).astype(small), kind="stable").astype(row_t)  # radix: keeps order
    bounds = np.r_[0, np.cumsum(np.bincount(m_codes + 1, minlength=len(m_uniq) + 1))]
    del m_codes
    n_runs = len(runs)

    codes = {str(m): k for k, m in enumerate(m_uniq)}

    def subset(name: str) -> np.ndarray | None:
        k = codes.get(name)
        if k is None:
            return None
        i = by_metric[bounds[k + 1]:bounds[k + 2]]
        return i[r_codes[i] >= 0]

    idx = {m: subset(m) for m in NEEDED}
    present = {m: np.bincount(r_codes[i], minlength=n_runs) > 0 for m, i in idx.items() if i is not None}
    weighted = np.isin(kind, WEIGHTED_KINDS)
    for m in ("grad_out_norm", "act_std"):  # only weighted layers' enter the ratio and init rules
        if idx[m] is not None:
            idx[m] = idx[m][weighted[l_codes[idx[m]]]]
    if idx["nonfinite"] is not None:  # only the bad counts matter
        v = v_all[idx["nonfinite"]]
        idx["nonfinite"] = idx["nonfinite"][(v > 0) | ~np.isfinite(v)]
    dead, win = idx.pop("dead_frac"), idx.pop("dead_frac_window")
    flag = None
    if dead is not None and win is not None:  # a layer's window metric replaces its batch metric
        n_l = np.int64(len(names))
        has_win = np.zeros(n_runs * int(n_l), dtype=bool)
        has_win[r_codes[win] * n_l + l_codes[win]] = True
        dead = dead[~has_win[r_codes[dead] * n_l + l_codes[dead]]]
    if dead is not None or win is not None:
        parts = [p for p in (win, dead) if p is not None]
        flag = np.concatenate([np.full(len(p), p is win) for p in parts])
        idx["dead"] = np.concatenate(parts)
    rows: dict[str, Rows] = {}
    for name, i in idx.items():
        if i is None or len(i) == 0:
            continue
        order = np.lexsort((step_all[i], l_codes[i], r_codes[i]))  # any step magnitude or sign
        i = i[order]
        rows[name] = Rows(r_codes[i], l_codes[i], step_all[i], v_all[i],
                          flag[order] if name == "dead" else None)
    raw = {"r": r_codes, "l": l_codes, "step": step_all, "v": v_all, "by_metric": by_metric,
           "bounds": bounds, "metric_code": {str(m): k for k, m in enumerate(m_uniq)}}
    return Table(runs, names, kind, pos, weighted, rows, raw, present)


def _layer_info(
    metrics: pd.DataFrame, layers: pd.DataFrame | None, run_of: list[str], names: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per layer code: its kind (an activation layer's activation name) and forward position.

    The network level ("") has kind "" and position -1; a layer missing from the table goes after
    its run's known layers, in order of appearance, with kind "layer".
    """
    table = layers_for(metrics, layers)
    label = np.where(table["kind"].astype(str) == "activation", table["activation"].astype(str),
                     table["kind"].astype(str))
    info = dict(zip(zip(table["run"].astype(str), table["layer"].astype(str), strict=True),
                    zip(label, table["position"].astype(np.int64), strict=True), strict=True))
    kind = np.empty(len(names), dtype=object)
    pos = np.empty(len(names), dtype=np.int64)
    top: dict[str, int] = {}
    for (run, _), (_, p) in info.items():
        top[run] = max(top.get(run, -1), int(p))
    for i, (run, name) in enumerate(zip(run_of, names, strict=True)):
        if name == "":
            kind[i], pos[i] = "", -1
        elif (run, name) in info:
            kind[i], pos[i] = info[(run, name)]
        else:
            top[run] = top.get(run, -1) + 1
            kind[i], pos[i] = "layer", top[run]
    return kind, pos
