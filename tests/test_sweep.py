"""Sweep files: grid expansion, pairing, exclusion, seeds, order, and every validation error."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import BAD

from gradlab.experiment.config import Config
from gradlab.experiment.sweep import Sweep, SweepError, load_sweep, parse_sweep

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.toml"))


def configs(text: str) -> list[Config]:
    return parse_sweep(text, "s.toml").configs()


def test_grid_is_a_cartesian_product_last_axis_fastest():
    cs = configs('[base]\nsteps = 3\n[grid]\ndepth = [2, 4, 8]\nactivation = ["tanh", "relu"]\n')
    assert [(c.depth, c.activation) for c in cs] == [
        (2, "tanh"),
        (2, "relu"),
        (4, "tanh"),
        (4, "relu"),
        (8, "tanh"),
        (8, "relu"),
    ]
    assert all(c.steps == 3 for c in cs)


def test_no_grid_no_variant_is_one_run_of_base():
    assert configs("[base]\ndepth = 7\n") == [Config(depth=7)]


def test_variants_pair_values_and_cross_the_grid_keeping_names():
    text = """
[grid]
depth = [5, 50]
[[variant]]
name = "sigmoid"
activation = "sigmoid"
init = "standard"
[[variant]]
name = "relu+he"
activation = "relu"
init = "he_normal"
"""
    cs = configs(text)
    assert [(c.name, c.activation, c.init, c.depth) for c in cs] == [
        ("sigmoid", "sigmoid", "standard", 5),
        ("sigmoid", "sigmoid", "standard", 50),
        ("relu+he", "relu", "he_normal", 5),
        ("relu+he", "relu", "he_normal", 50),
    ]


def test_variant_and_grid_override_base():
    cs = configs(
        '[base]\ndepth = 3\nactivation = "tanh"\n[grid]\ndepth = [4]\n[[variant]]\nactivation = "relu"\n'
    )
    assert [(c.depth, c.activation) for c in cs] == [(4, "relu")]


def test_exclude_drops_every_matching_combination_only():
    text = """
[grid]
depth = [5, 50]
activation = ["tanh", "relu"]
batch_norm = [false, true]
[[exclude]]
depth = 50
batch_norm = true
[[exclude]]
activation = "relu"
depth = 5
"""
    cs = configs(text)
    got = {(c.depth, c.activation, c.batch_norm) for c in cs}
    assert len(cs) == 8 - 2 - 2
    assert got == {(5, "tanh", False), (5, "tanh", True), (50, "tanh", False), (50, "relu", False)}


def test_exclude_int_value_matches_float_field():
    cs = configs("[grid]\nlr = [0.5, 1.0]\n[[exclude]]\nlr = 1\n")
    assert [c.lr for c in cs] == [0.5]


def test_seeds_replicate_every_arm_innermost():
    text = (
        '[sweep]\nseeds = [0, 1, 2]\n[grid]\nactivation = ["tanh", "relu"]\n'
        '[[variant]]\nname = "a"\n[[variant]]\nname = "b"\n'
    )
    cs = configs(text)
    assert len(cs) == 2 * 2 * 3
    assert [(c.name, c.activation, c.seed) for c in cs[:4]] == [
        ("a", "tanh", 0),
        ("a", "tanh", 1),
        ("a", "tanh", 2),
        ("a", "relu", 0),
    ]
    assert len({c.key() for c in cs}) == 12


def test_order_and_keys_are_deterministic(tmp_path):
    text = '[sweep]\nseeds = [3, 1]\n[grid]\ndepth = [9, 2]\n[[variant]]\nname = "x"\n'
    assert [c.key() for c in configs(text)] == [c.key() for c in configs(text)]
    p = tmp_path / "s.toml"
    p.write_text(text)
    sweep = load_sweep(p)
    assert isinstance(sweep, Sweep)
    assert sweep.source == text and sweep.path == str(p)
    assert [(c.depth, c.seed) for c in sweep.configs()] == [(9, 3), (9, 1), (2, 3), (2, 1)]


def test_sweep_metadata():
    s = parse_sweep('[sweep]\nname = "n"\ndescription = "d"\n[base]\ndepth = 2\n')
    assert (s.name, s.description, s.seeds) == ("n", "d", None)


@pytest.mark.parametrize("text", ["", "# nothing\n", '[sweep]\nname = "n"\n', "[base]\n[grid]\n"])
def test_a_sweep_that_sets_nothing_is_refused(text):
    with pytest.raises(SweepError, match=r"sets no Config field.*would run one default config"):
        parse_sweep(text, "empty.toml")




@pytest.mark.parametrize(("text", "fragments"), BAD, ids=[b[1][0][:40] for b in BAD])
def test_every_validation_error_is_one_clear_line(text, fragments):
    with pytest.raises(SweepError) as err:
        parse_sweep(text, "bad.toml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("bad.toml")
    for f in fragments:
        assert f in msg, msg


def test_missing_file_is_a_sweep_error(tmp_path):
    with pytest.raises(SweepError, match="cannot read sweep file"):
        load_sweep(tmp_path / "nope.toml")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_curated_experiments_are_valid_and_commented(path):
    sweep = load_sweep(path)
    assert sweep.configs()
    assert path.read_text().startswith("#"), "each experiment starts with a comment saying what it shows"


def test_quick_is_small():
    cs = load_sweep(Path(__file__).parent.parent / "experiments" / "quick.toml").configs()
    assert 8 <= len(cs) <= 16
    assert all(c.steps <= 200 for c in cs)
