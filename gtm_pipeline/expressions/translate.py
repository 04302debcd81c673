"""The allow-list: translates a Python ``ast`` tree into `Node`s, checking every node's type and kind.

Anything not handled here raises ``ExpressionError`` naming the construct; nothing is ever run as Python.
"""

from __future__ import annotations

import ast
import difflib
import math

from gtm_pipeline.errors import ExpressionError
from gtm_pipeline.expressions.text import WALRUS_MESSAGE, clip, name_key
from gtm_pipeline.expressions.tree import (
    ALLOWED_FUNCTIONS,
    ANY,
    ARITY,
    BOOL,
    MAX_ROUND_DIGITS,
    MAX_STRING_CHARS,
    NULL,
    NUM,
    NUMERIC_FUNCTIONS,
    STR,
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

_ARITH_SQL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}
_CMP_SQL = {ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_CMP_PY = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_REJECTED_BINOPS = {
    ast.Pow: ('"**"', "use exp() and ln(), or multiply"),
    ast.FloorDiv: ('"//"', "use round(a / b) or a / b"),
    ast.MatMult: ('"@"', "allowed arithmetic operators: + - * / %"),
    ast.BitAnd: ('bitwise "&"', 'use "and"'),
    ast.BitOr: ('bitwise "|"', 'use "or"'),
    ast.BitXor: ('bitwise "^"', 'allowed arithmetic operators: + - * / %'),
    ast.LShift: ('bitwise "<<"', "allowed arithmetic operators: + - * / %"),
    ast.RShift: ('bitwise ">>"', "allowed arithmetic operators: + - * / %"),
}
_REJECTED_NODES = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript access",
    ast.Slice: "slicing",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.Starred: "a starred argument",
    ast.Dict: "a dict literal",
    ast.Set: "a set literal",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


class Translator:
    """Translates an ``ast`` tree into `Node`s, checking every node against the allow-list."""

    def __init__(self, text: str, known: dict[str, list[str]], where: str):
        self.text = text
        self.known = known
        self.where = where
        self.names: set[str] = set()

    # -- helpers ------------------------------------------------------------------------------------------------

    def fail(self, message: str) -> ExpressionError:
        return ExpressionError(f"{self.where}: {message}")

    def source(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.text, node)
        if segment is None:
            try:
                segment = ast.unparse(node)
            except Exception:  # unparse of an odd tree is only for the message; never let it hide the real error
                segment = type(node).__name__
        return clip(segment, 60)

    def expect(self, node: ast.expr, allowed: tuple[str, ...], what: str) -> Node:
        ir, kind = self.translate(node)
        if kind not in allowed and kind != ANY:
            raise self.fail(f'{what} needs {" or ".join(allowed)}, but "{self.source(node)}" is {kind}')
        return ir

    # -- dispatch -----------------------------------------------------------------------------------------------

    def translate(self, node: ast.expr) -> tuple[Node, str]:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BoolOp):
            op = "AND" if isinstance(node.op, ast.And) else "OR"
            operands = tuple(self.expect(v, (BOOL,), f'"{op.lower()}"') for v in node.values)
            return LogicNode(op, operands), BOOL
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.IfExp):
            raise self.fail(
                f'conditional expressions ("{self.source(node)}") are not allowed; '
                "use if_else(condition, value_if_true, value_if_false)"
            )
        if isinstance(node, ast.NamedExpr):
            raise self.fail(WALRUS_MESSAGE)
        if isinstance(node, (ast.Tuple, ast.List)):
            raise self.fail(
                f'a tuple or list ("{self.source(node)}") is only allowed on the right of "in" / "not in"'
            )
        description = _REJECTED_NODES.get(type(node), f"{type(node).__name__} syntax")
        raise self.fail(f'{description} ("{self.source(node)}") is not allowed in contract expressions')

    def constant(self, node: ast.Constant) -> tuple[Node, str]:
        value = node.value
        if value is None:
            return ConstNode(None), NULL
        if isinstance(value, bool):
            return ConstNode(value), BOOL
        if isinstance(value, int):
            if not -(2**63) < value < 2**63:
                raise self.fail(f"integer constant {self.source(node)} is out of range")
            return ConstNode(value), NUM
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.fail(f"number constant {self.source(node)} is not finite")
            return ConstNode(value), NUM
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                raise self.fail(
                    f"a string constant is {len(value):,} characters long; the limit is {MAX_STRING_CHARS}"
                )
            if "\x00" in value:
                raise self.fail("string constants may not contain NUL characters")
            return ConstNode(value), STR
        raise self.fail(
            f'constant "{self.source(node)}" is not allowed; use numbers, strings, True, False or None'
        )

    def name(self, node: ast.Name) -> tuple[Node, str]:
        spellings = self.known.get(name_key(node.id), [])
        if len(spellings) > 1:
            exact = [s for s in spellings if s == node.id]
            if not exact:
                raise self.fail(
                    f'column "{node.id}" is ambiguous; it matches {", ".join(sorted(spellings))} '
                    "(names are case-insensitive)"
                )
            spellings = exact
        if not spellings:
            known = sorted({name_key(k) for k in self.known})
            listing = ", ".join(known[:50]) + (f", … ({len(known) - 50} more)" if len(known) > 50 else "")
            message = f'unknown column "{node.id}"; known: {listing or "(none)"}'
            if node.id.casefold() in ("null", "true", "false", "none"):
                message += "; write None, True or False"
            else:
                close = difflib.get_close_matches(name_key(node.id), known, n=1)
                if close:
                    message += f'; did you mean "{close[0]}"?'
            raise self.fail(message)
        canonical = spellings[0]
        self.names.add(canonical)
        return ColNode(canonical), ANY

    def unary(self, node: ast.UnaryOp) -> tuple[Node, str]:
        if isinstance(node.op, ast.Not):
            return NotNode(self.expect(node.operand, (BOOL,), '"not"')), BOOL
        if isinstance(node.op, ast.Invert):
            raise self.fail('bitwise "~" is not allowed; use "not"')
        operand = self.expect(node.operand, (NUM,), f'unary "{"-" if isinstance(node.op, ast.USub) else "+"}"')
        if isinstance(node.op, ast.UAdd):
            return operand, NUM
        if isinstance(operand, ConstNode) and isinstance(operand.value, int | float):  # fold -1 into a constant
            return ConstNode(-operand.value), NUM
        return NegNode(operand), NUM

    def binop(self, node: ast.BinOp) -> tuple[Node, str]:
        op = _ARITH_SQL.get(type(node.op))
        if op is None:
            symbol, hint = _REJECTED_BINOPS.get(type(node.op), (type(node.op).__name__, ""))
            raise self.fail(f"operator {symbol} is not allowed in contract expressions; {hint}")
        left = self.expect(node.left, (NUM,), f'"{op}"')
        right = self.expect(node.right, (NUM,), f'"{op}"')
        return ArithNode(op, left, right), NUM

    def compare(self, node: ast.Compare) -> tuple[Node, str]:
        parts: list[Node] = []
        left_ast = node.left
        for op, right_ast in zip(node.ops, node.comparators):
            parts.append(self.comparison(left_ast, op, right_ast))
            left_ast = right_ast
        return (parts[0] if len(parts) == 1 else LogicNode("AND", tuple(parts))), BOOL

    def comparison(self, left_ast: ast.expr, op: ast.cmpop, right_ast: ast.expr) -> Node:
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right_ast, ast.Constant) and right_ast.value is None):
                raise self.fail('"is" can only be used as "is None" / "is not None"; use "==" to compare values')
            operand, _ = self.translate(left_ast)
            return IsNullNode(operand, negated=isinstance(op, ast.IsNot))
        if isinstance(op, (ast.In, ast.NotIn)):
            return self.membership(left_ast, right_ast, negated=isinstance(op, ast.NotIn))
        sql_op, py_op = _CMP_SQL[type(op)], _CMP_PY[type(op)]
        left, left_kind = self.translate(left_ast)
        right, right_kind = self.translate(right_ast)
        if NULL in (left_kind, right_kind):
            raise self.fail(f'"{py_op} None" is never true in SQL; use "is None" / "is not None"')
        if ANY not in (left_kind, right_kind) and left_kind != right_kind:
            raise self.fail(
                f'cannot compare {left_kind} "{self.source(left_ast)}" with {right_kind} "{self.source(right_ast)}"'
            )
        return CmpNode(sql_op, left, right)

    def membership(self, left_ast: ast.expr, right_ast: ast.expr, *, negated: bool) -> Node:
        word = "not in" if negated else "in"
        if not isinstance(right_ast, (ast.Tuple, ast.List)):
            raise self.fail(
                f'the right side of "{word}" must be a tuple or list of constants, e.g. {word} (\'a\', \'b\'); '
                f'got "{self.source(right_ast)}"'
            )
        if not right_ast.elts:
            raise self.fail(f'the list after "{word}" is empty')
        values: list[object] = []
        kinds: set[str] = set()
        for element in right_ast.elts:
            if not isinstance(element, (ast.Constant, ast.UnaryOp)):
                raise self.fail(
                    f'"{word}" lists may only contain constants (numbers, strings, True, False); '
                    f'found "{self.source(element)}"'
                )
            ir, kind = self.translate(element)
            if not isinstance(ir, ConstNode):
                raise self.fail(f'"{word}" lists may only contain constants; found "{self.source(element)}"')
            if kind == NULL:
                raise self.fail(
                    f'None inside an "{word}" list never matches in SQL; write "x is None or x {word} (...)" instead'
                )
            values.append(ir.value)
            kinds.add(kind)
        if len(kinds) > 1:
            raise self.fail(f'the "{word}" list mixes {" and ".join(sorted(kinds))} values')
        operand, operand_kind = self.translate(left_ast)
        if operand_kind not in (ANY, *kinds):
            raise self.fail(f'cannot test {operand_kind} "{self.source(left_ast)}" against a list of '
                            f'{kinds.pop()} values')
        return InNode(operand, tuple(values), negated)

    def call(self, node: ast.Call) -> tuple[Node, str]:
        if isinstance(node.func, ast.Attribute):
            return self.translate(node.func)  # rejected as attribute access
        if not isinstance(node.func, ast.Name):
            raise self.fail(f'only allowed functions may be called, by name; got "{self.source(node)}"')
        func = node.func.id.casefold()
        if func not in ALLOWED_FUNCTIONS:
            raise self.fail(
                f'function "{node.func.id}" is not allowed; allowed functions: {", ".join(ALLOWED_FUNCTIONS)}'
            )
        if node.keywords:
            raise self.fail(f'keyword arguments ("{self.source(node.keywords[0])}") are not allowed; '
                            "pass arguments by position")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail(f'a starred argument ("{self.source(arg)}") is not allowed in contract expressions')
        low, high = ARITY[func]
        count = len(node.args)
        if count < low or (high is not None and count > high):
            expected = f"{low}" if low == high else (f"{low} or {high}" if high else f"at least {low}")
            message = f"{func}() takes {expected} argument{'s' if expected != '1' else ''}, got {count}"
            if func in ("max", "min"):
                word = "GREATEST" if func == "max" else "LEAST"
                message += f"; {func}() is the scalar {word} of its arguments per row, not an aggregate over rows"
            raise self.fail(message)
        if func in NUMERIC_FUNCTIONS:
            if func == "round":
                digits = self.round_digits(node.args[1]) if count == 2 else 0
                return CallNode(func, (self.expect(node.args[0], (NUM,), "round()"),), digits), NUM
            args = tuple(self.expect(a, (NUM,), f"{func}()") for a in node.args)
            return CallNode(func, args), NUM
        if func == "if_else":
            cond = self.expect(node.args[0], (BOOL,), "the condition of if_else()")
            (a, a_kind), (b, b_kind) = self.translate(node.args[1]), self.translate(node.args[2])
            return CallNode(func, (cond, a, b)), self.common_kind([a_kind, b_kind], node.args[1:], "if_else()")
        translated = [self.translate(a) for a in node.args]  # coalesce
        kind = self.common_kind([k for _, k in translated], node.args, "coalesce()")
        return CallNode(func, tuple(ir for ir, _ in translated)), kind

    def round_digits(self, node: ast.expr) -> int:
        ir, kind = self.translate(node)
        if not (isinstance(ir, ConstNode) and kind == NUM and isinstance(ir.value, int)
                and -MAX_ROUND_DIGITS <= ir.value <= MAX_ROUND_DIGITS):
            raise self.fail(
                f"the digits of round() must be an integer constant from {-MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS}; "
                f'got "{self.source(node)}"'
            )
        return int(ir.value)

    def common_kind(self, kinds: list[str], nodes: list[ast.expr], what: str) -> str:
        concrete = {k for k in kinds if k not in (NULL, ANY)}
        if len(concrete) > 1:
            shown = ", ".join(f'"{self.source(n)}" ({k})' for n, k in zip(nodes, kinds) if k in concrete)
            raise self.fail(f"the values of {what} must be of one kind; got {shown}")
        if ANY in kinds:
            return ANY
        return concrete.pop() if concrete else NULL
