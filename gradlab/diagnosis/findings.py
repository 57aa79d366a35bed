"""The findings frame: its columns, kinds and severities, and how it is shown and saved.

:func:`gradlab.diagnosis.verdicts.diagnose` produces it; this module holds what every consumer of a findings
frame needs without the rules: the schema (:data:`COLUMNS`, :data:`KINDS`, :data:`SEVERITY`,
:func:`findings_frame`), the per-run verdict (:func:`run_verdicts`), the terminal table
(:func:`format_findings`) and the JSON round trip (:func:`findings_to_json`,
:func:`findings_from_json`). One row per run and rule:

=========  ==================================================================================
run        the run id
kind       one of :data:`KINDS` (what ``--fail-on`` selects)
rule       the check that fired (``vanishing_ratio``, ``exploding_growth``, ``update_ratio_low``…)
layer      the layer concerned: for the layer-wise rules the *worst* affected layer (see
           gradlab.diagnosis.verdicts); "" for run-level findings
layers     the layers affected, comma-separated in forward order
step       the first recorded step at which it held (in any affected layer; Int64; <NA> for
           ``healthy``/``failed``)
metric     the metric ``value`` measures (``grad_out_norm`` ratio, ``update_ratio``, ``loss``…; "" if none)
value      the measured value (median over the first window in which it held; see gradlab.diagnosis.rules);
           for ``diverged`` what went non-finite: ‖g‖ or the loss (op "is"), or a NaN/Inf count
op         how value compares with threshold when the rule fires ("<", ">", "≥"; "is": no threshold)
threshold  the threshold it was compared with (NaN when there is none)
severity   "error" (diverged, failed, vanishing, exploding: training cannot work as set up),
           "warning" (the other pathologies: it works badly), "info" (healthy, no_data, and findings
           that are a consequence of another one: see ``cause``)
cause      the kind of the finding in the same run this one follows from ("" when none): e.g. an
           ``update_ratio_low`` finding in a run that is ``vanishing`` (the tiny gradients make the
           tiny updates), a ``loss_plateau`` in a run whose updates are tiny, ``dead_units`` in a
           run whose units died during training (``dying_units``); the table is
           ``gradlab.diagnosis.verdicts.CAUSES``. Such findings are kept, not dropped, but marked
           (severity "info", message says so) and left out of :func:`run_verdicts`.
message    plain English with the evidence
fix        a concrete suggestion, using the run's config from ``runs`` when given
=========  ==================================================================================
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gradlab.arms import arm_labels

KINDS = (
    "diverged",
    "failed",
    "exploding",
    "vanishing",
    "poor_init",
    "loss_plateau",
    "oscillating_loss",
    "dying_units",
    "dead_units",
    "saturation",
    "frozen",
    "update_ratio",
    "clipping",
    "weight_growth",
    "no_data",
    "healthy",
)
"""Every finding kind, most serious first (the order of :func:`run_verdicts`)."""

SEVERITY = {
    "diverged": "error",
    "failed": "error",
    "exploding": "error",
    "vanishing": "error",
    "poor_init": "warning",
    "loss_plateau": "warning",
    "oscillating_loss": "warning",
    "dying_units": "warning",
    "dead_units": "warning",
    "saturation": "warning",
    "frozen": "warning",
    "update_ratio": "warning",
    "clipping": "warning",
    "weight_growth": "warning",
    "no_data": "info",
    "healthy": "info",
}
COLUMNS = [
    "run",
    "kind",
    "rule",
    "layer",
    "layers",
    "step",
    "metric",
    "value",
    "op",
    "threshold",
    "severity",
    "cause",
    "message",
    "fix",
]


def findings_frame(records: list[dict]) -> pd.DataFrame:
    """The findings frame with its fixed columns and dtypes, from one dict per finding."""
    df = pd.DataFrame({c: [rec.get(c) for rec in records] for c in COLUMNS})
    for c in COLUMNS:
        if c not in ("step", "value", "threshold"):
            df[c] = df[c].astype("string")
    for c in ("metric", "cause"):  # "" rather than <NA> where a finding has none (healthy, no_data…)
        df[c] = df[c].fillna("")
    df["step"] = pd.array([None if s is None or pd.isna(s) else int(s) for s in df["step"]], dtype="Int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    df["threshold"] = pd.to_numeric(df["threshold"], errors="coerce").astype("float64")
    return df


def fmt_num(x: float) -> str:
    """A number in two significant digits (scientific when small or large)."""
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}"


def run_verdicts(findings: pd.DataFrame) -> pd.Series:
    """Run → short verdict: its finding kinds, most serious first ("vanishing, dead_units", "healthy").

    Findings marked as a consequence of another (``cause``) are left out: their cause is listed.
    """
    if findings.empty:
        return pd.Series(dtype="string", name="verdict")
    rank = {k: i for i, k in enumerate(KINDS)}
    if "cause" in findings:
        findings = findings[findings["cause"].fillna("").astype(str).eq("")]
    kinds = findings[["run", "kind"]].drop_duplicates()
    kinds = kinds.assign(_r=kinds["kind"].map(rank)).sort_values(["run", "_r"], kind="stable")
    out = kinds.groupby("run", sort=False)["kind"].agg(", ".join).astype("string")
    out.index = out.index.astype("string")
    out.index.name = "run"
    return out.rename("verdict")


def format_findings(findings: pd.DataFrame, width: int = 110, *, runs: pd.DataFrame | None = None) -> str:
    """A fixed-width table for the terminal: run, layer(s), kind, since step, value vs threshold, fix.

    ``diverged`` shows what went non-finite instead of value vs threshold: ``‖g‖=inf``,
    ``loss=nan`` or ``non-finite=80``.

    Args:
        runs: the runs table; when given, runs are labelled by their arm ``name`` (plus a short id
            when several runs share a name) instead of the bare id.
    """
    if findings.empty:
        return "no findings"
    label = _run_labels(findings, runs)
    head = ["run", "layer", "kind", "since", "value vs threshold", "fix"]
    rows = []
    # The most serious first; a run's findings stay together, in their own order.
    worst = {
        r: min(KINDS.index(k) if k in KINDS else len(KINDS) for k in g)
        for r, g in findings.groupby("run", sort=False)["kind"]
    }
    records = sorted(findings.to_dict("records"), key=lambda f: (worst[f["run"]], label[str(f["run"])]))
    for f in records:
        kind = str(f["kind"]) + (" ←" + str(f["cause"]) if _str(f.get("cause")) else "")
        layer = _str(f["layer"]) or "—"
        n = len(_str(f.get("layers")).split(", ")) if _str(f.get("layers")) and _str(f["layer"]) else 0
        layer = _clip(layer, 16) + (f" +{n - 1}" if n > 1 else "")
        since = "" if pd.isna(f["step"]) else str(f["step"])
        clip = 24 if width < 130 else 40
        rows.append(
            [_clip(label[str(f["run"])], clip), layer, kind, since, _value_cell(f), _str(f["fix"]) or "—"]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head[:-1])]
    lead = sum(widths) + 2 * len(widths)
    fix_w = max(24, width - lead)

    def line(cells: list[str], fix: str) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + fix

    out = [line(head[:-1], head[-1]), line(["-" * w for w in widths], "-" * min(fix_w, 40))]
    for r in rows:
        wrapped = textwrap.wrap(r[-1], fix_w) or [""]
        out.append(line(r[:-1], wrapped[0]).rstrip())
        out.extend((" " * lead + w).rstrip() for w in wrapped[1:])
    if any(_str(c) for c in findings.get("cause", [])):
        out.append("(kind ←cause: a consequence of the run's <cause> finding; severity info)")
    return "\n".join(out)


_LABEL = {"grad_norm_total": "‖g‖", "loss": "loss", "nonfinite": "non-finite"}


def _value_cell(f: Mapping[str, Any]) -> str:
    """``value op threshold``; for ``diverged`` what went non-finite (``‖g‖=inf``, ``non-finite=80``)."""
    v, metric = f["value"], _str(f.get("metric"))
    if pd.isna(v):
        return ""
    if f["kind"] == "diverged" or f["op"] == "is":
        return f"{_LABEL.get(metric, metric or 'value')}={fmt_num(v)}"
    return f"{fmt_num(v)} {f['op']} {fmt_num(f['threshold'])}"


def _run_labels(findings: pd.DataFrame, runs: pd.DataFrame | None) -> dict[str, str]:
    """Run id → its arm's label (:func:`gradlab.arms.arm_labels`; a short id added when labels repeat),
    else the id."""
    ids = [str(r) for r in dict.fromkeys(findings["run"])]
    names: dict[str, str] = {}
    if runs is not None and "run" in runs.columns and len(runs):
        names = {r: n for r, n in arm_labels(runs).items() if n != r}
    count = pd.Series([names.get(r, "") for r in ids]).value_counts()
    out = {}
    for r in ids:
        n = names.get(r, "")
        out[r] = r if not n else n if count[n] == 1 else f"{n} ({r[:6]})"
    return out


def _missing(x: Any) -> bool:
    """None, <NA> or a float NaN: an empty cell."""
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def _str(x: Any) -> str:
    """A string cell, with None/NA as ""."""
    return "" if _missing(x) else str(x)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def findings_to_json(findings: pd.DataFrame) -> str:
    """The findings as a JSON array of objects: NaN and <NA> as null, ±Inf as the strings "inf" and
    "-inf" (JSON has no NaN or Infinity); an exact float round-trip otherwise."""

    def clean(v: Any) -> Any:
        if _missing(v):
            return None
        v = v.item() if isinstance(v, np.generic) else v
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v

    records = [{k: clean(v) for k, v in rec.items()} for rec in findings.to_dict("records")]
    return json.dumps(records, ensure_ascii=False, indent=1, allow_nan=False)


def findings_from_json(text: str) -> pd.DataFrame:
    """The findings frame back from :func:`findings_to_json` (same columns and dtypes)."""
    return findings_frame(json.loads(text))


__all__ = [
    "COLUMNS",
    "KINDS",
    "SEVERITY",
    "findings_frame",
    "findings_from_json",
    "findings_to_json",
    "fmt_num",
    "format_findings",
    "run_verdicts",
]
