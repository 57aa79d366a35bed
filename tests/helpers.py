"""Builders and cases shared by several test modules (test modules never import each other)."""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pandas as pd

from gradlab import records
from gradlab.records import HIST_COLUMNS, LAYERS_DTYPES, METRIC_COLUMNS, ZERO_BIN

TINY = {"depth": 2, "width": 8, "steps": 3, "n_samples": 64, "batch_size": 16}
DIVERGES = {**TINY, "depth": 4, "steps": 6, "activation": "relu", "init": "normal", "weight_scale": 1e5}
DIVERGES["dtype"] = "float32"  # σ_w = 1e5 over 4 ReLU layers overflows float32 on the first update

BAD = [
    # (TOML, fragments the one-line message must contain)
    ("[base]\ndpeth = 5\n", ["unknown key 'dpeth'", "[base]", "did you mean 'depth'"]),
    ("[grid]\nactivaton = ['tanh']\n", ["unknown key 'activaton'", "[grid]", "'activation'"]),
    ("[[variant]]\nbatchnorm = true\n", ["'batchnorm'", "[[variant]] 1", "'batch_norm'"]),
    ("[grid]\ndepth=[1]\n[[exclude]]\ndeph = 1\n", ["'deph'", "[[exclude]] 1", "'depth'"]),
    ("[sweep]\nseed = [1]\n", ["unknown key 'seed'", "[sweep]", "'seeds'"]),
    ("[gird]\ndepth = [1]\n", ["unknown top-level table 'gird'", "did you mean 'grid'"]),
    ("depth = 5\n", ["unknown top-level key 'depth'", "put Config fields in [base]"]),
    ("[variants]\nx = 1\n", ["'variants'", "did you mean 'variant'"]),
    ("[grid]\ndepth = ['ten']\n", ["[grid]", "depth='ten'", "must be an integer"]),
    ("[base]\nbatch_norm = 1\n", ["[base]", "batch_norm=1", "true or false"]),
    ("[grid]\nactivation = ['tanh', 'tahn']\n", ["[grid]", "activation='tahn'", "allowed: sigmoid, tanh"]),
    ("[[variant]]\ninit = 'he'\n", ["[[variant]] 1", "init='he'", "allowed:"]),
    ("[base]\nlr = -1.0\n", ["in [base]", "lr=-1.0", "> 0"]),
    ("[base]\nweight_scale = nan\n", ["in [base]", "weight_scale=nan", "finite number >= 0"]),
    ("[grid]\nclip_norm = [1.0, inf]\n", ["in [grid]", "clip_norm=inf", "finite number >= 0"]),
    ("[grid]\nwidth = [64, 0]\n", ["in [grid]", "width=0", ">= 1"]),
    ("[grid]\ndepth = []\n", ["[grid] axis 'depth' is empty"]),
    ("[grid]\ndepth = 5\n", ["[grid] depth=5 must be a list", "depth = [5]"]),
    ("grid = [1]\n", ["'grid' must be a table"]),
    ("[variant]\ndepth = 1\n", ["'variant' must be a list of tables", "[[variant]]"]),
    ("[grid]\ndepth = [1]\n[[variant]]\ndepth = 2\n", ["[[variant]] 1", "'depth' is also a [grid] axis"]),
    ("[sweep]\nseeds = [0]\n[base]\nseed = 1\n", ["seed is set in [base] and by [sweep] seeds"]),
    ("[sweep]\nseeds = []\n", ["seeds=[]", "non-empty list"]),
    ("[sweep]\nseeds = [0, 0]\n", ["repeated seed"]),
    ("[sweep]\nseeds = [-1]\n", ["seeds=[-1]", ">= 0"]),
    ("[sweep]\nname = 3\n", ["[sweep] name=3 must be a string"]),
    ("[grid]\ndepth = [1, 2]\n[[exclude]]\ndepth = 3\n", ["[[exclude]] 1", "matches no run"]),
    ("[grid]\ndepth = [1]\n[[exclude]]\ndepth = 1\n", ["every combination is excluded"]),
    ("[[exclude]]\n", ["[[exclude]] 1 is empty"]),
    ("[grid]\ndepth = [2, 2]\n", ["runs 1 and 2 are the same config", "depth=2"]),
    ("[grid]\nbatch_norm = [true]\nlayer_norm = [true]\n", ["batch_norm and layer_norm"]),
    (
        "[base]\ndataset = 'digits'\n[grid]\nn_samples = [200, 5000]\n",
        ["[grid]", "n_samples=5000", "<= 1797"],
    ),
    ("[grid]\nn_samples = [64, 1000]\n", ["run 1 (n_samples=64)", "batch_size=128 must be <= n_samples=64"]),
    ("[base\ndepth = 1\n", ["not valid TOML"]),
    ("[base]\nseed = 99999999999999999999\n", ["[base]", "seed=99999999999999999999", "up to 2**63 - 1"]),
    ("[grid]\nsteps = [1, 9223372036854775808]\n", ["[grid]", "steps=9223372036854775808", "too large"]),
    ("", ["sets no Config field", "one default config"]),
    ("[base]\nrecord_layers = ['dens_*']\n", ["[base]", "'dens_*' matches no layer", "dense_0, tanh_1"]),
]


# -- hand-built frames of realistic sweeps (plots, report) ------------------------------------------
CONFIG_DEFAULTS = dict(
    depth=6, width=32, activation="relu", init="he_normal", weight_scale=1.0, bias_scale=0.0,
    batch_norm=False, layer_norm=False, residual=False, dropout=0.0, clip_norm=0.0, clip_value=0.0,
    optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, dataset="spirals", n_samples=512, input_dim=0,
    n_classes=0, batch_size=64, steps=20, dtype="float64", seed=0,
)
BOUNDED = {"sigmoid", "tanh"}


def layer_names(depth: int, activation: str) -> list[str]:
    """An mlp's layer names: dense_0, act_1, dense_2, …, dense_{2·depth} (the output)."""
    names = []
    for i in range(depth):
        names += [f"dense_{2 * i}", f"{activation}_{2 * i + 1}"]
    return [*names, f"dense_{2 * depth}"]


def make_run(run: str, *, steps: int = 20, factor: float = 1.0, diverge_at: int | None = None,
             clip: float = 0.0, hist_steps: tuple[int, ...] = (0, 2, 20), **config) -> dict:
    """One run's runs-table row, metrics and hists. ``factor`` is the per-layer backward gain of ‖∂L/∂y‖:
    0.25 (sigmoid: φ′ ≤ ¼) makes the gradient decay 0.25^k toward the input, 1 is healthy, > 1 explodes."""
    cfg = {**CONFIG_DEFAULTS, **config, "steps": steps}
    rng = np.random.default_rng(zlib.crc32(run.encode()))
    names = layer_names(cfg["depth"], cfg["activation"])
    dense = [n for n in names if n.startswith("dense")]
    last = diverge_at if diverge_at is not None else steps
    rows = []
    for step in range(last + 1):
        t = step / max(1, steps)
        for k, name in enumerate(dense):
            depth_from_top = len(dense) - 1 - k
            g = 0.5 * factor**depth_from_top * (1 - 0.3 * t) * np.exp(rng.normal(0, 0.05))
            if diverge_at is not None and step == diverge_at and k < 2:
                g = np.inf
            rows += [(step, name, "grad_out_norm", g), (step, name, "grad_norm", 3 * g),
                     (step, name, "grad_in_norm", g * 1.1), (step, name, "weight_norm", 5.0 + t),
                     (step, name, "nonfinite", float(not np.isfinite(g)))]
        for name in names:
            if name.startswith("dense"):
                continue
            pos = int(name.rsplit("_", 1)[1])
            frac = pos / (2 * cfg["depth"])
            if cfg["activation"] in BOUNDED:
                rows.append((step, name, "saturation", min(1.0, 0.1 + 0.8 * frac * t)))
            else:
                rows += [(step, name, "inactive_frac", 0.5 + 0.1 * t),
                         (step, name, "dead_frac", 0.3 * frac * t)]
        loss = 1.1 * np.exp(-2 * t / max(factor, 0.5)) + 0.05
        if diverge_at is not None and step == diverge_at:
            loss = np.inf
        pre = 2.0 * (1 + 5 * t)
        post = min(pre, clip) if clip > 0 else pre
        rows += [(step, "", "loss", loss), (step, "", "accuracy", min(1.0, 0.33 + 0.6 * t)),
                 (step, "", "grad_norm_total", pre), (step, "", "grad_norm_clipped", post),
                 (step, "", "clipped", float(post < pre)), (step, "", "lr", cfg["lr"])]
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS[1:]).assign(run=run)[METRIC_COLUMNS]
    hists = []
    for step in hist_steps:
        if step > last:
            continue
        for name in names:
            centre = -1 if cfg["activation"] == "sigmoid" else 0
            if not name.startswith("dense"):
                bins = np.arange(centre - 4, centre + 2)
                counts = np.array([1, 3, 8, 20, 30, 10]) * (1 + int(name.rsplit("_", 1)[1]))
                hists += [(step, name, "act", b, c) for b, c in zip(bins, counts, strict=True)]
                if cfg["activation"] == "relu":
                    hists.append((step, name, "act", ZERO_BIN, int(counts.sum())))
            else:
                k = dense.index(name)
                centre = int(np.round(np.log2(0.5 * factor ** (len(dense) - 1 - k) / 8)))
                bins = np.arange(centre - 3, centre + 3)
                counts = [2, 10, 40, 40, 10, 2]
                hists += [(step, name, "grad", b, c) for b, c in zip(bins, counts, strict=True)]
    hist = pd.DataFrame(hists, columns=HIST_COLUMNS[1:]).assign(run=run)[HIST_COLUMNS]
    status = "diverged" if diverge_at is not None else "ok"
    final = float(metrics.loc[metrics["metric"] == "loss", "value"].iloc[-1])
    row = {"run": run, "name": "", **cfg, "status": status,
           "diverged_step": diverge_at, "diverged_layer": "dense_0" if diverge_at is not None else None,
           "final_loss": final, "wall_time_s": 1.5, "error": ""}
    return {"row": row, "metrics": metrics, "hists": hist}


def make_sweep() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A small depth × activation sweep following docs/data.md: (runs, metrics, hists).

    sigmoid arms vanish (0.25 per layer), ReLU/He arms are healthy, the tanh arm with σ_w = 3 diverges
    at step 12, one ReLU run failed before recording; sigmoid depth 6 has two seeds.
    """
    parts = [
        make_run("r-sig4", depth=4, activation="sigmoid", init="standard", factor=0.25),
        make_run("r-sig6", depth=6, activation="sigmoid", init="standard", factor=0.25),
        make_run("r-sig6b", depth=6, activation="sigmoid", init="standard", factor=0.25, seed=1),
        make_run("r-relu4", depth=4, activation="relu", init="he_normal", factor=1.0),
        make_run("r-relu6", depth=6, activation="relu", init="he_normal", factor=1.0, clip=10.0,
                 clip_norm=10.0),
        make_run("r-tanh6", depth=6, activation="tanh", init="normal", weight_scale=3.0, factor=2.0,
                 diverge_at=12),
    ]
    failed = make_run("r-fail", depth=4, activation="tanh", init="normal", weight_scale=3.0)["row"]
    failed.update(status="failed", final_loss=np.nan, error="Traceback ...\nMemoryError")
    runs = pd.DataFrame([p["row"] for p in parts] + [failed])
    runs["run"] = runs["run"].astype("string")
    runs["name"] = runs["name"].astype("string")
    runs["diverged_step"] = runs["diverged_step"].astype("Int64")
    runs["diverged_layer"] = runs["diverged_layer"].astype("string")
    metrics = pd.concat([p["metrics"] for p in parts], ignore_index=True)
    metrics = metrics.astype({"run": "string", "layer": "string", "metric": "string", "step": "int64"})
    hists = pd.concat([p["hists"] for p in parts], ignore_index=True)
    hists = hists.astype({"run": "string", "layer": "string", "quantity": "string", "step": "int64",
                          "bin": "int64", "count": "int64"})
    return runs, metrics, hists


def make_findings() -> pd.DataFrame:
    """Findings as diagnose reports them: one row per (run, kind)."""
    return pd.DataFrame([
        {"run": "r-sig6", "kind": "vanishing", "layer": "dense_0", "step": 0, "value": 2.4e-4, "op": "<",
         "threshold": 1e-3, "message": "‖∂L/∂y‖ at dense_0 is 2.4e-4 × the output layer's",
         "fix": "use ReLU with He init, or add batch norm"},
        {"run": "r-sig6", "kind": "saturation", "layer": "sigmoid_11", "step": 12, "value": 0.62, "op": ">",
         "threshold": 0.5, "message": "62% of sigmoid_11's outputs sit at a bound",
         "fix": "use tanh or ReLU"},
        {"run": "r-tanh6", "kind": "diverged", "layer": "dense_0", "step": 12, "value": 3.0, "op": ">",
         "threshold": 0.0, "message": "non-finite values from step 12",
         "fix": "lower the learning rate or clip"},
    ])


def free_text(metrics: pd.DataFrame, hists: pd.DataFrame | None = None):
    """The same runs with free-text layer names (``net.fc.z``, ``net.act.y``, …: reverse-alphabetical
    in forward order, no ``_<n>`` suffix) and their layers table; rows sorted by name, so neither the
    names nor the order the rows come in give kind or position. Returns (metrics, hists, layers, back)."""
    table = records.infer_layers(metrics)  # the layers table of the gradlab-named runs
    names = table.sort_values("position", kind="stable").drop_duplicates("layer")["layer"].astype(str)
    kinds = dict(zip(table["layer"].astype(str), table["kind"].astype(str), strict=False))
    free = {n: f"net.{'act' if kinds[n] == 'activation' else 'fc'}.{chr(ord('z') - i)}"
            for i, n in enumerate(names)}
    back = {v: k for k, v in free.items()} | {"": ""}

    def rename(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.assign(layer=frame["layer"].astype(str).map(lambda n: free.get(n, n)).astype("string"))
        return out.sort_values(["layer", "run", "step"], kind="stable").reset_index(drop=True)

    layers = table.assign(layer=table["layer"].astype(str).map(free).astype("string"))
    return rename(metrics), None if hists is None else rename(hists), layers, back


# -- real runs at initialisation (theory, report) -------------------------------------------------
REAL_BASE = dict(depth=10, width=256, steps=0, dataset="gaussian", input_dim=256, n_classes=32, n_samples=64,
                 batch_size=64)
REAL_ARMS = {
    "tanh-ordered": dict(activation="tanh", init="normal", weight_scale=0.8, bias_scale=0.1),
    "relu-glorot": dict(activation="relu", init="glorot_uniform"),
    "bn-relu": dict(activation="relu", init="he_normal", batch_norm=True),
    # skipped before their metrics are read, so they can be small
    "residual": dict(activation="relu", init="he_normal", residual=True, depth=2, width=16),
    "dropout": dict(activation="relu", init="he_normal", dropout=0.1, depth=2, width=16),
}


@functools.lru_cache(maxsize=1)
def _real_results() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from gradlab.experiment.config import Config
    from gradlab.experiment.train import run

    rows, frames, tables = [], [], []
    for name, arm in REAL_ARMS.items():
        res = run(Config(name=name, **{**REAL_BASE, **arm}), run_id=name)
        rows.append({"run": res.run, **res.config.to_dict(), "status": res.status,
                     "diverged_step": res.diverged_step, "final_loss": res.final_loss})
        frames.append(res.metrics)
        tables.append(res.layers)
    rows.append({**rows[0], "run": "failed", "name": "failed", "status": "failed"})
    return (pd.DataFrame(rows).drop(columns="record_layers"), pd.concat(frames, ignore_index=True),
            pd.concat(tables, ignore_index=True))


def real_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five real runs at initialisation (three the theory covers, two it skips) and one failed row."""
    return _real_results()[:2]


def real_layers() -> pd.DataFrame:
    """The layers table of :func:`real_runs` (``gradlab.experiment.train.run(...).layers``)."""
    return _real_results()[2]


# -- hand-built frames for the rule tests ------------------------------------------------------------


def tidy(rows: list[tuple]) -> pd.DataFrame:
    """A metrics frame with the schema's dtypes from (run, step, layer, metric, value) tuples."""
    df = pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])
    return df.astype({"run": "string", "step": "int64", "layer": "string", "metric": "string",
                      "value": "float64"})


def series(run: str, layer: str, metric: str, values, start: int = 0) -> list[tuple]:
    """One metric of one layer, value i at step start + i."""
    return [(run, start + s, layer, metric, float(v)) for s, v in enumerate(values)]


def layers_table(run: str, kinds: list[tuple[str, str]]) -> pd.DataFrame:
    """A layers table: (name, kind) in forward order; kind "relu" etc. is an activation layer."""
    rows = [{"run": run, "layer": n, "kind": "activation" if k in ("relu", "tanh") else k, "position": i,
             "activation": k if k in ("relu", "tanh") else "", "fan_in": pd.NA, "fan_out": pd.NA,
             "n_params": pd.NA} for i, (n, k) in enumerate(kinds)]
    return pd.DataFrame(rows).astype(LAYERS_DTYPES)


def one(f: pd.DataFrame, kind: str, run: str = "r") -> pd.Series:
    """The one finding of ``kind`` for ``run``."""
    rows = f[(f["run"] == run) & (f["kind"] == kind)]
    assert len(rows) == 1, rows
    return rows.iloc[0]
