"""Run configuration: a frozen dataclass whose every field has a default, validated on creation."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from gradlab.experiment.data import DATASETS
from gradlab.nn.activations import ACTIVATIONS
from gradlab.nn.init import INITS
from gradlab.nn.optim import OPTIMIZERS
from gradlab.statistics import STAT_GROUPS


class ConfigError(ValueError):
    """A configuration key or value is not allowed; the message names it and what is allowed."""


@dataclass(frozen=True)
class Config:
    """One training run: network, data, optimisation, and what to record.

    ``weight_scale`` is σ_w: with ``init="normal"``, W ~ N(0, σ_w²/fan_in); for other inits a gain
    multiplier. ``bias_scale`` is σ_b: biases ~ N(0, σ_b²). ``clip_norm``/``clip_value`` of 0 mean off.
    ``steps = 0`` only measures the network at initialisation. ``input_dim``/``n_classes`` of 0 take
    the dataset's own (spirals 2/3, blobs 2/3, teacher 2/1 outputs, gaussian 2/3, digits 64/10).
    """

    name: str = ""
    # network
    depth: int = 10
    width: int = 64
    activation: str = "tanh"
    init: str = "glorot_uniform"
    weight_scale: float = 1.0
    bias_scale: float = 0.0
    batch_norm: bool = False
    layer_norm: bool = False
    residual: bool = False
    dropout: float = 0.0
    dtype: str = "float64"
    # optimisation
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_norm: float = 0.0
    clip_value: float = 0.0
    steps: int = 200
    batch_size: int = 128
    # data
    dataset: str = "spirals"
    n_samples: int = 1024
    input_dim: int = 0
    n_classes: int = 0
    seed: int = 0
    # recording
    record_every: int = 1
    hist_every: int = 0
    record_layers: tuple[str, ...] = field(default=("*",))
    record_stats: tuple[str, ...] = field(default=("gradients", "weights", "activations", "units"))
    dead_window: int = 10

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated)."""
        return from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        d = dataclasses.asdict(self)
        d["record_layers"] = list(self.record_layers)
        d["record_stats"] = list(self.record_stats)
        return d

    def key(self) -> str:
        """A stable 12-hex-digit id of this config (same fields ⇒ same key)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}

_CHOICES: dict[str, tuple[str, ...]] = {
    "activation": tuple(ACTIVATIONS),
    "init": tuple(INITS),
    "optimizer": tuple(OPTIMIZERS),
    "dataset": tuple(DATASETS),
    "dtype": ("float32", "float64"),
}
INT64_MAX = 2**63 - 1
_POSITIVE_INT = ("width", "batch_size", "n_samples", "record_every", "dead_window")
_NONNEG_INT = ("depth", "steps", "seed", "hist_every", "input_dim", "n_classes")
_NONNEG_FLOAT = ("weight_scale", "bias_scale", "momentum", "weight_decay", "clip_norm", "clip_value")


def closest_key(key: str, allowed: Any) -> str:
    """A hint naming the closest allowed key, or listing them all."""
    near = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f"did you mean {near[0]!r}?" if near else f"allowed: {', '.join(allowed)}"


def type_name(t: Any) -> str:
    """How an error message names a field's type annotation ("int" → "an integer")."""
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
        str(t), str(t)
    )


def check_type(name: str, value: Any) -> Any:
    """``value`` checked against the type of Config field ``name`` and coerced (int → float, str → tuple).

    Raises ConfigError naming the field and the expected type; values are not range-checked here.
    """
    expected = FIELDS[name].type
    if expected == "bool":
        ok = isinstance(value, bool)
    elif expected == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif expected == "str":
        ok = isinstance(value, str)
    else:  # record_layers, record_stats: a string or a non-empty list of strings
        if isinstance(value, str):
            value = (value,)
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value) and len(value) > 0
        value = tuple(value) if ok else value
        if not ok:
            what = "a statistic group" if name == "record_stats" else "a layer name or glob pattern"
            raise ConfigError(f"{name}={value!r} must be {what}, or a list of them")
        return value
    if not ok:
        raise ConfigError(f"{name}={value!r} must be {type_name(expected)}")
    return value


def from_dict(d: dict[str, Any]) -> Config:
    """Build a Config from a plain dict; unknown keys name the closest valid one."""
    for k in d:
        if k not in FIELDS:
            raise ConfigError(f"unknown key {k!r}: {closest_key(k, FIELDS)}")
    return Config(**d)  # __post_init__ type-checks and coerces every field


def validate(c: Config) -> None:
    """Raise ConfigError naming the first field whose value is not allowed."""
    for name in FIELDS:
        value = getattr(c, name)
        checked = check_type(name, value)
        if checked is not value:
            object.__setattr__(c, name, checked)
    for name, choices in _CHOICES.items():
        if getattr(c, name) not in choices:
            raise ConfigError(f"{name}={getattr(c, name)!r} is not allowed; allowed: {', '.join(choices)}")
    for name, f in FIELDS.items():
        v = getattr(c, name)
        if f.type == "int" and v > INT64_MAX:  # the runs table (Parquet) holds int64
            raise ConfigError(f"{name}={v!r} is too large; allowed: integers up to 2**63 - 1 = {INT64_MAX}")
        for text in [v] if isinstance(v, str) else v if isinstance(v, tuple) else []:
            if not _utf8(text):
                raise ConfigError(f"{name}={text!r} is not valid Unicode text (a lone surrogate); "
                                  "write it as UTF-8")
    for name in _POSITIVE_INT:
        if getattr(c, name) < 1:
            raise ConfigError(f"{name}={getattr(c, name)!r} must be >= 1")
    for name in _NONNEG_INT + _NONNEG_FLOAT:
        v = getattr(c, name)
        if not 0 <= v < float("inf"):  # also false for NaN
            raise ConfigError(f"{name}={v!r} must be a finite number >= 0")
    if not 0 < c.lr < float("inf"):
        raise ConfigError(f"lr={c.lr!r} must be a finite number > 0")
    if not 0 <= c.dropout < 1:
        raise ConfigError(f"dropout={c.dropout!r} must be in [0, 1)")
    if c.momentum >= 1:
        raise ConfigError(f"momentum={c.momentum!r} must be in [0, 1)")
    if c.batch_norm and c.layer_norm:
        raise ConfigError("batch_norm and layer_norm are both true: choose at most one")
    if c.batch_norm and c.batch_size < 2:
        raise ConfigError(f"batch_size={c.batch_size} must be >= 2 with batch_norm")
    if c.batch_size > c.n_samples:
        raise ConfigError(f"batch_size={c.batch_size} must be <= n_samples={c.n_samples}")
    unknown = [g for g in c.record_stats if g not in STAT_GROUPS]
    if unknown:
        raise ConfigError(
            f"record_stats={list(c.record_stats)!r}: {unknown[0]!r} is not a statistic group; "
            f"allowed: {', '.join(STAT_GROUPS)}"
        )
    _validate_dataset_sizes(c)
    if c.momentum > 0 and c.optimizer in ("adam", "adamw"):
        raise ConfigError(f"momentum={c.momentum} does not apply to optimizer={c.optimizer!r} (uses betas)")
    _validate_record_layers(c)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _layer_names(c: Config) -> list[str]:
    """The names of the layers of the network ``c`` describes, in forward order (``dense_0``, …)."""
    from gradlab.nn.network import mlp

    net = mlp(1, 1, depth=c.depth, width=1, activation=c.activation, init=c.init,
              batch_norm=c.batch_norm, layer_norm=c.layer_norm, residual=c.residual, dropout=c.dropout)
    return [name for name, _ in net.named_layers()]


def _validate_record_layers(c: Config) -> None:
    """Every ``record_layers`` pattern must match a layer: one that matches none records nothing from it."""
    if all(p == "*" for p in c.record_layers):
        return
    names = _layer_names(c)
    for pattern in c.record_layers:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(
                f"record_layers={list(c.record_layers)!r}: {pattern!r} matches no layer of this network; "
                f"its layers: {_some(names)} (glob patterns such as 'dense_*' select a kind)"
            )


def _some(names: list[str], head: int = 8) -> str:
    """A list of names, its middle elided when long."""
    if len(names) <= head + 2:
        return ", ".join(names)
    return f"{', '.join(names[:head])}, …, {', '.join(names[-2:])} ({len(names)} layers)"


def _validate_dataset_sizes(c: Config) -> None:
    """The sizes ``make_dataset`` would reject, caught before any run starts (0 = the dataset's own)."""
    b = DATASETS[c.dataset]
    if c.input_dim and (c.input_dim < b.min_input_dim or b.fixed_input_dim not in (None, c.input_dim)):
        allowed = f"0 or {b.fixed_input_dim}" if b.fixed_input_dim else f"0 or >= {b.min_input_dim}"
        raise ConfigError(
            f"input_dim={c.input_dim} is not allowed for dataset={c.dataset!r}; allowed: {allowed}"
        )
    if c.n_classes and (c.n_classes < b.min_n_classes or b.fixed_n_classes not in (None, c.n_classes)):
        allowed = f"0 or {b.fixed_n_classes}" if b.fixed_n_classes else f"0 or >= {b.min_n_classes}"
        raise ConfigError(
            f"n_classes={c.n_classes} is not allowed for dataset={c.dataset!r}; allowed: {allowed}"
        )
    if b.max_samples is not None and c.n_samples > b.max_samples:
        raise ConfigError(f"n_samples={c.n_samples} must be <= {b.max_samples} for dataset={c.dataset!r}")
