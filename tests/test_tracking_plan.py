"""Tracking plans: Segment Protocols' violations, modes, context.protocols and
"Violation Generated" events, configuration errors and naming standards."""

import copy

import fastjsonschema
import pytest

from plait.govern.naming import check_naming, lint_plan
from plait.govern.tracking_plan import compile_plans, violation_event
from plait.store.workspaces import Invalid

SOURCES = {
    "Website": "src_web",
    "Server": "src_srv",
    "App": "src_app",
    "Protocols Violations": "src_pv",
    "Alerts": "src_alerts",
}

ORDER = {
    "type": "object",
    "required": ["order_id", "revenue"],
    "properties": {
        "order_id": {"type": "string"},
        "revenue": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["USD", "EUR"]},
        "email": {"type": "string", "format": "email", "pii": "email"},
        "products": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"sku": {"type": "string"}, "price": {"type": "number"}},
            },
        },
        "shipping": {
            "type": "object",
            "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "additionalProperties": False,
        },
    },
}


def plan(**overrides) -> dict:
    doc = {
        "id": "main",
        "name": "Main plan",
        "sources": ["Website", "Server"],
        "events": {"Order Completed": {"description": "A purchase", "properties": ORDER}},
        "identify": {
            "traits": {
                "type": "object",
                "required": ["email"],
                "properties": {
                    "email": {"type": "string", "pii": "email"},
                    "plan": {"type": "string", "enum": ["free", "pro"]},
                },
            }
        },
        "group": {"traits": {"type": "object", "properties": {"employees": {"type": "integer"}}}},
        "page": {
            "properties": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            }
        },
        "screen": {"properties": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }
    doc.update(overrides)
    return doc


def order(**properties) -> dict:
    props = {"order_id": "o-1", "revenue": 30.5, "currency": "USD"}
    props.update(properties)
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m-1",
        "timestamp": "2026-01-02T03:04:05.000Z",
        "properties": props,
        "context": {"library": {"name": "analytics.js", "version": "1"}},
    }


def check(msg: dict, source: str = "src_web", **overrides):
    return compile_plans([plan(**overrides)], SOURCES).check(msg, source)


def by_field(verdict) -> dict:
    return {v.field: v for v in verdict.violations}


# The valid path -------------------------------------------------------------------------------


def test_valid_message_passes_untouched():
    msg = order(products=[{"sku": "a", "price": 2}], shipping={"zip": "12345"})
    before = copy.deepcopy(msg)
    verdict = check(msg, modes={"schema_violation": "block", "unplanned_property": "omit"})
    assert not verdict.blocked and verdict.violations == [] and verdict.omitted == []
    assert msg == before  # no context.protocols on a clean message


def test_no_plan_for_the_source():
    plans = compile_plans([plan()], SOURCES)
    assert plans.check(order(revenue="x"), "src_app") is None
    assert compile_plans(None, SOURCES).check(order(), "src_web") is None


def test_sources_by_id_and_alias_passes():
    plans = compile_plans([plan(sources=["src_app"])], SOURCES)
    verdict = plans.check({"type": "alias", "userId": "u", "previousId": "a"}, "src_app")
    assert verdict is not None and verdict.violations == [] and not verdict.blocked


# Every mode x kind ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["allow", "block"])
def test_unplanned_event(mode):
    msg = {"type": "track", "event": "Coupon Applied", "properties": {"code": "X"}}
    verdict = check(msg, modes={"unplanned_event": mode})
    [v] = verdict.violations
    assert (v.type, v.field, v.kind) == ("Unplanned Event", "event", "unplanned_event")
    assert v.action == {"allow": "allowed", "block": "blocked"}[mode]
    assert verdict.blocked is (mode == "block")
    assert msg["properties"] == {"code": "X"}
    assert msg["context"]["protocols"]["violations"][0]["type"] == "Unplanned Event"


@pytest.mark.parametrize("mode", ["allow", "omit"])
def test_unplanned_property(mode):
    msg = order(coupon="SPRING", affiliate="x")
    verdict = check(msg, modes={"unplanned_property": mode})
    assert not verdict.blocked
    found = by_field(verdict)
    assert set(found) == {"properties.affiliate", "properties.coupon"}
    assert {v.type for v in found.values()} == {"Unplanned Property"}
    assert {v.kind for v in found.values()} == {"unplanned_property"}
    protocols = msg["context"]["protocols"]
    assert protocols["sourceId"] == "src_web"
    assert {x["field"] for x in protocols["violations"]} == set(found)
    if mode == "omit":
        assert "coupon" not in msg["properties"] and "affiliate" not in msg["properties"]
        assert protocols["omitted"] == ["properties.affiliate", "properties.coupon"]
        assert verdict.omitted == ["properties.affiliate", "properties.coupon"]
        assert {v.action for v in found.values()} == {"omitted"}
    else:
        assert msg["properties"]["coupon"] == "SPRING" and "omitted" not in protocols
        assert {v.action for v in found.values()} == {"allowed"}
    assert msg["properties"]["order_id"] == "o-1"


@pytest.mark.parametrize("mode", ["allow", "omit", "block"])
def test_schema_violation(mode):
    msg = order(revenue=-5, currency="GBP")
    verdict = check(msg, modes={"schema_violation": mode})
    found = by_field(verdict)
    assert set(found) == {"properties.revenue", "properties.currency"}
    assert {v.kind for v in found.values()} == {"schema_violation"}
    assert verdict.blocked is (mode == "block")
    protocols = msg["context"]["protocols"]
    expected_action = {"allow": "allowed", "omit": "omitted", "block": "blocked"}[mode]
    assert {v.action for v in found.values()} == {expected_action}
    if mode == "omit":
        assert "revenue" not in msg["properties"] and "currency" not in msg["properties"]
        assert protocols["omitted_on_violation"] == ["properties.revenue", "properties.currency"]
        assert sorted(verdict.omitted) == ["properties.currency", "properties.revenue"]
    else:  # allowed data flows as sent; a blocked event is not altered (it goes nowhere)
        assert msg["properties"]["revenue"] == -5 and "omitted_on_violation" not in protocols
        assert verdict.omitted == []


def test_blocked_event_is_not_altered_and_every_violation_says_blocked():
    msg = order(revenue="lots", coupon="X")
    verdict = check(msg, modes={"unplanned_property": "omit", "schema_violation": "block"})
    assert verdict.blocked
    assert msg["properties"]["coupon"] == "X" and msg["properties"]["revenue"] == "lots"
    assert {v.action for v in verdict.violations} == {"blocked"}
    assert verdict.omitted == []


def test_unplanned_properties_are_omitted_before_validation():
    # The schema forbids more than 3 properties: once the unplanned one is omitted it passes.
    schema = dict(ORDER, maxProperties=3)
    msg = order(coupon="X")
    verdict = check(
        msg,
        events={"Order Completed": {"properties": schema}},
        modes={"unplanned_property": "omit", "schema_violation": "block"},
    )
    assert not verdict.blocked
    assert [v.kind for v in verdict.violations] == ["unplanned_property"]


@pytest.mark.parametrize("value", ["omit", "drop", None, True])
def test_invalid_mode_values(value):
    with pytest.raises(Invalid) as exc:
        compile_plans([plan(modes={"unplanned_event": value})], SOURCES)
    assert exc.value.field == "tracking_plans[0].modes.unplanned_event"


def test_unplanned_properties_allow_omit_or_block_and_unknown_kinds_are_refused():
    for mode in ("allow", "omit", "block"):
        compile_plans([plan(modes={"unplanned_property": mode})], SOURCES)
    with pytest.raises(Invalid) as exc:
        compile_plans([plan(modes={"unplanned_property": "drop"})], SOURCES)
    assert exc.value.field == "tracking_plans[0].modes.unplanned_property"
    with pytest.raises(Invalid) as exc:
        compile_plans([plan(modes={"unplanned_everything": "allow"})], SOURCES)
    assert exc.value.field == "tracking_plans[0].modes.unplanned_everything"


def test_per_call_modes_override_the_plan_modes():
    plans = compile_plans(
        [plan(modes={"unplanned_property": "allow", "identify": {"unplanned_property": "omit"}})],
        SOURCES,
    )
    identify = {"type": "identify", "userId": "u", "traits": {"email": "a@b.c", "shoe": 42}}
    track = order(coupon="X")
    assert plans.check(identify, "src_web").violations[0].action == "omitted"
    assert "shoe" not in identify["traits"]
    assert plans.check(track, "src_web").violations[0].action == "allowed"
    with pytest.raises(Invalid) as exc:
        compile_plans([plan(modes={"identify": {"unplanned_event": "block"}})], SOURCES)
    assert exc.value.field == "tracking_plans[0].modes.identify.unplanned_event"


# Errors, paths and types ----------------------------------------------------------------------


def test_nested_errors_have_paths():
    msg = order(
        products=[{"sku": "a", "price": "9.99"}, {"price": 3}],
        shipping={"zip": "ABCDE", "floor": 3},
    )
    verdict = check(msg)
    found = by_field(verdict)
    assert found["properties.products.0.price"].type == "Invalid Type"
    assert found["properties.products.0.price"].description == (
        "properties.products.0.price must be number, got string"
    )
    assert found["properties.products.1.sku"].type == "Required"
    assert found["properties.shipping.zip"].type == "Invalid Value"
    assert found["properties.shipping.floor"].type == "Additional Property"
    assert "ABCDE" not in found["properties.shipping.zip"].description  # values are not echoed


def test_nested_omit_removes_the_innermost_member():
    msg = order(
        products=[{"sku": "a", "price": "9.99"}, {"price": 3}],
        shipping={"zip": "12345", "floor": 3},
    )
    verdict = check(msg, modes={"schema_violation": "omit"})
    assert msg["properties"]["products"] == [{"sku": "a"}, {"price": 3}]
    assert msg["properties"]["shipping"] == {"zip": "12345"}
    found = by_field(verdict)
    assert found["properties.products.0.price"].action == "omitted"
    # Nothing to remove for a missing property: the violation is recorded, the data flows.
    assert found["properties.products.1.sku"].action == "allowed"
    assert msg["context"]["protocols"]["omitted_on_violation"] == [
        "properties.products.0.price",
        "properties.shipping.floor",
    ]


def test_array_item_of_wrong_type_takes_its_property_with_it():
    msg = order(products=[{"sku": "a"}, "not an object", 3])
    verdict = check(msg, modes={"schema_violation": "omit"})
    assert "products" not in msg["properties"]
    assert {v.action for v in verdict.violations} == {"omitted"}
    assert msg["context"]["protocols"]["omitted_on_violation"] == ["properties.products"]


def test_required():
    msg = order()
    del msg["properties"]["revenue"]
    del msg["properties"]["order_id"]
    verdict = check(msg, modes={"schema_violation": "omit"})
    found = by_field(verdict)
    assert found["properties.revenue"].type == "Required"
    assert found["properties.revenue"].description == "properties.revenue is required"
    assert found["properties.order_id"].action == "allowed"
    assert len(verdict.violations) == 2
    # A track without properties is checked as {}.
    bare = {"type": "track", "event": "Order Completed"}
    assert set(by_field(check(bare))) == {"properties.order_id", "properties.revenue"}


@pytest.mark.parametrize(
    ("value", "ok"),
    [(1, True), (1.5, True), (True, False), (None, False), ("1", False), ([1], False)],
)
def test_types(value, ok):
    verdict = check(order(revenue=value))
    assert (verdict.violations == []) is ok
    if not ok:
        assert verdict.violations[0].type == "Invalid Type"


def test_integer_and_null_types():
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "m": {"type": ["string", "null"]}},
    }
    events = {"Thing Happened": {"properties": schema}}
    ok = {"type": "track", "event": "Thing Happened", "properties": {"n": 3, "m": None}}
    assert check(ok, events=events).violations == []
    also_ok = {"type": "track", "event": "Thing Happened", "properties": {"n": 3.0, "m": "x"}}
    assert check(also_ok, events=events).violations == []
    bad = {"type": "track", "event": "Thing Happened", "properties": {"n": 3.5, "m": 1}}
    assert {v.field for v in check(bad, events=events).violations} == {
        "properties.n",
        "properties.m",
    }


def test_enum():
    verdict = check(order(currency="GBP"))
    [v] = verdict.violations
    assert v.type == "Invalid Value"
    assert v.description == 'properties.currency must be one of ["USD","EUR"]'


def test_formats_agree_on_both_paths():
    ok = order(email="ada@example.com")
    assert check(ok).violations == []
    bad = order(email="not-an-email")
    [v] = check(bad).violations
    assert v.field == "properties.email" and v.description.endswith("must be a valid email")
    schema = {"type": "object", "properties": {"at": {"type": "string", "format": "date-time"}}}
    events = {"Thing Happened": {"properties": schema}}
    good = {
        "type": "track",
        "event": "Thing Happened",
        "properties": {"at": "2026-01-02T03:04:05Z"},
    }
    assert check(good, events=events).violations == []
    late = {"type": "track", "event": "Thing Happened", "properties": {"at": "yesterday"}}
    assert [v.field for v in check(late, events=events).violations] == ["properties.at"]


def test_properties_that_are_not_an_object():
    msg = {"type": "track", "event": "Order Completed", "properties": ["a"]}
    verdict = check(msg, modes={"schema_violation": "omit"})
    [v] = verdict.violations
    assert (v.type, v.field, v.action) == ("Invalid Type", "properties", "allowed")
    assert check({**msg}, modes={"schema_violation": "block"}).blocked


# Identify, group, page, screen ----------------------------------------------------------------


def test_identify_traits():
    msg = {"type": "identify", "userId": "u1", "traits": {"plan": "gold", "shoe": 42}}
    verdict = check(msg, modes={"unplanned_property": "omit"})
    found = by_field(verdict)
    assert found["traits.email"].type == "Required"
    assert found["traits.plan"].type == "Invalid Value"
    assert found["traits.shoe"].type == "Unplanned Property"
    assert msg["traits"] == {"plan": "gold"}
    assert msg["context"]["protocols"]["omitted"] == ["traits.shoe"]
    assert {v.event_type for v in verdict.violations} == {"identify"}


def test_group_page_and_screen():
    group = {"type": "group", "groupId": "g", "traits": {"employees": "many"}}
    assert by_field(check(group))["traits.employees"].type == "Invalid Type"
    page = {"type": "page", "name": "Home", "properties": {"title": "Home"}}
    found = by_field(check(page))
    assert found["properties.path"].type == "Required"
    assert found["properties.title"].type == "Unplanned Property"
    assert found["properties.path"].event_name == "Home"
    screen = {"type": "screen", "name": "Cart", "properties": {"name": 3}}
    assert by_field(check(screen))["properties.name"].type == "Invalid Type"


def test_missing_sections_are_not_checked():
    doc = plan()
    for call in ("identify", "group", "page", "screen", "events"):
        del doc[call]
    plans = compile_plans([doc], SOURCES)
    for msg in (
        {"type": "identify", "traits": {"anything": 1}},
        {"type": "group", "traits": {"anything": 1}},
        {"type": "page", "properties": {"anything": 1}},
        {"type": "screen", "properties": {"anything": 1}},
        {"type": "track", "event": "Anything", "properties": {"anything": 1}},
    ):
        assert plans.check(msg, "src_web").violations == []
    # An empty events mapping plans nothing: every track is unplanned.
    empty = compile_plans([plan(events={})], SOURCES)
    assert empty.check(order(), "src_web").violations[0].type == "Unplanned Event"


def test_additional_and_pattern_properties_decide_what_is_planned():
    open_schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": True,
    }
    typed = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": {"type": "integer"},
    }
    patterned = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "patternProperties": {"^x_": {"type": "integer"}},
    }
    closed = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": False,
    }

    def run(schema, props):
        msg = {"type": "track", "event": "E Happened", "properties": props}
        return [
            (v.type, v.field)
            for v in check(msg, events={"E Happened": {"properties": schema}}).violations
        ]

    assert run(open_schema, {"a": "x", "b": 1}) == []
    assert run(typed, {"a": "x", "b": 1}) == []
    assert run(typed, {"a": "x", "b": "no"}) == [("Invalid Type", "properties.b")]
    assert run(patterned, {"a": "x", "x_n": 1}) == []
    assert run(patterned, {"a": "x", "x_n": "s", "y": 1}) == [
        ("Unplanned Property", "properties.y"),
        ("Invalid Type", "properties.x_n"),
    ]
    # additionalProperties: false at the top is the same as leaving it out: reported once.
    assert run(closed, {"a": "x", "b": 1}) == [("Unplanned Property", "properties.b")]


def test_context_protocols_keeps_what_was_there():
    msg = order(revenue=-1)
    msg["context"]["protocols"] = {"event_version": 2}
    check(msg)
    protocols = msg["context"]["protocols"]
    assert protocols["event_version"] == 2 and protocols["sourceId"] == "src_web"
    assert protocols["violations"] == [
        {
            "type": "Invalid Value",
            "field": "properties.revenue",
            "description": "properties.revenue must be >= 0",
        }
    ]


def test_verdict_carries_plan_identity_and_forwarding():
    plans = compile_plans([plan(version=7, forward_violations=True)], SOURCES)
    verdict = plans.check(order(revenue=-1), "src_srv")
    [v] = verdict.violations
    assert verdict.forward is True
    assert (v.plan_id, v.plan_version, v.plan_name) == ("main", 7, "Main plan")
    assert (v.event_name, v.event_type) == ("Order Completed", "track")
    assert plans.forwarding_source("src_srv") == "src_pv"  # true: "Protocols Violations"
    assert plans.forwarding_source("src_app") is None


def test_forwarding_targets():
    plans = compile_plans([plan(forward_violations="Alerts")], SOURCES)
    assert plans.forwarding_source("src_web") == "src_alerts"
    assert (
        compile_plans([plan(forward_violations="src_alerts")], SOURCES).forwarding_source("src_web")
        == "src_alerts"
    )
    plans = compile_plans([plan()], SOURCES)
    assert plans.forwarding_source("src_web") is None
    assert plans.check(order(revenue=-1), "src_web").forward is False
    with pytest.raises(Invalid) as exc:
        compile_plans([plan(forward_violations="Pager")], SOURCES)
    assert exc.value.field == "tracking_plans[0].forward_violations"
    with pytest.raises(Invalid) as exc:  # "Violation Generated" would be checked again
        compile_plans([plan(forward_violations="App"), plan(id="app", sources=["App"])], SOURCES)
    assert exc.value.field == "tracking_plans[0].forward_violations"


# PII labels and unknown keywords --------------------------------------------------------------


def test_pii_and_unknown_keywords_do_not_break_either_validator():
    schema = {
        "type": "object",
        "properties": {"email": {"type": "string", "pii": "email", "x-owner": "growth"}},
    }
    validate = fastjsonschema.compile(schema)
    assert validate({"email": "a@b.c"}) == {"email": "a@b.c"}
    events = {"Signed Up": {"properties": schema}}
    ok = {"type": "track", "event": "Signed Up", "properties": {"email": "a@b.c"}}
    assert check(ok, events=events).violations == []
    bad = {"type": "track", "event": "Signed Up", "properties": {"email": 5}}
    assert [v.type for v in check(bad, events=events).violations] == ["Invalid Type"]


def test_pii_fields():
    plans = compile_plans([plan()], SOURCES)
    assert plans.pii_fields("src_web") == {"properties.email": "email", "traits.email": "email"}
    assert plans.pii_fields("src_app") == {}
    nested = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"phone": {"type": "string", "pii": "phone"}},
                },
            }
        },
    }
    plans = compile_plans([plan(events={"Call Made": {"properties": nested}})], SOURCES)
    assert plans.pii_fields("src_web")["properties.items[].phone"] == "phone"


def test_pii_conflicts_and_bad_labels_are_invalid():
    other = {"type": "object", "properties": {"email": {"type": "string", "pii": "phone"}}}
    events = {"Order Completed": {"properties": ORDER}, "Other Thing": {"properties": other}}
    with pytest.raises(Invalid) as exc:
        compile_plans([plan(events=events)], SOURCES)
    assert exc.value.field == "tracking_plans[0].events.Other Thing.properties.properties.email.pii"
    bad = {"type": "object", "properties": {"email": {"type": "string", "pii": 3}}}
    with pytest.raises(Invalid) as exc:
        compile_plans([plan(events={"E Happened": {"properties": bad}})], SOURCES)
    assert exc.value.field.endswith("properties.email.pii")


# "Violation Generated" ------------------------------------------------------------------------


def test_violation_event_shape():
    msg = order(revenue=-1)
    msg["context"]["app"] = {"name": "Shop", "version": "3.1"}
    msg["sentAt"] = "2026-01-02T03:04:06.000Z"
    msg["receivedAt"] = "2026-01-02T03:04:07.000Z"
    msg["userId"] = "u-1"
    [v] = compile_plans([plan()], SOURCES).check(msg, "src_web").violations
    event = violation_event(v, msg, "src_web", source_name="Web Site")
    assert event["type"] == "track" and event["event"] == "Violation Generated"
    assert event["userId"] == "schema-violations" and "anonymousId" not in event
    assert event["context"] == {
        "app": {"name": "Shop", "version": "3.1"},
        "library": {"name": "analytics.js", "version": "1"},
    }
    assert event["integrations"] == {} and event["forwardedFromProject"] == "src_web"
    assert event["timestamp"] == "2026-01-02T03:04:07.000Z"
    props = event["properties"]
    assert props == {
        "appVersion": "3.1",
        "eventMessageID": "m-1",
        "eventName": "Order Completed",
        "eventSentAt": "2026-01-02T03:04:06.000Z",
        "eventTimestamp": "2026-01-02T03:04:05.000Z",
        "eventType": "track",
        "sourceID": "src_web",
        "sourceName": "Web Site",
        "sourceSlug": "web_site",
        "trackingPlanID": "main",
        "trackingPlanName": "Main plan",
        "trackingPlanVersion": 1,
        "violationAction": "allowed",
        "violationDescription": "properties.revenue must be >= 0",
        "violationField": "properties.revenue",
        "violationKind": "schema_violation",
        "violationType": "Invalid Value",
    }
    assert event["messageId"].startswith("sch-")


def test_violation_event_message_ids_are_deterministic():
    msg = order(revenue=-1, currency="GBP")
    verdict = compile_plans([plan()], SOURCES).check(msg, "src_web")
    first = [violation_event(v, msg, "src_web")["messageId"] for v in verdict.violations]
    again = [violation_event(v, msg, "src_web")["messageId"] for v in verdict.violations]
    assert first == again and len(set(first)) == 2
    other = order(revenue=-1)
    other["messageId"] = "m-2"
    [v] = compile_plans([plan()], SOURCES).check(other, "src_web").violations
    assert violation_event(v, other, "src_web")["messageId"] not in first
    # Without a messageId the message's content stands in for it.
    anonymous = {"type": "track", "event": "Nope", "properties": {}}
    [v] = compile_plans([plan()], SOURCES).check(anonymous, "src_web").violations
    assert violation_event(v, anonymous, "src_web") == violation_event(v, anonymous, "src_web")
    assert violation_event(v, anonymous, "src_web")["properties"]["eventMessageID"] is None


# Configuration errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("docs", "field"),
    [
        ({"id": "main"}, "tracking_plans"),
        ([plan(sources=["Website", "Nowhere"])], "tracking_plans[0].sources[1]"),
        ([plan(sources="Website")], "tracking_plans[0].sources"),
        ([plan(), plan(sources=["App"])], "tracking_plans[1].id"),
        ([plan(), plan(id="other", sources=["App", "Server"])], "tracking_plans[1].sources[1]"),
        ([plan(id="Main Plan")], "tracking_plans[0].id"),
        ([plan(version=0)], "tracking_plans[0].version"),
        ([plan(forward_violations=1)], "tracking_plans[0].forward_violations"),
        ([plan(colour="blue")], "tracking_plans[0].colour"),
        ([plan(modes="strict")], "tracking_plans[0].modes"),
        ([plan(events=["Order Completed"])], "tracking_plans[0].events"),
        ([plan(events={"E Happened": {"props": {}}})], "tracking_plans[0].events.E Happened.props"),
        (
            [
                plan(
                    events={
                        "E Happened": {
                            "properties": {
                                "type": "object",
                                "properties": {"a": {"type": "strnig"}},
                            }
                        }
                    }
                )
            ],
            "tracking_plans[0].events.E Happened.properties.properties.a.type",
        ),
        (
            [plan(events={"E Happened": {"properties": {"type": "string"}}})],
            "tracking_plans[0].events.E Happened.properties.type",
        ),
        (
            [plan(events={"E Happened": {"properties": "object"}})],
            "tracking_plans[0].events.E Happened.properties",
        ),
        (
            [
                plan(
                    events={
                        "E Happened": {
                            "properties": {
                                "properties": {"a": {"$ref": "https://example.com/a.json"}}
                            }
                        }
                    }
                )
            ],
            "tracking_plans[0].events.E Happened.properties.properties.a.$ref",
        ),
        ([plan(identify={"properties": {}})], "tracking_plans[0].identify.properties"),
        ([plan(page={})], "tracking_plans[0].page.properties"),
        ([plan(naming={"events": "kebab-case"})], "tracking_plans[0].naming.events"),
        ([plan(naming={"screens": "snake_case"})], "tracking_plans[0].naming.screens"),
    ],
)
def test_configuration_errors_name_the_field(docs, field):
    with pytest.raises(Invalid) as exc:
        compile_plans(docs, SOURCES)
    assert exc.value.field == field


def test_local_references_work():
    schema = {
        "type": "object",
        "definitions": {"money": {"type": "number", "minimum": 0}},
        "properties": {"total": {"$ref": "#/definitions/money"}},
    }
    events = {"Paid": {"properties": schema}}
    ok = {"type": "track", "event": "Paid", "properties": {"total": 3}}
    assert check(ok, events=events).violations == []
    bad = {"type": "track", "event": "Paid", "properties": {"total": -3}}
    assert [v.field for v in check(bad, events=events).violations] == ["properties.total"]


# Naming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("standard", "good", "bad"),
    [
        (
            "object_action",
            ["Order Completed", "Product List Viewed", "CTA Clicked"],
            [
                "Completed",
                "order completed",
                "Order completed",
                "OrderCompleted",
                "Order  Completed",
                "order_completed",
            ],
        ),
        ("Title Case", ["Checkout", "Order Completed"], ["checkout", "Order completed", ""]),
        (
            "snake_case",
            ["order_id", "revenue", "line2"],
            ["orderId", "Order_id", "order__id", "_id", "order-id"],
        ),
        ("camelCase", ["orderId", "revenue", "userID"], ["OrderId", "order_id", "order id"]),
        ("PascalCase", ["OrderId", "Revenue"], ["orderId", "Order_Id", "Order Id"]),
    ],
)
def test_naming_standards(standard, good, bad):
    assert check_naming(good, standard) == []
    assert check_naming(bad + bad, standard) == bad  # in order, each once


def test_unknown_standard():
    with pytest.raises(Invalid):
        check_naming(["a"], "kebab-case")


def test_lint_plan():
    doc = plan(
        events={
            "Order Completed": {"properties": ORDER},
            "signup": {
                "properties": {"type": "object", "properties": {"referralCode": {"type": "string"}}}
            },
        }
    )
    findings = lint_plan(
        doc, {"events": "object_action", "properties": "camelCase", "traits": "snake_case"}
    )
    assert {"field": "events.signup", "name": "signup", "expected": "object_action"} in findings
    fields = {f["field"] for f in findings}
    assert "events.Order Completed.properties.order_id" in fields
    assert "events.Order Completed.properties.products[].sku" not in fields  # sku is camelCase
    assert "events.signup.properties.referralCode" not in fields
    assert lint_plan(doc, {"events": "object_action"}) == [
        {"field": "events.signup", "name": "signup", "expected": "object_action"}
    ]


def test_naming_violations_for_events_seen():
    naming = {"events": "object_action", "properties": "snake_case"}
    plans = compile_plans([plan(naming=naming, modes={"unplanned_event": "allow"})], SOURCES)
    msg = {"type": "track", "event": "couponApplied", "properties": {"couponCode": "X"}}
    verdict = plans.check(msg, "src_web")
    found = {(v.kind, v.field): v for v in verdict.violations}
    assert found[("naming", "event")].action == "allowed"
    assert found[("naming", "properties.couponCode")].type == "Naming"
    assert ("unplanned_event", "event") in found
    # Naming never blocks, even where schema violations would.
    ok = order(coupon_code="X")
    plans = compile_plans(
        [plan(naming={"properties": "camelCase"}, modes={"schema_violation": "block"})], SOURCES
    )
    verdict = plans.check(ok, "src_web")
    assert not verdict.blocked
    assert {v.field for v in verdict.violations if v.kind == "naming"} == {
        "properties.order_id",
        "properties.coupon_code",
    }


def test_workspace_naming_is_the_default_and_a_plan_overrides_it():
    msg = {
        "type": "track",
        "event": "Order Completed",
        "properties": {"order_id": "o", "revenue": 1},
    }
    plans = compile_plans([plan()], SOURCES, naming={"properties": "camelCase"})
    assert [v.field for v in plans.check(copy.deepcopy(msg), "src_web").violations] == [
        "properties.order_id"
    ]
    plans = compile_plans(
        [plan(naming={"properties": "snake_case"})], SOURCES, naming={"properties": "camelCase"}
    )
    assert plans.check(copy.deepcopy(msg), "src_web").violations == []
    with pytest.raises(Invalid) as exc:
        compile_plans([plan()], SOURCES, naming={"events": "loud"})
    assert exc.value.field == "naming.events"


def test_a_failing_event_is_explained_property_by_property_as_jsonschema_would():
    """The per-property explainer gives jsonschema's violations, in its order, on events
    of the demo's inferred plan with properties removed, retyped or emptied."""
    import itertools
    import random

    from plait.demo import Cast
    from plait.govern import tracking_plan as tp
    from plait.govern.plan_infer import infer_plan

    messages = list(itertools.islice(Cast(people=40).messages(), 3000))
    plan = compile_plans([{**infer_plan(messages), "sources": ["Web"]}], {"Web": "src_w"})
    [compiled] = plan._by_source.values()
    rng = random.Random(7)
    checked = failing = 0
    for msg in messages:
        if msg["type"] != "track" or msg["event"] not in compiled.events:
            continue
        schema = compiled.events[msg["event"]]
        assert schema.parts is not None
        data = copy.deepcopy(msg.get("properties") or {})
        for key in list(data):
            roll = rng.random()
            if roll < 0.2:
                del data[key]
            elif roll < 0.4:
                data[key] = rng.choice([None, 1, "x", [], {}, True, 2.5])
        whole = tp._Schema(schema.prefix, schema.fast, schema.slow, schema.known,
                           schema.patterns, None)  # fmt: skip
        explained = tp._errors(schema, data)
        assert explained == tp._errors(whole, data)
        checked += 1
        failing += bool(explained)
    assert checked > 300 and failing > 50  # many of the compared events do fail
