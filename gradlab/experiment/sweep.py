"""Sweeps: a grid of Configs declared in TOML, expanded in a fixed order and validated before any run.

A sweep file has these tables (every other top-level name is an error)::

    [sweep]                 # optional: name, description, seeds = [0, 1, 2] (replicates every arm)
    [base]                  # Config fields shared by every run
    [grid]                  # Config fields → non-empty lists; their cartesian product is crossed
    [[variant]]             # paired values: one arm per table, optional `name` labels it
    [[exclude]]             # a combination matching every key=value given here is dropped

Runs = variants × grid combinations × seeds, minus exclusions. A grid or variant value overrides
``[base]``; a key may not be both a grid axis and set by a variant, and ``seeds`` may not be combined
with ``seed`` elsewhere. Order is deterministic: variants in file order, then grid combinations with the
last axis varying fastest, then seeds. Two identical configs in one sweep are an error (their run id,
``Config.key()``, would be the same). An ``[[exclude]]`` that matches nothing is an error, since it is
almost always a typo in a value.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradlab.experiment.config import FIELDS, Config, ConfigError, check_type, closest_key

TABLES = ("sweep", "base", "grid", "variant", "exclude")
SWEEP_KEYS = ("name", "description", "seeds")


class SweepError(ValueError):
    """A sweep file is malformed or one of its configs is invalid; the message is one line."""


@dataclass(frozen=True)
class Sweep:
    """A parsed, validated sweep: base values, grid axes, paired variants, exclusions and seeds."""

    name: str = ""
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] | None = None
    source: str | None = None  # the TOML text it was read from
    path: str | None = None

    def describe(self) -> dict[str, Any]:
        """What a results folder keeps of the sweep itself: name, description, file path and text."""
        return {"name": self.name, "description": self.description, "path": self.path, "source": self.source}

    def configs(self) -> list[Config]:
        """Every run's Config, in the documented deterministic order (validated)."""
        where = self.path or "sweep"
        axes = list(self.grid)
        seeds: list[int | None] = list(self.seeds) if self.seeds else [None]
        used = [False] * len(self.exclude)
        out: list[Config] = []
        seen: dict[str, int] = {}
        for vi, variant in enumerate(self.variants or [{}]):
            for combo in itertools.product(*(self.grid[a] for a in axes)):
                arm = {**variant, **dict(zip(axes, combo, strict=True))}
                for seed in seeds:
                    values = {**self.base, **arm} if seed is None else {**self.base, **arm, "seed": seed}
                    try:
                        config = Config(**values)
                    except ConfigError as exc:
                        origin = self._origin(_error_key(str(exc)), vi, seed is not None)
                        if origin:
                            raise SweepError(f"{where}: in {origin}: {exc}") from None
                        raise SweepError(f"{where}: in run {len(out) + 1} ({_shown(arm)}): {exc}") from None
                    hit = [i for i, ex in enumerate(self.exclude) if _matches(config, ex)]
                    for i in hit:
                        used[i] = True
                    if hit:
                        continue
                    k = config.key()
                    if k in seen:
                        raise SweepError(
                            f"{where}: runs {seen[k] + 1} and {len(out) + 1} are the same config "
                            f"({_shown(arm)}); remove the duplicate value"
                        )
                    seen[k] = len(out)
                    out.append(config)
        for i, u in enumerate(used):
            if not u:
                raise SweepError(
                    f"{where}: [[exclude]] {i + 1} {self.exclude[i]} matches no run; check its values"
                )
        if not out:
            raise SweepError(f"{where}: every combination is excluded; the sweep has no runs")
        return out

    def _origin(self, key: str, variant_index: int, seeded: bool) -> str:
        """The table that set field ``key`` in a run of the given variant, or "" if none did."""
        variant = self.variants[variant_index] if self.variants else {}
        if key == "seed" and seeded:
            return "[sweep] seeds"
        if key in self.grid:
            return "[grid]"
        if key in variant:
            return _variant_label(variant_index, variant)
        return "[base]" if key in self.base else ""


def _shown(arm: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in arm.items())


def _variant_label(i: int, variant: dict[str, Any]) -> str:
    return f"[[variant]] {i + 1}" + (f" ({variant['name']!r})" if variant.get("name") else "")


def _error_key(message: str) -> str:
    """The field a ConfigError message starts with (``key=value ...``), or ""."""
    m = re.match(r"(\w+)=", message)
    return m.group(1) if m else ""


def _matches(config: Config, rule: dict[str, Any]) -> bool:
    return all(getattr(config, k) == v for k, v in rule.items())


def _check_keys(table: dict[str, Any], where: str, section: str, allowed: Any) -> None:
    for k in table:
        if k not in allowed:
            raise SweepError(f"{where}: unknown key {k!r} in {section}: {closest_key(k, allowed)}")


def _check_value(key: str, value: Any, where: str, section: str) -> Any:
    try:
        return check_type(key, value)
    except ConfigError as exc:
        raise SweepError(f"{where}: in {section}: {exc}") from None


def sweep_from_dict(d: dict[str, Any], *, source: str | None = None, path: str | None = None) -> Sweep:
    """Validate a parsed sweep document (tables as dicts) and return the Sweep; raises SweepError."""
    where = path or "sweep"
    for k, v in d.items():
        if k not in TABLES:
            hint = "put Config fields in [base]" if k in FIELDS else closest_key(k, TABLES)
            raise SweepError(
                f"{where}: unknown top-level {'table' if isinstance(v, dict) else 'key'} {k!r}: {hint}"
            )
    tables: dict[str, Any] = {}
    for k in ("sweep", "base", "grid"):
        v = d.get(k, {})
        if not isinstance(v, dict):
            raise SweepError(f"{where}: {k!r} must be a table, written [{k}]")
        tables[k] = v
    for k in ("variant", "exclude"):
        v = d.get(k, [])
        if not (isinstance(v, list) and all(isinstance(t, dict) for t in v)):
            raise SweepError(f"{where}: {k!r} must be a list of tables, each written [[{k}]]")
        tables[k] = v

    meta = tables["sweep"]
    _check_keys(meta, where, "[sweep]", SWEEP_KEYS)
    for k in ("name", "description"):
        if not isinstance(meta.get(k, ""), str):
            raise SweepError(f"{where}: [sweep] {k}={meta[k]!r} must be a string")
    seeds = meta.get("seeds")
    if seeds is not None:
        ok = isinstance(seeds, list) and seeds and all(type(s) is int and s >= 0 for s in seeds)
        if not ok:
            raise SweepError(f"{where}: [sweep] seeds={seeds!r} must be a non-empty list of integers >= 0")
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"{where}: [sweep] seeds={seeds!r} has a repeated seed")

    base = tables["base"]
    _check_keys(base, where, "[base]", FIELDS)
    base = {k: _check_value(k, v, where, "[base]") for k, v in base.items()}

    grid: dict[str, list[Any]] = {}
    _check_keys(tables["grid"], where, "[grid]", FIELDS)
    for k, vs in tables["grid"].items():
        if not isinstance(vs, list):
            raise SweepError(f"{where}: [grid] {k}={vs!r} must be a list of values, e.g. {k} = [{vs!r}]")
        if not vs:
            raise SweepError(f"{where}: [grid] axis {k!r} is empty; give it at least one value")
        grid[k] = [_check_value(k, v, where, "[grid]") for v in vs]

    variants: list[dict[str, Any]] = []
    for i, t in enumerate(tables["variant"]):
        label = f"[[variant]] {i + 1}"
        _check_keys(t, where, label, FIELDS)
        both = sorted(set(t) & set(grid))
        if both:
            raise SweepError(
                f"{where}: in {label}: {both[0]!r} is also a [grid] axis; set it in one place only"
            )
        variants.append({k: _check_value(k, v, where, label) for k, v in t.items()})

    exclude: list[dict[str, Any]] = []
    for i, t in enumerate(tables["exclude"]):
        label = f"[[exclude]] {i + 1}"
        if not t:
            raise SweepError(f"{where}: {label} is empty; give the key = value pairs to drop")
        _check_keys(t, where, label, FIELDS)
        exclude.append({k: _check_value(k, v, where, label) for k, v in t.items()})

    if not (base or grid or variants or seeds):
        raise SweepError(
            f"{where}: the sweep sets no Config field; give them in [base], [grid] or [[variant]] "
            "(an empty sweep would run one default config)"
        )
    if seeds is not None:
        for label, t in [
            ("[base]", base),
            ("[grid]", grid),
            *[(f"[[variant]] {i + 1}", v) for i, v in enumerate(variants)],
        ]:
            if "seed" in t:
                raise SweepError(f"{where}: seed is set in {label} and by [sweep] seeds; use one of them")

    sweep = Sweep(
        name=meta.get("name", ""),
        description=meta.get("description", ""),
        base=base,
        grid=grid,
        variants=variants,
        exclude=exclude,
        seeds=list(seeds) if seeds is not None else None,
        source=source,
        path=path,
    )
    sweep.configs()  # validates every generated config before anything runs
    return sweep


def parse_sweep(text: str, path: str | None = None) -> Sweep:
    """Parse and validate a sweep from TOML text."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path or 'sweep'}: not valid TOML: {exc}") from None
    return sweep_from_dict(doc, source=text, path=path)


def load_sweep(path: str | Path) -> Sweep:
    """Read, parse and validate a sweep file; raises SweepError with a one-line message."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepError(f"cannot read sweep file {str(p)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SweepError(f"{p}: not a UTF-8 text file") from None
    return parse_sweep(text, str(p))
