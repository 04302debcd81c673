"""DuckDB SQL for a compiled tree; the NULL rules of the package docstring are spelled out here."""

from __future__ import annotations

from gtm_pipeline.expressions.tree import (
    NUMERIC_FUNCTIONS,
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

_SQL_NAN = "CAST('NaN' AS DOUBLE)"
_SQL_NEG_INF = "CAST('-inf' AS DOUBLE)"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_const(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value) if value >= 0 else f"({value})"  # parenthesised: "x - -1" must never become a comment
    if isinstance(value, float):
        return f"CAST({value!r} AS DOUBLE)"
    return "'" + str(value).replace("'", "''") + "'"


def _is_double(node: Node) -> bool:
    if isinstance(node, ConstNode):
        return isinstance(node.value, float)
    return isinstance(node, (NegNode, ArithNode)) or (isinstance(node, CallNode) and node.func in NUMERIC_FUNCTIONS)


def _double(node: Node) -> str:
    """SQL for a numeric operand, in DOUBLE (so integer columns neither divide as integers nor overflow)."""
    sql = node_sql(node)
    return sql if _is_double(node) else f"CAST({sql} AS DOUBLE)"


def node_sql(node: Node) -> str:
    if isinstance(node, ConstNode):
        return _sql_const(node.value)
    if isinstance(node, ColNode):
        return _quote_ident(node.name)
    if isinstance(node, NegNode):
        return f"(-{_double(node.operand)})"
    if isinstance(node, ArithNode):
        left, right = _double(node.left), _double(node.right)
        if node.op in ("/", "%"):
            right = f"NULLIF({right}, 0)"  # x / 0 and x % 0 are NULL (see the module docstring)
        return f"({left} {node.op} {right})"
    if isinstance(node, CmpNode):
        return f"({node_sql(node.left)} {node.op} {node_sql(node.right)})"
    if isinstance(node, LogicNode):
        return "(" + f" {node.op} ".join(node_sql(o) for o in node.operands) + ")"
    if isinstance(node, NotNode):
        return f"(NOT {node_sql(node.operand)})"
    if isinstance(node, IsNullNode):
        return f"({node_sql(node.operand)} IS {'NOT ' if node.negated else ''}NULL)"
    if isinstance(node, InNode):
        values = ", ".join(_sql_const(v) for v in node.values)
        return f"({node_sql(node.operand)} {'NOT IN' if node.negated else 'IN'} ({values}))"
    return _sql_call(node)


def _sql_call(node: CallNode) -> str:
    func = node.func
    if func in ("max", "min"):
        # NULL-propagating GREATEST / LEAST. Each argument appears once, so nesting does not blow up the SQL.
        word = "greatest" if func == "max" else "least"
        items = ", ".join(_double(a) for a in node.args)
        return (f"list_reduce([{items}], lambda a, b: CASE WHEN a IS NULL OR b IS NULL THEN NULL "
                f"ELSE {word}(a, b) END)")
    if func == "abs":
        return f"abs({_double(node.args[0])})"
    if func == "exp":
        return f"exp({_double(node.args[0])})"
    if func == "round":
        return f"round({_double(node.args[0])}, {node.digits})"
    if func == "sqrt":
        return f"NULLIF(sqrt({_double(node.args[0])}), {_SQL_NAN})"
    if func == "ln":
        return f"NULLIF(NULLIF(ln({_double(node.args[0])}), {_SQL_NEG_INF}), {_SQL_NAN})"
    if func == "coalesce":
        return "COALESCE(" + ", ".join(node_sql(a) for a in node.args) + ")"
    cond, a, b = node.args  # if_else
    return f"CASE WHEN {node_sql(cond)} THEN {node_sql(a)} ELSE {node_sql(b)} END"
