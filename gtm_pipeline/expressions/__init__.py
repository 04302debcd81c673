"""Contract expressions: a small, safe language compiled to DuckDB SQL and to vectorised pandas.

Contracts carry boolean assertions (``"CAC >= 0 and Monthly_CM >= 0"``) and formulas with a target
(``"payback_months = CAC / max(Monthly_CM, 1e-6)"``). The text is parsed with ``ast.parse(text, mode="eval")`` and the
tree is translated through an allow-list of node types into a small immutable tree of our own; nothing is ever run as
Python. Everything outside the allow-list raises ``ExpressionError`` whose message starts with the ``where`` location.

Grammar (everything else is rejected with a message naming the construct):

* ``and`` / ``or`` / ``not``; comparisons ``== != < <= > >=``, chained (``0 <= x <= 1`` means ``0 <= x and x <= 1``);
  ``x in (...)`` / ``x not in [...]`` against a non-empty tuple or list of constants; ``x is None`` / ``x is not None``.
* arithmetic ``+ - * / %`` and unary ``-`` / ``+``. ``**``, ``//``, ``@`` and the bitwise operators are rejected.
* constants: int, float, str (at most 200 characters), True, False, None.
* names: column names, matched case-insensitively against the ``known`` columns; the SQL uses the known spelling.
* functions (names matched case-insensitively): ``max(a, b, ...)`` and ``min(a, b, ...)`` are the *scalar*
  GREATEST / LEAST of their arguments, row by row -- they are never aggregates over rows; ``abs(x)``,
  ``coalesce(a, b, ...)``, ``round(x)`` / ``round(x, n)`` with an integer constant ``n`` in [-15, 15], ``sqrt(x)``,
  ``ln(x)``, ``exp(x)``, ``if_else(cond, a, b)`` (a ``CASE WHEN``; Python's ``a if c else b`` is rejected).
* limits: 2,000 characters of text, nesting depth 50. Line breaks count as spaces (so YAML block scalars work).

Semantics, identical in SQL and in pandas (the tests run both on the same rows):

* Missing values: SQL NULL is pandas NA / NaN / None / NaT. Comparisons, arithmetic and functions with a missing
  operand give missing; ``and`` / ``or`` / ``not`` use SQL three-valued logic (``False and NULL`` is False,
  ``True or NULL`` is True). ``Expression.evaluate`` keeps missing (nullable ``boolean`` / ``Float64`` dtypes);
  ``evaluate_assertion`` and ``assertion_sql`` fail closed: missing counts as False.
* ``None`` inside an ``in`` list and ``x == None`` are rejected (in SQL they never match); use ``x is None``.
* Arithmetic is done in DOUBLE (float64) in both engines; ``/`` is true division, also for integers.
* Division and modulo by zero give NULL. (DuckDB 2.0 itself returns IEEE results for ``/``: ``1/0`` is ``inf``,
  ``-1/0`` is ``-inf``, ``0/0`` is ``NaN``, and it raises "Division by zero" for ``%``; the SQL therefore divides by
  ``NULLIF(divisor, 0)``.) ``%`` is SQL's truncated remainder (sign of the dividend, like C ``fmod``), not Python's
  floored one: ``-7 % 3`` is ``-1``.
* ``max`` / ``min`` propagate NULL: any missing argument makes the result missing. DuckDB's GREATEST / LEAST ignore
  NULLs, which would turn ``CAC / max(Monthly_CM, 1e-6)`` with a missing ``Monthly_CM`` into ``CAC / 1e-6``; a
  missing input must give a missing metric instead. They take numbers only.
* ``sqrt`` of a negative number and ``ln`` of a number <= 0 give NULL (DuckDB would give NaN / -inf).
* ``round`` rounds halves away from zero (DuckDB's rule for DOUBLE; Python and numpy round halves to even).
* ``if_else(cond, a, b)`` follows ``CASE WHEN``: a missing ``cond`` picks ``b``. ``coalesce`` returns its first
  non-missing argument.
* Known difference: infinities only arise from infinite inputs or ``exp`` overflow; arithmetic on them that yields
  NaN (``inf - inf``) is NaN in DuckDB but missing in pandas. Integers beyond 2**53 lose precision in both engines.
"""

from gtm_pipeline.expressions.api import Denominator, Expression, assertion_sql, compile_assertion, compile_formula
from gtm_pipeline.expressions.tree import ALLOWED_FUNCTIONS, MAX_DEPTH, MAX_STRING_CHARS, MAX_TEXT_CHARS

__all__ = [
    "ALLOWED_FUNCTIONS", "MAX_DEPTH", "MAX_STRING_CHARS", "MAX_TEXT_CHARS", "Denominator", "Expression",
    "assertion_sql", "compile_assertion", "compile_formula",
]
