"""``gradlab`` command line: parses arguments and calls one library function per subcommand.

Adding a subcommand = one ``_name(args) -> int`` function plus one parser block in :func:`build_parser`.
Bad input (a ``ValueError`` such as ConfigError, SweepError or StoreError, or an argparse error) exits
with code 2 and one line on stderr; an OSError with code 1; a bug with code 3, still one line (no
traceback unless ``GRADLAB_DEBUG=1``). Names are free text: whatever is printed has its control
characters escaped (:func:`printable`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

if TYPE_CHECKING:
    import pandas as pd

    from gradlab.experiment.runner import Progress


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- run ------------------------------------------------------------------------------------------------
def parse_set(item: str) -> tuple[str, Any]:
    """``key=value`` → (key, value): the value is a TOML literal; string fields also take bare words."""
    from gradlab.experiment.config import FIELDS, ConfigError, closest_key, type_name

    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r} must look like key=value, e.g. --set depth=20")
    if key not in FIELDS:
        raise ConfigError(f"--set: unknown key {key!r}: {closest_key(key, FIELDS)}")
    kind = FIELDS[key].type
    if kind == "bool" and raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if kind == "str" or kind.startswith("tuple"):
            return key, raw
        raise ConfigError(f"--set {key}={raw!r} must be {type_name(kind)}") from None
    if kind == "str" and not isinstance(value, str):
        return key, raw  # e.g. --set name=1
    return key, value


def _read_config_file(path: str) -> dict[str, Any]:
    from gradlab.experiment.config import ConfigError
    from gradlab.experiment.sweep import TABLES

    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    tables = [k for k, v in doc.items() if isinstance(v, (dict, list)) and k in TABLES]
    if tables:
        raise ConfigError(
            f"{path} has a [{tables[0]}] table: it is a sweep file, run it with 'gradlab sweep'"
        )
    return doc


def _layer_summary(metrics: pd.DataFrame, layers: pd.DataFrame, metric: str = "grad_out_norm") -> list[str]:
    """Per weighted layer in forward order: ``metric`` at the first and last recorded step and their ratio."""
    from gradlab.records import WEIGHTED_KINDS

    weighted = layers[layers["kind"].isin(WEIGHTED_KINDS)].sort_values("position")
    rows = metrics[(metrics["metric"] == metric) & metrics["layer"].isin(weighted["layer"])]
    if rows.empty:
        return [f"  (no {metric} recorded)"]
    first, last = int(rows["step"].min()), int(rows["step"].max())
    table = rows[rows["step"].isin([first, last])].pivot_table(index="layer", columns="step", values="value")
    width = max(10, *(len(str(n)) for n in table.index))
    lines = [f"  {'layer':<{width}} {'step ' + str(first):>11} {'step ' + str(last):>11} {'last/first':>11}"]
    for layer in (n for n in weighted["layer"] if n in table.index):
        a = table.loc[layer].get(first, float("nan"))
        b = table.loc[layer].get(last, float("nan"))
        ratio = b / a if a else float("nan")
        lines.append(f"  {layer:<{width}} {a:>11.3e} {b:>11.3e} {ratio:>11.3g}")
    return lines


def _run(args: argparse.Namespace) -> int:
    from gradlab.experiment.config import Config, from_dict
    from gradlab.experiment.runner import run_one

    values = _read_config_file(args.config) if args.config else {}
    values.update(parse_set(item) for item in args.set)
    config = from_dict(values)
    run_id = config.key()
    manifest, metrics, layers = run_one(config, args.out)

    default = Config().to_dict()
    changed = " ".join(f"{k}={v!r}" for k, v in config.to_dict().items() if v != default[k])
    print(f"run {run_id}  {changed or '(defaults)'}")
    status = manifest["status"]
    if status == "failed" or metrics is None:
        error = str(manifest.get("error") or "no metrics").strip().splitlines() or ["no metrics"]
        where = f" (traceback in {args.out}/runs/{run_id}/manifest.json)" if args.out else ""
        print(printable(f"gradlab: run failed: {error[-1]}{where}", one_line=True), file=sys.stderr)
        return 1
    where = f" at step {manifest['diverged_step']} in {manifest['diverged_layer'] or 'the loss'}"
    print(
        f"status {status}{where if status == 'diverged' else ''}, {manifest['steps_done']} steps, "
        f"final loss {float(manifest['final_loss']):.4g}, {manifest['wall_time_s']:.2f} s"
    )
    print("‖∂L/∂y‖ at each weighted layer's output (grad_out_norm):")
    print("\n".join(_layer_summary(metrics, layers)))
    if args.out:
        print(f"results in {args.out} (gradlab.load_results)")
    return 0


# -- sweep ----------------------------------------------------------------------------------------------
def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, json: bool = False, one_line: bool = False) -> str:
    """``text`` with control characters (terminal escape sequences, bidi overrides) shown as ``\\x1b``
    escapes (``\\u001b`` in JSON text), so a name can never drive the terminal; newlines and tabs are
    kept unless the text must stay ``one_line``."""
    if json:
        return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(text))
    text = _UNSAFE.sub(lambda m: repr(m.group())[1:-1], str(text))
    return text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") if one_line else text


class ProgressLine:
    """Sweep progress: one updating line on a terminal, else one quiet log line per run."""

    def __init__(self, stream: TextIO, tty: bool | None = None, header: str = "", where: str = "") -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.header = header  # printed on the start event, once the sweep has really started
        self.where = where  # where the runs run; "" = the worker processes the start event reports
        self._shown = False

    def __call__(self, p: Progress) -> None:
        """Show one progress event."""
        if not p.run and self.header:
            skipped = f", {p.skipped} already finished" if p.skipped else ""
            where = self.where or (f"{p.workers} worker process{'es' if p.workers != 1 else ''}"
                                   if p.workers else "no worker needed")
            head = f"gradlab: {self.header} ({where}): {p.total} runs{skipped}"
            self.stream.write(printable(head, one_line=True) + "\n")
        if self.tty:
            width = shutil.get_terminal_size((80, 20)).columns
            bar_w = 24
            fill = int(bar_w * p.done / p.total) if p.total else bar_w
            text = (
                f"[{'#' * fill}{'.' * (bar_w - fill)}] {p.done}/{p.total} runs"
                f" | {p.failed} failed | {_clock(p.elapsed_s)} elapsed | ETA {_clock(p.eta_s)}"
            )
            self.stream.write("\r" + text[: width - 1] + "\x1b[K")
            self._shown = True
        elif p.run:
            line = f"gradlab: [{p.done}/{p.total}] {p.status:<8} {p.run} {p.name} ({p.wall_time_s:.1f} s)"
            self.stream.write(printable(line.rstrip(), one_line=True) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the updating line."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def _sweep(args: argparse.Namespace) -> int:
    from gradlab.experiment.runner import run_sweep
    from gradlab.experiment.sweep import load_sweep

    sweep = load_sweep(args.file)
    out = Path(args.out) if args.out else Path("runs") / Path(args.file).stem
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else "this process" if args.jobs == 0 else ""
    line = ProgressLine(sys.stderr, header=f"sweep {sweep.name or args.file} -> {out}", where=where)
    try:  # run_sweep rejects --jobs with --scheduler, and a bad --jobs, before it writes anything
        s = run_sweep(sweep, out, jobs=args.jobs, scheduler=args.scheduler, progress=line)
    finally:
        line.close()
    print(
        f"gradlab: done in {_clock(s.wall_time_s)}: {s.ok} ok, {s.diverged} diverged, "
        f"{s.failed} failed ({s.skipped} already finished); results in {out} (gradlab.load_results)",
        file=sys.stderr,
    )
    for run in s.failed_runs:
        err = s.runs.loc[s.runs["run"] == run, "error"].iloc[0]
        last = str(err).strip().splitlines()[-1] if isinstance(err, str) and err.strip() else "no traceback"
        line = f"gradlab: failed {run}: {last} (see {out}/runs/{run}/manifest.json)"
        print(printable(line, one_line=True), file=sys.stderr)
    if s.failed:
        print("gradlab: rerun the same command to retry the failed runs", file=sys.stderr)
    return 1 if s.failed else 0


# -- report -------------------------------------------------------------------------------------------
def _report(args: argparse.Namespace) -> int:
    from gradlab.report.page import load_and_report

    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise ValueError(
            f"RUNS_DIR {str(runs_dir)!r} is not a folder (make one with 'gradlab sweep FILE --out DIR')"
        )
    out = Path(args.out) if args.out else Path("reports") / runs_dir.name
    kwargs: dict[str, Any] = {"group_by": args.group_by}
    if args.title:
        kwargs["title"] = args.title
    index = load_and_report(runs_dir, out, **kwargs)
    print(f"gradlab: report written to {index}", file=sys.stderr)
    return 0


# -- diagnose -----------------------------------------------------------------------------------------
def _diagnose(args: argparse.Namespace) -> int:
    from gradlab.diagnosis import KINDS, diagnose, findings_to_json, format_findings
    from gradlab.diagnosis.table import READ
    from gradlab.experiment.store import load_layers, read_results

    fail_on = [k.strip() for k in args.fail_on.split(",") if k.strip()] if args.fail_on else []
    unknown = [k for k in fail_on if k not in KINDS]
    if unknown:
        raise ValueError(f"--fail-on {','.join(unknown)} is not a finding kind; allowed: {', '.join(KINDS)}")
    runs, metrics = read_results(args.runs_dir, READ)  # only the rows the rules read
    findings = diagnose(metrics, runs, layers=load_layers(args.runs_dir))
    width = max(140, shutil.get_terminal_size((140, 24)).columns)
    text = findings_to_json(findings) if args.json else format_findings(findings, width=width, runs=runs)
    print(printable(text, json=args.json))  # names are free text: never let one drive the terminal
    hit = findings[findings["kind"].isin(fail_on)] if fail_on else findings.iloc[:0]
    if len(hit):
        kinds = ", ".join(sorted(set(hit["kind"])))
        print(f"gradlab: {len(hit)} finding(s) of kind {kinds} (--fail-on)", file=sys.stderr)
        return 1
    return 0


# -- fix ------------------------------------------------------------------------------------------------
def _fix(args: argparse.Namespace) -> int:
    from gradlab.repair import fix, format_outcomes

    line = ProgressLine(sys.stderr, header=f"fix {args.runs_dir}", where="")
    try:
        outcomes = fix(args.runs_dir, runs=args.runs, out=args.out, jobs=args.jobs, scheduler=args.scheduler,
                       progress=line)
    finally:
        line.close()
    print(printable(format_outcomes(outcomes)))
    return 0


# -- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="gradlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train one config and print its per-layer gradient summary")
    run.add_argument("--config", metavar="FILE.toml", help="TOML file of Config fields (key = value)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='override one field; VALUE is a TOML literal (depth=20, activation="sigmoid" or sigmoid)',
    )
    run.add_argument("--out", metavar="DIR", help="also store the run as a results folder in DIR")
    run.set_defaults(func=_run)

    sweep = sub.add_parser("sweep", help="run a TOML sweep into a results folder (resumable)")
    sweep.add_argument("file", metavar="FILE", help="sweep file, e.g. experiments/quick.toml")
    sweep.add_argument("--out", metavar="DIR", help="results folder (default: runs/<FILE's stem>)")
    sweep.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="local worker processes (default: all cores; 0 = in this process)",
    )
    sweep.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster (tcp://host:8786)")
    sweep.set_defaults(func=_sweep)

    report = sub.add_parser(
        "report", help="write the charts and one self-contained HTML report of a results folder"
    )
    report.add_argument("runs_dir", metavar="RUNS_DIR", help="a results folder written by 'gradlab sweep'")
    report.add_argument("--out", metavar="DIR", help="report folder (default: reports/<RUNS_DIR's name>)")
    report.add_argument("--title", help="the report's title")
    report.add_argument("--group-by", metavar="AXIS", help="config field to group arms by (default: chosen)")
    report.set_defaults(func=_report)

    diag = sub.add_parser("diagnose", help="print per-run and per-layer verdicts of a results folder")
    diag.add_argument("runs_dir", metavar="RUNS_DIR", help="a results folder written by 'gradlab sweep'")
    diag.add_argument(
        "--fail-on",
        metavar="KIND[,KIND]",
        help="exit 1 when a finding of these kinds is present (e.g. vanishing)",
    )
    diag.add_argument("--json", action="store_true", help="print the findings as JSON")
    diag.set_defaults(func=_diagnose)

    fx = sub.add_parser("fix", help="try each unhealthy run's candidate fixes as a paired sweep, rank them")
    fx.add_argument("runs_dir", metavar="RUNS_DIR", help="a results folder written by 'gradlab sweep'")
    fx.add_argument("--runs", metavar="ID[,ID]", help="only these runs (default: every unhealthy run)")
    fx.add_argument("--out", metavar="DIR", help="where the fix sweeps go (default: <RUNS_DIR>-fix)")
    fx.add_argument("--jobs", type=int, metavar="N", help="local worker processes (0 = in this process)")
    fx.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster (tcp://host:8786)")
    fx.set_defaults(func=_fix)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except ValueError as exc:
        print(printable(f"gradlab: error: {' '.join(str(exc).split())}"), file=sys.stderr)
        return 2
    except OSError as exc:
        print(printable(f"gradlab: error: {' '.join(str(exc).split())}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "gradlab: interrupted; finished runs are kept, rerun the same command to resume", file=sys.stderr
        )
        return 130
    except Exception as exc:  # a bug: still one line, never a traceback (GRADLAB_DEBUG=1 shows it)
        if os.environ.get("GRADLAB_DEBUG"):
            raise
        what = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(printable(f"gradlab: internal error: {what} (a bug: please report it with the command; "
                        "GRADLAB_DEBUG=1 shows the traceback)"), file=sys.stderr)
        return 3
