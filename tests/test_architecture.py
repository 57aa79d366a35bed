"""Design rules that code review alone would let slip: no import cycles between gradlab's modules
(data flows network → hooks → records → store → diagnosis/theory → plots → report), and only the
plotting and report modules touch matplotlib."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gradlab"


def _imports(path: Path) -> set[str]:
    """gradlab modules a file imports at run time (anywhere, lazily too; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gradlab"):
            parts = node.module.split(".")
            if len(parts) > 1:
                out.add(parts[1])
            else:
                out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("gradlab."):
                    out.add(a.name.split(".")[1])
                elif a.name == "gradlab":
                    out.add("__init__")
    return out


def _graph() -> dict[str, set[str]]:
    mods = {p.stem: p for p in PACKAGE.glob("*.py")}
    return {m: {d for d in _imports(p) if d in mods and d != m} for m, p in mods.items()}


def test_no_import_cycles():
    graph = _graph()
    graph["__init__"] = set()  # the public surface imports everything; nothing may import it back
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_the_package_root():
    offenders = [m for m, deps in _graph().items() if "__init__" in deps and m != "__init__"]
    assert not offenders, f"modules importing gradlab/__init__ (a cycle via the public surface): {offenders}"


def test_only_plots_and_report_use_matplotlib():
    def uses(path: Path) -> bool:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        return any(name.split(".")[0] == "matplotlib" for name in names)

    users = sorted(p.stem for p in PACKAGE.glob("*.py") if uses(p))
    assert users, "the check found no matplotlib user at all: it is not looking"
    assert all(m.startswith(("plots", "report")) for m in users), users


def test_data_flows_one_way_into_plots_and_reports():
    graph = _graph()
    for module, deps in graph.items():
        if not module.startswith(("plots", "report")):
            assert not {d for d in deps if d.startswith("plots")}, f"{module} imports plotting code"
        if module not in ("report", "report_sections", "cli", "__init__"):
            assert not {d for d in deps if d.startswith("report")}, f"{module} imports the report"
