"""The shape of the package, checked: imports form no cycle, no stage imports another stage (stages share leaf
modules instead), and modules and functions stay small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cotdistill"

# module -> the stage it belongs to; modules of one stage may import each other
STAGES = {
    "cotdistill.generate": "generate", "cotdistill.distributed": "generate", "cotdistill.shards": "generate",
    "cotdistill.synthesize": "generate",  # problem synthesis is generation: each writing round is a generate run
    "cotdistill.filter": "filter", "cotdistill.filter_outputs": "filter",
    "cotdistill.logits": "logits",
    "cotdistill.train": "train",
    "cotdistill.evaluate": "evaluate",
    "cotdistill.payoff": "payoff",
    "cotdistill.student_init": "student_init",
    "cotdistill.answers_only": "answers_only",
}
# the orchestration layer: may import every stage; no stage or leaf imports it
ORCHESTRATION = {"cotdistill.run", "cotdistill.cli", "cotdistill.__main__", "cotdistill.memory", "cotdistill.plan"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS: dict[str, str] = {}  # "module:function" -> why it stays long


def modules(pkg: Path = PKG) -> dict[str, Path]:
    """Module name -> file, for every module of the package at ``pkg``."""
    out = {}
    for p in pkg.rglob("*.py"):
        parts = p.relative_to(pkg.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def stage_of(name: str) -> str | None:
    for prefix, stage in STAGES.items():
        if name == prefix or name.startswith(prefix + "."):
            return stage
    return None


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every cotdistill module ``name`` imports, at the top or inside a function (a function-level import is a
    dependency too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cotdistill")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("cotdistill"):
            for a in node.names:  # `from cotdistill import generate` names a module
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def graph(pkg: Path = PKG) -> dict[str, set[str]]:
    mods = modules(pkg)
    return {n: imports_of(n, p, set(mods)) for n, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[str]:
    """Every import cycle found by a depth-first walk, as "a -> b -> a"."""
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    found = []

    def visit(n, path):
        state[n] = 1
        for m in sorted(g[n]):
            if state.get(m) == 1:
                found.append(" -> ".join([*path[path.index(m):], m]))
            elif m not in state:
                visit(m, [*path, m])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    return found


def stage_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for n, deps in g.items():
        if n in ORCHESTRATION:
            continue
        mine = stage_of(n)
        for m in deps:
            if m in ORCHESTRATION:
                bad.append(f"{n} imports the orchestration module {m}")
            elif stage_of(m) is not None and stage_of(m) != mine:
                bad.append(f"{n} ({mine or 'leaf'}) imports stage module {m} ({stage_of(m)})")
    return sorted(bad)


def test_imports_form_no_cycle():
    assert not cycles(graph()), "import cycles:\n" + "\n".join(cycles(graph()))


def test_no_stage_imports_another_stage_and_leaves_import_no_stage():
    bad = stage_violations(graph())
    assert not bad, "\n".join(bad)


def test_modules_and_functions_stay_short():
    long_modules = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    long_modules = {n: k for n, k in long_modules.items() if k > MAX_MODULE_LINES}
    long_functions = {}
    for n, p in modules().items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                k = node.end_lineno - node.lineno + 1
                if k > MAX_FUNCTION_LINES and f"{n}:{node.name}" not in LONG_FUNCTIONS:
                    long_functions[f"{n}:{node.name}"] = k
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_the_checker_sees_a_cycle_and_a_stage_import(tmp_path):
    """The checks above fail on a package that has either defect (function-level imports included)."""
    pkg = tmp_path / "cotdistill"
    (pkg / "train").mkdir(parents=True)
    for f, text in {"__init__.py": "", "train/__init__.py": "", "train/common.py": "",
                    "a.py": "from cotdistill import b\n", "b.py": "def f():\n    from cotdistill.a import x\n",
                    "filter.py": "from cotdistill.train import common\n", "leaf.py": "import cotdistill.run\n",
                    "run.py": "from cotdistill import filter\n"}.items():
        (pkg / f).write_text(text)
    g = graph(pkg)
    assert cycles(g) == ["cotdistill.a -> cotdistill.b -> cotdistill.a"]
    assert stage_violations(g) == [
        "cotdistill.filter (filter) imports stage module cotdistill.train.common (train)",
        "cotdistill.leaf imports the orchestration module cotdistill.run",
    ]
