"""Arms of a sweep: which config columns vary, and the label that names each run's arm.

Pure pandas: the charts, the report and the terminal table of findings all label runs this way.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

RUN_OUTPUT_COLUMNS = (
    "run",
    "name",
    "n_params",
    "status",
    "diverged_step",
    "diverged_layer",
    "final_loss",
    "wall_time_s",
    "error",
)
"""Columns of the runs table that are results, not configuration (docs/data.md)."""

NOT_AN_AXIS = ("seed",)
"""Config columns that vary within an arm (repeats), never part of an arm label."""

FALLBACK_LABEL_COLUMNS = ("depth", "activation", "init")
"""What an arm label shows when no config column varies across the sweep."""

_NUM = re.compile(r"(\d+(?:\.\d+)?)")


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically ("depth=5" before "depth=10")."""
    parts = _NUM.split(str(text))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def natural_rank(values: pd.Series) -> pd.Series:
    """Each value's rank in :func:`natural_key` order: a sort column with no tuple built per row."""
    order = sorted(values.unique(), key=natural_key)
    return values.map({v: i for i, v in enumerate(order)})


def config_columns(runs: pd.DataFrame) -> list[str]:
    """Columns of the runs table that hold configuration, in table order."""
    return [c for c in runs.columns if c not in RUN_OUTPUT_COLUMNS]


def varying_axes(runs: pd.DataFrame, *, include_seed: bool = False) -> list[str]:
    """Config columns that take more than one value across the runs (the sweep's axes)."""
    out = []
    for c in config_columns(runs):
        if not include_seed and c in NOT_AN_AXIS:
            continue
        if runs[c].astype("string").fillna("<NA>").nunique() > 1:
            out.append(c)
    return out


def axis_values(runs: pd.DataFrame, col: str) -> list:
    """The distinct non-missing values of a config column, sorted (natural text order if mixed types)."""
    vals = runs[col].dropna().unique().tolist()
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=lambda v: natural_key(format_value(v)))


def format_value(value: Any) -> str:
    """Compact text for a config value (0.1 not 0.1000000, True stays True)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def arm_labels(runs: pd.DataFrame) -> pd.Series:
    """Arm label per run (index = run id): ``name`` if non-empty, else the varying config "k=v" pairs.

    A name shared by runs whose configs differ (beyond the seed) gets those differences appended,
    so two arms are never drawn as one.
    """
    axes = varying_axes(runs)
    cols = axes or [c for c in FALLBACK_LABEL_COLUMNS if c in runs.columns]
    text = {c: [format_value(v) for v in runs[c].tolist()] for c in dict.fromkeys(axes + cols)}
    names = (
        runs["name"].astype("string").fillna("").str.strip().tolist()
        if "name" in runs.columns
        else [""] * len(runs)
    )
    spread = runs[axes].astype("string").fillna("<NA>").groupby(names).nunique()  # name × axis
    extra = {n: [c for c in axes if spread.at[n, c] > 1] for n in spread.index}  # where a name's runs differ
    labels = []
    for i, name in enumerate(names):
        if name:
            labels.append(" ".join([name] + [f"{c}={text[c][i]}" for c in extra[name]]))
        elif cols:
            labels.append(" ".join(f"{c}={text[c][i]}" for c in cols))
        else:
            labels.append(str(runs["run"].iloc[i]))
    return pd.Series(labels, index=pd.Index(runs["run"].astype(str), name="run"), name="arm", dtype=object)
