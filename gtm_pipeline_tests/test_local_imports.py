"""Function-local imports of the package's own modules only where a comment says why (issue 16 §3).

An import of a ``gtm_pipeline`` module inside a function is allowed when the module states the reason once, in a
top-level comment containing "function-local" before its first function or class (e.g. the CLI command modules:
`gtm-pipeline --help` imports every one of them), or when a comment line within the three lines above the import
says why (e.g. ``# local: breaks the cycle definitions -> decisions.assets -> definitions``). Otherwise the import
belongs at module level."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import gtm_pipeline

PACKAGE_ROOT = Path(gtm_pipeline.__file__).parent
MARKER = "function-local"
LOOKBACK = 3  # lines above an import a comment may be on


def _is_own_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "gtm_pipeline"
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "gtm_pipeline" for a in node.names)
    return False


def _local_imports(tree: ast.Module) -> list[ast.stmt]:
    """Imports of gtm_pipeline modules anywhere inside a function body (methods and nested functions included)."""
    found: dict[int, ast.stmt] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if _is_own_import(node):
                    found[id(node)] = node  # type: ignore[assignment]
    return sorted(found.values(), key=lambda n: n.lineno)


def _comments(source: str) -> dict[int, str]:
    """line number -> text of the comment token on it (tokenize: a '#' inside a string is not a comment)."""
    return {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.COMMENT}


def _module_states_reason(tree: ast.Module, lines: list[str], comments: dict[int, str]) -> bool:
    """A top-level comment (starting in column 0) containing the marker, before the first function or class."""
    defs = [n.lineno for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    first = min(defs, default=len(lines) + 1)
    return any(MARKER in text for line, text in comments.items() if line < first and lines[line - 1].startswith("#"))


def _comment_above(node: ast.stmt, lines: list[str], comments: dict[int, str]) -> bool:
    """A line that is only a comment within LOOKBACK lines above the import."""
    return any(line in comments and lines[line - 1].lstrip().startswith("#")
               for line in range(max(1, node.lineno - LOOKBACK), node.lineno))


def offenders(path: Path, root: Path = PACKAGE_ROOT) -> list[str]:
    """``file:line: import`` of each function-local import in ``path`` (under package ``root``) without a reason."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    lines = source.splitlines()
    comments = _comments(source)
    if _module_states_reason(tree, lines, comments):
        return []
    rel = path.relative_to(root.parent).as_posix()
    return [f"{rel}:{n.lineno}: {lines[n.lineno - 1].strip()}" for n in _local_imports(tree)
            if not _comment_above(n, lines, comments)]


FIX = (f"move each import to module level; if it must stay in the function (start-up time of the CLI, an import "
       f"cycle, an optional heavy dependency), say why: a comment on the line(s) just above it (e.g. '# local: "
       f"breaks the cycle a -> b -> a'), or once per module a comment containing '{MARKER}' above its first "
       f"function")


def test_function_local_imports_say_why():
    found = [o for path in sorted(PACKAGE_ROOT.rglob("*.py")) for o in offenders(path)]
    assert found == [], f"{len(found)} function-local import(s) without a reason:\n  " + "\n  ".join(found) + \
        f"\nfix: {FIX}"


def test_the_check_sees_a_bare_local_import(tmp_path):
    # The test above is only as good as the check: a bare one is found, a commented one and a module reason are not.
    pkg = tmp_path / "gtm_pipeline"
    pkg.mkdir()
    bare = pkg / "bare.py"
    bare.write_text("import os\n\n\ndef f():\n    x = 1\n    from gtm_pipeline import keys\n    return keys, x\n")
    commented = pkg / "commented.py"
    commented.write_text("def f():\n    # local: breaks the cycle a -> b -> a\n    from gtm_pipeline import keys\n"
                         "    return keys\n")
    stated = pkg / "stated.py"
    stated.write_text(f"import os\n\n# Imports of the stages are {MARKER}: start-up time.\n\n\ndef f():\n"
                      f"    from gtm_pipeline.cli import output\n    return output\n")
    too_far = pkg / "too_far.py"
    too_far.write_text("def f():\n    # a comment about something else\n    a = 1\n    b = 2\n    c = 3\n"
                       "    from . import keys\n    return keys, a, b, c\n")
    assert offenders(bare, pkg) == ["gtm_pipeline/bare.py:6: from gtm_pipeline import keys"]
    assert offenders(commented, pkg) == [] and offenders(stated, pkg) == []
    assert offenders(too_far, pkg) == ["gtm_pipeline/too_far.py:6: from . import keys"]
