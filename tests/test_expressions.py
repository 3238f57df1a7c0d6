"""plait.govern.expressions: the grammar, null semantics, functions, and hostile input."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.govern import expressions
from plait.govern.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_STRING,
    Expression,
    ExpressionError,
    compile_expression,
    format_path,
    parse_path,
)

MSG = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "anonymousId": None,
    "properties": {
        "revenue": 19.99,
        "quantity": 3,
        "plan": "pro",
        "order id": "o-17",
        "coupon": None,
        "tags": ["a", "b"],
        "products": [{"sku": "S1", "price": 10}, {"sku": "S2", "price": 9.99}],
        "internal": False,
        "not": "keyword key",
    },
    "context": {"traits": {"email": "  Ada@Example.COM "}, "ip": "1.2.3.4"},
}


def ev(text: str, msg: dict | None = None):
    return compile_expression(text).evaluate(MSG if msg is None else msg)


@pytest.mark.parametrize(
    "text, expected",
    [
        # literals
        ("1", 1),
        ("-1", -1),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("'single'", "single"),
        ('"double"', "double"),
        ("'it\\'s'", "it's"),
        ('"a\\"b"', 'a"b'),
        ('"tab\\there"', "tab\there"),
        ('"\\u00e9"', "é"),
        ('"\\ud83d\\ude00"', "😀"),
        ("'héllo ✓'", "héllo ✓"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[]", []),
        ("[1, 'a', null, [true]]", [1, "a", None, [True]]),
        # paths
        ("event", "Order Completed"),
        ("type", "track"),
        ("userId", "u1"),
        ("properties.revenue", 19.99),
        ("context.traits.email", "  Ada@Example.COM "),
        ('properties["order id"]', "o-17"),
        ("properties['order id']", "o-17"),
        ("properties.products[1].sku", "S2"),
        ('properties["products"][0]["price"]', 10),
        ("properties.not", "keyword key"),
        ("properties.missing", None),
        ("nothing.at.all", None),
        ("properties.plan.deeper", None),  # through a string
        ("properties.products[9].sku", None),
        ("properties.tags[0]", "a"),
        # arithmetic
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 2 - 3", 5),
        ("7 / 2", 3.5),
        ("8 / 2", 4.0),
        ("7 % 3", 1),
        ("-properties.quantity", -3),
        ("- -2", 2),
        ("properties.quantity * properties.revenue", pytest.approx(59.97)),
        ("'ab' + 'cd'", "abcd"),
        ("event + '!'", "Order Completed!"),
        ("1 + 2.5", 3.5),
        # comparison
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 4", False),
        ("3 >= 4", False),
        ("'a' < 'b'", True),
        ("1 == 1.0", True),
        ("'1' == 1", False),
        ("true == 1", False),
        ("false == 0", False),
        ("true == true", True),
        ("null == null", True),
        ("properties.coupon == null", True),
        ("properties.missing == null", True),
        ("properties.plan != 'free'", True),
        ("[1, 2] == [1, 2]", True),
        ("type == 'track'", True),
        ("'track' == type", True),
        ("properties.quantity == 3", True),
        ("properties.quantity != 3", False),
        # in / not in
        ("event in ['Order Completed', 'Order Refunded']", True),
        ("event not in ['Order Completed', 'Order Refunded']", False),
        ("event in []", False),
        ("properties.quantity in [1, 2, 3]", True),
        ("1 in [true]", False),
        ("true in [1]", False),
        ("true in [true]", True),
        ("null in [null]", True),
        ("'Comp' in event", True),
        ("'x' not in event", True),
        ("'plan' in properties", True),
        ("'zzz' in properties", False),
        ("'a' in properties.tags", True),
        ("'c' not in properties.tags", True),
        # boolean
        ("true and false", False),
        ("true or false", True),
        ("not true", False),
        ("not null", True),
        ("not properties.missing", True),
        ("not not 'x'", True),
        ("1 and 'x' and [1]", True),
        ("0 or '' or [] or null", False),
        ("type == 'track' and properties.revenue > 10", True),
        ("type == 'page' or properties.internal == false", True),
        ("not type == 'page'", True),
        ("true or false and false", True),  # and binds tighter
        ("(true or false) and false", False),
        # precedence of unary minus and comparison
        ("-1 + 2", 1),
        ("1 + 2 == 3", True),
        ("(1 < 2) == true", True),
    ],
)
def test_positive(text, expected):
    assert ev(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lower(event)", "order completed"),
        ("upper(properties.plan)", "PRO"),
        ("trim(context.traits.email)", "Ada@Example.COM"),
        ("lower(trim(context.traits.email))", "ada@example.com"),
        ("length(event)", 15),
        ("length(properties.tags)", 2),
        ("length(properties)", len(MSG["properties"])),
        ("concat('a', 1, 2.5, true, null, 'z')", "a12.5truez"),
        ("concat(properties.tags)", '["a","b"]'),
        ("coalesce(properties.missing, properties.coupon, 'fallback')", "fallback"),
        ("coalesce(properties.internal, 'x')", False),  # false is not null
        ("coalesce(null)", None),
        ("round(2.5)", 3),
        ("round(-2.5)", -3),
        ("round(2.4)", 2),
        ("round(0.49999999999999994)", 0),
        ("round(properties.revenue * 100)", 1999),
        ("round(2.675, 2)", 2.68),
        ("round(1.005, 2)", 1.01),
        ("round(1234, -2)", 1200),
        ("round(7)", 7),
        ("round(7, 3)", 7),
        ("int('42')", 42),
        ("int(' -7 ')", -7),
        ("int('3.9')", 3),
        ("int(-3.9)", -3),
        ("int(true)", 1),
        ("int('x')", None),
        ("int('1_000')", None),
        ("int('nan')", None),
        ("float('2.5')", 2.5),
        ("float(3)", 3.0),
        ("float('inf')", None),
        ("float('nan')", None),
        ("float('1e999')", None),
        ("str(42)", "42"),
        ("str(2.5)", "2.5"),
        ("str(true)", "true"),
        ("str(null)", None),
        ("str('s')", "s"),
        ("str(properties.tags)", '["a","b"]'),
        ("contains(event, 'Completed')", True),
        ("contains(properties.tags, 'b')", True),
        ("contains(properties.tags, 'z')", False),
        ("starts_with(event, 'Order')", True),
        ("starts_with(event, 'order')", False),
        ("ends_with(event, 'Completed')", True),
        ("replace(event, 'Order', 'Purchase')", "Purchase Completed"),
        ("replace('aaa', '', 'b')", "aaa"),
        ("exists(properties.coupon)", True),  # present, even though null
        ("exists(properties.missing)", False),
        ("exists(properties['order id'])", True),
        ("exists(properties.products[1].sku)", True),
        ("exists(properties.products[5])", False),
        ("if(properties.revenue > 10, 'big', 'small')", "big"),
        ("if(null, 'yes', 'no')", "no"),
        ("if(true, 1, 1 / 0)", 1),
        ("if(exists(context.traits.email), lower(trim(context.traits.email)), null)",
         "ada@example.com"),
    ],
)  # fmt: skip
def test_functions(text, expected):
    assert ev(text) == expected
    assert type(ev(text)) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        "'a' * 2",
        "null + 1",
        "1 + null",
        "'a' + 1",
        "1 + 'a'",
        "true + 1",
        "[1] + [2]",
        "1 / 0",
        "1 % 0",
        "1.5 / 0.0",
        "-'a'",
        "-null",
        "'a' < 1",
        "null < 1",
        "[1] < [2]",
        "1 in 5",
        "1 in 'abc'",
        "null in 'abc'",
        "properties.missing.deeper + 1",
        "lower(1)",
        "upper(null)",
        "trim([1])",
        "length(5)",
        "round('1.5')",
        "round(1.5, 'x')",
        "round(1.5, 99)",
        "round(true)",
        "int([1])",
        "float(null)",
        "starts_with(1, 'a')",
        "ends_with('a', null)",
        "replace('a', 1, 'b')",
        "9223372036854775807 + 1",  # past 64 bits
        "-9223372036854775807 - 2",
        "1e308 * 10",  # infinity
        "1e308 * 10 - 1e308 * 10",  # NaN
        "properties.quantity not in 5",
    ],
)
def test_type_errors_are_null(text):
    assert ev(text) is None


def test_null_in_conditions_is_false():
    assert not ev("'a' < 1")
    assert ev("not ('a' < 1)") is True
    assert ev("('a' < 1) or true") is True
    assert ev("('a' < 1) and true") is False
    assert ev("if('a' < 1, 'y', 'n')") == "n"


def test_strings_are_capped():
    half = MAX_STRING // 2 + 1
    msg = {"properties": {"s": "x" * half}}
    assert ev("properties.s + properties.s", msg) is None
    assert ev("concat(properties.s, properties.s)", msg) is None
    assert ev("replace(properties.s, 'x', 'xx')", msg) is None
    assert ev("properties.s + 'y'", msg) == "x" * half + "y"
    # the classic blow-up: each replace multiplies the length by ten
    blowup = "properties.s"
    for _ in range(8):
        blowup = f"replace({blowup}, 'a', 'aaaaaaaaaa')"
    assert ev(blowup, {"properties": {"s": "a" * 20}}) is None


def test_missing_and_odd_messages():
    e = compile_expression("properties.a.b == null and lower(traits.name) == null")
    for msg in ({}, {"properties": None}, {"properties": 5}, {"properties": {"a": [1]}},
                {"properties": {"a": "str"}}, {"traits": {"name": 3}}):  # fmt: skip
        assert e.evaluate(msg) is True


def test_paths_lists_what_is_read():
    e = compile_expression(
        "if(exists(properties['order id']), properties.revenue * 2, properties.revenue) "
        "+ length(context.traits.email) + properties.products[0].price"
    )
    assert e.paths == (
        'properties["order id"]',
        "properties.revenue",
        "context.traits.email",
        "properties.products[0].price",
    )
    assert compile_expression("1 + 2").paths == ()
    assert isinstance(e, Expression)


def test_constant_lists_are_not_shared():
    e = compile_expression("[1, [2]]")
    first = e.evaluate({})
    first[1].append(3)
    assert e.evaluate({}) == [1, [2]]


def test_compiled_once_per_text():
    assert compile_expression("event == 'x'") is compile_expression("event == 'x'")


def test_constant_folding_keeps_results():
    assert compile_expression("1 + 2 * 3").evaluate({}) == 7
    assert compile_expression("if(true, event, 'x')").evaluate({"event": "e"}) == "e"
    assert compile_expression("concat('a', 'b') == 'ab'").evaluate({}) is True


# rejected at compile time ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, what, column",
    [
        ("__import__('os')", "'__'", 1),
        ("properties.__class__", "'__'", 12),
        ("a.__dict__.x", "'__'", 3),
        ("open('x')", "unknown function 'open'", 1),
        ("eval('1')", "unknown function 'eval'", 1),
        ("getattr(event, 'x')", "unknown function 'getattr'", 1),
        ("lambda: 1", "unexpected character ':'", 7),
        ("lambda x: x", "unexpected", 8),
        ("a; b", "unexpected character ';'", 2),
        ("a = 1", "unexpected character '='", 3),
        ("properties.x = 1", "cannot assign", 14),
        ("x.y()", "unexpected '('", 4),
        ("event.lower()", "unexpected '('", 12),
        ("properties['x'](1)", "unexpected '('", 16),
        ("import os", "unexpected 'os'", 8),
        ("x if y else z", "unexpected 'if'", 3),
        ("{'a': 1}", "unexpected character '{'", 1),
        ("`ls`", "unexpected character '`'", 1),
        ("a == b == c", "unexpected '=='", 8),
        ("1 < 2 == true", "unexpected '=='", 7),
        ("a ==", "unexpected end", 5),
        ("(1 + 2", "unexpected end", 7),
        ("[1, 2", "unexpected end", 6),
        ("a..b", "expected a name", 3),
        ("a b", "unexpected 'b'", 3),
        ("", "empty", 1),
        ("   ", "empty", 1),
        ("lower()", "lower() takes 1 argument, not 0", 1),
        ("round(1, 2, 3)", "round() takes 1 or 2 arguments, not 3", 1),
        ("if(a, b)", "if() takes 3 arguments", 1),
        ("exists('properties.x')", "exists() takes a path", 1),
        ("x + exists(1 + 1)", "exists() takes a path", 5),
        ("properties.items[1.5]", "whole number", 18),
        ("'bad \\q escape'", "unknown escape", 1),
        ("'\\ud800'", "invalid \\u escape", 1),
        ("99999999999999999999", "64-bit", 1),
        ("1e999", "too large", 1),
        ("'unterminated", "unexpected character", 1),
        ("1 ** 2", "unexpected '*'", 4),
        ("a && b", "unexpected character '&'", 3),
        ("!a", "unexpected character '!'", 1),
    ],
)
def test_rejected(text, what, column):
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert isinstance(info.value, ValueError)
    assert what in str(info.value)
    assert info.value.column == column
    if text.strip():
        assert f"column {column}" in str(info.value) or "end of expression" in str(info.value)


def test_column_counts_from_the_start_across_lines():
    text = "type == 'track'\n  and ;"
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert info.value.column == text.index(";") + 1 == 23


@pytest.mark.parametrize(
    "text",
    [
        "-" * (MAX_DEPTH + 5) + "1",
        "not " * (MAX_DEPTH + 5) + "x",
        "lower(" * (MAX_DEPTH + 5) + "x" + ")" * (MAX_DEPTH + 5),
        "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5),
        "if(true, " * (MAX_DEPTH + 5) + "1" + ", 0)" * (MAX_DEPTH + 5),
    ],
)
def test_deep_nesting_is_rejected(text):
    with pytest.raises(ExpressionError, match="nested more than"):
        compile_expression(text)


def test_shallow_enough_nesting_and_long_chains_are_fine():
    assert compile_expression("-" * (MAX_DEPTH - 2) + "1").evaluate({}) == 1
    # flat chains are one level, however long
    chain = " + ".join(["1"] * 240)
    assert compile_expression(chain).evaluate({}) == 240
    assert compile_expression(" and ".join(["true"] * 100)).evaluate({}) is True
    # redundant parentheses are not nesting
    assert compile_expression("(" * 300 + "1" + ")" * 300).evaluate({}) == 1


def test_length_is_capped():
    with pytest.raises(ExpressionError, match=f"longer than {MAX_LENGTH}"):
        compile_expression("1" + " + 1" * MAX_LENGTH)
    assert compile_expression("1" + " " * (MAX_LENGTH - 1)).evaluate({}) == 1


def test_not_a_string():
    with pytest.raises(ExpressionError):
        compile_expression(42)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError):
        compile_expression(["event"])  # type: ignore[arg-type]


def test_bracketed_keys_are_data_not_attributes():
    # a key named like a dunder is only ever a dictionary key
    assert ev('properties["__class__"]') is None
    assert ev('properties["__class__"]', {"properties": {"__class__": 1}}) == 1


def test_the_module_never_evaluates_code():
    tree = ast.parse(Path(expressions.__file__).read_text())
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not called & {"eval", "exec", "compile", "__import__", "setattr", "delattr"}


# paths for rules ------------------------------------------------------------------------------


def test_parse_and_format_path():
    assert parse_path("properties.plan") == ("properties", "plan")
    assert parse_path('properties["order id"]') == ("properties", "order id")
    assert parse_path("properties.items[2].sku") == ("properties", "items", 2, "sku")
    assert format_path(("properties", "order id")) == 'properties["order id"]'
    assert format_path(("properties", "in")) == 'properties["in"]'
    assert format_path(("properties", "__x")) == 'properties["__x"]'
    assert format_path(("properties", "items", 2)) == "properties.items[2]"
    for bad in ("1 + 1", "lower(x)", "'x'", "properties.", "a;b"):
        with pytest.raises(ExpressionError):
            parse_path(bad)


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_format_path_round_trips(keys):
    segments = ("properties", *keys)
    text = format_path(segments)
    assert parse_path(text) == segments
    msg: dict = {}
    node = msg
    for key in segments[:-1]:
        node = node.setdefault(key, {})
    node[segments[-1]] = "found"
    assert compile_expression(text).evaluate(msg) == "found"


# hypothesis: nothing but ExpressionError at compile time, nothing at all at run time ----------

TOKENS = [
    "properties", "context", "traits", "event", "type", ".", "x", "revenue", "[", "]", "(", ")",
    ",", "'s'", '"d"', "1", "2.5", "0", "-", "+", "*", "/", "%", "==", "!=", "<", "<=", ">",
    ">=", " in ", " not ", " and ", " or ", "true", "false", "null", "lower", "round", "if",
    "exists", "coalesce", "concat", "replace", "int", "float", "str", "length", "contains",
    "__class__", ";", "=", ":", "lambda", "\\", "'", '"', " ", "\n", "{", "}", "@",
]  # fmt: skip

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page"]) | JSON,
        "event": st.text(max_size=10) | JSON,
        "properties": st.dictionaries(st.sampled_from(["x", "revenue", "s"]), JSON) | JSON,
        "traits": JSON,
        "context": JSON,
    },
)


def _is_json(value) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join), st.lists(MESSAGES, max_size=3))
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_token_soup(text, messages):
    try:
        e = compile_expression(text)
    except ExpressionError as exc:
        assert exc.column >= 1
        return
    for msg in messages:
        assert _is_json(e.evaluate(msg))


def _expressions():
    atoms = st.sampled_from(
        ["properties.x", "properties.revenue", "properties.s", "event", "type", "traits",
         "context.a[0]", "1", "0", "-2.5", "'s'", "''", "true", "false", "null", "[1, 's']"]
    )  # fmt: skip

    def extend(inner):
        binary = st.tuples(
            inner,
            st.sampled_from(
                ["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "in", "not in", "and", "or"]
            ),  # fmt: skip
            inner,
        ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
        unary = inner.map(lambda a: f"(not {a})") | inner.map(lambda a: f"(-{a})")
        calls = st.tuples(
            st.sampled_from(["lower", "upper", "trim", "length", "int", "float", "str", "round"]),
            inner,
        ).map(lambda t: f"{t[0]}({t[1]})")
        calls2 = st.tuples(
            st.sampled_from(
                ["concat", "coalesce", "contains", "starts_with", "ends_with", "round"]
            ),  # fmt: skip
            inner,
            inner,
        ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
        cond = st.tuples(inner, inner, inner).map(lambda t: f"if({t[0]}, {t[1]}, {t[2]})")
        rep = st.tuples(inner, inner, inner).map(lambda t: f"replace({t[0]}, {t[1]}, {t[2]})")
        return binary | unary | calls | calls2 | cond | rep

    return st.recursive(atoms, extend, max_leaves=10)


@given(_expressions(), st.lists(MESSAGES, min_size=1, max_size=4))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_valid_expressions_never_raise(text, messages):
    e = compile_expression(text)
    for msg in messages:
        before = orjson.dumps(msg, option=orjson.OPT_SORT_KEYS)
        assert _is_json(e.evaluate(msg))
        assert orjson.dumps(msg, option=orjson.OPT_SORT_KEYS) == before  # never mutates
