"""A small, safe expression language over one message, for transformations and conditions.

    type == 'track' and properties.revenue > 100
    round(properties.revenue * 100)
    if(exists(traits.email), lower(trim(traits.email)), null)
    properties["order id"] != null and event in ['Order Completed', 'Order Refunded']

Parsed with lark (LALR) and compiled to plain Python closures: no eval/exec, no attribute
access, and nothing can be named but message paths and the functions in ``FUNCTIONS``.
Values are JSON's: null, booleans, numbers, strings, lists and objects.

Semantics a user must know:

- A missing path (or one that runs through something that is not an object) is null.
- A run-time type error (``"a" * 2``, ``null + 1``, ``"a" < 1``), a division by zero, an
  integer outside 64 bits, a float JSON cannot hold (inf, NaN) or a string longer than
  ``MAX_STRING`` gives null instead of an error: one odd event never stops the pipeline.
- Conditions use truthiness: null, false, 0, "", [] and {} are false, everything else true.
  ``and``, ``or``, ``not``, ``in`` and comparisons give true or false (``<`` on values that do
  not compare, e.g. a string and a number, gives null, which is false).
- ``==`` never equates a boolean with a number (``true == 1`` is false); ``1 == 1.0`` is true.

Anything outside the grammar is rejected when the expression is compiled, with an
``ExpressionError`` that says where (``column``, 1-based, counted from the start of the text)
and what.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache, lru_cache
from typing import Any, NamedTuple

import orjson
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

MAX_LENGTH = 1000  # characters in one expression
MAX_DEPTH = 32  # nesting of operators, calls and lists
MAX_STRING = 1_000_000  # longest string an expression may build; longer is null
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

Path = tuple[str | int, ...]

GRAMMAR = r"""
?start: or_test

?or_test: and_test (_OR and_test)*
?and_test: not_test (_AND not_test)*
?not_test: _NOT not_test -> not_
         | comparison
?comparison: sum
           | sum COMPARE sum -> compare
           | sum _IN sum -> in_
           | sum _NOT _IN sum -> not_in
?sum: product ((PLUS | MINUS) product)*
?product: unary ((STAR | SLASH | PERCENT) unary)*
?unary: MINUS unary -> neg
      | atom
?atom: NUMBER -> number
     | STRING -> string
     | _TRUE -> true
     | _FALSE -> false
     | _NULL -> null
     | "[" [or_test ("," or_test)*] "]" -> list_
     | NAME "(" [or_test ("," or_test)*] ")" -> call
     | path
     | "(" or_test ")"
path: NAME ("." NAME | "[" (STRING | NUMBER) "]")*

_OR: "or"
_AND: "and"
_NOT: "not"
_IN: "in"
_TRUE: "true"
_FALSE: "false"
_NULL: "null"
COMPARE: "==" | "!=" | "<=" | ">=" | "<" | ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
PERCENT: "%"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/
STRING: /"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'/
%ignore /[ \t\r\n]+/
"""

_KEYWORDS = frozenset({"or", "and", "not", "in", "true", "false", "null"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n"}
_ESCAPES |= {"r": "\r", "t": "\t"}
# What lark calls the terminals an error message may mention.
_TERMINALS = {
    "RPAR": "')'", "LPAR": "'('", "RSQB": "']'", "LSQB": "'['", "COMMA": "','", "DOT": "'.'",
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "$END": "the end",
}  # fmt: skip
# Run-time errors that mean "these values do not go together": the result is null.
_SOFT = (TypeError, ValueError, ArithmeticError)
_NUM = frozenset({int, float})
_NOT_CONST = object()
_MISSING = object()


class ExpressionError(ValueError):
    """An expression that is not in the language; ``column`` is 1-based in the text."""

    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.message = message
        self.column = column


@dataclass(frozen=True, slots=True, eq=False)
class Expression:
    """A compiled expression. ``evaluate(msg)`` never raises on any JSON-like message."""

    text: str
    paths: tuple[str, ...]  # the message paths it reads, as written by format_path
    evaluate: Callable[[dict], Any]

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def compile_expression(text: str) -> Expression:
    """Parse and compile ``text``; raise ExpressionError if it is not in the language.
    The same text gives the same (immutable) Expression: workspaces share compiled rules."""
    if not isinstance(text, str):
        raise ExpressionError("an expression must be a string", 1)
    return _compile(text)


@lru_cache(maxsize=4096)
def _compile(text: str) -> Expression:
    compiler = _Compiler(text)
    node = compiler.node(_parse(text), 1)
    return Expression(text, tuple(compiler.paths), node.fn)


def parse_path(text: str) -> Path:
    """The segments of a path such as ``properties.plan`` or ``properties["order id"]``."""
    tree = _parse(text)
    if not (isinstance(tree, Tree) and tree.data == "path"):
        raise ExpressionError(
            'expected a path such as properties.plan or properties["order id"] at column 1', 1
        )
    return _Compiler(text).segments(tree)


def format_path(segments: Path) -> str:
    """The canonical text of a path: dotted names, brackets for any other key."""
    out = []
    for i, seg in enumerate(segments):
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif _NAME.fullmatch(seg) and seg not in _KEYWORDS and not seg.startswith("__"):
            out.append(seg if i == 0 else "." + seg)
        elif i == 0:
            raise ValueError(f"a path must start with a name, not {seg!r}")
        else:
            out.append("[" + orjson.dumps(seg).decode() + "]")
    return "".join(out)


def path_getter(segments: Path) -> Callable[[dict], Any]:
    """A function reading ``segments`` from a message: the value, or None when missing."""
    if len(segments) == 1 and isinstance(segments[0], str):
        (a,) = segments
        return lambda m: m.get(a)
    if len(segments) == 2 and all(isinstance(s, str) for s in segments):
        a, b = segments

        def get2(m: dict) -> Any:
            v = m.get(a)
            return v.get(b) if isinstance(v, dict) else None

        return get2

    def get(m: dict) -> Any:
        v = _lookup(m, segments)
        return None if v is _MISSING else v

    return get


def _lookup(v: Any, segments: Path) -> Any:
    for seg in segments:
        if isinstance(seg, str):
            if not isinstance(v, dict):
                return _MISSING
            v = v.get(seg, _MISSING)
            if v is _MISSING:
                return v
        elif isinstance(v, list) and seg < len(v):
            v = v[seg]
        else:
            return _MISSING
    return v


# -- parsing -----------------------------------------------------------------------------------


@cache
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _parse(text: str) -> Tree | Token:
    if not isinstance(text, str):
        raise ExpressionError("an expression must be a string", 1)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    if not text.strip():
        raise ExpressionError("empty expression", 1)
    try:
        return _parser().parse(text)
    except UnexpectedCharacters as exc:
        col = exc.pos_in_stream + 1
        char = text[exc.pos_in_stream]
        hint = ""
        if char == "=":
            hint = " (compare with ==; an expression cannot assign)"
        elif char == ";":
            hint = " (an expression is a single value)"
        raise ExpressionError(f"unexpected character {char!r} at column {col}{hint}", col) from None
    except UnexpectedToken as exc:
        # An LALR state accepts more than the user could mean: name one expectation only.
        expected = [_TERMINALS.get(t) for t in exc.expected]
        tail = f"; expected {expected[0]}" if len(expected) == 1 and expected[0] else ""
        if exc.token.type == "$END":
            col = len(text) + 1
            raise ExpressionError(f"unexpected end of expression{tail}", col) from None
        col = exc.token.start_pos + 1
        what = f"unexpected {exc.token.value!r} at column {col}{tail}"
        raise ExpressionError(what, col) from None
    except UnexpectedInput as exc:  # any other lark input error
        col = getattr(exc, "pos_in_stream", 0) + 1
        raise ExpressionError(f"cannot parse the expression at column {col}", col) from None


def _decode_string(token: Token) -> str:
    body = token.value[1:-1]

    def unescape(match: re.Match) -> str:
        code = match.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        if code not in _ESCAPES:
            raise ExpressionError(
                f"unknown escape '\\{code}' at column {token.start_pos + 1}", token.start_pos + 1
            )
        return _ESCAPES[code]

    text = _ESCAPE.sub(unescape, body) if "\\" in body else body
    try:  # joins \\ud83d\\ude00 pairs; a lone surrogate cannot become UTF-8 later
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        col = token.start_pos + 1
        raise ExpressionError(f"invalid \\u escape in the string at column {col}", col) from None


# -- run-time operations: every one returns null on values that do not go together ------------


def _fix(r: Any) -> Any:
    """Numbers JSON consumers can hold: finite floats, 64-bit integers."""
    if type(r) is float:
        return r if math.isfinite(r) else None
    return r if _INT_MIN <= r <= _INT_MAX else None


def _add(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta in _NUM and tb in _NUM:
        return _fix(a + b)
    if ta is str and tb is str:
        return a + b if len(a) + len(b) <= MAX_STRING else None
    return None


def _sub(a: Any, b: Any) -> Any:
    return _fix(a - b) if type(a) in _NUM and type(b) in _NUM else None


def _mul(a: Any, b: Any) -> Any:
    return _fix(a * b) if type(a) in _NUM and type(b) in _NUM else None


def _div(a: Any, b: Any) -> Any:
    return _fix(a / b) if type(a) in _NUM and type(b) in _NUM and b != 0 else None


def _mod(a: Any, b: Any) -> Any:
    return _fix(a % b) if type(a) in _NUM and type(b) in _NUM and b != 0 else None


def _eq(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return a is b  # true == 1 is false
    return a == b


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _orderable(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    return (ta in _NUM and tb in _NUM) or (ta is str and tb is str)


def _lt(a: Any, b: Any) -> Any:
    return a < b if _orderable(a, b) else None


def _le(a: Any, b: Any) -> Any:
    return a <= b if _orderable(a, b) else None


def _gt(a: Any, b: Any) -> Any:
    return a > b if _orderable(a, b) else None


def _ge(a: Any, b: Any) -> Any:
    return a >= b if _orderable(a, b) else None


def _in(a: Any, b: Any) -> Any:
    tb = type(b)
    if tb is list:
        return any(_eq(a, x) for x in b)
    if tb is str or tb is dict:  # substring; key of an object
        return a in b if type(a) is str else None
    return None


def _not_in(a: Any, b: Any) -> Any:
    r = _in(a, b)
    return None if r is None else not r


def _neg(a: Any) -> Any:
    return _fix(-a) if type(a) in _NUM else None


_BINARY = {"+": _add, "-": _sub, "*": _mul, "/": _div, "%": _mod}
_COMPARE = {"==": _eq, "!=": _ne, "<": _lt, "<=": _le, ">": _gt, ">=": _ge}


# -- functions ---------------------------------------------------------------------------------


def _lower(s: Any) -> Any:
    return s.lower() if type(s) is str else None


def _upper(s: Any) -> Any:
    return s.upper() if type(s) is str else None


def _trim(s: Any) -> Any:
    return s.strip() if type(s) is str else None


def _length(v: Any) -> Any:
    return len(v) if type(v) in (str, list, dict) else None


def _str(v: Any) -> Any:
    t = type(v)
    if t is str or v is None:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return repr(v)
    if t is list or t is dict:
        text = orjson.dumps(v).decode()
        return text if len(text) <= MAX_STRING else None
    return None


def _concat(*values: Any) -> Any:
    parts = [_str(v) for v in values if v is not None]
    if None in parts or sum(len(p) for p in parts) > MAX_STRING:
        return None
    return "".join(parts)


def _round(x: Any, n: Any = 0) -> Any:
    """Halves go away from zero, on the number as written (round(2.675, 2) is 2.68)."""
    if type(x) not in _NUM or type(n) is not int or not -15 <= n <= 15:
        return None
    if type(x) is int and n >= 0:
        return x
    if n == 0:
        a = abs(x)
        f = math.floor(a)
        r = f + 1 if a - f >= 0.5 else f
        return _fix(r if x >= 0 else -r)
    d = Decimal(repr(x)).quantize(Decimal(1).scaleb(-n), rounding=ROUND_HALF_UP)
    return _fix(float(d) if n > 0 else int(d))


def _int(v: Any) -> Any:
    t = type(v)
    if t is int:
        return v
    if t is bool:
        return int(v)
    if t is float:
        return _fix(int(v)) if math.isfinite(v) else None
    if t is str and len(v) <= 40:
        s = v.strip()
        if _INT_TEXT.fullmatch(s):
            return _fix(int(s))
        f = _float(s)
        return None if f is None else _fix(int(f))
    return None


def _float(v: Any) -> Any:
    t = type(v)
    if t is float:
        return v
    if t is int or t is bool:
        return _fix(float(v))
    if t is str and len(v) <= 400 and _FLOAT_TEXT.fullmatch(v.strip()):
        return _fix(float(v))
    return None


def _contains(haystack: Any, needle: Any) -> Any:
    return _in(needle, haystack)


def _starts_with(s: Any, prefix: Any) -> Any:
    return s.startswith(prefix) if type(s) is str and type(prefix) is str else None


def _ends_with(s: Any, suffix: Any) -> Any:
    return s.endswith(suffix) if type(s) is str and type(suffix) is str else None


def _replace(s: Any, old: Any, new: Any) -> Any:
    if not (type(s) is str and type(old) is str and type(new) is str):
        return None
    if not old:
        return s
    if len(new) > len(old) and len(s) + s.count(old) * (len(new) - len(old)) > MAX_STRING:
        return None
    return s.replace(old, new)


# name -> (fewest arguments, most arguments or None, implementation); if, coalesce and exists
# are compiled specially (they do not evaluate every argument).
FUNCTIONS: dict[str, tuple[int, int | None, Callable | None]] = {
    "lower": (1, 1, _lower),
    "upper": (1, 1, _upper),
    "trim": (1, 1, _trim),
    "length": (1, 1, _length),
    "concat": (1, None, _concat),
    "coalesce": (1, None, None),
    "round": (1, 2, _round),
    "int": (1, 1, _int),
    "float": (1, 1, _float),
    "str": (1, 1, _str),
    "contains": (2, 2, _contains),
    "starts_with": (2, 2, _starts_with),
    "ends_with": (2, 2, _ends_with),
    "exists": (1, 1, None),
    "replace": (3, 3, _replace),
    "if": (3, 3, None),
}


# -- compilation -------------------------------------------------------------------------------


class _Node(NamedTuple):
    fn: Callable[[Any], Any]
    const: Any = _NOT_CONST  # the value, when known at compile time
    path: Path | None = None  # set for a bare path (exists() needs one)


def copy_json(v: Any) -> Any:
    """A copy of a JSON value, so a constant list is never shared between messages."""
    if type(v) is list:
        return [copy_json(x) for x in v]
    if type(v) is dict:
        return {k: copy_json(x) for k, x in v.items()}
    return v


def _const(value: Any) -> _Node:
    if type(value) in (list, dict):
        return _Node(lambda m: copy_json(value), value)
    return _Node(lambda m: value, value)


def _soft1(f: Callable, a: Callable) -> Callable:
    def call(m: Any) -> Any:
        try:
            return f(a(m))
        except _SOFT:
            return None

    return call


def _soft2(f: Callable, a: Callable, b: Callable) -> Callable:
    def call(m: Any) -> Any:
        try:
            return f(a(m), b(m))
        except _SOFT:
            return None

    return call


def _soft2c(f: Callable, a: Callable, c: Any) -> Callable:
    """_soft2 with a constant right operand (``price * 100``): one call less per message."""

    def call(m: Any) -> Any:
        try:
            return f(a(m), c)
        except _SOFT:
            return None

    return call


def _binary(f: Callable, a: _Node, b: _Node) -> Callable:
    if b.const is not _NOT_CONST and type(b.const) not in (list, dict):
        return _soft2c(f, a.fn, b.const)
    return _soft2(f, a.fn, b.fn)


def _softn(f: Callable, fns: tuple[Callable, ...]) -> Callable:
    def call(m: Any) -> Any:
        try:
            return f(*[g(m) for g in fns])
        except _SOFT:
            return None

    return call


def _pos(node: Tree | Token) -> int:
    if isinstance(node, Token):
        return node.start_pos or 0
    return 0 if node.meta.empty else node.meta.start_pos


class _Compiler:
    def __init__(self, text: str):
        self.text = text
        self.paths: dict[str, None] = {}  # ordered set

    def fail(self, what: str, node: Tree | Token) -> None:
        col = _pos(node) + 1
        raise ExpressionError(f"{what} at column {col}", col)

    def node(self, t: Tree | Token, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            self.fail(f"expression is nested more than {MAX_DEPTH} levels deep", t)
        return getattr(self, "c_" + t.data)(t, depth + 1)

    def kids(self, t: Tree, depth: int) -> list[_Node]:
        return [self.node(c, depth) for c in t.children if not isinstance(c, Token)]

    def fold(self, fn: Callable, kids: list[_Node]) -> _Node:
        if all(k.const is not _NOT_CONST for k in kids):
            return _const(fn(None))
        return _Node(fn)

    # literals

    def c_number(self, t: Tree, depth: int) -> _Node:
        token = t.children[0]
        if any(c in token for c in ".eE"):
            value = float(token)
            if not math.isfinite(value):
                self.fail("number too large", token)
        else:
            value = int(token)
            if _fix(value) is None:
                self.fail("integer outside the 64-bit range", token)
        return _const(value)

    def c_string(self, t: Tree, depth: int) -> _Node:
        return _const(_decode_string(t.children[0]))

    def c_true(self, t: Tree, depth: int) -> _Node:
        return _const(True)

    def c_false(self, t: Tree, depth: int) -> _Node:
        return _const(False)

    def c_null(self, t: Tree, depth: int) -> _Node:
        return _const(None)

    def c_list_(self, t: Tree, depth: int) -> _Node:
        kids = self.kids(t, depth)
        fns = tuple(k.fn for k in kids)
        return self.fold(lambda m: [f(m) for f in fns], kids)

    # paths

    def segments(self, t: Tree) -> Path:
        out: list[str | int] = []
        for token in t.children:
            if token.type == "NAME":
                if token.startswith("__"):
                    self.fail("names starting with '__' are not allowed", token)
                if not out and token in _KEYWORDS:  # the lexer lets "in" start a path
                    self.fail(f"unexpected {str(token)!r}", token)
                out.append(str(token))
            elif token.type == "STRING":
                out.append(_decode_string(token))
            elif any(c in token for c in ".eE") or len(token) > 9:
                self.fail("a list index must be a whole number", token)
            else:
                out.append(int(token))
        return tuple(out)

    def c_path(self, t: Tree, depth: int) -> _Node:
        segments = self.segments(t)
        self.paths[format_path(segments)] = None
        return _Node(path_getter(segments), path=segments)

    # operators

    def c_or_test(self, t: Tree, depth: int) -> _Node:
        kids = self.kids(t, depth)
        fns = tuple(k.fn for k in kids)
        if len(fns) == 2:
            a, b = fns
            return self.fold(lambda m: True if a(m) or b(m) else False, kids)
        return self.fold(lambda m: any(f(m) for f in fns), kids)

    def c_and_test(self, t: Tree, depth: int) -> _Node:
        kids = self.kids(t, depth)
        fns = tuple(k.fn for k in kids)
        if len(fns) == 2:
            a, b = fns
            return self.fold(lambda m: True if a(m) and b(m) else False, kids)
        return self.fold(lambda m: all(f(m) for f in fns), kids)

    def c_not_(self, t: Tree, depth: int) -> _Node:
        (a,) = self.kids(t, depth)
        f = a.fn
        return self.fold(lambda m: not f(m), [a])

    def c_neg(self, t: Tree, depth: int) -> _Node:
        (a,) = self.kids(t, depth)
        return self.fold(_soft1(_neg, a.fn), [a])

    def arithmetic(self, t: Tree, depth: int) -> _Node:
        first = self.node(t.children[0], depth)
        rest = [
            (_BINARY[op.value], self.node(k, depth))
            for op, k in zip(t.children[1::2], t.children[2::2], strict=True)
        ]
        kids = [first] + [k for _, k in rest]
        if len(rest) == 1:
            ((op, b),) = rest
            return self.fold(_binary(op, first, b), kids)
        a = first.fn
        chain = tuple((op, k.fn) for op, k in rest)

        def run(m: Any) -> Any:
            try:
                acc = a(m)
                for op, f in chain:
                    acc = op(acc, f(m))
                return acc
            except _SOFT:
                return None

        return self.fold(run, kids)

    c_sum = arithmetic
    c_product = arithmetic

    def c_compare(self, t: Tree, depth: int) -> _Node:
        left, op, right = t.children
        a, b = self.node(left, depth), self.node(right, depth)
        if op.value in ("==", "!=") and (type(b.const) is str or b.const is None):
            # a string or null constant equals only itself: plain == is already right
            fa, c = a.fn, b.const
            fn = (lambda m: fa(m) == c) if op.value == "==" else (lambda m: fa(m) != c)
            return self.fold(fn, [a, b])
        return self.fold(_binary(_COMPARE[op.value], a, b), [a, b])

    def membership(self, t: Tree, depth: int, negate: bool) -> _Node:
        a, b = self.kids(t, depth)
        c = b.const
        if type(c) is list and c and all(type(x) is str for x in c):
            words, fa = frozenset(c), a.fn

            def fn(m: Any) -> bool:
                v = fa(m)
                return (type(v) is str and v in words) is not negate

            return self.fold(fn, [a, b])
        return self.fold(_soft2(_not_in if negate else _in, a.fn, b.fn), [a, b])

    def c_in_(self, t: Tree, depth: int) -> _Node:
        return self.membership(t, depth, False)

    def c_not_in(self, t: Tree, depth: int) -> _Node:
        return self.membership(t, depth, True)

    # calls

    def c_call(self, t: Tree, depth: int) -> _Node:
        name_token = t.children[0]
        name = str(name_token)
        if name.startswith("__"):
            self.fail("names starting with '__' are not allowed", name_token)
        if name not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            self.fail(f"unknown function {name!r} (the functions are: {known})", name_token)
        low, high, impl = FUNCTIONS[name]
        args = [self.node(c, depth) for c in t.children[1:]]
        if len(args) < low or (high is not None and len(args) > high):
            want = f"{low} or more" if high is None else f"{low} or {high}"
            want = str(low) if low == high else want
            noun = "argument" if want == "1" else "arguments"
            self.fail(f"{name}() takes {want} {noun}, not {len(args)}", name_token)
        fns = tuple(a.fn for a in args)
        if name == "exists":
            if args[0].path is None:
                self.fail("exists() takes a path such as properties.coupon", name_token)
            segments = args[0].path
            return _Node(lambda m: _lookup(m, segments) is not _MISSING)
        if name == "if":
            cond, yes, no = fns
            if args[0].const is not _NOT_CONST:
                return args[1] if args[0].const else args[2]
            return self.fold(lambda m: yes(m) if cond(m) else no(m), args)
        if name == "coalesce":

            def coalesce(m: Any) -> Any:
                for f in fns:
                    v = f(m)
                    if v is not None:
                        return v
                return None

            return self.fold(coalesce, args)
        if len(fns) == 1:
            return self.fold(_soft1(impl, fns[0]), args)
        if len(fns) == 2:
            return self.fold(_binary(impl, args[0], args[1]), args)
        return self.fold(_softn(impl, fns), args)
