"""Reading the source text of a contract expression: limits, line breaks, tokens, the "=" of a formula, names."""

from __future__ import annotations

import ast
import io
import tokenize
import unicodedata
from collections.abc import Iterable

from gtm_pipeline.errors import ExpressionError
from gtm_pipeline.expressions.tree import MAX_DEPTH, MAX_TEXT_CHARS

WALRUS_MESSAGE = 'assignment with ":=" is not allowed in contract expressions'


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def name_key(name: str) -> str:
    """Matching key for names: Python normalises identifiers with NFKC, and names match case-insensitively."""
    return unicodedata.normalize("NFKC", name).casefold()


def check_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise ExpressionError(f"{where}: expected an expression as text, got {type(text).__name__} ({text!r})")
    if len(text) > MAX_TEXT_CHARS:
        raise ExpressionError(
            f"{where}: expression is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}"
        )
    # YAML block scalars keep line breaks; Python would need brackets to continue a line, so treat them as spaces.
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()
    if not text:
        raise ExpressionError(f"{where}: expression is empty")
    return text


def read_tokens(text: str) -> list[tokenize.TokenInfo]:
    """The tokens of ``text`` as far as they can be read (a broken tail is simply not returned)."""
    out: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            out.append(tok)
    except (tokenize.TokenError, SyntaxError):
        pass
    return out


def find_assignment(text: str) -> int | None:
    """Offset of the first top-level "=" (not part of ==, <=, >=, !=, :=), or None. ``text`` is one line."""
    depth = 0
    for tok in read_tokens(text):
        if tok.type != tokenize.OP:
            continue
        if tok.string in "([{":
            depth += 1
        elif tok.string in ")]}":
            depth -= 1
        elif tok.string == "=" and depth == 0:
            return tok.start[1]
    return None


def known_spellings(known: Iterable[str]) -> dict[str, list[str]]:
    if isinstance(known, str):
        raise TypeError("known must be an iterable of column names, not a single string")
    out: dict[str, list[str]] = {}
    for name in known:
        name = str(name)
        spellings = out.setdefault(name_key(name), [])
        if name not in spellings:
            spellings.append(name)
    return out


def nesting_depth(tree: ast.Expression) -> int:
    """Nesting depth of expression nodes; stops counting once past the limit. Iterative, so it cannot overflow."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1 if isinstance(child, ast.expr) else depth))
    return deepest
