"""Fault injection: what a user's bad day does to a results folder, and what gradlab must do about it.

The invariant every case asserts: each command (``diagnose``, ``diagnose --json``, ``report`` and the
loaders) either succeeds or exits non-zero with one line that names the damaged file and the remedy,
never a traceback; and the next rerun of the sweep leaves a folder that every reader loads, each run
exactly once, nothing from another sweep, every frame equal to an undisturbed sweep's.

Three kinds of bad day: the sweep process killed with SIGKILL at random points (at a chosen file write,
before, during or after it, and at a random time with worker processes), each kind of file of a
results folder damaged (truncated, garbage, empty, valid JSON of the wrong shape, wrong Parquet,
missing), and property-based fuzzing of sweep files and of the Observer's inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure

from gradlab import Observer
from gradlab.cli import main
from gradlab.experiment import store
from gradlab.experiment.config import FIELDS
from gradlab.experiment.sweep import SweepError, parse_sweep

SWEEP = """[sweep]
name = "faults"
[base]
depth = 2
width = 8
steps = 3
n_samples = 64
batch_size = 16
[[variant]]
name = "tanh"
[[variant]]
name = "relu"
activation = "relu"
init = "he_normal"
[[variant]]
name = "boom"
depth = 4
steps = 6
activation = "relu"
init = "normal"
weight_scale = 1e5
dtype = "float32"
"""
N_RUNS = 3
WRITES = 1 + 4 * N_RUNS + 1  # sweep.json, each run's three Parquet files and manifest, runs.parquet
FRAMES = {"metrics.parquet": lambda d: store.load_results(d)[1], "hists.parquet": store.load_hists,
          "layers.parquet": store.load_layers}


def quiet_main(argv: list[str]) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_one_line(code: int, err: str, *names: str) -> None:
    """A failed command: non-zero exit, one line on stderr, no traceback, naming what it should."""
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("gradlab: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for name in names:
        assert name in err, (name, err)


@contextlib.contextmanager
def no_pixels():
    """Reports build every chart but skip drawing its pixels (drawing is tested in test_plots)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", lambda fig, buf, **_: buf.write(b"\x89PNG\r\n\x1a\n"))
        yield


def every_command(folder: Path, tmp: Path, *names: str) -> bool:
    """Run every reader on the folder: each succeeds or fails with one line naming ``names``; True if all
    succeeded."""
    ok = True
    for argv in (["diagnose", str(folder)], ["diagnose", str(folder), "--json"],
                 ["report", str(folder), "--out", str(tmp / "report")]):
        with no_pixels():
            code, out, err = quiet_main(argv)
        if code == 0:
            if "--json" in argv:
                json.loads(out)
            continue
        ok = False
        assert_one_line(code, err, *names)
    for load in (store.load_results, store.load_layers, store.load_hists):
        try:
            load(folder)
        except store.StoreError as exc:
            ok = False
            assert "\n" not in str(exc) and all(n in str(exc) for n in names), str(exc)
    return ok


def frames(folder: Path) -> dict[str, pd.DataFrame]:
    """Every frame of a results folder, rows in a fixed order."""
    out = {"runs": store.load_results(folder)[0].drop(columns=["wall_time_s"])}
    for name, load in FRAMES.items():
        df = load(folder)
        out[name] = df.sort_values(list(df.columns)).reset_index(drop=True)
    return out


def assert_complete(folder: Path, want: dict[str, pd.DataFrame]) -> None:
    """The folder holds exactly the sweep's runs, once each, equal to an undisturbed sweep's, and no
    temp file of a killed writer."""
    got = frames(folder)
    assert got["runs"]["run"].is_unique and len(got["runs"]) == N_RUNS
    for k, df in want.items():
        pd.testing.assert_frame_equal(got[k], df, obj=k)
    leftovers = [p for p in folder.rglob(".*") if p.name != ".lock"]
    assert not leftovers, leftovers
    ids = set(want["runs"]["run"])
    assert {p.name for p in (folder / "runs").iterdir()} == ids
    for d in (folder / "runs").iterdir():
        assert sorted(p.name for p in d.iterdir()) == ["hists.parquet", "layers.parquet", "manifest.json",
                                                       "metrics.parquet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path, dict[str, pd.DataFrame]]:
    """The sweep file, an undisturbed results folder of it, and its frames."""
    root = tmp_path_factory.mktemp("faults")
    sweep_file = root / "faults.toml"
    sweep_file.write_text(SWEEP)
    folder = root / "pristine"
    code, _, err = quiet_main(["sweep", str(sweep_file), "--out", str(folder), "--jobs", "0"])
    assert code == 0, err
    return sweep_file, folder, frames(folder)


def rerun(sweep_file: Path, folder: Path) -> None:
    code, _, err = quiet_main(["sweep", str(sweep_file), "--out", str(folder), "--jobs", "0"])
    assert code == 0, err


# -- kill -9 ----------------------------------------------------------------------------------------
KILLER = """
import io, os, signal, sys
from gradlab import atomic
from gradlab.cli import main

k, phase = int(sys.argv[1]), sys.argv[2]
real, n = atomic.atomic_write, 0


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def killer(path, write):
    global n
    n += 1
    if n == k and phase == "before":
        die()
    if n == k and phase == "during":  # half the bytes in the temp file, then the process is gone
        buf = io.BytesIO()
        write(buf)
        return real(path, lambda f: (f.write(buf.getvalue()[: len(buf.getvalue()) // 2]), f.flush(), die()))
    real(path, write)
    if n == k and phase == "after":
        die()


atomic.atomic_write = killer
sys.exit(main(sys.argv[3:]))
"""


def killed_sweep(sweep_file: Path, folder: Path, k: int, phase: str) -> int:
    """Run the sweep in a subprocess that SIGKILLs itself at its k-th file write; its exit code."""
    argv = [sys.executable, "-c", KILLER, str(k), phase, "sweep", str(sweep_file), "--out", str(folder),
            "--jobs", "0"]
    return subprocess.run(argv, capture_output=True, timeout=120).returncode


KILL_POINTS = random.Random(13).sample([(k, p) for k in range(1, WRITES + 1)
                                        for p in ("before", "during", "after")], 6)


@pytest.mark.parametrize(("first", "second"), list(zip(KILL_POINTS[::2], KILL_POINTS[1::2], strict=True)),
                         ids=lambda kp: f"{kp[1]}-write-{kp[0]}")
def test_kill_9_at_a_file_write_then_again_while_resuming(pristine, tmp_path, first, second):
    sweep_file, _, want = pristine
    folder = tmp_path / "out"
    for k, phase in (first, second):
        assert killed_sweep(sweep_file, folder, k, phase) == -signal.SIGKILL
        every_command(folder, tmp_path)  # each succeeds or says in one line what to do
    rerun(sweep_file, folder)
    assert_complete(folder, want)
    assert every_command(folder, tmp_path)


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_of_a_sweep_and_its_workers_at_a_random_time(pristine, tmp_path, seed):
    sweep_file, _, want = pristine
    folder = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "gradlab", "sweep", str(sweep_file), "--out", str(folder),
                             "--jobs", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(random.Random(seed).uniform(0.2, 1.2))  # the whole sweep takes ~2 s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker processes
    proc.wait(timeout=30)
    every_command(folder, tmp_path)
    rerun(sweep_file, folder)
    assert_complete(folder, want)


# -- damaged files ----------------------------------------------------------------------------------
def _wrong_shape(data: bytes, how: str) -> bytes:
    obj = json.loads(data)
    if how == "no config key":
        del obj["config"]["depth"]
    elif how == "string seed":
        obj["config"]["seed"] = "zero"
    elif how == "huge seed":
        obj["config"]["seed"] = 99999999999999999999
    elif how == "no runs":
        del obj["runs"]
    return json.dumps(obj).encode()


DAMAGES = {
    "truncated": lambda data, other: data[: len(data) // 2],
    "garbage": lambda data, other: random.Random(len(data)).randbytes(len(data)),
    "empty": lambda data, other: b"",
    "missing": None,
    "a JSON object": lambda data, other: b"{}",
    "a JSON list": lambda data, other: b"[1, 2]",
    "another run's file": lambda data, other: other,
}
JSON_DAMAGES = {"no config key", "string seed", "huge seed"}
CASES = (
    [(f, d) for f in ("manifest.json", "metrics.parquet", "hists.parquet", "layers.parquet") for d in DAMAGES]
    + [("manifest.json", d) for d in JSON_DAMAGES]
    + [("sweep.json", d) for d in ("truncated", "garbage", "empty", "missing", "a JSON object", "a JSON list",
                                   "no runs")]
    + [("runs.parquet", d) for d in ("truncated", "garbage", "missing")]
    + [(".lock", d) for d in ("garbage", "missing")]
)


@pytest.mark.parametrize(("file", "damage"), CASES, ids=[f"{f}-{d}".replace(" ", "-") for f, d in CASES])
def test_a_damaged_file_is_named_by_every_command_and_repaired_by_the_rerun(pristine, tmp_path, file, damage):
    sweep_file, source, want = pristine
    folder = tmp_path / "out"
    shutil.copytree(source, folder)
    ids = list(want["runs"]["run"])
    run = ids[len(damage) % N_RUNS]  # an ok run, or the diverged one
    path = folder / file if file in ("sweep.json", "runs.parquet", ".lock") else folder / "runs" / run / file
    data = path.read_bytes() if path.exists() else b""
    neighbour = folder / "runs" / ids[(ids.index(run) + 1) % N_RUNS] / file
    other = neighbour.read_bytes() if path.parent.name == run else data
    if damage == "missing":
        path.unlink(missing_ok=True)
    elif damage in JSON_DAMAGES or damage == "no runs":
        path.write_bytes(_wrong_shape(data, damage))
    else:
        path.write_bytes(DAMAGES[damage](data, other))
    harmless = file in ("runs.parquet", ".lock") or (file == "sweep.json" and damage == "missing")
    if file == "manifest.json" and damage == "missing":
        # a run without a manifest is a run still in progress: absent from every reader, not an error
        assert every_command(folder, tmp_path)
        assert len(store.load_results(folder)[0]) == N_RUNS - 1
    elif harmless:
        assert every_command(folder, tmp_path)  # nothing reads these
        pd.testing.assert_frame_equal(frames(folder)["metrics.parquet"], want["metrics.parquet"])
    else:
        assert not every_command(folder, tmp_path, str(path))
    rerun(sweep_file, folder)
    assert_complete(folder, want)  # every loader reads it: the commands that failed above now succeed
    assert quiet_main(["diagnose", str(folder)])[0] == 0


# -- fuzzing: sweep files ---------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def to_toml(doc: dict) -> str:
    """A tiny TOML writer for the documents below: top-level scalars, tables and arrays of tables."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, (dict, list))]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += [f"[{k}]", *(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())]
        elif isinstance(v, list) and v and all(isinstance(t, dict) for t in v):
            for t in v:
                lines += [f"[[{k}]]", *(f"{kk} = {_toml_value(vv)}" for kk, vv in t.items())]
        elif isinstance(v, list):
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SCALARS = st.one_of(
    st.integers(min_value=-3, max_value=300), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), TEXT,
    st.sampled_from(["tanh", "relu", "sigmoid", "he_normal", "normal", "digits", "float32", "adam", "*"]),
)
KEYS = st.one_of(st.sampled_from(sorted(FIELDS)), st.sampled_from(["dpeth", "seeds", "name", "x"]), TEXT)
TABLE = st.dictionaries(KEYS, st.one_of(SCALARS, st.lists(SCALARS, max_size=3)), max_size=4)
DOCS = st.fixed_dictionaries({}, optional={
    "sweep": st.dictionaries(st.sampled_from(["name", "description", "seeds", "seed"]),
                             st.one_of(SCALARS, st.lists(st.integers(-2, 2**64), max_size=3)), max_size=3),
    "base": TABLE, "grid": TABLE, "variant": st.lists(TABLE, max_size=3),
    "exclude": st.lists(TABLE, max_size=2), "junk": SCALARS,
})


def _one_line(exc: Exception) -> None:
    assert isinstance(exc, SweepError), repr(exc)
    assert "\n" not in str(exc) and str(exc).startswith("s.toml")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCS)
def test_any_sweep_document_parses_or_is_refused_in_one_line(doc):
    try:
        sweep = parse_sweep(to_toml(doc), "s.toml")
    except Exception as exc:
        _one_line(exc)
        return
    configs = sweep.configs()
    assert configs and len({c.key() for c in configs}) == len(configs)
    for c in configs:
        assert 0 <= c.seed < 2**63 and c.depth < 2**63  # storable: the runs table holds int64
        c.name.encode("utf-8")


@settings(max_examples=150, deadline=None)
@given(st.text(st.sampled_from(list('[]="\'.,=#\n \tabcdeptsgrivwhnl0123456789-_{}\\')), max_size=80))
def test_any_text_parses_or_is_refused_in_one_line(text):
    try:
        parse_sweep(text, "s.toml").configs()
    except Exception as exc:
        _one_line(exc)


@settings(max_examples=25, deadline=None)
@given(DOCS)
def test_the_cli_refuses_a_bad_sweep_in_one_line_before_writing(tmp_path_factory, doc):
    try:
        parse_sweep(to_toml(doc), "s.toml")
        return  # a valid sweep would run: the cases above cover it
    except SweepError:
        pass
    d = tmp_path_factory.mktemp("cli")
    (d / "s.toml").write_text(to_toml(doc), encoding="utf-8")
    code, _, err = quiet_main(["sweep", str(d / "s.toml"), "--out", str(d / "out")])
    assert code == 2
    assert_one_line(code, err)
    assert not (d / "out").exists()


# -- fuzzing: the Observer's inputs -----------------------------------------------------------------
DTYPES = ["float16", "float32", "float64", "longdouble", "int8", "int16", "int64", "uint8", "bool",
          "complex64", "object", "U3"]
SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
ROLES = ("output", "weight", "weight_grad", "bias_grad", "update", "grad_out", "grad_in")


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(SHAPES)
    n = int(np.prod(shape))
    raw = draw(st.lists(st.one_of(st.floats(-300, 300), st.sampled_from([np.nan, np.inf, -np.inf, 0.0])),
                        min_size=n, max_size=n))
    vals = np.array(raw, dtype=np.float64).reshape(shape)
    if dtype.kind in "iub":
        vals = np.nan_to_num(vals, nan=0.0, posinf=100, neginf=-100)
        vals = np.clip(vals, np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else vals > 0
    with np.errstate(all="ignore"):
        return vals.astype(dtype)


STEPS = st.one_of(st.integers(-3, 6), st.integers(2**62, 2**64), st.floats(-1, 5), st.booleans(),
                  st.just(np.int64(4)), st.just("3"))
CALLS = st.lists(st.tuples(STEPS, st.sampled_from(["fc", "act", "x.y", "", 7]),
                           st.dictionaries(st.sampled_from(ROLES), arrays(), max_size=4),
                           st.sampled_from([None, None, "relu", "tanh", "gelu", "sigmoid", "nope"]),
                           st.sampled_from([None, None, "dense", "conv", "layer", "tanh"])),
                 min_size=1, max_size=6)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CALLS)
def test_the_observer_measures_any_real_array_in_float64_or_refuses_it_in_one_line(tmp_path_factory, calls):
    obs = Observer(run="fuzz")
    recorded, diverged_at = [], None
    for step, layer, given_arrays, activation, kind in calls:
        try:
            with np.errstate(all="ignore"):
                obs.observe(step, layer, activation=activation, kind=kind, **given_arrays)
        except (TypeError, ValueError) as exc:
            assert "\n" not in str(exc) and str(exc), repr(exc)
            continue
        recorded.append((int(step), layer, given_arrays))
        bad = any(not np.isfinite(_f64(a)).all() for r, a in given_arrays.items()
                  if r in ("output", "grad_in", "weight_grad", "bias_grad"))
        if bad and diverged_at is None:
            diverged_at = (int(step), layer)
    assert obs.divergence == diverged_at  # never a false "diverged" from a small dtype
    frame = obs.frame()
    assert list(frame["step"]) == sorted(frame["step"]) and (frame["step"] >= 0).all()
    last = {}
    for step, layer, given_arrays in recorded:  # a later call of the same step and layer overwrites
        last[(step, layer, "grad_out_norm")] = given_arrays.get("grad_out")
        last[(step, layer, "grad_in_norm")] = given_arrays.get("grad_in")
    values = frame.set_index(["step", "layer", "metric"])["value"]
    for key, a in last.items():
        if a is None or key not in values.index:
            continue
        want = float(np.sqrt(np.sum(_f64(a) ** 2)))
        got = values[key]
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9), key
    path = obs.save(tmp_path_factory.mktemp("obs") / "m.parquet")  # what it recorded, Parquet can hold
    assert len(pd.read_parquet(path)) == len(frame)
    assert list(obs.layers_frame()["position"]) == list(range(len(obs.layers_frame())))
