"""Vectorised pandas evaluation of a compiled tree, with the same results as the SQL (the tests run both)."""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from gtm_pipeline.errors import ExpressionError
from gtm_pipeline.expressions.text import name_key
from gtm_pipeline.expressions.tree import (
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

_CMP_OP: dict[str, Callable] = {
    "=": operator.eq, "<>": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def resolve_frame_columns(df: pd.DataFrame, names: frozenset[str], where: str) -> dict[str, pd.Series]:
    """Each referenced column of ``df`` (exact name first, then case-insensitively), with a 0..n-1 index."""
    out: dict[str, pd.Series] = {}
    for name in names:
        if name in df.columns:
            label = name
        else:
            matches = [c for c in df.columns if isinstance(c, str) and name_key(c) == name_key(name)]
            if len(matches) != 1:
                problem = "is not in the data" if not matches else f"matches several columns: {matches}"
                raise ExpressionError(f'{where}: column "{name}" {problem}')
            label = matches[0]
        column = df[label]
        if isinstance(column, pd.DataFrame):
            raise ExpressionError(f'{where}: column "{name}" appears more than once in the data')
        out[name] = column.reset_index(drop=True)
    return out


def _is_num(series: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(series.dtype) and not ptypes.is_bool_dtype(series.dtype)


def _is_boolish(series: pd.Series) -> bool:
    return ptypes.is_bool_dtype(series.dtype)


def _all_missing(series: pd.Series) -> bool:
    return series.dtype == object and bool(series.isna().all())


def _describe(node: Node) -> str:
    return f'column "{node.name}"' if isinstance(node, ColNode) else "a value"


class Evaluator:
    """Vectorised evaluation of a `Node` tree. Numbers are float64 with NaN as missing; booleans are ``boolean``."""

    def __init__(self, columns: dict[str, pd.Series], n: int, where: str):
        self.columns = columns
        self.n = n
        self.where = where

    def fail(self, message: str) -> ExpressionError:
        return ExpressionError(f"{self.where}: {message}")

    # -- conversions --------------------------------------------------------------------------------------------

    def as_float(self, series: pd.Series, node: Node) -> np.ndarray:
        if series.dtype == np.float64:
            return series.to_numpy()
        if ptypes.is_datetime64_any_dtype(series.dtype) or ptypes.is_timedelta64_dtype(series.dtype):
            raise self.fail(f"{_describe(node)} holds dates or times, not numbers")
        if ptypes.is_numeric_dtype(series.dtype) or ptypes.is_bool_dtype(series.dtype):
            return series.to_numpy(dtype=float, na_value=np.nan)
        try:
            return pd.to_numeric(series, errors="raise").to_numpy(dtype=float, na_value=np.nan)
        except (ValueError, TypeError) as e:
            raise self.fail(f"{_describe(node)} is used as a number but holds non-numeric values") from e

    def as_bool(self, series: pd.Series, node: Node) -> pd.Series:
        if series.dtype == "boolean":
            return series
        if _is_boolish(series) or series.dtype == object or bool(series.isna().all()):
            try:
                return series.astype("boolean")
            except (ValueError, TypeError) as e:
                raise self.fail(f"{_describe(node)} is used as true/false but holds other values") from e
        raise self.fail(f"{_describe(node)} is used as true/false but holds {series.dtype} values")

    def number(self, values: np.ndarray) -> pd.Series:
        return pd.Series(values, dtype=np.float64)

    def boolean(self, values: np.ndarray, missing: np.ndarray) -> pd.Series:
        array = pd.array(values.astype(bool), dtype="boolean")
        array[missing] = pd.NA
        return pd.Series(array)

    # -- nodes --------------------------------------------------------------------------------------------------

    def run(self, node: Node) -> pd.Series:
        if isinstance(node, ConstNode):
            return self.const(node.value)
        if isinstance(node, ColNode):
            return self.columns[node.name]
        if isinstance(node, NegNode):
            return self.number(-self.as_float(self.run(node.operand), node.operand))
        if isinstance(node, ArithNode):
            return self.arith(node)
        if isinstance(node, CmpNode):
            return self.cmp(node)
        if isinstance(node, LogicNode):
            values = [self.as_bool(self.run(o), o) for o in node.operands]
            result = values[0]
            for value in values[1:]:
                result = (result & value) if node.op == "AND" else (result | value)  # three-valued (Kleene)
            return result
        if isinstance(node, NotNode):
            return ~self.as_bool(self.run(node.operand), node.operand)
        if isinstance(node, IsNullNode):
            missing = self.run(node.operand).isna().to_numpy()
            return self.boolean(~missing if node.negated else missing, np.zeros(self.n, dtype=bool))
        if isinstance(node, InNode):
            return self.membership(node)
        return self.call(node)

    def const(self, value: object) -> pd.Series:
        if value is None:
            return pd.Series([None] * self.n, dtype=object)
        if isinstance(value, bool):
            return pd.Series(pd.array([value] * self.n, dtype="boolean"))
        if isinstance(value, (int, float)):
            return self.number(np.full(self.n, float(value)))
        return pd.Series([value] * self.n, dtype=object)

    def arith(self, node: ArithNode) -> pd.Series:
        a = self.as_float(self.run(node.left), node.left)
        b = self.as_float(self.run(node.right), node.right)
        with np.errstate(all="ignore"):
            if node.op == "+":
                out = a + b
            elif node.op == "-":
                out = a - b
            elif node.op == "*":
                out = a * b
            elif node.op == "/":
                out = np.where(b == 0, np.nan, a / b)
            else:
                out = np.where(b == 0, np.nan, np.fmod(a, b))
        return self.number(out)

    def cmp(self, node: CmpNode) -> pd.Series:
        left, right = self.run(node.left), self.run(node.right)
        op = _CMP_OP[node.op]
        if _is_num(left) and _is_num(right):
            a, b = self.as_float(left, node.left), self.as_float(right, node.right)
            missing = np.isnan(a) | np.isnan(b)
            with np.errstate(invalid="ignore"):
                return self.boolean(op(a, b), missing)
        missing = (left.isna() | right.isna()).to_numpy()
        values = np.zeros(self.n, dtype=bool)
        valid = ~missing
        if valid.any():
            try:
                values[valid] = np.asarray(op(left[valid], right[valid]), dtype=bool)
            except TypeError as e:
                raise self.fail(
                    f"cannot compare {_describe(node.left)} with {_describe(node.right)}: {e}"
                ) from e
        return self.boolean(values, missing)

    def membership(self, node: InNode) -> pd.Series:
        series = self.run(node.operand)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node.values)
        if numbers and _is_num(series):
            a = self.as_float(series, node.operand)
            found, missing = np.isin(a, np.array(node.values, dtype=float)), np.isnan(a)
        else:
            found, missing = series.isin(list(node.values)).to_numpy(dtype=bool), series.isna().to_numpy()
        return self.boolean(~found if node.negated else found, missing)

    def pick(self, mask: np.ndarray, a: pd.Series, b: pd.Series, nodes: tuple[Node, Node]) -> pd.Series:
        """``a`` where ``mask`` else ``b``, elementwise, in a dtype both fit (a missing-only side adapts)."""
        a_none, b_none = _all_missing(a), _all_missing(b)
        if a_none and b_none:
            return pd.Series([None] * self.n, dtype=object)
        if (a_none or _is_num(a)) and (b_none or _is_num(b)):
            a_f = np.full(self.n, np.nan) if a_none else self.as_float(a, nodes[0])
            b_f = np.full(self.n, np.nan) if b_none else self.as_float(b, nodes[1])
            return self.number(np.where(mask, a_f, b_f))
        if (a_none or _is_boolish(a)) and (b_none or _is_boolish(b)):
            return self.as_bool(a, nodes[0]).where(mask, self.as_bool(b, nodes[1]))
        if a.dtype == b.dtype:
            return a.where(mask, b)
        return pd.Series(np.where(mask, a.astype(object), b.astype(object)), dtype=object)

    def call(self, node: CallNode) -> pd.Series:
        func = node.func
        if func == "coalesce":
            result, first = self.run(node.args[0]), node.args[0]
            for arg in node.args[1:]:
                result = self.pick(result.notna().to_numpy(), result, self.run(arg), (first, arg))
            return result
        if func == "if_else":
            cond, a, b = node.args
            mask = self.as_bool(self.run(cond), cond).fillna(False).to_numpy(dtype=bool)
            return self.pick(mask, self.run(a), self.run(b), (a, b))
        args = [self.as_float(self.run(a), a) for a in node.args]
        x = args[0]
        with np.errstate(all="ignore"):
            if func == "max":
                out = np.maximum.reduce(args)  # np.maximum propagates NaN, i.e. missing
            elif func == "min":
                out = np.minimum.reduce(args)
            elif func == "abs":
                out = np.abs(x)
            elif func == "exp":
                out = np.exp(x)
            elif func == "sqrt":
                out = np.where(x >= 0, np.sqrt(x), np.nan)
            elif func == "ln":
                out = np.where(x > 0, np.log(x), np.nan)
            else:
                out = _round_half_away(x, node.digits)
        return self.number(out)


def _round_half_away(values: np.ndarray, digits: int) -> np.ndarray:
    """Round halves away from zero the way DuckDB rounds a DOUBLE: scale, round, unscale; non-finite keeps input."""
    scale = 10.0 ** abs(digits)
    scaled = np.abs(values * scale) if digits >= 0 else np.abs(values / scale)
    floor = np.floor(scaled)
    rounded = np.copysign(floor + (scaled - floor >= 0.5), values)
    out = rounded / scale if digits >= 0 else rounded * scale
    return np.where(np.isfinite(out), out, values)
