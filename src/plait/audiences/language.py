"""The audience language: a readable text form and an equivalent JSON form.

    traits.country in ["FR", "DE", "ES"] and traits.joined_at in last 5 days
    performed "Order Completed" at least 2 times in last 30 days where properties.revenue > 50
    not performed "Appointment Booked" in last 30 days
    performed page at least 2 times in last 30 days where properties.path contains "/dermatology"
    computed.lifetime_revenue >= 100 or account.traits.plan = "enterprise"
    audience "vip_customers" and not (traits.unsubscribed = true)

Conditions combine with ``and``, ``or``, ``not`` and parentheses. A behaviour's ``where``
takes one condition, or several in parentheses (``where (properties.a > 1 and ...)``), so
a ``traits.`` after it is the profile's again, never the event's. Parsed with lark (LALR);
a text outside the grammar raises :class:`AudienceSyntaxError` with its line and column.

:func:`parse` gives a tree of the node classes below, :func:`to_json` / :func:`from_json`
convert it to and from the JSON form, and :func:`to_text` writes the canonical text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import orjson
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from plait.govern.expressions import ExpressionError, format_path, parse_path

MAX_LENGTH = 20_000
UNITS = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
OPS = ("=", "!=", ">", ">=", "<", "<=", "in", "contains", "starts_with", "ends_with",
       "exists", "within")  # fmt: skip
COUNT_OPS = ("at least", "at most", "exactly")
TYPES = ("track", "page", "screen", "identify", "group")
FIELD_ROOTS = ("properties", "context", "traits")  # what a behaviour's where may read

Path = tuple[str | int, ...]
Scalar = str | int | float | bool


class AudienceSyntaxError(ValueError):
    """Text or JSON outside the language; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int = 1, column: int = 1, field: str | None = None):
        super().__init__(message)
        self.message, self.line, self.column, self.field = message, line, column, field


# -- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    amount: int
    unit: str  # minute | hour | day | week

    @property
    def ms(self) -> int:
        return self.amount * UNITS[self.unit] * 1000


@dataclass(frozen=True, slots=True)
class Test:
    """What a value must be: ``op`` and its operand (a scalar, a list of scalars for
    ``in``, a Window for ``within``, None for ``exists``)."""

    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Any


@dataclass(frozen=True, slots=True)
class Field:
    """A condition on an event's ``properties``, ``context`` or ``traits``."""

    path: Path
    test: Test


@dataclass(frozen=True, slots=True)
class Selector:
    """Which events: a message type (None: any) and a name (track's event, page's or
    screen's name; None: any)."""

    type: str | None = "track"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Performed:
    selector: Selector
    count_op: str = "at least"
    count: int = 1
    window: Window | None = None
    where: Any = None  # a filter: Field, And/Or/Not of Fields


@dataclass(frozen=True, slots=True)
class Trait:
    path: Path  # path[0] is the trait's key
    test: Test


@dataclass(frozen=True, slots=True)
class AccountTrait:
    """True when one of the profile's accounts (group calls) has the trait."""

    path: Path
    test: Test


@dataclass(frozen=True, slots=True)
class Computed:
    key: str
    test: Test


@dataclass(frozen=True, slots=True)
class InAudience:
    key: str


# -- parsing --------------------------------------------------------------------------------

GRAMMAR = r"""
start: or_expr
filter_start: filter_or
window_start: INT UNIT

?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> not_
         | primary
?primary: "(" or_expr ")"
        | path test -> condition
        | _AUDIENCE STRING -> audience
        | _PERFORMED selector count? window? where? -> performed

selector: STRING -> track_selector
        | TYPE STRING? -> type_selector
        | _ANY -> any_selector
count: _AT _LEAST INT (_TIMES | _TIME) -> at_least
     | _AT _MOST INT (_TIMES | _TIME) -> at_most
     | _EXACTLY INT (_TIMES | _TIME) -> exactly
window: _IN _THE? _LAST INT UNIT
where: _WHERE field_cond
     | _WHERE "(" filter_or ")"

?filter_or: filter_and (_OR filter_and)*
?filter_and: filter_not (_AND filter_not)*
?filter_not: _NOT filter_not -> not_
           | "(" filter_or ")"
           | field_cond
field_cond: path test

test: COMPARE value -> compare
    | _IN "[" value ("," value)* "]" -> in_
    | _NOT _IN "[" value ("," value)* "]" -> not_in
    | _IN _THE? _LAST INT UNIT -> within
    | _CONTAINS STRING -> contains_string
    | _CONTAINS SIGNED_NUMBER -> contains_number
    | _STARTS _WITH STRING -> starts_with
    | _ENDS _WITH STRING -> ends_with
    | _EXISTS -> exists
    | _NOT _EXISTS -> not_exists

value: STRING -> string
     | SIGNED_NUMBER -> number
     | _TRUE -> true
     | _FALSE -> false

path: NAME ("." NAME | "[" (STRING | INT) "]")*

_OR: "or"
_AND: "and"
_NOT: "not"
_IN: "in"
_THE: "the"
_LAST: "last"
_AT: "at"
_LEAST: "least"
_MOST: "most"
_EXACTLY: "exactly"
_TIMES: "times"
_TIME: "time"
_WHERE: "where"
_PERFORMED: "performed"
_AUDIENCE: "audience"
_ANY: "any"
_CONTAINS: "contains"
_STARTS: "starts"
_ENDS: "ends"
_WITH: "with"
_EXISTS: "exists"
_TRUE: "true"
_FALSE: "false"
TYPE: "track" | "page" | "screen" | "identify" | "group"
UNIT: /(minute|hour|day|week)s?(?![A-Za-z0-9_])/
COMPARE: "==" | "=" | "!=" | "<=" | ">=" | "<" | ">"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
INT: /[0-9]+/
SIGNED_NUMBER: /-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/
STRING: /"(?:[^"\\\n]|\\.)*"/
COMMENT: /#[^\n]*/
%ignore /[ \t\r\n]+/
%ignore COMMENT
"""

_KEYWORDS = frozenset({
    "or", "and", "not", "in", "the", "last", "at", "least", "most", "exactly", "times",
    "time", "where", "performed", "audience", "any", "contains", "starts", "ends", "with",
    "exists", "true", "false", *TYPES,
})  # fmt: skip
_TERMINALS = {
    "RPAR": "')'", "LPAR": "'('", "DOT": "'.'", "RSQB": "']'", "LSQB": "'['", "COMMA": "','",
    "NAME": "a name", "STRING": 'a "string"', "INT": "a whole number",
    "SIGNED_NUMBER": "a number", "UNIT": "minutes, hours, days or weeks", "$END": "the end",
    "COMPARE": "a comparison (=, !=, <, <=, >, >=)", "TYPE": "a message type",
}  # fmt: skip


@cache
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", start=["start", "filter_start", "window_start"],
                propagate_positions=True, maybe_placeholders=False)  # fmt: skip


def _position(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _syntax_error(text: str, exc: UnexpectedInput) -> AudienceSyntaxError:
    if isinstance(exc, UnexpectedCharacters):
        line, col = _position(text, exc.pos_in_stream)
        char = text[exc.pos_in_stream]
        return AudienceSyntaxError(
            f"unexpected character {char!r} at line {line}, column {col}", line, col
        )
    if isinstance(exc, UnexpectedToken):
        names = sorted({_TERMINALS.get(t, repr(t.strip("_").lower())) for t in exc.expected})
        hint = f"; expected {' or '.join(names[:6])}" if names else ""
        if exc.token.type == "$END":
            line, col = _position(text, len(text))
            return AudienceSyntaxError(f"unexpected end of text{hint}", line, col)
        line, col = _position(text, exc.token.start_pos)
        return AudienceSyntaxError(
            f"unexpected {exc.token.value!r} at line {line}, column {col}{hint}", line, col
        )
    pos = getattr(exc, "pos_in_stream", 0) or 0
    line, col = _position(text, pos)
    return AudienceSyntaxError(f"cannot parse at line {line}, column {col}", line, col)


def _run(text: str, start: str) -> Any:
    if not isinstance(text, str) or not text.strip():
        raise AudienceSyntaxError("the definition is empty")
    if len(text) > MAX_LENGTH:
        raise AudienceSyntaxError(f"the definition is longer than {MAX_LENGTH} characters")
    try:
        tree = _parser().parse(text, start=start)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    try:
        return _Build(text).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, AudienceSyntaxError):
            raise exc.orig_exc from None
        if isinstance(exc.orig_exc, RecursionError):
            raise AudienceSyntaxError("the definition nests too deeply") from None
        raise
    except RecursionError:
        raise AudienceSyntaxError("the definition nests too deeply") from None


@lru_cache(maxsize=1024)
def parse(text: str) -> Any:
    """The tree of an audience definition; raises AudienceSyntaxError."""
    return _run(text, "start")


@lru_cache(maxsize=1024)
def parse_filter(text: str) -> Any:
    """An event filter (a behaviour's or a computed trait's ``where``)."""
    return _run(text, "filter_start")


def parse_window(text: str) -> Window:
    """``30 days``, ``12 hours``..."""
    return _run(text, "window_start")


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}  # fmt: skip


class _Build(Transformer):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def _fail(self, token: Token, message: str) -> AudienceSyntaxError:
        line, col = _position(self.text, token.start_pos or 0)
        return AudienceSyntaxError(f"{message} at line {line}, column {col}", line, col)

    # values
    def STRING(self, token: Token) -> Token:
        body = token.value[1:-1]
        try:
            value = orjson.loads(f'"{body}"') if "\\" in body else body
        except orjson.JSONDecodeError:
            raise self._fail(token, "a string with an unknown escape") from None
        return Token("STRING", value, token.start_pos, token.line, token.column)

    def string(self, items):
        return items[0].value

    def number(self, items):
        text = items[0].value
        value = float(text) if any(c in text for c in ".eE") else int(text)
        if not is_number(value):
            raise self._fail(items[0], "a number outside 64 bits (or not finite)")
        return value

    def true(self, _):
        return True

    def false(self, _):
        return False

    def path(self, items):
        segments: list[str | int] = []
        for token in items:
            segments.append(int(token.value) if token.type == "INT" else token.value)
        return (tuple(segments), items[0])

    def _count(self, token: Token) -> int:
        value = int(token.value)
        if value > 1_000_000_000:
            raise self._fail(token, "a number too large")
        return value

    def _window(self, amount: Token, unit: Token) -> Window:
        n = self._count(amount)
        if n == 0:
            raise self._fail(amount, "a window of zero")
        return Window(n, unit.value.rstrip("s"))

    # tests
    def compare(self, items):
        op = "=" if items[0].value == "==" else items[0].value
        value = items[1]
        if op in (">", ">=", "<", "<=") and isinstance(value, bool):
            raise self._fail(items[0], f"{op} compares numbers or strings, not booleans")
        return Test(op, value)

    def in_(self, items):
        return Test("in", tuple(items))

    def not_in(self, items):
        return ("not", Test("in", tuple(items)))

    def within(self, items):
        return Test("within", self._window(items[0], items[1]))

    def contains_string(self, items):
        return Test("contains", items[0].value)

    def contains_number(self, items):
        return Test("contains", self.number(items))

    def starts_with(self, items):
        return Test("starts_with", items[0].value)

    def ends_with(self, items):
        return Test("ends_with", items[0].value)

    def exists(self, _):
        return Test("exists")

    def not_exists(self, _):
        return ("not", Test("exists"))

    # conditions
    def condition(self, items):
        (segments, first), test = items
        negate = isinstance(test, tuple)
        test = test[1] if negate else test
        root, rest = segments[0], segments[1:]
        if root == "traits" and rest and isinstance(rest[0], str):
            node: Any = Trait(rest, test)
        elif root == "computed" and len(rest) == 1 and isinstance(rest[0], str):
            node = Computed(rest[0], test)
        elif root == "account" and len(rest) >= 2 and rest[0] == "traits":
            node = AccountTrait(rest[1:], test)
        else:
            raise self._fail(first, "a condition reads traits.<key>, computed.<key> or "
                                    "account.traits.<key>")  # fmt: skip
        return Not(node) if negate else node

    def field_cond(self, items):
        (segments, first), test = items
        negate = isinstance(test, tuple)
        test = test[1] if negate else test
        if segments[0] not in FIELD_ROOTS or len(segments) < 2:
            raise self._fail(first, "an event condition reads properties.<name>, "
                                    "context.<name> or traits.<name>")  # fmt: skip
        node = Field(segments, test)
        return Not(node) if negate else node

    def audience(self, items):
        return InAudience(items[0].value)

    def track_selector(self, items):
        return Selector("track", items[0].value)

    def type_selector(self, items):
        return Selector(items[0].value, items[1].value if len(items) > 1 else None)

    def any_selector(self, _):
        return Selector(None, None)

    def at_least(self, items):
        return ("at least", self._count(items[0]))

    def at_most(self, items):
        return ("at most", self._count(items[0]))

    def exactly(self, items):
        return ("exactly", self._count(items[0]))

    def window(self, items):
        return self._window(items[0], items[1])

    def window_start(self, items):
        return self._window(items[0], items[1])

    def where(self, items):
        return ("where", items[0])

    def performed(self, items):
        selector, rest = items[0], items[1:]
        count_op, count, window, where = "at least", 1, None, None
        for part in rest:
            if isinstance(part, Window):
                window = part
            elif part[0] == "where":
                where = part[1]
            else:
                count_op, count = part
        return Performed(selector, count_op, count, window, where)

    def not_(self, items):
        return Not(items[0])

    def or_expr(self, items):
        return Or(tuple(items))

    def and_expr(self, items):
        return And(tuple(items))

    def filter_or(self, items):
        return Or(tuple(items))

    def filter_and(self, items):
        return And(tuple(items))

    def start(self, items):
        return items[0]

    def filter_start(self, items):
        return items[0]


# -- the JSON form --------------------------------------------------------------------------


def _test_json(test: Test) -> dict[str, Any]:
    if test.op == "exists":
        return {"op": "exists"}
    if test.op == "within":
        return {"op": "within", "value": {"amount": test.value.amount, "unit": test.value.unit}}
    if test.op == "in":
        return {"op": "in", "value": list(test.value)}
    return {"op": test.op, "value": test.value}


def to_json(node: Any) -> dict[str, Any]:
    """The JSON form of a tree (audience or filter)."""
    match node:
        case And(items):
            return {"and": [to_json(i) for i in items]}
        case Or(items):
            return {"or": [to_json(i) for i in items]}
        case Not(item):
            return {"not": to_json(item)}
        case Trait(path, test):
            return {"trait": _path_json_form(path), **_test_json(test)}
        case AccountTrait(path, test):
            return {"account_trait": _path_json_form(path), **_test_json(test)}
        case Computed(key, test):
            return {"computed": key, **_test_json(test)}
        case Field(path, test):
            return {"field": format_path(path), **_test_json(test)}
        case InAudience(key):
            return {"audience": key}
        case Performed(sel, count_op, count, window, where):
            out: dict[str, Any] = {"type": sel.type or "any"}
            if sel.name is not None:
                out["name"] = sel.name
            out["count"] = {"op": count_op, "value": count}
            if window is not None:
                out["window"] = {"amount": window.amount, "unit": window.unit}
            if where is not None:
                out["where"] = to_json(where)
            return {"performed": out}
    raise TypeError(f"not an audience node: {node!r}")


def _path_json_form(path: Path) -> str | list:
    """A path as dotted text where it can be (``address.country``), else its segments
    (``["first name"]``)."""
    try:
        text = format_path(path)
    except ValueError:
        return list(path)
    return text if parse_path(text) == path else list(path)


def from_json(doc: Any, at: str = "definition", _in_filter: bool = False) -> Any:
    """A tree from the JSON form; raises AudienceSyntaxError naming the bad field."""
    if not isinstance(doc, dict) or not doc:
        raise AudienceSyntaxError(f"{at}: expected an object", field=at)
    kinds = [k for k in ("and", "or", "not", "audience", "performed", "trait", "account_trait",
                         "field", "computed") if k in doc]  # fmt: skip
    if len(kinds) > 1:
        raise AudienceSyntaxError(f"{at}: one condition per object, not {kinds}", field=at)
    if "and" in doc or "or" in doc:
        key = "and" if "and" in doc else "or"
        items = doc[key]
        if not isinstance(items, list) or not items:
            raise AudienceSyntaxError(f"{at}.{key}: expected a non-empty list", field=at)
        built = tuple(
            from_json(item, f"{at}.{key}[{i}]", _in_filter) for i, item in enumerate(items)
        )
        return And(built) if key == "and" else Or(built)
    if "not" in doc:
        return Not(from_json(doc["not"], f"{at}.not", _in_filter))
    if "field" in doc and not _in_filter:
        raise AudienceSyntaxError(f"{at}.field: an event field is read in a behaviour's "
                                  "where only", field=at)  # fmt: skip
    if "audience" in doc:
        if not isinstance(doc["audience"], str) or not doc["audience"]:
            raise AudienceSyntaxError(f"{at}.audience: expected a key", field=at)
        return InAudience(doc["audience"])
    if "performed" in doc:
        return _performed_json(doc["performed"], f"{at}.performed")
    for key, build in (("trait", Trait), ("account_trait", AccountTrait), ("field", Field)):
        if key in doc:
            path = _path_json(doc[key], f"{at}.{key}")
            if key == "field" and (path[0] not in FIELD_ROOTS or len(path) < 2):
                raise AudienceSyntaxError(
                    f"{at}.field: must start with properties., context. or traits.", field=at
                )
            return build(path, _test_from_json(doc, at))
    if "computed" in doc:
        if not isinstance(doc["computed"], str) or not doc["computed"]:
            raise AudienceSyntaxError(f"{at}.computed: expected a key", field=at)
        return Computed(doc["computed"], _test_from_json(doc, at))
    raise AudienceSyntaxError(f"{at}: unknown condition {sorted(doc)}", field=at)


def _path_json(text: Any, at: str) -> Path:
    if (
        isinstance(text, list)
        and text
        and all(
            isinstance(s, str) or (isinstance(s, int) and not isinstance(s, bool) and s >= 0)
            for s in text
        )
        and isinstance(text[0], str)
    ):
        return tuple(text)
    if not isinstance(text, str) or not text:
        raise AudienceSyntaxError(f"{at}: expected a path (text, or a list of names)", field=at)
    try:
        return parse_path(text)
    except ExpressionError as exc:
        raise AudienceSyntaxError(f"{at}: {exc.message}", field=at) from None


def is_number(value: Any) -> bool:
    """A number the language holds: a 64-bit integer or a finite float."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _scalar(value: Any, at: str) -> Scalar:
    if isinstance(value, bool | str) or is_number(value):
        return value
    raise AudienceSyntaxError(f"{at}: expected a string, number or boolean", field=at)


def _window_json(doc: Any, at: str) -> Window:
    if not isinstance(doc, dict):
        raise AudienceSyntaxError(f"{at}: expected {{amount, unit}}", field=at)
    amount, unit = doc.get("amount"), str(doc.get("unit", "")).rstrip("s")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise AudienceSyntaxError(f"{at}.amount: expected a positive whole number", field=at)
    if unit not in UNITS:
        raise AudienceSyntaxError(f"{at}.unit: expected one of {list(UNITS)}", field=at)
    return Window(amount, unit)


def _test_from_json(doc: dict, at: str) -> Test:
    op = doc.get("op")
    if op not in OPS:
        raise AudienceSyntaxError(f"{at}.op: expected one of {list(OPS)}", field=at)
    value = doc.get("value")
    if op == "exists":
        return Test("exists")
    if op == "within":
        return Test("within", _window_json(value, f"{at}.value"))
    if op == "in":
        if not isinstance(value, list) or not value:
            raise AudienceSyntaxError(f"{at}.value: expected a non-empty list", field=at)
        return Test("in", tuple(_scalar(v, f"{at}.value[{i}]") for i, v in enumerate(value)))
    value = _scalar(value, f"{at}.value")
    if op in (">", ">=", "<", "<=", "contains") and isinstance(value, bool):
        raise AudienceSyntaxError(f"{at}.value: {op} takes a number or a string", field=at)
    if op in ("starts_with", "ends_with") and not isinstance(value, str):
        raise AudienceSyntaxError(f"{at}.value: {op} takes a string", field=at)
    return Test(op, value)


def _performed_json(doc: Any, at: str) -> Performed:
    if not isinstance(doc, dict):
        raise AudienceSyntaxError(f"{at}: expected an object", field=at)
    kind = doc.get("type", "track")
    if kind not in (*TYPES, "any"):
        raise AudienceSyntaxError(f"{at}.type: expected one of {[*TYPES, 'any']}", field=at)
    name = doc.get("name")
    if name is not None and (not isinstance(name, str) or kind == "any"):
        raise AudienceSyntaxError(f"{at}.name: expected a string (not with type any)", field=at)
    count = doc.get("count", {"op": "at least", "value": 1})
    if not isinstance(count, dict) or count.get("op") not in COUNT_OPS:
        raise AudienceSyntaxError(f"{at}.count.op: expected one of {list(COUNT_OPS)}", field=at)
    n = count.get("value")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 1_000_000_000:
        raise AudienceSyntaxError(f"{at}.count.value: expected a whole number", field=at)
    window = _window_json(doc["window"], f"{at}.window") if doc.get("window") else None
    where = doc.get("where")
    where = from_json(where, f"{at}.where", True) if where is not None else None
    if where is not None:
        _check_filter(where, f"{at}.where")
    selector = Selector(None if kind == "any" else kind, name)
    return Performed(selector, count["op"], n, window, where)


def _check_filter(node: Any, at: str) -> None:
    match node:
        case And(items) | Or(items):
            for item in items:
                _check_filter(item, at)
        case Not(item):
            _check_filter(item, at)
        case Field():
            pass
        case _:
            raise AudienceSyntaxError(f"{at}: an event filter holds field conditions only",
                                      field=at)  # fmt: skip


# -- the canonical text ---------------------------------------------------------------------


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    return repr(value)


def _path_text(path: Path) -> str:
    out = []
    for seg in path:
        if isinstance(seg, int):
            out.append(f"[{seg}]")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", seg) and seg not in _KEYWORDS:
            out.append("." + seg)
        else:
            out.append("[" + orjson.dumps(seg).decode() + "]")
    return "".join(out)


def _test_text(test: Test) -> str:
    match test.op:
        case "exists":
            return "exists"
        case "within":
            return f"in last {test.value.amount} {test.value.unit}s"
        case "in":
            return "in [" + ", ".join(_value_text(v) for v in test.value) + "]"
        case "starts_with" | "ends_with":
            return f"{test.op.replace('_', ' ')} {_value_text(test.value)}"
        case "contains":
            return f"contains {_value_text(test.value)}"
    return f"{test.op} {_value_text(test.value)}"


def to_text(node: Any, _inner: bool = False) -> str:
    """The canonical text of a tree; ``parse(to_text(t)) == t``."""
    match node:
        case And(items) | Or(items):
            word = " and " if isinstance(node, And) else " or "
            text = word.join(to_text(i, True) for i in items)
            return f"({text})" if _inner else text
        case Not(item):
            return f"not {to_text(item, True)}"
        case Trait(path, test):
            return f"traits{_path_text(path)} {_test_text(test)}"
        case AccountTrait(path, test):
            return f"account.traits{_path_text(path)} {_test_text(test)}"
        case Computed(key, test):
            return f"computed{_path_text((key,))} {_test_text(test)}"
        case Field(path, test):
            return f"{path[0]}{_path_text(path[1:])} {_test_text(test)}"
        case InAudience(key):
            return f"audience {_value_text(key)}"
        case Performed(sel, count_op, count, window, where):
            if sel.type is None:
                text = "performed any"
            elif sel.type == "track" and sel.name is not None:
                text = f"performed {_value_text(sel.name)}"
            else:
                text = f"performed {sel.type}"
                if sel.name is not None:
                    text += f" {_value_text(sel.name)}"
            text += f" {count_op} {count} times"
            if window is not None:
                text += f" in last {window.amount} {window.unit}s"
            if where is not None:
                text += f" where ({to_text(where)})"
            return f"({text})" if _inner else text
    raise TypeError(f"not an audience node: {node!r}")


def walk(node: Any):
    """The node and every node under it (and/or/not)."""
    yield node
    match node:
        case And(items) | Or(items):
            for i in items:
                yield from walk(i)
        case Not(item):
            yield from walk(item)


def references(node: Any) -> tuple[set[str], set[str]]:
    """The audiences and computed traits a tree names: (audience keys, computed keys)."""
    audiences: set[str] = set()
    computed: set[str] = set()

    def walk(n: Any) -> None:
        match n:
            case And(items) | Or(items):
                for i in items:
                    walk(i)
            case Not(item):
                walk(item)
            case InAudience(key):
                audiences.add(key)
            case Computed(key, _):
                computed.add(key)

    walk(node)
    return audiences, computed
