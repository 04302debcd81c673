"""The compiled tree of a contract expression, and the names every stage of the compiler shares.

`Translator` (translate.py) is the only producer of these nodes and has checked kinds and arities, so the SQL and
pandas back ends (sql.py, frame.py) can trust them. Immutable by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

MAX_TEXT_CHARS = 2000
MAX_STRING_CHARS = 200
MAX_DEPTH = 50
MAX_ROUND_DIGITS = 15
ALLOWED_FUNCTIONS = ("abs", "coalesce", "exp", "if_else", "ln", "max", "min", "round", "sqrt")

# name -> (minimum, maximum) number of arguments; None means no maximum.
ARITY: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1), "coalesce": (2, None), "exp": (1, 1), "if_else": (3, 3), "ln": (1, 1), "max": (2, None),
    "min": (2, None), "round": (1, 2), "sqrt": (1, 1),
}
NUMERIC_FUNCTIONS = {"abs", "exp", "ln", "max", "min", "round", "sqrt"}

# Kinds known at compile time. "any" is a column (its type is only known to the data) or a mix of such.
NUM, BOOL, STR, NULL, ANY = "number", "true/false", "text", "None", "any"
KIND_NOUN = {NUM: "a number", STR: "text", NULL: "None"}


@dataclass(frozen=True, slots=True)
class ConstNode:
    value: object  # int, float, str, bool or None


@dataclass(frozen=True, slots=True)
class ColNode:
    name: str  # canonical spelling, as in the known columns


@dataclass(frozen=True, slots=True)
class NegNode:
    operand: Node


@dataclass(frozen=True, slots=True)
class ArithNode:
    op: str  # + - * / %
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class CmpNode:
    op: str  # SQL spelling: = <> < <= > >=
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class LogicNode:
    op: str  # AND / OR
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class NotNode:
    operand: Node


@dataclass(frozen=True, slots=True)
class IsNullNode:
    operand: Node
    negated: bool


@dataclass(frozen=True, slots=True)
class InNode:
    operand: Node
    values: tuple[object, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class CallNode:
    func: str
    args: tuple[Node, ...]
    digits: int = 0  # round() only


Node: TypeAlias = (
    ConstNode | ColNode | NegNode | ArithNode | CmpNode | LogicNode | NotNode | IsNullNode | InNode | CallNode
)
