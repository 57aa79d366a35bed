"""``gradlab.fix``: for each unhealthy run, its candidate fixes as a sweep file (the baseline plus one
named ``[[variant]]`` per fix, the same seeds so arms are paired), run with the normal runner
(resumable, parallel, Dask), diagnosed and ranked by :func:`gradlab.diagnosis.ranking.rank_fixes`.

Runs of one arm (the same config but for the seed) are fixed together, over their seeds (at least
two: a lone run adds ``seed + 1``). Each arm's sweep goes into ``out/<run id>/`` with its ``fix.toml``;
rerunning skips what is finished. Runs from outside gradlab (``framework`` torch or numpy) cannot be
rerun here: their candidate fixes are returned in the framework's terms, with the code to change.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradlab.diagnosis import diagnose
from gradlab.diagnosis.candidates import Fix, candidate_fixes
from gradlab.diagnosis.ranking import BASELINE, FIX_PREFIX, format_ranking, rank_fixes
from gradlab.experiment import store
from gradlab.experiment.config import FIELDS
from gradlab.experiment.runner import run_sweep
from gradlab.experiment.sweep import load_sweep

SWEEP_FILE = "fix.toml"
_WEIGHTED = ("dense", "conv", "embedding", "weighted")


class FixError(ValueError):
    """Bad input to :func:`fix`; the message is one line."""


@dataclass
class FixOutcome:
    """One arm's fix trial: the runs it stands for, its findings, fixes, and (gradlab runs) the ranking."""

    runs: list[str]
    label: str
    framework: str
    kinds: list[str]
    fixes: list[Fix]
    folder: Path | None = None
    ranked: pd.DataFrame | None = None
    verdicts: dict[str, str] = field(default_factory=dict)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


def sweep_text(config: dict[str, Any], fixes: list[Fix], seeds: list[int], label: str) -> str:
    """The fix sweep's TOML: ``[base]`` the run's config, a ``baseline`` arm and one arm per fix."""
    lines = ["# written by gradlab fix: the baseline and one arm per candidate fix, on paired seeds",
             "[sweep]", f"name = {_toml('fix ' + label)}",
             f"description = {_toml('which fix works for ' + label)}", f"seeds = {_toml(seeds)}", "",
             "[base]"]
    lines += [f"{k} = {_toml(v)}" for k, v in config.items() if k not in ("name", "seed")]
    lines += ["", "[[variant]]", f"name = {_toml(BASELINE)}"]
    for f in fixes:
        lines += ["", "[[variant]]", f"name = {_toml(FIX_PREFIX + f.name)}"]
        lines += [f"{k} = {_toml(v)}" for k, v in f.changes.items()]
    return "\n".join(lines) + "\n"


def _problems(findings: pd.DataFrame) -> pd.DataFrame:
    f = findings[findings["severity"].astype(str).isin(["error", "warning"])]
    return f[f["cause"].fillna("").astype(str).eq("")]


def _evidence(kind_rows: pd.DataFrame, metrics: pd.DataFrame, layers: pd.DataFrame,
              run: str) -> dict[str, dict[str, float]]:
    """Kind → the measured values that size its fixes (see gradlab.diagnosis.candidates)."""
    m = metrics[metrics["run"].astype(str) == run]
    upd = m[(m["metric"] == "update_ratio") & np.isfinite(m["value"])]
    g = m[(m["metric"] == "grad_norm_total") & (m["layer"].astype(str) == "")]
    lay = layers[layers["run"].astype(str) == run] if len(layers) else layers
    n_w = int(lay["kind"].isin(_WEIGHTED).sum()) if len(lay) else 0
    out: dict[str, dict[str, float]] = {}
    for f in kind_rows.to_dict("records"):
        kind, ev = str(f["kind"]), {}
        over = upd if kind in ("loss_plateau", "update_ratio") else upd[upd["step"] == upd["step"].min()]
        if len(over):
            ev["update_ratio"] = float(over["value"].median())
        v = float(f["value"])
        if str(f["rule"]) in ("vanishing_ratio", "exploding_ratio") and f["step"] == 0 and n_w > 1 and v > 0:
            ev["gain"] = v ** (1 / (n_w - 1))
        if len(g):
            g0 = g.sort_values("step")["value"].iloc[0]
            if math.isfinite(g0):
                ev["g0"] = float(g0)
            ev["g"] = float(g["value"].median())
        out[kind] = ev
    return out


def _select(runs: pd.DataFrame, wanted: list[str] | str | None) -> pd.DataFrame:
    if wanted is None:
        return runs
    ids = [w.strip() for w in wanted.split(",")] if isinstance(wanted, str) else [str(w) for w in wanted]
    known = list(runs["run"].astype(str))
    for w in ids:
        if w not in known:
            shown = ", ".join([*known[:8], *(["…"] if len(known) > 8 else [])])
            raise FixError(f"runs: {w!r} is not a run of this folder; allowed: {shown}")
    return runs[runs["run"].astype(str).isin(ids)]


def _arm_key(row: pd.Series) -> tuple:
    cols = [c for c in FIELDS if c != "seed" and c in row.index]
    return (*(str(row[c]) for c in cols), str(row.get("name", "")), str(row.get("framework", "")))


def fix(runs_dir: str | Path, runs: list[str] | str | None = None, out: str | Path | None = None,
        jobs: int | None = None, scheduler: Any = None, *, progress: Any = None) -> list[FixOutcome]:
    """Try the candidate fixes of every unhealthy run in ``runs_dir`` (or of ``runs``, ids) and rank them.

    Args:
        out: where the fix sweeps go (one folder per arm; default ``<runs_dir>-fix`` beside it).
        jobs, scheduler, progress: as for :func:`gradlab.run_sweep`.
    """
    src = Path(runs_dir)
    if not src.is_dir():
        raise FixError(f"runs_dir={str(src)!r} is not a folder of results")
    table, metrics = store.load_results(src)
    layers = store.load_layers(src)
    chosen = _select(table, runs)
    findings = diagnose(metrics, table, layers=layers)
    problems = _problems(findings)
    bad = chosen[chosen["run"].astype(str).isin(set(problems["run"].astype(str)))]
    out = Path(out) if out is not None else src.parent / f"{src.name}-fix"
    groups: dict[tuple, list[pd.Series]] = {}
    for _, row in bad.iterrows():
        groups.setdefault(_arm_key(row), []).append(row)
    outcomes = []
    for rows in groups.values():
        first = rows[0]
        rid = str(first["run"])
        mine = problems[problems["run"].astype(str) == rid]
        kinds = list(dict.fromkeys(mine["kind"].astype(str)))
        framework = str(first.get("framework") or "gradlab")
        cfg = {k: (None if _na(v) else v) for k, v in first.to_dict().items()}
        evidence = _evidence(mine, metrics, layers, rid)
        fixes = candidate_fixes(list(zip(mine["kind"].astype(str), mine["rule"].astype(str), strict=True)),
                                cfg, evidence)
        name = str(first.get("name") or "") or rid
        o = FixOutcome([str(r["run"]) for r in rows], name, framework, kinds, fixes)
        outcomes.append(o)
        if framework not in ("gradlab", "", "None", "<NA>") or not fixes:
            continue
        manifest = store.read_manifest(src, rid)
        if manifest is None:
            raise FixError(f"run {rid!r} has no readable manifest in {src}: rerun it first")
        seeds = sorted({int(r["seed"]) for r in rows})
        seeds = seeds if len(seeds) > 1 else [seeds[0], seeds[0] + 1]
        o.folder = out / rid
        o.folder.mkdir(parents=True, exist_ok=True)
        path = o.folder / SWEEP_FILE
        text = sweep_text(manifest["config"], fixes, seeds, name)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        run_sweep(load_sweep(path), o.folder, jobs=jobs, scheduler=scheduler, progress=progress)
        o.ranked, o.verdicts = rank_folder(o.folder)
    return outcomes


def _na(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def rank_folder(folder: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rank a fix sweep's results folder; also its arms' verdicts (arm → kinds, seeds joined by ' | ')."""
    from gradlab.diagnosis import run_verdicts

    runs, metrics = store.load_results(folder)
    findings = diagnose(metrics, runs, layers=store.load_layers(folder))
    verdict = run_verdicts(findings)
    arms: dict[str, list[str]] = {}
    for r, n in zip(runs["run"].astype(str), runs["name"].astype(str), strict=True):
        arms.setdefault(n, []).append(str(verdict.get(r, "—")))
    return rank_fixes(runs, metrics, findings), {a: " | ".join(v) for a, v in arms.items()}


def format_outcomes(outcomes: list[FixOutcome]) -> str:
    """What ``gradlab fix`` prints: per arm its findings, then the ranked table or the fixes' code."""
    if not outcomes:
        return "no unhealthy runs: nothing to fix"
    parts = []
    for o in outcomes:
        head = f"{o.label} ({', '.join(r[:6] for r in o.runs)}): {', '.join(o.kinds)}"
        if o.ranked is not None:
            parts.append(f"{head}\nfix sweep: {o.folder}\n{format_ranking(o.ranked)}")
        elif not o.fixes:
            parts.append(f"{head}\nno candidate fix to try for these findings")
        else:
            lines = [f"{head}\ncandidate fixes in {o.framework}'s terms (not run: change your code and "
                     "rerun it):"]
            for i, f in enumerate(o.fixes, 1):
                lines.append(f"{i}. {f.name}: {f.text}  [for {', '.join(f.kinds)}]")
                lines += [f"     {c}" for c in f.code.splitlines()]
            parts.append("\n".join(lines))
    return "\n\n".join(parts)
