"""The command line: exit codes, one-line errors, `run` and `sweep` output, the progress line."""

from __future__ import annotations

import io
import json

import pytest
from helpers import BAD

from gradlab.cli import ProgressLine, main, parse_set
from gradlab.experiment import store
from gradlab.experiment.config import Config, ConfigError
from gradlab.experiment.runner import Progress

TINY = [
    "--set",
    "depth=2",
    "--set",
    "width=8",
    "--set",
    "steps=3",
    "--set",
    "n_samples=64",
    "--set",
    "batch_size=16",
]
TINY_TOML = "[base]\ndepth = 2\nwidth = 8\nsteps = 3\nn_samples = 64\nbatch_size = 16\n"


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI expecting bad input: exit code 2 and exactly one line on stderr, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("text", "fragments"), BAD, ids=[b[1][0][:40] for b in BAD])
def test_every_sweep_validation_error_exits_2_with_one_line(tmp_path, capsys, text, fragments):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    err = one_line_error(capsys, ["sweep", str(f), "--out", str(tmp_path / "out")])
    assert err.startswith("gradlab: error: ")
    for frag in fragments:
        assert frag in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "--set", "dpeth=3"], "unknown key 'dpeth': did you mean 'depth'?"),
        (["run", "--set", "depth"], "must look like key=value"),
        (["run", "--set", "depth=ten"], "depth='ten' must be an integer"),
        (["run", "--set", "lr=fast"], "lr='fast' must be a number"),
        (["run", "--set", "batch_norm=yes"], "batch_norm='yes' must be true or false"),
        (["run", "--set", "activation=tahn"], "activation='tahn' is not allowed; allowed: sigmoid, tanh"),
        (["run", "--set", "width=0"], "width=0 must be >= 1"),
        (["run", "--config", "/nonexistent/c.toml"], "cannot read config file"),
        (["sweep", "/nonexistent/s.toml"], "cannot read sweep file"),
        (["sweep", "FILE", "--jobs", "-1"], "jobs=-1 must be an integer >= 0"),
        (["sweep", "FILE", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
        (["sweep", "FILE", "--jobs", "two"], "argument --jobs: invalid int value: 'two'"),
        (["sweep"], "the following arguments are required: FILE"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, fragment):
    f = tmp_path / "s.toml"
    f.write_text(TINY_TOML)
    argv = [str(f) if a == "FILE" else a for a in argv]
    if argv[0] == "sweep" and "--out" not in argv and len(argv) > 1:
        argv += ["--out", str(tmp_path / "out")]
    assert fragment in one_line_error(capsys, argv)


def test_config_file_errors(tmp_path, capsys):
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(TINY_TOML)
    assert "is a sweep file" in one_line_error(capsys, ["run", "--config", str(sweep_file)])
    bad = tmp_path / "c.toml"
    bad.write_text("depth = 3\nactivaton = 'relu'\n")
    assert "unknown key 'activaton'" in one_line_error(capsys, ["run", "--config", str(bad)])


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert main(["sweep", "--help"]) == 0
    assert "--scheduler" in capsys.readouterr().out


def test_parse_set_values():
    assert parse_set("depth=20") == ("depth", 20)
    assert parse_set("lr=1e-3") == ("lr", 1e-3)
    assert parse_set(" batch_norm = True") == ("batch_norm", True)
    assert parse_set('activation="sigmoid"') == ("activation", "sigmoid")
    assert parse_set("activation=sigmoid") == ("activation", "sigmoid")
    assert parse_set("name=1") == ("name", "1")
    assert parse_set("record_layers=dense_*") == ("record_layers", "dense_*")
    assert parse_set('record_layers=["dense_0", "tanh_1"]') == ("record_layers", ["dense_0", "tanh_1"])
    with pytest.raises(ConfigError):
        parse_set("steps=1.5.2")


def test_run_prints_a_per_layer_summary(tmp_path, capsys):
    c = tmp_path / "c.toml"
    c.write_text('activation = "relu"\ninit = "he_normal"\n')
    assert main(["run", "--config", str(c), *TINY, "--set", "activation=sigmoid"]) == 0
    out = capsys.readouterr().out
    assert "activation='sigmoid'" in out and "init='he_normal'" in out and "depth=2" in out
    assert "status ok, 3 steps, final loss" in out
    lines = [ln.split() for ln in out.splitlines() if ln.strip().startswith("dense_")]
    assert [ln[0] for ln in lines] == ["dense_0", "dense_2", "dense_4"]
    assert all(len(ln) == 4 for ln in lines)  # layer, step 0, step 3, ratio
    assert "step 0" in out and "step 3" in out


def test_run_with_out_stores_a_one_run_results_folder(tmp_path, capsys):
    argv = ["run", *TINY, "--set", "seed=4", "--out", str(tmp_path)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    runs, metrics = store.load_results(tmp_path)
    assert len(runs) == 1 and runs["seed"].iloc[0] == 4 and runs["status"].iloc[0] == "ok"
    assert set(metrics["run"]) == {runs["run"].iloc[0]}
    assert main(argv) == 0  # finished already: loaded, same summary
    assert capsys.readouterr().out.splitlines()[2:-1] == first.splitlines()[2:-1]


def test_run_reports_divergence(capsys):
    argv = ["run", "--set", "depth=4", "--set", "width=8", "--set", "steps=6", "--set", "n_samples=64"]
    argv += ["--set", "batch_size=16", "--set", "activation=relu", "--set", "init=normal"]
    argv += ["--set", "weight_scale=1e5", "--set", "dtype=float32"]
    assert main(argv) == 0
    assert "status diverged at step 1 in " in capsys.readouterr().out


def test_sweep_logs_quietly_when_not_a_terminal_and_resumes(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(TINY_TOML + '[grid]\nactivation = ["tanh", "relu"]\n')
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out), "--jobs", "0"]) == 0
    err = capsys.readouterr().err
    assert "(this process): 2 runs\n" in err and "[1/2] ok" in err and "[2/2] ok" in err
    assert "2 ok, 0 diverged, 0 failed (0 already finished)" in err
    assert "\r" not in err
    assert len(store.load_results(out)[0]) == 2
    assert main(["sweep", str(f), "--out", str(out), "--jobs", "0"]) == 0
    assert "(2 already finished)" in capsys.readouterr().err


def test_sweep_into_a_folder_of_another_sweep_is_refused(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(TINY_TOML)
    assert main(["sweep", str(f), "--out", str(tmp_path / "o"), "--jobs", "0"]) == 0
    f.write_text(TINY_TOML.replace("steps = 3", "steps = 4"))
    capsys.readouterr()
    assert "holds a different sweep" in one_line_error(
        capsys, ["sweep", str(f), "--out", str(tmp_path / "o")]
    )


def test_progress_line_on_a_terminal_is_one_updating_line():
    buf = io.StringIO()
    line = ProgressLine(buf, tty=True)
    line(Progress(1, 4, 0, 1, 0.0, None))
    line(Progress(2, 4, 1, 1, 3.0, 6.0, "abc", "x", "failed", 1.0))
    line.close()
    text = buf.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert "[############............] 2/4 runs" in last and "1 failed" in last and "ETA 0:06" in last


def test_configs_equal_their_cli_spelling():
    assert Config(**dict(parse_set(s) for s in TINY[1::2])) == Config(
        depth=2, width=8, steps=3, n_samples=64, batch_size=16
    )


# -- report and diagnose ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_results(tmp_path_factory):
    """A two-run results folder: a vanishing sigmoid arm and a healthy ReLU arm."""
    from gradlab.experiment.runner import run_sweep
    from gradlab.experiment.sweep import sweep_from_dict

    out = tmp_path_factory.mktemp("cli") / "runs"
    sweep = sweep_from_dict(
        {
            "base": {"depth": 12, "width": 16, "steps": 3, "n_samples": 128, "batch_size": 32},
            "variant": [
                {"name": "sigmoid", "activation": "sigmoid", "init": "standard"},
                {"name": "relu", "activation": "relu", "init": "he_normal", "depth": 3},
            ],
        }
    )
    run_sweep(sweep, out, jobs=0)
    return out


def test_diagnose_fail_on_and_json(small_results, capsys):
    assert main(["diagnose", str(small_results)]) == 0
    table = capsys.readouterr().out
    assert "vanishing" in table and "sigmoid" in table and "healthy" in table
    assert main(["diagnose", str(small_results), "--fail-on", "vanishing"]) == 1
    assert "vanishing (--fail-on)" in capsys.readouterr().err
    assert main(["diagnose", str(small_results), "--fail-on", "exploding,diverged"]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(small_results), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert {f["kind"] for f in found} >= {"vanishing", "healthy"}


def test_diagnose_rejects_unknown_kind(small_results, capsys):
    assert main(["diagnose", str(small_results), "--fail-on", "vanish"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "allowed: diverged" in err[0]


def test_report_writes_a_self_contained_page(small_results, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(small_results), "--out", str(out), "--title", "cli <test>"]) == 0
    html = (out / "index.html").read_text()
    assert "cli &lt;test&gt;" in html and "data:image/png;base64," in html
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err


# -- bad days: huge values, odd names, unknown columns, bugs ----------------------------------------------
def test_a_seed_beyond_int64_is_refused_before_it_runs(tmp_path, capsys):
    err = one_line_error(capsys, ["run", *TINY, "--set", "seed=99999999999999999999", "--out", str(tmp_path)])
    assert "seed=99999999999999999999 is too large; allowed: integers up to 2**63 - 1" in err
    assert not any(tmp_path.iterdir())


def test_report_group_by_an_unknown_column_is_one_line(small_results, tmp_path, capsys):
    argv = ["report", str(small_results), "--out", str(tmp_path), "--group-by", "actvation"]
    err = one_line_error(capsys, argv)
    assert "--group-by 'actvation' is not a config column" in err and "did you mean 'activation'" in err
    assert "allowed: " in err and "depth" in err


def test_names_with_terminal_escapes_are_printed_escaped(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('[sweep]\nname = "\\u001b]0;pwned\\u0007"\n' + TINY_TOML +
                 '[[variant]]\nname = "\\u001b[31mred\\u202e\\nfake line"\n')
    out = tmp_path / "out"
    assert main(["sweep", str(f), "--out", str(out), "--jobs", "0"]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err
    assert "\\x1b[31mred\\u202e\\nfake line" in err and "\\x1b]0;pwned\\x07" in err
    assert not any(line.startswith("fake line") for line in err.splitlines())
    main(["diagnose", str(out)])
    assert "\x1b" not in capsys.readouterr().out
    main(["diagnose", str(out), "--json"])
    text = capsys.readouterr().out
    assert "\x1b" not in text and isinstance(json.loads(text), list)


def test_a_bug_is_one_line_never_a_traceback(small_results, capsys, monkeypatch):
    from gradlab.experiment import store as st

    monkeypatch.setattr(st, "read_results", lambda *a: {}["boom"])  # what diagnose reads with
    monkeypatch.delenv("GRADLAB_DEBUG", raising=False)
    assert main(["diagnose", str(small_results)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("gradlab: internal error: KeyError: 'boom'") and "GRADLAB_DEBUG=1" in err
    monkeypatch.setenv("GRADLAB_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["diagnose", str(small_results)])


def test_the_progress_header_says_how_many_workers_started():
    buf, head = io.StringIO(), "sweep s -> out"
    ProgressLine(buf, tty=False, header=head)(Progress(0, 5, 0, 0, 0.0, None, workers=2))
    ProgressLine(buf, tty=False, header=head)(Progress(5, 5, 0, 5, 0.0, None))
    ProgressLine(buf, tty=False, header=head, where="this process")(Progress(0, 1, 0, 0, 0.0, None))
    assert buf.getvalue().splitlines() == [
        "gradlab: sweep s -> out (2 worker processes): 5 runs",
        "gradlab: sweep s -> out (no worker needed): 5 runs, 5 already finished",
        "gradlab: sweep s -> out (this process): 1 runs",
    ]


def test_a_failed_run_prints_its_last_line_not_its_traceback(tmp_path, capsys, monkeypatch):
    from gradlab.experiment import train

    def boom(config, run_id=None):
        raise RuntimeError("out of luck")

    monkeypatch.setattr(train, "run", boom)
    assert main(["run", *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("gradlab: run failed: RuntimeError: out of luck")
    assert main(["run", *TINY, "--out", str(tmp_path)]) == 1
    assert "(traceback in " in capsys.readouterr().err
