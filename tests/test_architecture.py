"""Design rules that code review alone would let slip: data flows one way through gradlab's packages
(DESIGN.md's drawing), no module cycles, only plots/ and report/ touch matplotlib, only torch/ touches
torch. Every import counts: lazy ones inside functions and ``TYPE_CHECKING`` ones too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gradlab"

ROOT_MODULES = {"records", "statistics", "arms", "atomic", "testing", "version"}
"""Shared modules at the root: the data contract (records, and its statistic table), arm labels,
atomic writes, the gradient checker."""

ALLOWED: dict[str, set[str]] = {
    # unit          may import (besides itself)
    "statistics": set(),
    "records": {"statistics"},
    "arms": set(),
    "atomic": set(),
    "testing": set(),
    "version": set(),
    "nn": set(),
    "monitor": {"nn", "records", "statistics", "atomic"},
    "experiment": {"nn", "monitor", "records", "statistics", "atomic", "version"},
    "diagnosis": {"nn", "records", "statistics", "arms"},
    "theory": {"nn", "records", "statistics", "experiment"},
    "plots": {"records", "statistics", "arms"},
    "report": {"diagnosis", "theory", "plots", "experiment", "records", "statistics", "arms", "version"},
    # repair runs the fix sweeps: the runner's stage, then diagnosis (a stage after it)
    "repair": {"experiment", "diagnosis", "records", "arms"},
    "torch": {"nn", "monitor", "records", "statistics", "atomic", "arms", "diagnosis", "experiment",
              "version"},
}
"""The package dependency table: one row per unit (a package or a shared root module), what it may
import. ``cli``, ``__main__`` and the package root are the public surface and may import anything."""

SURFACE = {"cli", "__main__", "__init__"}


def _modules() -> dict[str, Path]:
    """Dotted module name (relative to gradlab) → file, for every module of the package."""
    out = {}
    for p in PACKAGE.rglob("*.py"):
        rel = p.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = set(_modules())


def _imports(path: Path) -> set[str]:
    """gradlab modules a file imports, as dotted names relative to gradlab ("" = the root)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "gradlab":
                out.update(a.name for a in node.names)  # from gradlab import plots → "plots"
            elif node.module.startswith("gradlab."):
                base = node.module.removeprefix("gradlab.")
                # from gradlab.experiment import store → the module experiment.store, not the package
                subs = {f"{base}.{a.name}" for a in node.names} & MODULES
                out.update(subs or {base})
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "gradlab":
                    out.add("")
                elif a.name.startswith("gradlab."):
                    out.add(a.name.removeprefix("gradlab."))
    return out


def _unit(module: str) -> str:
    return module.split(".")[0] if module else "__init__"


def test_the_table_covers_every_unit():
    units = {_unit(m) for m in _modules()} - SURFACE
    assert units <= set(ALLOWED), f"add a row to ALLOWED for {sorted(units - set(ALLOWED))}"
    assert set(ALLOWED) - {"torch"} <= units, f"stale rows: {sorted(set(ALLOWED) - units)}"


def test_packages_import_only_what_the_table_allows():
    bad = []
    for module, path in sorted(_modules().items()):
        unit = _unit(module)
        if unit in SURFACE:
            continue
        for dep in sorted(_imports(path)):
            target = _unit(dep)
            if target != unit and target not in ALLOWED[unit]:
                bad.append(f"gradlab.{module} imports gradlab.{dep} ({unit} may import: "
                           f"{', '.join(sorted(ALLOWED[unit])) or 'nothing of gradlab'})")
    assert not bad, "\n".join(bad)


def test_no_module_import_cycles():
    mods = _modules()
    graph = {m: {d for d in _imports(p) if d in mods and d != m} for m, p in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_the_package_root():
    offenders = [m for m, p in _modules().items() if _unit(m) not in SURFACE and "" in _imports(p)]
    assert not offenders, f"modules importing gradlab/__init__ (a cycle via the public surface): {offenders}"


def _third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0]
    return {name.split(".")[0] for name in names}


def test_only_plots_and_report_use_matplotlib():
    users = sorted(m for m, p in _modules().items() if "matplotlib" in _third_party(p))
    assert users, "the check found no matplotlib user at all: it is not looking"
    assert all(_unit(m) in ("plots", "report") for m in users), users


def test_only_the_torch_adapter_uses_torch():
    users = sorted(m for m, p in _modules().items() if "torch" in _third_party(p))
    assert all(_unit(m) == "torch" for m in users), users


def test_the_checker_sees_lazy_and_type_only_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gradlab.report import x\n"
                   "def f():\n    from gradlab.plots.common import y\n    import gradlab.theory\n")
    assert _imports(src) == {"report", "plots.common", "theory"}


def test_no_module_is_over_400_lines():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in _modules().items()}
    long = {m: n for m, n in sizes.items() if n > 420}
    assert not long, f"split these modules (~400 lines at most): {long}"
