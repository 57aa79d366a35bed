"""Wall time and peak resident memory of reading a 1,000-run sweep: ``gradlab.load_results``,
``gradlab diagnose`` and ``gradlab report``, each in a fresh subprocess (peak RSS from
``resource.getrusage(RUSAGE_CHILDREN)`` of a process that runs only that one child).

Run: ``python benchmarks/bench_scale.py [FOLDER]``. Without FOLDER it builds the sweep first (depth 10,
200 steps, default recording; 1,000 runs: about 4 minutes with ``--jobs 2``) into ``/tmp/scale``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SWEEP = """\
# scale: 1,000 runs of depth 10, 200 steps, default recording (issue 14's scale benchmark)
[sweep]
name = "scale"
seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]

[base]
depth = 10
width = 32
steps = 200
batch_size = 64
dataset = "spirals"
n_samples = 512

[grid]
activation = ["sigmoid", "tanh", "relu", "elu", "leaky_relu"]
init = ["glorot_uniform", "he_normal", "standard", "lecun_normal"]
lr = [0.001, 0.01, 0.1, 0.5, 1.0]
"""

# Runs one command as its only child and prints "seconds peak_MB" (ru_maxrss is in KiB on Linux).
_MEASURE = textwrap.dedent("""\
    import resource, subprocess, sys, time
    t = time.perf_counter()
    rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
    dt = time.perf_counter() - t
    print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, rc)
""")


def measure(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of ``cmd`` in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
    dt, mb, rc = out.stdout.split()
    return float(dt), float(mb), int(rc)


def build(folder: Path) -> Path:
    """Run the 1,000-run sweep into ``folder/runs`` (the sweep file beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.toml").write_text(SWEEP, encoding="utf-8")
    subprocess.run([sys.executable, "-m", "gradlab", "sweep", str(folder / "sweep.toml"), "--out",
                    str(folder / "runs"), "--jobs", "2"], check=True)
    return folder / "runs"


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", help="an existing results folder (default: build one)")
    args = parser.parse_args()
    runs = Path(args.folder) if args.folder else build(Path("/tmp/scale"))
    n = len(list((runs / "runs").glob("*/manifest.json")))
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "gradlab.load_results": [sys.executable, "-c",
                                     f"import gradlab; gradlab.load_results({str(runs)!r})"],
            "gradlab diagnose": [sys.executable, "-m", "gradlab", "diagnose", str(runs)],
            "gradlab report": [sys.executable, "-m", "gradlab", "report", str(runs), "--out",
                               str(Path(tmp) / "report")],
        }
        print(f"{n} runs in {runs}")
        print(f"{'step':<24}{'wall s':>9}{'peak RSS MB':>13}")
        for name, cmd in cases.items():
            dt, mb, rc = measure(cmd)
            print(f"{name:<24}{dt:9.1f}{mb:13.0f}" + ("" if rc == 0 else f"   (exit {rc})"), flush=True)


if __name__ == "__main__":
    main()
