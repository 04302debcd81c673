"""The public face of the expression compiler: `Expression`, `compile_assertion`, `compile_formula`."""

from __future__ import annotations

import ast
import keyword
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gtm_pipeline.errors import ExpressionError
from gtm_pipeline.expressions.frame import Evaluator, resolve_frame_columns
from gtm_pipeline.expressions.sql import node_sql
from gtm_pipeline.expressions.text import (
    WALRUS_MESSAGE,
    check_text,
    clip,
    find_assignment,
    known_spellings,
    name_key,
    nesting_depth,
    read_tokens,
)
from gtm_pipeline.expressions.translate import Translator
from gtm_pipeline.expressions.tree import (
    ANY,
    BOOL,
    KIND_NOUN,
    MAX_DEPTH,
    ArithNode,
    CallNode,
    CmpNode,
    ColNode,
    ConstNode,
    InNode,
    IsNullNode,
    LogicNode,
    NegNode,
    Node,
    NotNode,
)


@dataclass(frozen=True)
class Expression:
    """A compiled contract expression. Build it with `compile_assertion` or `compile_formula`, not directly."""

    text: str
    names: frozenset[str]
    _node: Node = field(repr=False)
    _kind: str = field(repr=False, compare=False)
    _where: str = field(repr=False, compare=False)
    _sql: str = field(repr=False, compare=False)

    def to_sql(self) -> str:
        """DuckDB SQL for the expression; identifiers are double-quoted in the known columns' spelling."""
        return self._sql

    def evaluate(self, df: pd.DataFrame) -> pd.Series:
        """Evaluate row by row on ``df``; index-aligned with it. Missing stays missing (nullable dtypes)."""
        columns = resolve_frame_columns(df, self.names, self._where)
        result = Evaluator(columns, len(df), self._where).run(self._node)
        if result.dtype == np.float64:
            result = result.astype("Float64")
        result.index = df.index
        return result

    def evaluate_assertion(self, df: pd.DataFrame) -> pd.Series:
        """Evaluate as an assertion: a plain ``bool`` Series where missing counts as False (fails closed)."""
        columns = resolve_frame_columns(df, self.names, self._where)
        evaluator = Evaluator(columns, len(df), self._where)
        result = evaluator.as_bool(evaluator.run(self._node), self._node)
        out = pd.Series(result.fillna(False).to_numpy(dtype=bool), index=df.index)
        return out

    def denominators(self) -> tuple[Denominator, ...]:
        """Every divisor of ``/`` and ``%`` in the expression, outermost first, without repeats.

        A divisor written as a guard, ``max(x, c)`` with a positive constant ``c`` (as in the spec's
        ``CAC / max(Monthly_CM, 1e-6)``), is reported as ``x`` with ``guarded=True``: the guard keeps the result
        finite, so a zero or negative ``x`` would otherwise hide inside a huge quotient. Metric audits use this to
        test "denominator > 0" on its own.
        """
        found: list[Denominator] = []
        stack: list[Node] = [self._node]
        while stack:
            node = stack.pop()
            if isinstance(node, ArithNode) and node.op in ("/", "%"):
                divisor, guarded = _unguard(node.right)
                item = Denominator(text=_render(divisor), sql=node_sql(divisor), guarded=guarded)
                if item not in found:
                    found.append(item)
            for child in reversed(_children(node)):
                stack.append(child)
        return tuple(found)


@dataclass(frozen=True)
class Denominator:
    """A divisor found in a compiled expression: readable text, DuckDB SQL, and whether a max(x, c) guard hid it."""

    text: str
    sql: str
    guarded: bool


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, NegNode | NotNode):
        return (node.operand,)
    if isinstance(node, ArithNode | CmpNode):
        return (node.left, node.right)
    if isinstance(node, LogicNode):
        return node.operands
    if isinstance(node, IsNullNode | InNode):
        return (node.operand,)
    if isinstance(node, CallNode):
        return node.args
    return ()


def _unguard(node: Node) -> tuple[Node, bool]:
    """``max(x, c)`` with positive constants ``c`` and exactly one non-constant ``x`` -> (x, True)."""
    if isinstance(node, CallNode) and node.func == "max":
        consts = [a for a in node.args if isinstance(a, ConstNode)]
        others = [a for a in node.args if not isinstance(a, ConstNode)]
        if len(others) == 1 and consts and all(
                isinstance(c.value, (int, float)) and not isinstance(c.value, bool) and c.value > 0 for c in consts):
            return others[0], True
    return node, False


def _render(node: Node) -> str:
    """Readable text of a compiled sub-expression (for messages; column names in their known spelling)."""
    if isinstance(node, ConstNode):
        return repr(node.value)
    if isinstance(node, ColNode):
        return node.name
    if isinstance(node, NegNode):
        return f"-{_render(node.operand)}"
    if isinstance(node, ArithNode):
        return f"({_render(node.left)} {node.op} {_render(node.right)})"
    if isinstance(node, CallNode):
        return f"{node.func}({', '.join(_render(a) for a in node.args)})"
    return node_sql(node)


def compile_assertion(text: str, known: Iterable[str], *, where: str) -> Expression:
    """Compile a boolean assertion such as ``"CAC >= 0 and Monthly_CM >= 0"`` against the ``known`` columns."""
    text = check_text(text, where)
    expr = _compile(text, known, where, top_level_equals_hint=True)
    if expr._kind not in (BOOL, ANY):
        raise ExpressionError(
            f"{where}: an assertion must be true/false (a comparison, and/or/not, in, is None), "
            f'but "{clip(text)}" is {KIND_NOUN.get(expr._kind, expr._kind)}'
        )
    return expr


def compile_formula(text: str, known: Iterable[str], *, where: str) -> tuple[str, Expression]:
    """Compile ``"target = expression"``; returns ``(target, expression)``. The target need not be a known column."""
    text = check_text(text, where)
    split = find_assignment(text)
    if split is None and any(tok.type == tokenize.OP and tok.string == ":=" for tok in read_tokens(text)):
        raise ExpressionError(f"{where}: {WALRUS_MESSAGE}")
    if split is None:
        raise ExpressionError(f'{where}: a formula must have the form "target = expression"; got "{clip(text)}"')
    target, rhs = text[:split].strip(), text[split + 1:].strip()
    if not target.isidentifier() or keyword.iskeyword(target):
        raise ExpressionError(
            f'{where}: the target of a formula must be a plain column name (letters, digits, _); got "{clip(target)}"'
        )
    if not rhs:
        raise ExpressionError(f'{where}: the formula for "{target}" has nothing after "="')
    expr = _compile(rhs, known, where, top_level_equals_hint=False)
    target_key = name_key(target)
    if any(name_key(name) == target_key for name in expr.names):
        raise ExpressionError(f'{where}: the formula for "{target}" refers to "{target}" itself')
    return target, expr


def assertion_sql(expr: Expression) -> str:
    """Boolean SQL for an assertion that fails closed: a NULL result counts as FALSE."""
    return f"COALESCE(({expr.to_sql()}), FALSE)"


def _compile(text: str, known: Iterable[str], where: str, *, top_level_equals_hint: bool) -> Expression:
    known_map = known_spellings(known)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        if any(tok.type == tokenize.OP and tok.string == ":=" for tok in read_tokens(text)):
            raise ExpressionError(f"{where}: {WALRUS_MESSAGE}") from e
        reason = getattr(e, "msg", None) or str(e) or type(e).__name__
        offset = getattr(e, "offset", None)
        column = offset if isinstance(offset, int) and 0 < offset <= len(text) else len(text) + 1
        message = f'{where}: cannot parse "{clip(text)}": {reason} at column {column}'
        if top_level_equals_hint and find_assignment(text) is not None:
            message += '; to compare use "==" (a single "=" only appears in formulas, as "target = expression")'
        raise ExpressionError(message) from e
    depth = nesting_depth(tree)
    if depth > MAX_DEPTH:
        raise ExpressionError(f"{where}: expression is nested {depth}+ levels deep; the limit is {MAX_DEPTH}")
    compiler = Translator(text, known_map, where)
    node, kind = compiler.translate(tree.body)
    return Expression(
        text=text, names=frozenset(compiler.names), _node=node, _kind=kind, _where=where, _sql=node_sql(node),
    )
