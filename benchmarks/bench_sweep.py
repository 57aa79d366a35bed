"""Sweep throughput: the same 32-run sweep with 1 and 2 local workers, plus a "are 2 vCPUs 2 cores?" check.

    python benchmarks/bench_sweep.py [--runs 32] [--steps 200] [--seconds 1.5]

Prints runs/s for --jobs 1 and --jobs 2 (wall time of run_sweep, worker start-up included) and their
ratio (goal: >= 1.8 on 2 cores), the mean in-worker time per run, the BLAS library and threads of this
process and of the workers, and, measured in the same invocation, how much two busy processes get done
together compared with one (pure Python and small numpy matmuls): ~2.0 means two real cores, ~1.0 means
the 2 vCPUs behave as one (or other processes are using the second), which caps any sweep speed-up.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path


def _busy(kind: str, seconds: float, start: mp.Event, out: mp.Queue) -> None:
    """Count units of work done in ``seconds`` once ``start`` is set."""
    import numpy as np

    a, b = np.ones((128, 64)), np.ones((64, 64))
    start.wait()
    cpu0 = time.process_time()
    n, t_end = 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        if kind == "python":
            s = 0
            for i in range(2000):
                s += i * i
        else:
            for _ in range(20):
                a @ b
        n += 1
    out.put((n, time.process_time() - cpu0))


def busy_throughput(kind: str, procs: int, seconds: float) -> tuple[float, float]:
    """(units of work per second, CPU seconds per second) of ``procs`` concurrent 1-thread processes."""
    from gradlab.experiment.runner import BLAS_ENV, child_env

    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    with child_env(BLAS_ENV):
        ps = [ctx.Process(target=_busy, args=(kind, seconds, start, out)) for _ in range(procs)]
        for p in ps:
            p.start()
    time.sleep(1.0)  # let them import numpy before the clock starts
    start.set()
    results = [out.get() for _ in ps]
    for p in ps:
        p.join()
    return sum(r[0] for r in results) / seconds, sum(r[1] for r in results) / seconds


def cpu_times() -> list[int] | None:
    """The machine's aggregate CPU counters from /proc/stat (user … steal), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]
    except OSError:
        return None


def steal_share(before: list[int] | None, after: list[int] | None) -> str:
    """Share of CPU time the hypervisor took (steal) and that was idle, between two readings."""
    if before is None or after is None:
        return "n/a"
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    return f"steal {d[7] / total:.0%}, idle {d[3] / total:.0%}"


def sweep_rate(configs: list, jobs: int) -> tuple[float, float, float, list]:
    """(runs/s over run_sweep's wall time, mean in-worker seconds per run, the workers' CPU share of
    that time, the workers' BLAS info)."""
    from gradlab.experiment.runner import run_sweep

    with tempfile.TemporaryDirectory() as d:
        t0, c0 = time.perf_counter(), cpu_times()
        s = run_sweep(configs, d, jobs=jobs)
        wall = time.perf_counter() - t0
        print(f"  (machine during --jobs {jobs}: {steal_share(c0, cpu_times())})")
        assert s.ok + s.diverged == len(configs), s
        ms = [json.loads((Path(d) / "runs" / c.key() / "manifest.json").read_text()) for c in configs]
        run_wall = sum(m["wall_time_s"] for m in ms)
        cpu = sum(m["cpu_time_s"] for m in ms)
        return len(configs) / wall, run_wall / len(ms), cpu / run_wall, ms[0]["blas"]


def probe(seconds: float) -> None:
    """Print the 2-core indicator: combined throughput of two busy processes vs one."""
    for kind in ("python", "numpy"):
        (one, cpu1), (two, cpu2) = busy_throughput(kind, 1, seconds), busy_throughput(kind, 2, seconds)
        print(
            f"  two busy {kind:>6} processes vs one: {two / one:.2f}x combined throughput "
            f"(2.0 = two cores); on a CPU {cpu1:.0%} alone, {cpu2:.0%} together (200% = both cores free)"
        )


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.5, help="duration of each busy-process probe")
    args = parser.parse_args()

    from threadpoolctl import threadpool_info

    from gradlab.experiment.config import Config

    print(f"cores available: {len(os.sched_getaffinity(0))}, load average before: {os.getloadavg()}")
    for info in threadpool_info():
        print(
            f"BLAS in this process: {info.get('internal_api')} {info.get('version')} "
            f"({info.get('architecture')}), {info.get('num_threads')} threads, {info.get('filepath')}"
        )

    print("2-core indicator, before the sweeps:")
    probe(args.seconds)
    configs = [
        Config(depth=10, width=64, batch_size=128, steps=args.steps, dataset="spirals", seed=s)
        for s in range(args.runs)
    ]
    print(f"sweep: {args.runs} runs of depth 10 x width 64 x batch 128, {args.steps} steps (spirals)")
    rates, per = {}, {}
    for jobs in (1, 2):
        rate, per_run, share, blas = sweep_rate(configs, jobs)
        rates[jobs], per[jobs] = rate, per_run
        threads = ", ".join(f"{b['api']} {b['num_threads']} thread(s)" for b in blas)
        print(
            f"  --jobs {jobs}: {rate:6.2f} runs/s   {per_run:.3f} s/run in a worker, of which on a CPU: "
            f"{share:.0%}; worker BLAS: {threads}"
        )
    print(f"  speed-up --jobs 2 / --jobs 1: {rates[2] / rates[1]:.2f}x (goal >= 1.8 on 2 cores)")
    print(
        f"  without worker start-up (2 x per-run time with 1 worker / with 2): {2 * per[1] / per[2]:.2f}x; "
        "a run slower with 2 workers while on a CPU ~100% means the two vCPUs share a physical core"
    )
    print("  (a worker on a CPU well under 100% of its run time was waiting for a core: the machine's")
    print("   2 vCPUs were not both free - read the speed-up with that and the indicator below)")
    print("2-core indicator, after the sweeps:")
    probe(args.seconds)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
