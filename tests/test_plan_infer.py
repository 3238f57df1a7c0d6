"""Drafting a tracking plan from the events seen: the draft describes the stream, and the
stream it came from passes it with zero violations in every mode."""

import copy
import itertools

import fastjsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.demo import Cast
from plait.govern.plan_infer import infer_plan
from plait.govern.tracking_plan import compile_plans

SOURCES = {"Website": "src_web"}
STRICT = {"unplanned_event": "block", "unplanned_property": "omit", "schema_violation": "block"}
MODES = [{}, STRICT, {"unplanned_property": "omit", "schema_violation": "omit"}]


def compiled(doc: dict, modes: dict):
    return compile_plans([{**doc, "sources": ["Website"], "modes": modes}], SOURCES)


def assert_round_trip(messages: list[dict], doc: dict) -> None:
    for modes in MODES:
        plans = compiled(doc, modes)
        for msg in messages:
            before = copy.deepcopy(msg)
            verdict = plans.check(msg, "src_web")
            assert verdict.violations == [], (modes, msg, verdict.violations)
            assert not verdict.blocked
            assert msg == before  # nothing omitted, nothing recorded


@pytest.fixture(scope="module")
def demo() -> list[dict]:
    messages = list(itertools.islice(Cast(people=600, seed=3).messages(), 21_000))
    assert len(messages) >= 20_000
    return messages


def test_demo_stream_round_trip(demo):
    doc = infer_plan(demo, "demo")
    assert_round_trip(demo, doc)
    # The draft is not vacuous: it knows the demo's events and catches deviations.
    assert {"Order Completed", "Product Viewed", "Signed Up"} <= set(doc["events"])
    order = doc["events"]["Order Completed"]["properties"]
    assert {"order_id", "revenue", "products"} <= set(order["required"])
    assert order["properties"]["currency"] == {"type": "string", "enum": ["USD"]}
    plans = compiled(doc, STRICT)
    bad = next(m for m in demo if m.get("event") == "Order Completed")
    bad = {**bad, "properties": {**bad["properties"], "revenue": "a lot", "coupon": "X"}}
    verdict = plans.check(bad, "src_web")
    assert verdict.blocked
    assert {v.field for v in verdict.violations} == {"properties.revenue", "properties.coupon"}
    assert plans.check({"type": "track", "event": "Made Up"}, "src_web").blocked
    for call in ("identify", "group", "page"):
        assert call in doc


def test_output_is_stable_plain_yaml(demo):
    first = infer_plan(demo[:3000], "demo")
    assert infer_plan(demo[:3000], "demo") == first
    text = yaml.safe_dump(first, sort_keys=False)
    assert yaml.safe_load(text) == first
    assert list(first["events"]) == sorted(first["events"])
    for event in first["events"].values():
        props = event["properties"]["properties"]
        assert list(props) == sorted(props)
        assert event["properties"].get("required", []) == sorted(
            event["properties"].get("required", [])
        )
    assert list(first) == ["id", "name", "sources", "events", "identify", "group", "page"]


def track(properties=None, event="Thing Happened", **extra) -> dict:
    msg = {"type": "track", "event": event, **extra}
    if properties is not None:
        msg["properties"] = properties
    return msg


def schema_of(messages: list[dict], name: str = "Thing Happened", **kwargs) -> dict:
    return infer_plan(messages, **kwargs)["events"][name]["properties"]


def test_types_required_and_nulls():
    schema = schema_of(
        [
            track({"n": 1, "x": 1, "s": "a", "b": True, "always": "y"}),
            track({"n": 2.5, "x": 2, "s": None, "always": "z", "maybe": 1}),
            track({"n": 3, "x": 3, "s": "b", "b": False, "always": "w"}),
        ]
    )
    props = schema["properties"]
    assert props["n"] == {"type": "number"}  # integer and number seen: number
    assert props["x"] == {"type": "integer"}
    assert props["s"] == {"type": ["string", "null"]}
    assert props["b"] == {"type": "boolean"}
    assert schema["required"] == ["always", "n", "x"]  # s was null once, b and maybe missing
    assert schema["type"] == "object"


def test_track_without_properties_makes_everything_optional():
    schema = schema_of([track({"a": 1}), track()])
    assert schema == {"type": "object", "properties": {"a": {"type": "integer"}}}


def test_nested_objects_and_arrays():
    schema = schema_of(
        [
            track({"cart": {"id": "c1", "items": [{"sku": "a", "qty": 1}, {"sku": "b"}]}}),
            track({"cart": {"id": "c2", "items": []}}),
        ]
    )
    cart = schema["properties"]["cart"]
    assert cart["required"] == ["id", "items"]
    items = cart["properties"]["items"]
    assert items["type"] == "array"
    assert items["items"] == {
        "type": "object",
        "required": ["sku"],
        "properties": {"qty": {"type": "integer"}, "sku": {"type": "string"}},
    }
    assert "required" not in items  # an array has no required members of its own


def test_depth_is_bounded():
    deep = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    schema = schema_of([track(deep)], max_depth=2)
    a = schema["properties"]["a"]
    assert a["properties"]["b"] == {"type": "object"}  # deeper than that: anything passes
    doc = infer_plan([track(deep)], max_depth=2)
    assert_round_trip([track({"a": {"b": {"c": "anything"}}})], doc)


def test_enums():
    many = [track({"plan": p, "note": f"n{i}"}) for i, p in enumerate(["free", "pro"] * 20)]
    props = schema_of(many)["properties"]
    assert props["plan"] == {"type": "string", "enum": ["free", "pro"]}
    assert "enum" not in props["note"]  # 40 distinct values
    few = schema_of(many[:6])["properties"]  # too few sightings to call it a list
    assert "enum" not in few["plan"]
    with_null = schema_of([*many, track({"plan": None})])["properties"]["plan"]
    assert with_null == {"type": ["string", "null"], "enum": ["free", "pro", None]}
    mixed = schema_of([*many, track({"plan": 3})])["properties"]["plan"]
    assert "enum" not in mixed
    long = [track({"u": "x" * 61}) for _ in range(40)]
    assert "enum" not in schema_of(long)["properties"]["u"]


def test_sections():
    doc = infer_plan(
        [
            {"type": "identify", "userId": "u", "traits": {"email": "a@b.c", "age": 3}},
            {"type": "identify", "userId": "u", "traits": {"email": "d@e.f"}},
            {"type": "group", "groupId": "g", "traits": {"name": "Acme"}},
            {"type": "page", "name": "Home", "properties": {"path": "/"}},
            {"type": "screen", "name": "Cart"},
            {"type": "alias", "userId": "u", "previousId": "a"},
        ]
    )
    assert doc["events"] == {}
    assert doc["identify"]["traits"]["required"] == ["email"]
    assert doc["identify"]["traits"]["properties"]["age"] == {"type": "integer"}
    assert doc["group"]["traits"]["properties"] == {"name": {"type": "string"}}
    assert doc["page"]["properties"]["required"] == ["path"]
    assert doc["screen"]["properties"] == {"type": "object"}
    assert doc["name"] == "inferred (drafted from 5 messages)"


# Any stream -----------------------------------------------------------------------------------

KEYS = st.sampled_from(["id", "name", "price", "tags", "plan", "x"]) | st.text(max_size=6)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["red", "green", "blue"])
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)
BAGS = st.dictionaries(KEYS, VALUES, max_size=5)


@st.composite
def messages(draw) -> dict:
    call = draw(st.sampled_from(["track", "track", "identify", "group", "page", "screen", "alias"]))
    msg: dict = {"type": call, "messageId": draw(st.uuids()).hex}
    key = {"identify": "traits", "group": "traits"}.get(call, "properties")
    if call == "track":
        names = st.sampled_from(["Order Completed", "Signed Up", "x"]) | st.text(min_size=1)
        msg["event"] = draw(names.filter(str.strip))  # the spec refuses blank names
    if call != "alias" and draw(st.booleans() | st.just(True)):
        msg[key] = draw(BAGS)
    return msg


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=30), st.integers(1, 4))
def test_any_stream_round_trips(stream, min_enum_seen):
    doc = infer_plan(stream, "any", max_depth=3, max_enum=4, min_enum_seen=min_enum_seen)
    yaml.safe_load(yaml.safe_dump(doc, sort_keys=False))  # plain data
    assert_round_trip(stream, doc)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=20), st.lists(messages(), max_size=20))
def test_fast_and_full_validators_agree(seen, other):
    """The fast validator passes exactly what jsonschema finds no error in (formats too)."""
    doc = infer_plan(seen, "any", max_depth=3, max_enum=4, min_enum_seen=1)
    doc["events"]["Signed Up"] = {
        "properties": {
            "type": "object",
            "properties": {
                "x": {"type": "string", "format": "email"},
                "id": {"type": "string", "format": "date"},
                "tags": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "plan": {"type": "string", "pattern": "^[a-z]+$"},
            },
        }
    }
    plan = compiled(doc, {}).plan_for("src_web")
    for msg in other:
        call = msg["type"]
        schema = plan.events.get(msg.get("event")) if call == "track" else plan.sections.get(call)
        if schema is None:
            continue
        data = msg.get(schema.prefix) or {}
        try:
            schema.fast(data)
            fast_ok = True
        except fastjsonschema.JsonSchemaValueException:
            fast_ok = False
        assert fast_ok is not any(True for _ in schema.slow.iter_errors(data)), data
