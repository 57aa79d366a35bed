"""gradlab.torch.watch on real PyTorch models: every statistic equals a float64 torch reference and
the NumPy Observer on the same arrays; hooks cost nothing on skipped steps and always come off."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest

if os.environ.get("GRADLAB_REQUIRE_TORCH"):  # CI: the adapter's tests must run, never skip
    import torch
else:
    torch = pytest.importorskip("torch")
from torch import nn

import gradlab.torch as gt
from gradlab.monitor.observer import Observer
from gradlab.records import HIST_BINS, HIST_LOG2_MIN, LAYER_COLUMNS, ZERO_BIN
from gradlab.statistics import reference
from gradlab.torch.discover import discover

torch.set_num_threads(1)  # on a shared 2-core machine, spinning OpenMP threads crawl

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "gelu": nn.GELU}


def mlp(act: str = "tanh", depth: int = 3, width: int = 16, inplace: bool = False) -> nn.Module:
    torch.manual_seed(0)
    mods: list[nn.Module] = [nn.Linear(8, width)]
    for _ in range(depth - 1):
        mods += [nn.ReLU(inplace=True) if inplace else ACTS[act](), nn.Linear(width, width)]
    mods += [ACTS[act](), nn.Linear(width, 3)]
    return nn.Sequential(*mods).double()


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double()


def data(model: nn.Module, n: int = 32):
    g = torch.Generator().manual_seed(1)
    shape = (n, 1, 8, 8) if isinstance(model[0], nn.Conv2d) else (n, 8)
    return torch.randn(*shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def reference_step(model: nn.Module, x, y, lr: float = 0.1):
    """One SGD step recorded by hand: every watched module's input, output, ∂L/∂x, ∂L/∂y (retain_grad),
    parameters and their gradients, and the update the optimizer applied."""
    layers = discover(model)
    io: dict[str, dict] = {}
    handles = []
    for lay in layers:
        def pre(m, args, lay=lay):
            xin = args[0]
            if xin.requires_grad:
                xin.retain_grad()
            io[lay.name] = {"input_t": xin}

        def post(m, args, out, lay=lay):
            out.retain_grad()
            io[lay.name]["output_t"] = out
        handles += [lay.module.register_forward_pre_hook(pre), lay.module.register_forward_hook(post)]
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    before = {lay.name: lay.weight.detach().clone() for lay in layers if lay.weight is not None}
    opt.step()
    for h in handles:
        h.remove()
    out = {}
    for lay in layers:
        rec = io[lay.name]
        a = {"output": rec["output_t"].detach().numpy(), "grad_out": rec["output_t"].grad.numpy()}
        if rec["input_t"].grad is not None:
            a["grad_in"] = rec["input_t"].grad.numpy()
        if lay.kind == "activation":
            a["input"] = rec["input_t"].detach().numpy()
        if lay.weight is not None:
            a["weight"] = before[lay.name].numpy()
            a["weight_grad"] = lay.weight.grad.numpy()
            a["update"] = (lay.weight.detach() - before[lay.name]).numpy()
            if lay.bias is not None:
                a["bias_grad"] = lay.bias.grad.numpy()
        out[lay.name] = (a, lay)
    return out, float(loss)


def watched_step(model: nn.Module, x, y, lr: float = 0.1, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with gt.watch(model, opt, verbose=False, **kw) as w:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        w.step(loss)
    return w


def train_steps(model: nn.Module, opt, w, x, y, n: int) -> None:
    """``n`` plain steps of a watched loop: forward, backward, update, ``w.step(loss)``."""
    for _ in range(n):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        w.step(loss)


CASES = {  # watched model, reference model (the same weights; never in-place: retain_grad needs that)
    "tanh": (lambda: mlp("tanh"), lambda: mlp("tanh")),
    "relu": (lambda: mlp("relu"), lambda: mlp("relu")),
    "elu": (lambda: mlp("elu"), lambda: mlp("elu")),
    "gelu": (lambda: mlp("gelu"), lambda: mlp("gelu")),
    "relu-inplace": (lambda: mlp("relu", inplace=True), lambda: mlp("relu")),
    "cnn": (cnn, cnn),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_statistic_equals_the_float64_reference_and_the_observer(case):
    build, build_ref = CASES[case]
    model = build()
    x, y = data(model)
    ref, loss = reference_step(build_ref(), x, y)
    w = watched_step(model, x, y)
    got = w.frame().set_index(["layer", "metric"])["value"]
    obs = Observer(run="ref")
    checked = 0
    for name, (a, lay) in ref.items():
        act = lay.rules
        kw = {"activation": None, "kind": lay.kind}
        obs.observe(0, name, output=a["output"], grad_out=a["grad_out"], grad_in=a.get("grad_in"),
                    weight=a.get("weight"), weight_grad=a.get("weight_grad"), bias_grad=a.get("bias_grad"),
                    update=a.get("update"), **kw)
        for metric in ("grad_norm", "grad_b_norm", "weight_norm", "update_ratio", "grad_in_norm",
                       "grad_out_norm", "act_mean", "act_std", "saturation", "inactive_frac", "dead_frac",
                       "nonfinite"):
            want = reference(metric, a, act)
            if (name, metric) not in got.index:
                assert want is None or (metric in ("saturation", "inactive_frac", "dead_frac") and (
                    act is None or getattr(act, "saturated" if metric == "saturation" else "inactive") is None
                )) or (metric == "grad_in_norm" and "grad_in" not in a), (name, metric)
                continue
            assert want is not None, (name, metric)
            assert got[(name, metric)] == pytest.approx(want, rel=1e-6, abs=1e-12), (name, metric)
            checked += 1
    mine = obs.frame().set_index(["layer", "metric"])["value"]
    for key, value in mine.items():  # the NumPy Observer agrees wherever both record a metric
        if key in got.index:
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key
    assert got[("", "loss")] == pytest.approx(loss, rel=1e-12)
    assert checked > 5 * len(ref) // 2


def test_later_steps_equal_the_reference_too():
    """Step 1 of a watched run (hooks kept across consecutive steps) against a hand-recorded step 1."""
    model, ref_model = mlp("relu"), mlp("relu")
    x, y = data(model)
    opt = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    opt.zero_grad()
    nn.functional.cross_entropy(ref_model(x), y).backward()
    opt.step()
    ref, loss = reference_step(ref_model, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gt.watch(model, opt, verbose=False) as w:
        train_steps(model, opt, w, x, y, 2)
    got = w.frame().query("step == 1").set_index(["layer", "metric"])["value"]
    for name, (a, lay) in ref.items():
        for metric in ("grad_norm", "update_ratio", "grad_in_norm", "grad_out_norm", "act_std", "dead_frac"):
            want = reference(metric, a, lay.rules)
            if want is not None and (name, metric) in got.index:
                assert got[(name, metric)] == pytest.approx(want, rel=1e-6, abs=1e-12), (name, metric)
    assert got[("", "loss")] == pytest.approx(loss, rel=1e-12)


def test_conv_units_are_channels_and_a_dead_channel_is_dead_everywhere():
    model = cnn()
    with torch.no_grad():
        model[1].bias[1] = -100.0  # BN's shift: channel 1 is negative at every sample and position
    x, y = data(model)
    f = watched_step(model, x, y).frame().set_index(["layer", "metric"])["value"]
    assert f[("2", "dead_frac")] == 0.25  # one channel of four; a single live position keeps a channel alive
    assert 0.25 <= f[("2", "inactive_frac")] < 1


def test_layers_table_has_torch_names_kinds_and_forward_positions():
    w = watched_step(cnn(), *data(cnn()))
    t = w.layers_frame()
    assert list(t.columns) == LAYER_COLUMNS
    assert t["layer"].tolist() == ["0", "1", "2", "3", "4", "6"]
    assert t["kind"].tolist() == ["conv", "batchnorm", "activation", "conv", "activation", "dense"]
    assert t["activation"].tolist() == ["", "", "relu", "", "sigmoid", ""]
    assert t["position"].tolist() == list(range(6))
    assert t.loc[0, "n_params"] == 4 * 9 + 4 and t.loc[5, "fan_in"] == 144


def test_update_ratio_is_the_applied_update_and_zero_when_it_rounds_away():
    model = mlp("tanh").float()
    x, y = data(model)
    w = watched_step(model, x.float(), y, lr=1e-30)  # ΔW ≈ 1e-31 ≪ float32 spacing of W: W does not move
    r = w.frame().query("metric == 'update_ratio'")["value"]
    assert len(r) == 4 and (r == 0).all()


def test_gradient_norms_are_before_clipping_and_clipping_is_recorded():
    model = mlp("tanh")
    x, y = data(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gt.watch(model, opt, verbose=False) as w:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        total = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
        first = float(model[0].weight.grad.norm())
        torch.nn.utils.clip_grad_norm_(model.parameters(), total / 4)
        opt.step()
        w.step(loss)
    f = w.frame().set_index(["layer", "metric"])["value"]
    assert f[("", "grad_norm_total")] == pytest.approx(total, rel=1e-9)
    assert f[("", "grad_norm_clipped")] == pytest.approx(total / 4, rel=1e-5)
    assert f[("", "clipped")] == 1.0 and f[("0", "grad_norm")] == pytest.approx(first, rel=1e-9)
    assert f[("", "lr")] == 0.1


def test_skipped_steps_register_no_hooks_and_hooks_come_off_when_the_loop_raises():
    model = mlp("relu")
    x, y = data(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    counts = []
    with pytest.raises(KeyError), gt.watch(model, opt, every=3, verbose=False) as w:
        for step in range(7):
            counts.append(sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            w.step()
            if step == 5:
                raise KeyError("the user's loop fails")
    assert counts[1] == counts[2] == counts[4] == 0 and counts[0] == counts[3] > 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert sorted(w.frame()["step"].unique()) == [0, 3]


def test_divergence_step_and_layer_and_the_three_policies():
    def diverging(policy):
        model = mlp("relu")
        x, y = data(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        w = gt.watch(model, opt, verbose=False, on_diverge=policy)
        kept = []
        for step in range(6):
            if step == 2:
                with torch.no_grad():
                    model[2].weight[0, 0] = float("nan")  # layer "2" poisons every output after it
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            kept.append(w.step(loss))
            if not kept[-1]:
                break
        w.remove()
        return w, kept

    w, kept = diverging("stop")
    assert w.divergence == (2, "2") and kept == [True, True, False] and w.status == "diverged"
    at2 = w.frame().query("step == 2").set_index(["layer", "metric"])["value"]
    assert at2[("2", "nonfinite")] > 0 and ("2", "act_std") not in at2.index  # NaN: not a value
    assert math.isfinite(at2[("0", "act_std")]) and at2[("0", "nonfinite")] > 0  # its gradients are NaN
    w, kept = diverging("continue")
    assert w.divergence == (2, "2") and len(kept) == 6
    with pytest.raises(gt.DivergedError, match="step 2 in 2"):
        diverging("raise")


def test_layer_globs_stats_groups_and_bad_arguments():
    model = mlp("tanh")
    x, y = data(model)
    w = watched_step(model, x, y, layers=["0", "1"], stats=["weights"])
    f = w.frame()
    assert set(f["layer"]) == {"", "0", "1"}
    assert "act_mean" not in set(f["metric"]) and "update_ratio" in set(f["metric"])
    with pytest.raises(ValueError, match="matches no watchable module; they are: 0, 1, 2"):
        gt.watch(model, layers="features.*")
    with pytest.raises(ValueError, match="on_diverge='halt'; allowed: stop, raise, continue"):
        gt.watch(model, on_diverge="halt")
    with pytest.raises(ValueError, match="allowed: gradients, weights, activations, units"):
        gt.watch(model, stats=["weight"])
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        gt.watch(object())


def test_functional_activations_and_rule_less_activations_are_named_at_attach(capsys):
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    gt.watch(Functional()).remove()
    gt.watch(nn.Sequential(nn.Linear(8, 8), nn.SiLU())).remove()
    out = capsys.readouterr().out
    assert "activations called as functions" in out and "1 (SiLU): flow statistics only" in out


def test_a_module_called_twice_is_recorded_per_call():
    act = nn.Tanh()
    model = nn.Sequential(nn.Linear(8, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 3)).double()
    w = watched_step(model, *data(mlp()))
    assert w.layers_frame()["layer"].tolist() == ["0", "1", "2", "1@2", "4"]
    assert not pd.isna(w.frame().set_index(["layer", "metric"]).loc[("1@2", "grad_out_norm"), "value"])


def test_no_grad_forwards_are_not_recorded():
    model = mlp("tanh")
    x, y = data(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gt.watch(model, opt, verbose=False) as w:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model(x)  # an evaluation pass inside the step
        w.step(loss)
    assert not any("@" in n for n in w.layers_frame()["layer"])
    assert np.isfinite(w.frame()["value"]).all()


def test_saved_runs_read_like_a_sweep_and_diagnose(tmp_path):
    import gradlab
    from gradlab.cli import main

    for name, act in (("tanh-net", "tanh"), ("relu-net", "relu")):
        model = mlp(act)
        x, y = data(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        with gt.watch(model, opt, run=name, verbose=False) as w:
            train_steps(model, opt, w, x, y, 3)
        w.save(tmp_path / "res")
    runs, metrics = gradlab.load_results(tmp_path / "res")
    row = runs.set_index("run").loc["tanh-net"]
    assert (row["framework"], row["model"], row["optimizer"]) == ("torch", "Sequential", "sgd")
    assert (row["lr"], row["momentum"], row["batch_size"], row["status"]) == (0.05, 0.9, 32, "ok")
    assert row["n_params"] == sum(p.numel() for p in mlp("tanh").parameters())
    assert set(metrics["run"]) == {"tanh-net", "relu-net"} and metrics["step"].max() == 2
    layers = gradlab.load_layers(tmp_path / "res")
    assert layers.query("run == 'relu-net'")["kind"].tolist()[:2] == ["dense", "activation"]
    findings = gradlab.diagnose(metrics, runs, layers=layers)
    assert set(findings["run"]) == {"tanh-net", "relu-net"}
    assert main(["diagnose", str(tmp_path / "res")]) == 0
    assert main(["report", str(tmp_path / "res"), "--out", str(tmp_path / "rep")]) == 0
    assert "tanh-net" in (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")


def _example(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("example", "want"), [
    ("torch_mlp", {"sigmoid-standard": "vanishing", "relu-he": "healthy"}),
    ("torch_cnn", {"sigmoid-cnn": "vanishing", "conv-bn-relu": "healthy"}),
    ("torch_residual", {"lr-3": "diverged", "lr-0.1-clip-5": "healthy"}),
])
def test_the_examples_get_the_verdicts_they_claim(example, want, tmp_path, capsys):
    import gradlab

    mod = _example(example)
    mod.main(tmp_path / "out")
    runs, metrics = gradlab.load_results(tmp_path / "out")
    findings = gradlab.diagnose(metrics, runs, layers=gradlab.load_layers(tmp_path / "out"))
    verdicts = gradlab.run_verdicts(findings)
    for run, verdict in want.items():
        got = str(verdicts[run]).split(", ")
        ok = got == ["healthy"] if verdict == "healthy" else verdict in got
        assert ok, (run, findings[findings["run"] == run][["kind", "message"]].to_string())
    assert (tmp_path / "out" / "report" / "index.html").exists()


def test_vanishing_gradients_keep_their_size_in_float32():
    """Norms accumulate in float64: entries of 1e-25 square to below float32's range, not to a norm of 0."""
    from gradlab.torch.collect import norm, norms

    g = torch.full((100,), 1e-25)
    assert float(norm(g)) == pytest.approx(1e-24, rel=1e-6)
    assert float(norms([g, 2 * g])[1]) == pytest.approx(2e-24, rel=1e-6)
    assert float(torch.linalg.vector_norm(g)) == 0.0  # what a float32 reduction would have recorded


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log2_hist_on_the_device_equals_gradlab_s(dtype):
    from gradlab.monitor.stats import log2_hist as np_hist
    from gradlab.torch.collect import log2_hist

    g = torch.Generator().manual_seed(2)
    scale = 10.0 ** torch.randint(-25, 25, (4000,), generator=g)
    t = (torch.randn(4000, generator=g, dtype=torch.float64) * scale).to(dtype)
    t[:9] = 0.0
    t[9], t[10], t[11] = math.nan, math.inf, -math.inf
    t[12] = torch.finfo(dtype).tiny / 4  # subnormal
    np.testing.assert_array_equal(log2_hist(t).numpy(), np_hist(t.numpy()))


@pytest.mark.parametrize("case", ["relu", "relu-inplace", "cnn"])
def test_histograms_of_outputs_and_gradients_equal_gradlab_s_on_the_same_arrays(case):
    from gradlab.monitor.stats import log2_hist as np_hist

    build, build_ref = CASES[case]
    model = build()
    x, y = data(model)
    ref, _ = reference_step(build_ref(), x, y)
    w = watched_step(model, x, y)  # step 0: on the default schedule
    h = w.recorder.hist_frame()
    assert set(h["step"]) == {0}
    for name, (a, _lay) in ref.items():
        for quantity, arr in (("act", a["output"]), ("grad", a["grad_out"])):
            got = h[(h.layer == name) & (h.quantity == quantity)]
            counts = np.zeros(len(HIST_BINS) + 1, dtype=np.int64)  # the tidy rows back to gradlab's vector
            index = np.where(got["bin"] == ZERO_BIN, 0, got["bin"] - HIST_LOG2_MIN + 1)
            counts[index] = got["count"]
            assert counts.sum() == arr.size
            np.testing.assert_array_equal(counts, np_hist(arr), err_msg=f"{name} {quantity}")


def test_histogram_schedule_default_and_chosen():
    from gradlab.torch.handle import log_steps

    assert [s for s in range(2000) if log_steps(s)] == [0, 1, 10, 100, 1000]
    model = mlp("tanh")
    x, y = data(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gt.watch(model, opt, verbose=False, hist_every=3, every=1) as w:
        train_steps(model, opt, w, x, y, 7)
    assert sorted(set(w.recorder.hist_frame()["step"])) == [0, 3, 6]
