"""The decisions package's import structure: no cycle among its modules, nothing taken from the package's own
``__init__``, the names callers use still where they look for them, and the decision commands' module level free
of what makes `gtm-pipeline --help` slow (DuckDB, Dagster, the decision modules)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gtm_pipeline
from gtm_pipeline.decisions import context, lifecycle, memo, propose, record

PACKAGE_ROOT = Path(gtm_pipeline.__file__).parent
DECISIONS = PACKAGE_ROOT / "decisions"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules ``path`` imports at module level, ``from pkg import sub`` counted as ``pkg`` and ``pkg.sub``."""
    out: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _decision_graph() -> dict[str, set[str]]:
    files = sorted(DECISIONS.rglob("*.py"))
    names = {_module_name(p) for p in files}
    return {_module_name(p): {t for t in _top_level_imports(p) if t in names and t != _module_name(p)}
            for p in files}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_decision_modules_import_without_a_cycle():
    assert _cycle(_decision_graph()) is None


def test_the_cycle_finder_sees_a_cycle():
    # The test above is only as good as the finder: a package importing a module that imports it back is a cycle.
    graph = {"gtm_pipeline.decisions": {"gtm_pipeline.decisions.lifecycle"},
             "gtm_pipeline.decisions.lifecycle": {"gtm_pipeline.decisions"}}
    assert _cycle(graph) == ["gtm_pipeline.decisions", "gtm_pipeline.decisions.lifecycle", "gtm_pipeline.decisions"]
    assert "gtm_pipeline.decisions" in _decision_graph()["gtm_pipeline.decisions.lifecycle"]  # from-imports count


def test_no_decision_module_takes_names_from_the_package_init():
    modules = {p.stem for p in DECISIONS.glob("*.py")} | {p.name for p in DECISIONS.iterdir() if p.is_dir()}
    offenders = []
    for path in sorted(DECISIONS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "gtm_pipeline.decisions":
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name not in modules]
    assert offenders == [], f"import these from gtm_pipeline.decisions.context instead: {offenders}"


def test_callers_find_the_names_where_they_look():
    import gtm_pipeline.decisions as decisions

    assert decisions.open_context is context.open_context
    assert decisions.DecisionContext is lifecycle.DecisionContext is context.DecisionContext
    assert lifecycle.Decision is record.Decision and lifecycle.get is record.get
    assert lifecycle.propose is propose.propose and lifecycle.ProposeResult is propose.ProposeResult
    assert lifecycle.rerender is memo.rerender
    assert set(lifecycle.__all__) <= set(dir(lifecycle))


HEAVY = ("gtm_pipeline.decisions", "gtm_pipeline.experiments", "gtm_pipeline.warehouse", "gtm_pipeline.keys",
         "gtm_pipeline.definitions", "gtm_pipeline.orchestration", "gtm_pipeline.slo", "dagster", "duckdb", "pandas")


@pytest.mark.parametrize("name", ["decisions", "decision_audit", "decision_context", "experiments"])
def test_decision_commands_import_nothing_heavy_at_module_level(name):
    heavy = sorted(t for t in _top_level_imports(PACKAGE_ROOT / "cli" / f"{name}.py")
                   if any(t == h or t.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"gtm_pipeline/cli/{name}.py: import {heavy} inside the commands (--help imports every module)"


def test_the_decision_package_imports_in_a_fresh_interpreter():
    # Each module first, alone: an import cycle shows up as an ImportError only when its other end is not loaded yet.
    # These three were the far ends of the cycles that function-local imports used to hide.
    modules = ["gtm_pipeline.decisions.memo", "gtm_pipeline.decisions.refusals", "gtm_pipeline.decisions.verify"]
    runs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], stderr=subprocess.PIPE, text=True)
            for m in modules}
    for module, run in runs.items():
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, f"import {module}: {err[-2000:]}"
