"""Theory beside measurement for recorded runs: the mean-field gradient profile each run should show at
initialisation, next to the one it did show.

:func:`expected_vs_measured` reads the runs table and the metrics frame of docs/data.md and predicts
‖∂L/∂h_l‖/‖∂L/∂h_L‖ for the Dense outputs h_0 … h_L of every run with
:func:`gradlab.theory.meanfield.predicted_profile`. It covers the networks the theory describes: Dense → φ
stacks, and Dense → BatchNorm → φ through Yang et al.'s rate. It skips, giving the reason:
residual connections, layer norm and dropout (no mean-field profile here), failed runs, runs without
a finite step-0 ``grad_out_norm`` for every Dense layer, inits without a variance rule or with zero
weights, weight or bias scales whose σ² overflows float64, and batch norm with fewer than 4 samples
per batch (λ_G is infinite). The Dense layers are the weighted layers of the layers table
(:data:`gradlab.records.WEIGHTED_KINDS`) in forward order; a layer's name is only a label.

The input's q_in = ‖x‖²/d: 1 for the datasets whose inputs are N(0, I) (``gaussian``, ``teacher``);
for the others it is estimated from the first Dense layer's measured output at step 0, whose second moment
act_std² + act_mean² is σ_w0²·q_in + σ_b². That is one mean q_in for the batch; the per-sample spread
of ‖x‖² is not recorded, so for bounded φ the profile is then approximate. Batch norm needs the input's
per-feature *batch variance* instead, which the metrics do not give: for those datasets the layer-0
prediction of a batch-norm run is left nan (the layers above do not depend on the input).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gradlab.records import WEIGHTED_KINDS, layers_for
from gradlab.theory.meanfield import layer_sigma_w2, predicted_profile, sigma_params

COLUMNS = ["run", "layer_index", "layer", "predicted", "measured", "ratio", "q_in", "reason"]
"""Columns of :func:`expected_vs_measured`."""
STANDARD_INPUTS = ("gaussian", "teacher")
"""Datasets whose inputs are N(0, I), so q_in = 1 (gradlab.experiment.data)."""
_NEEDED = ("depth", "width", "activation", "init", "weight_scale")


def expected_vs_measured(runs: pd.DataFrame, metrics: pd.DataFrame, *,
                         layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Predicted beside measured ‖∂L/∂h_l‖/‖∂L/∂h_L‖ of every Dense layer at step 0, one row per layer.

    Columns (:data:`COLUMNS`): ``run``; ``layer_index`` (0 = first Dense layer, Int64); ``layer`` (its
    name); ``predicted`` and ``measured``, both relative to the output layer (1 there); ``ratio`` =
    measured/predicted; ``q_in``, the input's ‖x‖²/d used; ``reason``, "" where the theory applies. A run
    the theory does not cover gets a single row: layer_index <NA>, nan numbers and the reason in words.
    ``layers`` is the layers table (kind and forward position per layer); None infers it
    (:func:`gradlab.records.layers_for`).
    """
    table = layers_for(metrics, layers)
    table = table[table["kind"].astype(str).isin(WEIGHTED_KINDS)]
    weighted = pd.DataFrame({"run": table["run"].astype(str).to_numpy(dtype=object),
                             "layer": table["layer"].astype(str).to_numpy(dtype=object),
                             "position": table["position"].to_numpy(dtype=np.int64)})
    m0 = metrics[(metrics["step"] == 0) & metrics["metric"].isin(["grad_out_norm", "act_mean", "act_std"])]
    m0 = pd.DataFrame({"run": m0["run"].astype(str).to_numpy(dtype=object),
                       "layer": m0["layer"].astype(str).to_numpy(dtype=object),
                       "metric": m0["metric"].astype(str).to_numpy(dtype=object),
                       "value": m0["value"].to_numpy(dtype=float)}).merge(weighted, on=["run", "layer"])
    by_run = {str(r): g for r, g in m0.groupby("run", sort=False)}
    cache: dict[tuple, np.ndarray] = {}
    parts = []
    for cfg in runs.to_dict("records"):
        run = str(cfg["run"])
        try:
            parts.append(_one_run(run, cfg, by_run.get(run), cache))
        except _SkipError as skip:
            parts.append(_skipped(run, str(skip)))
        except (ArithmeticError, ValueError) as exc:  # e.g. a config beyond float64's range: no theory
            parts.append(_skipped(run, f"the mean-field computation failed ({type(exc).__name__}: {exc})"))
    if not parts:
        return _skipped("", "")[:0]
    out = pd.concat(parts, ignore_index=True)
    return out.astype({"run": "string", "layer_index": "Int64", "layer": "string", "predicted": float,
                       "measured": float, "ratio": float, "q_in": float, "reason": "string"})[COLUMNS]


class _SkipError(Exception):
    """The theory does not cover this run; the message says why."""


def _get(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    v = cfg.get(key, default)
    return default if v is None or (not isinstance(v, str) and pd.isna(v)) else v


def _not_covered(cfg: Mapping[str, Any]) -> str:
    """Why the theory cannot describe this run's network at all ("" when it can, batch norm aside)."""
    missing = [k for k in _NEEDED if _get(cfg, k, None) is None]
    if missing:
        return f"the runs table has no {', '.join(missing)}"
    if str(_get(cfg, "status", "ok")) == "failed":
        return "the run failed"
    for key, what in (("residual", "residual connections"), ("layer_norm", "layer norm")):
        if bool(_get(cfg, key, False)):
            return f"{what}: no mean-field profile here"
    if float(_get(cfg, "dropout", 0.0)) > 0:
        return "dropout: no mean-field profile here"
    return ""


def _one_run(run: str, cfg: Mapping[str, Any], rows: pd.DataFrame | None, cache: dict) -> pd.DataFrame:
    why = _not_covered(cfg)
    if why:
        raise _SkipError(why)
    depth, bn = int(cfg["depth"]), bool(_get(cfg, "batch_norm", False))
    batch = int(_get(cfg, "batch_size", 0))
    if bn and batch < 4:
        raise _SkipError(f"batch norm with batch size {batch} < 4: λ_G is infinite")

    names, measured, q0 = _measured(rows, depth)
    dataset = str(_get(cfg, "dataset", ""))
    in_dim, out_dim = _dims(cfg, dataset)
    try:
        sw = layer_sigma_w2(str(cfg["init"]), float(cfg["weight_scale"]), in_dim, int(cfg["width"]), depth,
                            out_dim)
        sb2 = sigma_params(str(cfg["init"]), 1.0, float(_get(cfg, "bias_scale", 0.0)))[1]
    except ValueError as e:
        raise _SkipError(str(e)) from None
    if not np.all(sw > 0):
        raise _SkipError("zero weights: no signal to propagate")
    if not (np.all(np.isfinite(sw)) and math.isfinite(sb2)):
        raise _SkipError("σ_w² or σ_b² is not finite: the mean-field theory does not apply")
    if dataset in STANDARD_INPUTS:
        q_in, layer0_known = 1.0, True
    elif q0 is None:
        raise _SkipError(f"dataset {dataset!r}: q_in needs {names[0]}'s act_mean and act_std at step 0")
    else:
        q_in, layer0_known = max(q0 - sb2, 1e-12 * q0) / sw[0], not bn
    key = (str(cfg["activation"]), depth, tuple(sw), sb2, q_in, bn, batch)
    if key not in cache:
        cache[key] = predicted_profile(key[0], depth, sw, sb2, q_in, batch_norm=bn,
                                       batch_size=batch if bn else None)
    pred = cache[key].copy()
    if not layer0_known:
        pred[0] = math.nan
    meas = measured / measured[-1]
    return pd.DataFrame({"run": run, "layer_index": np.arange(depth + 1), "layer": names, "predicted": pred,
                         "measured": meas, "ratio": meas / pred, "q_in": q_in, "reason": ""})


def _measured(rows: pd.DataFrame | None, depth: int) -> tuple[list[str], np.ndarray, float | None]:
    """Dense layer names in forward order, their step-0 ‖∂L/∂y‖, and E[h_0²] of the first if recorded."""
    if rows is None:
        raise _SkipError("no step-0 metrics recorded for the dense layers")
    g = rows[rows["metric"] == "grad_out_norm"].sort_values(["position", "layer"], kind="stable")
    names = list(g["layer"])
    if len(names) != depth + 1:
        raise _SkipError(f"step-0 grad_out_norm recorded for {len(names)} of the {depth + 1} dense layers")
    values = g["value"].to_numpy(dtype=float)
    if not np.all(np.isfinite(values) & (values > 0)):
        raise _SkipError("non-finite or zero gradient at step 0")
    first = rows[rows["layer"] == names[0]].set_index("metric")["value"]
    q0 = None
    if {"act_mean", "act_std"} <= set(first.index):
        q0 = float(first["act_std"]) ** 2 + float(first["act_mean"]) ** 2
        q0 = q0 if math.isfinite(q0) and q0 > 0 else None
    return names, values, q0


def _dims(cfg: Mapping[str, Any], dataset: str) -> tuple[int, int]:
    """(input_dim, output_dim) of the network: the config's, else the dataset's defaults (0 = default)."""
    from gradlab.experiment.data import DATASETS

    in_dim, out_dim = int(_get(cfg, "input_dim", 0)), int(_get(cfg, "n_classes", 0))
    if (not in_dim or not out_dim) and dataset not in DATASETS:
        raise _SkipError(f"unknown dataset {dataset!r}: input and output sizes unknown")
    b = DATASETS.get(dataset)
    return in_dim or (b.fixed_input_dim or b.input_dim), out_dim or b.n_classes


def phase_points(runs: pd.DataFrame) -> pd.DataFrame:
    """Where each run sits on the σ_w² × σ_b² phase diagram: columns ``run, activation, depth, sw2, sb2``.

    Only runs the χ₁ picture describes: plain Dense → φ stacks (no batch norm, layer norm, residual or
    dropout) that did not fail. σ_w² is a hidden layer's (:func:`gradlab.theory.meanfield.sigma_params`, so
    ``weight_scale²`` for ``init="normal"``) and σ_b² = ``bias_scale²``.
    """
    rows = []
    for cfg in runs.to_dict("records"):
        if _not_covered(cfg) or bool(_get(cfg, "batch_norm", False)):
            continue
        try:
            sw2, sb2 = sigma_params(str(cfg["init"]), float(cfg["weight_scale"]),
                                    float(_get(cfg, "bias_scale", 0.0)), int(cfg["width"]))
        except ValueError:
            continue
        if math.isfinite(sw2) and math.isfinite(sb2):
            rows.append((str(cfg["run"]), str(cfg["activation"]), int(cfg["depth"]), sw2, sb2))
    return pd.DataFrame(rows, columns=["run", "activation", "depth", "sw2", "sb2"])


def _skipped(run: str, reason: str) -> pd.DataFrame:
    return pd.DataFrame({"run": [run], "layer_index": pd.array([pd.NA], dtype="Int64"), "layer": [""],
                         "predicted": [math.nan], "measured": [math.nan], "ratio": [math.nan],
                         "q_in": [math.nan], "reason": [reason]})


__all__ = ["COLUMNS", "STANDARD_INPUTS", "expected_vs_measured", "phase_points"]
