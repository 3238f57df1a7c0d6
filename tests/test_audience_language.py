"""The audience language (plait.audiences.language) and the checks of a workspace's
definitions (plait.audiences.definitions): every construct of the grammar with the tree it
gives, syntax errors with their exact line and column, the JSON form, the canonical text,
property tests over random trees, and the definition errors naming their field."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.audiences.definitions import compile_definitions
from plait.audiences.language import (
    FIELD_ROOTS,
    TYPES,
    UNITS,
    AccountTrait,
    And,
    AudienceSyntaxError,
    Computed,
    Field,
    InAudience,
    Not,
    Or,
    Performed,
    Selector,
    Trait,
    Window,
    from_json,
    parse,
    parse_filter,
    parse_window,
    to_json,
    to_text,
)
from plait.audiences.language import (
    Test as Check,
)
from plait.store.workspaces import Invalid

# -- good inputs ----------------------------------------------------------------------------


def T(key: str, op: str, value=None) -> Trait:
    return Trait((key,), Check(op, value))


def P(name=None, type="track", count_op="at least", count=1, window=None, where=None):
    return Performed(Selector(type, name), count_op, count, window, where)


def F(*path_and_test) -> Field:
    *path, test = path_and_test
    return Field(tuple(path), test)


GOOD = [
    # trait tests
    ('traits.plan = "pro"', T("plan", "=", "pro")),
    ('traits.plan == "pro"', T("plan", "=", "pro")),
    ('traits.plan != "pro"', T("plan", "!=", "pro")),
    ("traits.age > 30", T("age", ">", 30)),
    ("traits.age >= 30.5", T("age", ">=", 30.5)),
    ("traits.age < -2", T("age", "<", -2)),
    ("traits.age <= 1e3", T("age", "<=", 1000.0)),
    ('traits.name > "m"', T("name", ">", "m")),
    ("traits.vip = true", T("vip", "=", True)),
    ("traits.vip = false", T("vip", "=", False)),
    ('traits.country in ["FR", "DE", "ES"]', T("country", "in", ("FR", "DE", "ES"))),
    ('traits.code in [1, 2.5, "x", true]', T("code", "in", (1, 2.5, "x", True))),
    ('traits.country not in ["FR"]', Not(T("country", "in", ("FR",)))),
    ('traits.email contains "@"', T("email", "contains", "@")),
    ("traits.tags contains 3", T("tags", "contains", 3)),
    ('traits.email starts with "admin"', T("email", "starts_with", "admin")),
    ('traits.email ends with ".fr"', T("email", "ends_with", ".fr")),
    ("traits.email exists", T("email", "exists")),
    ("traits.email not exists", Not(T("email", "exists"))),
    ("traits.joined_at in last 5 days", T("joined_at", "within", Window(5, "day"))),
    ("traits.joined_at in the last 1 day", T("joined_at", "within", Window(1, "day"))),
    ("traits.seen in last 90 minutes", T("seen", "within", Window(90, "minute"))),
    ("traits.seen in last 2 weeks", T("seen", "within", Window(2, "week"))),
    # paths
    ('traits.address.city = "Lyon"', Trait(("address", "city"), Check("=", "Lyon"))),
    ('traits.items[0]["first name"] exists', Trait(("items", 0, "first name"), Check("exists"))),
    ('traits["first name"] = "Ada"', Trait(("first name",), Check("=", "Ada"))),
    ('traits.a = "tab\\tquote\\"\\u00e9"', T("a", "=", 'tab\tquote"é')),
    # computed, account, audience
    ("computed.lifetime_revenue >= 100", Computed("lifetime_revenue", Check(">=", 100))),
    ('computed.categories contains "shoes"', Computed("categories", Check("contains", "shoes"))),
    ('account.traits.plan = "enterprise"', AccountTrait(("plan",), Check("=", "enterprise"))),
    ("account.traits.size.employees > 100", AccountTrait(("size", "employees"), Check(">", 100))),
    ('audience "vip_customers"', InAudience("vip_customers")),
    # performed: selectors
    ('performed "Order Completed"', P("Order Completed")),
    ("performed track", P(None, "track")),
    ('performed track "Signed Up"', P("Signed Up", "track")),
    ('performed page "Pricing"', P("Pricing", "page")),
    ("performed page", P(None, "page")),
    ('performed screen "Home"', P("Home", "screen")),
    ("performed identify", P(None, "identify")),
    ("performed group", P(None, "group")),
    ("performed any", P(None, None)),
    # performed: counts and windows
    ('performed "A" at least 2 times', P("A", count=2)),
    ('performed "A" at most 3 times', P("A", count_op="at most", count=3)),
    ('performed "A" exactly 1 time', P("A", count_op="exactly", count=1)),
    ('performed "A" exactly 0 times', P("A", count_op="exactly", count=0)),
    ('performed "A" in last 30 days', P("A", window=Window(30, "day"))),
    ('performed "A" in the last 30 days', P("A", window=Window(30, "day"))),
    ('performed "A" in last 15 minutes', P("A", window=Window(15, "minute"))),
    ('performed "A" in last 1 minute', P("A", window=Window(1, "minute"))),
    ('performed "A" in last 12 hours', P("A", window=Window(12, "hour"))),
    ('performed "A" in the last 1 hour', P("A", window=Window(1, "hour"))),
    ('performed "A" in last 4 weeks', P("A", window=Window(4, "week"))),
    (
        'performed "A" at least 2 times in last 30 days',
        P("A", count=2, window=Window(30, "day")),
    ),
    # performed: where
    (
        'performed "A" where properties.revenue > 50',
        P("A", where=F("properties", "revenue", Check(">", 50))),
    ),
    (
        'performed page where context.page.path starts with "/x"',
        P(None, "page", where=F("context", "page", "path", Check("starts_with", "/x"))),
    ),
    (
        'performed identify where traits.plan = "pro"',
        P(None, "identify", where=F("traits", "plan", Check("=", "pro"))),
    ),
    (
        'performed "A" where properties.tags not in ["x"]',
        P("A", where=Not(F("properties", "tags", Check("in", ("x",))))),
    ),
    (
        'performed "A" at most 2 times in last 7 days where (properties.a = 1 and '
        "(properties.b = 2 or not properties.c exists))",
        P(
            "A",
            count_op="at most",
            count=2,
            window=Window(7, "day"),
            where=And(
                (
                    F("properties", "a", Check("=", 1)),
                    Or(
                        (
                            F("properties", "b", Check("=", 2)),
                            Not(F("properties", "c", Check("exists"))),
                        )
                    ),
                )
            ),
        ),
    ),
    (
        'performed "A" where (not properties.a = 1)',
        P("A", where=Not(F("properties", "a", Check("=", 1)))),
    ),
    (
        'performed "A" where properties.at in last 3 hours',
        P("A", where=F("properties", "at", Check("within", Window(3, "hour")))),
    ),
    # keywords as path segments, brackets and comments
    ("traits.days = 1", T("days", "=", 1)),
    ('traits["in"] = 1', T("in", "=", 1)),
    ("traits.a = 1 # the rest of the line is a comment", T("a", "=", 1)),
]


@pytest.mark.parametrize("text,tree", GOOD, ids=[g[0][:60] for g in GOOD])
def test_good_inputs_give_their_trees(text, tree):
    assert parse(text) == tree
    assert repr(parse(text)) == repr(tree)  # 1 vs 1.0 vs true: the types too


def test_and_binds_tighter_than_or_and_not_tightest():
    a, b, c = T("a", "=", 1), T("b", "=", 2), T("c", "=", 3)
    assert parse("traits.a = 1 or traits.b = 2 and traits.c = 3") == Or((a, And((b, c))))
    assert parse("traits.a = 1 and traits.b = 2 or traits.c = 3") == Or((And((a, b)), c))
    assert parse("(traits.a = 1 or traits.b = 2) and traits.c = 3") == And((Or((a, b)), c))
    assert parse("not traits.a = 1 and traits.b = 2") == And((Not(a), b))
    assert parse("not (traits.a = 1 and traits.b = 2)") == Not(And((a, b)))
    assert parse("not not traits.a = 1") == Not(Not(a))
    assert parse("traits.a = 1 and traits.b = 2 and traits.c = 3") == And((a, b, c))
    assert parse("traits.a = 1 or traits.b = 2 or traits.c = 3") == Or((a, b, c))
    assert parse("((traits.a = 1))") == a


def test_a_where_takes_one_condition_and_and_returns_to_the_profile():
    # after one event condition, `and traits.x` is the profile's trait again
    tree = parse('performed "A" where traits.plan = "pro" and traits.plan = "free"')
    assert tree == And(
        (P("A", where=F("traits", "plan", Check("=", "pro"))), T("plan", "=", "free"))
    )
    tree = parse('performed "A" where (traits.plan = "pro" and traits.x exists) or audience "b"')
    assert tree == Or(
        (
            P(
                "A",
                where=And(
                    (F("traits", "plan", Check("=", "pro")), F("traits", "x", Check("exists")))
                ),
            ),
            InAudience("b"),
        )
    )
    # `not performed` negates the whole behaviour
    assert parse('not performed "A" in last 30 days') == Not(P("A", window=Window(30, "day")))


def test_multi_line_text_with_comments():
    text = """
        # people who bought twice this month
        performed "Order Completed" at least 2 times   # any amount
            in last 30 days
            where properties.revenue > 50
        and (traits.country in ["FR",
                                "DE"]   # Europe only
             or account.traits.plan = "enterprise")
    """
    assert parse(text) == And(
        (
            P(
                "Order Completed",
                count=2,
                window=Window(30, "day"),
                where=F("properties", "revenue", Check(">", 50)),
            ),
            Or(
                (
                    T("country", "in", ("FR", "DE")),
                    AccountTrait(("plan",), Check("=", "enterprise")),
                )
            ),
        )
    )


def test_the_module_docstring_examples_parse():
    from plait.audiences import language

    lines = [ln.strip() for ln in language.__doc__.split("\n\n")[1].splitlines()]
    assert len(lines) == 6
    for line in lines:
        tree = parse(line)
        assert parse(to_text(tree)) == tree


def test_parse_filter_and_parse_window():
    assert parse_filter("properties.revenue > 50") == F("properties", "revenue", Check(">", 50))
    assert parse_filter('properties.a = 1 or context.ip = "x"') == Or(
        (F("properties", "a", Check("=", 1)), F("context", "ip", Check("=", "x")))
    )
    assert parse_filter("not (properties.a exists and traits.b exists)") == Not(
        And((F("properties", "a", Check("exists")), F("traits", "b", Check("exists"))))
    )
    assert parse_window("30 days") == Window(30, "day")
    assert parse_window("1 hour") == Window(1, "hour")
    assert parse_window("2 weeks").ms == 14 * 86_400_000
    assert parse_window("5 minutes").ms == 300_000
    with pytest.raises(AudienceSyntaxError):
        parse_filter('traits.a = 1 and audience "x"')  # an event filter has no audiences
    with pytest.raises(AudienceSyntaxError):
        parse_filter("computed.a = 1")
    for bad in ("30 fortnights", "0 days", "days", "30", "-1 days"):
        with pytest.raises(AudienceSyntaxError):
            parse_window(bad)


# -- bad inputs -----------------------------------------------------------------------------

BAD = [
    # (text, line, column, a fragment of the message)
    ("traits.a ~ 1", 1, 10, "unexpected character '~'"),
    ("traits.a = 1 and", 1, 17, "unexpected end of text"),
    ("traits.a = ", 1, 12, "unexpected end of text"),
    ("traits.a", 1, 9, "unexpected end of text"),
    ("traits.a = 1 traits.b = 2", 1, 14, "unexpected 'traits'"),
    ("foo.a = 1", 1, 1, "a condition reads traits.<key>"),
    ("traits = 1", 1, 1, "a condition reads traits.<key>"),
    ("computed.a.b = 1", 1, 1, "a condition reads traits.<key>"),
    ("account.plan = 1", 1, 1, "a condition reads traits.<key>"),
    ("traits[0] = 1", 1, 1, "a condition reads traits.<key>"),
    ("traits.a in []", 1, 14, "unexpected ']'"),
    ("traits.a in last 0 days", 1, 18, "a window of zero"),
    ("traits.a in last 5 dayss", 1, 20, "unexpected 'dayss'"),
    ("traits.a > true", 1, 10, "not booleans"),
    ("traits.a starts with 1", 1, 22, "unexpected '1'"),
    ('traits.a = "\\q"', 1, 12, "unknown escape"),
    ("traits.a = 99999999999999999999", 1, 12, "outside 64 bits"),
    ("traits.a = 1e400", 1, 12, "not finite"),
    ("traits.a = é", 1, 12, "unexpected character 'é'"),
    ("traits.a = 'single'", 1, 12, "unexpected character"),
    ('performed "A" at least two times', 1, 24, "unexpected 'two'"),
    ('performed "A" at least 2000000000 times', 1, 24, "a number too large"),
    ('performed any "A"', 1, 15, "unexpected"),
    ('performed "A" where computed.b = 2', 1, 21, "an event condition reads"),
    ('performed "A" where (properties.a = 1 and audience "x")', 1, 52, "unexpected '\"x\"'"),
    ('performed "A" in last 3 years', 1, 25, "unexpected 'years'"),
    ("(traits.a = 1", 1, 14, "unexpected end of text"),
    ("traits.a = 1)", 1, 13, "unexpected ')'"),
    ("audience vip", 1, 10, "unexpected 'vip'"),
    # errors past the first line
    ("traits.a = 1 and\n  traits.b ~ 2", 2, 12, "unexpected character '~'"),
    ("traits.a =\n  and", 2, 3, "unexpected 'and'"),
    ('traits.a = 1 and\nperformed "x" at least two times', 2, 24, "unexpected 'two'"),
    ("# a comment\ntraits.a = 1\nor\n  foo.b = 2", 4, 3, "a condition reads"),
    ("traits.a = 1 and\n\n   traits.b in last 0 days", 3, 21, "a window of zero"),
    ("traits.a = 1 or\n", 2, 1, "unexpected end of text"),
]


@pytest.mark.parametrize("text,line,column,fragment", BAD, ids=[b[0][:50] for b in BAD])
def test_bad_inputs_say_where(text, line, column, fragment):
    with pytest.raises(AudienceSyntaxError) as info:
        parse(text)
    assert (info.value.line, info.value.column) == (line, column), info.value.message
    assert fragment in info.value.message
    if "unexpected end" not in fragment and "reads" not in fragment:
        assert f"line {line}, column {column}" in info.value.message


def test_empty_and_too_long_texts():
    for text in ("", "   ", "\n# only a comment\n"):
        with pytest.raises(AudienceSyntaxError):
            parse(text)
    with pytest.raises(AudienceSyntaxError, match="longer than"):
        parse("traits.a = 1 or " * 2000 + "traits.a = 1")


def test_contains_a_boolean_says_where():
    with pytest.raises(AudienceSyntaxError) as info:
        parse("traits.a = 1 and\n  traits.b contains true")
    assert (info.value.line, info.value.column) == (2, 21)  # at the boolean


def test_deep_nesting_is_a_syntax_error():
    text = "not " * 1000 + "traits.a = 1"
    assert len(text) < 20_000
    with pytest.raises(Invalid):
        compile_definitions(None, [{"key": "a", "definition": text}])


def test_moderate_nesting_parses():
    tree = parse("not " * 300 + "traits.a = 1")
    for _ in range(300):
        tree = tree.item
    assert tree == T("a", "=", 1)
    text = "(" * 1000 + "traits.a = 1" + ")" * 1000
    assert parse(text) == T("a", "=", 1)


def test_contains_a_boolean_is_refused():
    with pytest.raises(AudienceSyntaxError, match='expected a "string" or a number'):
        parse("traits.b contains true")


# -- the JSON form --------------------------------------------------------------------------


@pytest.mark.parametrize("text,tree", GOOD, ids=[g[0][:60] for g in GOOD])
def test_json_form_round_trips(text, tree):
    doc = to_json(tree)
    assert from_json(doc) == tree
    wire = orjson.loads(orjson.dumps(doc))  # and through JSON text
    assert repr(from_json(wire)) == repr(tree)


def test_json_form_of_each_construct():
    assert to_json(parse('traits.country in ["FR", "DE"]')) == {
        "trait": "country",
        "op": "in",
        "value": ["FR", "DE"],
    }
    assert to_json(parse("traits.a.b[0] exists")) == {"trait": "a.b[0]", "op": "exists"}
    assert to_json(parse("traits.t in last 5 days")) == {
        "trait": "t",
        "op": "within",
        "value": {"amount": 5, "unit": "day"},
    }
    assert to_json(parse('traits.e starts with "x"')) == {
        "trait": "e",
        "op": "starts_with",
        "value": "x",
    }
    assert to_json(parse("computed.n >= 2")) == {"computed": "n", "op": ">=", "value": 2}
    assert to_json(parse("account.traits.x != 1")) == {"account_trait": "x", "op": "!=", "value": 1}
    assert to_json(parse('audience "k"')) == {"audience": "k"}
    assert to_json(parse("not traits.a = 1 or traits.b = 2 and traits.c = 3")) == {
        "or": [
            {"not": {"trait": "a", "op": "=", "value": 1}},
            {"and": [{"trait": "b", "op": "=", "value": 2}, {"trait": "c", "op": "=", "value": 3}]},
        ]
    }
    assert to_json(
        parse(
            'performed page "Home" at most 3 times in last 2 weeks '
            "where (properties.a = 1 and not context.b exists)"
        )
    ) == {
        "performed": {
            "type": "page",
            "name": "Home",
            "count": {"op": "at most", "value": 3},
            "window": {"amount": 2, "unit": "week"},
            "where": {
                "and": [
                    {"field": "properties.a", "op": "=", "value": 1},
                    {"not": {"field": "context.b", "op": "exists"}},
                ]
            },
        }
    }
    assert to_json(parse("performed any")) == {
        "performed": {"type": "any", "count": {"op": "at least", "value": 1}}
    }


def test_json_form_defaults_and_spellings():
    assert from_json({"performed": {"name": "A"}}) == P("A")
    assert from_json({"performed": {"type": "page"}}) == P(None, "page")
    assert from_json({"performed": {"type": "any"}}) == P(None, None)
    assert from_json({"performed": {"name": "A", "window": {"amount": 3, "unit": "days"}}}) == P(
        "A", window=Window(3, "day")
    )
    assert from_json({"trait": "a", "op": "within", "value": {"amount": 1, "unit": "hours"}}) == (
        T("a", "within", Window(1, "hour"))
    )


JSON_ERRORS = [
    # (document, the field the message starts with)
    ([], "definition"),
    ({}, "definition"),
    ({"foo": 1}, "definition"),
    ({"and": []}, "definition.and"),
    ({"or": "x"}, "definition.or"),
    ({"and": [{"trait": "a", "op": "exists"}, {"trait": "b", "op": "~"}]}, "definition.and[1].op"),
    ({"not": {"or": [{"trait": "a", "op": "exists"}, 5]}}, "definition.not.or[1]"),
    ({"audience": ""}, "definition.audience"),
    ({"audience": 3}, "definition.audience"),
    ({"computed": 3, "op": "exists"}, "definition.computed"),
    ({"trait": "", "op": "exists"}, "definition.trait"),
    ({"trait": "a b", "op": "exists"}, "definition.trait"),
    ({"account_trait": 7, "op": "exists"}, "definition.account_trait"),
    ({"trait": [], "op": "exists"}, "definition.trait"),
    ({"trait": [0, "a"], "op": "exists"}, "definition.trait"),
    ({"trait": ["a", -1], "op": "exists"}, "definition.trait"),
    ({"trait": ["a", True], "op": "exists"}, "definition.trait"),
    ({"trait": "a"}, "definition.op"),
    ({"field": "properties.a", "op": "exists"}, "definition.field"),
    (
        {"and": [{"trait": "a", "op": "exists"}, {"field": "context.x", "op": "exists"}]},
        "definition.and[1].field",
    ),
    ({"trait": "a", "op": "in", "value": "x"}, "definition.value"),
    ({"trait": "a", "op": "in", "value": []}, "definition.value"),
    ({"trait": "a", "op": "in", "value": [1, {"x": 1}]}, "definition.value[1]"),
    ({"trait": "a", "op": "=", "value": None}, "definition.value"),
    ({"trait": "a", "op": "=", "value": [1]}, "definition.value"),
    ({"trait": "a", "op": "=", "value": 2**64}, "definition.value"),
    ({"trait": "a", "op": ">", "value": True}, "definition.value"),
    ({"trait": "a", "op": "contains", "value": False}, "definition.value"),
    ({"trait": "a", "op": "starts_with", "value": 1}, "definition.value"),
    ({"trait": "a", "op": "within", "value": "5 days"}, "definition.value"),
    (
        {"trait": "a", "op": "within", "value": {"amount": 0, "unit": "day"}},
        "definition.value.amount",
    ),
    (
        {"trait": "a", "op": "within", "value": {"amount": 1, "unit": "year"}},
        "definition.value.unit",
    ),
    ({"performed": 5}, "definition.performed"),
    ({"performed": {"type": "bogus"}}, "definition.performed.type"),
    ({"performed": {"type": "any", "name": "x"}}, "definition.performed.name"),
    ({"performed": {"name": 5}}, "definition.performed.name"),
    ({"performed": {"count": {"op": "more than", "value": 1}}}, "definition.performed.count.op"),
    (
        {"performed": {"count": {"op": "at least", "value": True}}},
        "definition.performed.count.value",
    ),
    ({"performed": {"count": {"op": "at least", "value": -1}}}, "definition.performed.count.value"),
    (
        {"performed": {"window": {"amount": 1.5, "unit": "day"}}},
        "definition.performed.window.amount",
    ),
    ({"performed": {"where": {"trait": "a", "op": "exists"}}}, "definition.performed.where"),
    (
        {
            "performed": {
                "where": {"and": [{"field": "properties.a", "op": "exists"}, {"audience": "x"}]}
            }
        },
        "definition.performed.where",
    ),
    (
        {"performed": {"where": {"field": "a.b", "op": "exists"}}},
        "definition.performed.where.field",
    ),
    (
        {"performed": {"where": {"field": "properties", "op": "exists"}}},
        "definition.performed.where.field",
    ),
    (
        {"performed": {"where": {"field": "properties.a", "op": "nope"}}},
        "definition.performed.where.op",
    ),
]


@pytest.mark.parametrize("doc,field", JSON_ERRORS, ids=[repr(d)[:60] for d, _ in JSON_ERRORS])
def test_json_errors_name_the_field(doc, field):
    with pytest.raises(AudienceSyntaxError) as info:
        from_json(doc)
    assert info.value.message.startswith(field + ":"), info.value.message
    assert info.value.field is not None and field.startswith(info.value.field)


def test_json_errors_start_at_the_given_field():
    with pytest.raises(AudienceSyntaxError) as info:
        from_json({"or": [{"trait": "a", "op": "exists"}, {"x": 1}]}, "audiences[3].definition")
    assert info.value.message.startswith("audiences[3].definition.or[1]:")


@pytest.mark.parametrize(
    "text,path",
    [
        ('traits["first name"] = "Ada"', ["first name"]),
        ('traits["in"] = 1', ["in"]),
        ("traits.__x exists", ["__x"]),
        ('account.traits["or"][0] exists', ["or", 0]),
    ],
)
def test_json_form_of_trait_keys_that_are_not_plain_names(text, path):
    # found by this file: to_json raised ValueError (format_path) for these keys
    tree = parse(text)
    doc = to_json(tree)
    assert doc.get("trait", doc.get("account_trait")) == path  # the segments, as a list
    assert from_json(orjson.loads(orjson.dumps(doc))) == tree


def test_json_form_of_large_floats():
    # found by this file: the text accepted 1e300, from_json refused it
    tree = parse("traits.a < 1e300")
    assert from_json(to_json(tree)) == tree
    with pytest.raises(AudienceSyntaxError, match="not finite"):
        parse("traits.a < 1e400")
    with pytest.raises(AudienceSyntaxError):
        from_json({"trait": "a", "op": "<", "value": float("inf")})


def test_a_field_condition_outside_a_where_is_refused():
    # found by this file: it compiled, and evaluating it raised TypeError
    with pytest.raises(Invalid) as info:
        compile_definitions(
            None, [{"key": "a", "definition": {"field": "properties.a", "op": "exists"}}]
        )
    assert info.value.field == "audiences[0].definition"
    assert "definition.field" in info.value.message


# -- the canonical text ---------------------------------------------------------------------


@pytest.mark.parametrize("text,tree", GOOD, ids=[g[0][:60] for g in GOOD])
def test_canonical_text_round_trips(text, tree):
    canonical = to_text(tree)
    assert repr(parse(canonical)) == repr(tree)
    assert to_text(parse(canonical)) == canonical  # and is a fixed point


def test_canonical_text_examples():
    assert to_text(parse('traits.plan == "pro"')) == 'traits.plan = "pro"'
    assert to_text(parse('traits.c not in ["FR","DE"]')) == 'not traits.c in ["FR", "DE"]'
    assert to_text(parse('performed "A"')) == 'performed "A" at least 1 times'
    assert (
        to_text(
            parse('performed page "P" exactly 1 time in the last 1 hour where properties.a > 1')
        )
        == 'performed page "P" exactly 1 times in last 1 hours where (properties.a > 1)'
    )
    assert to_text(parse("performed any")) == "performed any at least 1 times"
    assert to_text(parse('traits["in"] = 1')) == 'traits["in"] = 1'
    assert to_text(parse('traits["first name"].x[2] exists')) == 'traits["first name"].x[2] exists'
    assert (
        to_text(parse("traits.a = 1 or traits.b = 2 and not traits.c = 3"))
        == "traits.a = 1 or (traits.b = 2 and not traits.c = 3)"
    )
    assert (
        to_text(parse('audience "vip" and computed.n >= 1.5'))
        == 'audience "vip" and computed.n >= 1.5'
    )


# -- property tests over random trees -------------------------------------------------------

NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
ANY_KEY = st.one_of(
    NAME,
    st.sampled_from(["in", "or", "not", "exists", "performed", "days", "first name", "", "__x"]),
    st.text(max_size=6),
)
SEGMENT = st.one_of(ANY_KEY, st.integers(0, 1000))
INT64 = st.integers(-(2**63), 2**63 - 1)


def checks():
    number = st.one_of(INT64, st.floats(allow_nan=False, allow_infinity=False))
    scalar = st.one_of(st.text(max_size=8), number, st.booleans())
    window = st.builds(Window, st.integers(1, 1_000_000_000), st.sampled_from(list(UNITS)))
    return st.one_of(
        st.builds(Check, st.sampled_from(["=", "!="]), scalar),
        st.builds(
            Check, st.sampled_from([">", ">=", "<", "<="]), st.one_of(st.text(max_size=8), number)
        ),
        st.builds(Check, st.just("in"), st.lists(scalar, min_size=1, max_size=4).map(tuple)),
        st.builds(Check, st.just("contains"), st.one_of(st.text(max_size=8), number)),
        st.builds(Check, st.sampled_from(["starts_with", "ends_with"]), st.text(max_size=8)),
        st.just(Check("exists")),
        st.builds(Check, st.just("within"), window),
    )


def paths(first):
    return st.tuples(first, st.lists(SEGMENT, max_size=3)).map(lambda t: (t[0], *t[1]))


def combine(children):
    items = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(st.builds(And, items), st.builds(Or, items), st.builds(Not, children))


def trees():
    key = ANY_KEY
    test = checks()
    field = st.builds(
        Field,
        st.tuples(st.sampled_from(FIELD_ROOTS), st.lists(SEGMENT, min_size=1, max_size=3)).map(
            lambda t: (t[0], *t[1])
        ),
        test,
    )
    where = st.recursive(field, combine, max_leaves=4)
    selector = st.one_of(
        st.just(Selector(None, None)),
        st.builds(Selector, st.sampled_from(TYPES), st.none() | st.text(max_size=8)),
    )
    performed = st.builds(
        Performed,
        selector,
        st.sampled_from(["at least", "at most", "exactly"]),
        st.integers(0, 1_000_000_000),
        st.none() | st.builds(Window, st.integers(1, 1_000_000_000), st.sampled_from(list(UNITS))),
        st.none() | where,
    )
    leaf = st.one_of(
        st.builds(Trait, paths(key), test),
        st.builds(AccountTrait, paths(key), test),
        st.builds(Computed, st.text(min_size=1, max_size=8), test),
        st.builds(InAudience, st.text(min_size=1, max_size=8)),
        performed,
    )
    return st.recursive(leaf, combine, max_leaves=6)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(trees())
def test_random_trees_survive_the_canonical_text(tree):
    text = to_text(tree)
    back = parse(text)
    assert back == tree, text
    assert repr(back) == repr(tree), text
    assert to_text(back) == text


@PROPERTY
@given(trees())
def test_random_trees_survive_the_json_form(tree):
    doc = to_json(tree)
    assert from_json(doc) == tree
    back = from_json(orjson.loads(orjson.dumps(doc)))
    assert repr(back) == repr(tree)
    assert repr(parse(to_text(back))) == repr(tree)


# -- a workspace's definitions --------------------------------------------------------------


def invalid(traits, audiences) -> Invalid:
    with pytest.raises(Invalid) as info:
        compile_definitions(traits, audiences)
    return info.value


ORDERS = {"key": "orders", "kind": "count", "event": "Order Completed"}
DEFINITION_ERRORS = [
    # (computed traits, audiences, field, a fragment of the message)
    (
        [{"key": "Bad-Key", "kind": "count", "event": "E"}],
        [],
        "computed_traits[0].key",
        "snake_case",
    ),
    (
        [ORDERS, {"key": "9x", "kind": "count", "event": "E"}],
        [],
        "computed_traits[1].key",
        "snake_case",
    ),
    ([ORDERS, dict(ORDERS)], [], "computed_traits[1].key", "defined twice"),
    (
        [{"key": "x", "kind": "median", "event": "E"}],
        [],
        "computed_traits[0].kind",
        "must be one of",
    ),
    ([{"key": "x", "event": "E"}], [], "computed_traits[0].kind", "must be one of"),
    (
        [{"key": "x", "kind": "sum", "event": "E"}],
        [],
        "computed_traits[0].property",
        "reads a property",
    ),
    (
        [ORDERS, {"key": "x", "kind": "most_frequent", "type": "page"}],
        [],
        "computed_traits[1].property",
        "reads a property",
    ),
    (
        [{"key": "x", "kind": "max", "event": "E", "property": "a b"}],
        [],
        "computed_traits[0].property",
        "",
    ),
    (
        [{"key": "x", "kind": "count", "event": "E", "window": "30 fortnights"}],
        [],
        "computed_traits[0].window",
        "30 days",
    ),
    (
        [{"key": "x", "kind": "count", "event": "E", "window": "0 days"}],
        [],
        "computed_traits[0].window",
        "zero",
    ),
    (
        [{"key": "x", "kind": "count", "event": "E", "where": "properties.a ="}],
        [],
        "computed_traits[0].where",
        "",
    ),
    ([{"key": "x", "kind": "count"}], [], "computed_traits[0].event", "name the event"),
    (
        [{"key": "x", "kind": "count", "type": "page", "event": "E"}],
        [],
        "computed_traits[0].event",
        "",
    ),
    ([{"key": "x", "kind": "count", "type": "alias"}], [], "computed_traits[0].type", ""),
    (
        [{"key": "x", "kind": "count", "type": "any", "name": "P"}],
        [],
        "computed_traits[0].name",
        "",
    ),
    (
        [{"key": "x", "kind": "count", "event": "E", "emit": "both"}],
        [],
        "computed_traits[0].emit",
        "",
    ),
    ([{"key": "x", "kind": "sql", "sql": ""}], [], "computed_traits[0].sql", ""),
    ([{"key": "x", "kind": "sql", "sql": "DROP TABLE events"}], [], "computed_traits[0].sql", ""),
    (
        [{"key": "x", "kind": "sql", "sql": "SELECT 1", "schedule": "often"}],
        [],
        "computed_traits[0].schedule",
        "",
    ),
    (["count"], [], "computed_traits[0]", "mapping"),
    ({"orders": ORDERS}, [], "computed_traits", "list"),
    ([], [{"key": "A", "definition": "traits.a exists"}], "audiences[0].key", "snake_case"),
    (
        [],
        [
            {"key": "a", "definition": "traits.a exists"},
            {"key": "a", "definition": "traits.b exists"},
        ],
        "audiences[1].key",
        "defined twice",
    ),
    (
        [],
        [{"key": "a", "definition": "traits.a ~ 1"}],
        "audiences[0].definition",
        "line 1, column 10",
    ),
    ([], [{"key": "a", "definition": {"trait": "a", "op": "~"}}], "audiences[0].definition", "op"),
    ([], [{"key": "a", "definition": 5}], "audiences[0].definition", ""),
    ([], [{"key": "a"}], "audiences[0].definition", ""),
    ([], [{"key": "a", "definition": "traits.a exists", "name": ""}], "audiences[0].name", ""),
    ([], [{"key": "a", "definition": "traits.a exists", "emit": "email"}], "audiences[0].emit", ""),
    (
        [],
        [
            {"key": "a", "definition": "traits.a exists"},
            {"key": "b", "definition": 'audience "nope"'},
        ],
        "audiences[1].definition",
        "no audience 'nope'",
    ),
    (
        [ORDERS],
        [{"key": "a", "definition": "computed.orders > 1 and computed.revenue > 1"}],
        "audiences[0].definition",
        "no computed trait 'revenue'",
    ),
    ([], [{"key": "a", "definition": 'audience "a"'}], "audiences[0].definition", "cycle: a -> a"),
    (
        [],
        [
            {"key": "x", "definition": "traits.a exists"},
            {"key": "a", "definition": 'audience "x" and audience "b"'},
            {"key": "b", "definition": 'audience "c"'},
            {"key": "c", "definition": 'not audience "a"'},
        ],
        "audiences[1].definition",
        "cycle: a -> b -> c -> a",
    ),
]


@pytest.mark.parametrize(
    "traits,audiences,field,fragment",
    DEFINITION_ERRORS,
    ids=[f"{i}-{e[2]}" for i, e in enumerate(DEFINITION_ERRORS)],
)
def test_definition_errors_name_the_field(traits, audiences, field, fragment):
    error = invalid(traits, audiences)
    assert error.field == field, str(error)
    assert fragment in error.message
    assert str(error).startswith(field + ": ")


def test_good_definitions_compile():
    defs = compile_definitions(
        [
            ORDERS,
            {"key": "revenue", "kind": "sum", "event": "Order Completed", "property": "revenue"},
            {"key": "plan", "kind": "last", "type": "identify", "property": "traits.plan"},
            {
                "key": "pages",
                "kind": "count",
                "type": "page",
                "name": "Pricing",
                "window": "7 days",
                "where": 'properties.path starts with "/p"',
            },
            {"key": "seen", "kind": "days_since_last", "type": "any"},
            {"key": "big", "kind": "sql", "sql": "SELECT 'p' AS profile_id, 1 AS value"},
        ],
        [
            {"key": "b", "definition": 'audience "a" and computed.orders >= 2'},
            {
                "key": "a",
                "name": "Buyers",
                "definition": {"computed": "revenue", "op": ">", "value": 1},
            },
        ],
    )
    assert list(defs.traits) == ["orders", "revenue", "plan", "pages", "seen", "big"]
    assert defs.traits["revenue"].path == ("properties", "revenue")
    assert defs.traits["plan"].path == ("traits", "plan")
    assert defs.traits["pages"].window == Window(7, "day")
    assert defs.traits["pages"].behaviour.selector == Selector("page", "Pricing")
    assert defs.traits["seen"].behaviour.selector == Selector(None, None)
    assert defs.traits["big"].schedule_ms == 3_600_000
    assert set(defs.event_traits) == {"orders", "revenue", "plan", "pages", "seen"}
    assert defs.audiences["a"].name == "Buyers" and defs.audiences["b"].name == "b"
    assert defs.audiences["b"].text == 'audience "a" and computed.orders >= 2'
    assert defs.closure(["b"]) == (["b", "a"], ["revenue", "orders"])
    assert re.fullmatch(r"[0-9a-f]{16}", defs.fingerprints["audience:b"])
    # a fingerprint follows the meaning, not the spelling
    again = compile_definitions(
        [
            ORDERS,
            {"key": "revenue", "kind": "sum", "event": "Order Completed", "property": "revenue"},
        ],
        [
            {"key": "b", "definition": 'audience "a" and computed.orders >= 2'},
            {"key": "a", "definition": "computed.revenue > 1"},
        ],
    )
    assert again.fingerprints["audience:b"] == defs.fingerprints["audience:b"]


def test_a_json_condition_holds_one_kind():
    with pytest.raises(AudienceSyntaxError, match="one condition per object"):
        from_json({"and": [{"audience": "a"}], "or": [{"audience": "b"}]})
