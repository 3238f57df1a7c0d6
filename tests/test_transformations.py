"""plait.govern.transformations: each rule, where, per-source and per-destination selection,
dry runs, the normalized form and the errors a user sees."""

from __future__ import annotations

import copy
import itertools

import orjson
import pytest
import yaml

from plait.demo import Cast
from plait.govern.transformations import (
    TransformationSet,
    compile_transformations,
    dry_run,
)
from plait.store.workspaces import Invalid

SOURCES = {"Website": "src_web", "iOS": "src_ios", "Backend": "src_api"}

EXAMPLE = """
transformations:
  - name: tidy orders
    sources: [Website]
    where: "type == 'track'"
    rules:
      - rename_event: {from: Order Done, to: Order Completed}
      - rename_property: {from: properties.price_usd, to: properties.price}
      - drop_property: properties.debug
      - derive_property: {name: properties.revenue_cents, expr: "round(properties.revenue * 100)"}
      - map_values: {property: properties.plan, map: {pro: Pro, free: Free}}
      - drop_event: "event == 'Test Event' or properties.internal == true"
"""


def track(event="Order Done", **properties) -> dict:
    return {
        "type": "track",
        "event": event,
        "userId": "u1",
        "messageId": "m1",
        "properties": properties,
        "context": {"ip": "1.2.3.4"},
    }


def one(rules, **extra) -> TransformationSet:
    return compile_transformations([{"name": "t", "rules": rules, **extra}], SOURCES)


def test_the_documented_example():
    docs = yaml.safe_load(EXAMPLE)["transformations"]
    tset = compile_transformations(docs, SOURCES)
    msg = track(price_usd=19.99, revenue=19.99, debug=True, plan="pro", keep="me")
    out = tset.apply(msg, "src_web")
    assert out is msg  # in place
    assert out == {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": "m1",
        "properties": {"revenue": 19.99, "plan": "Pro", "keep": "me", "price": 19.99,
                       "revenue_cents": 1999},
        "context": {"ip": "1.2.3.4"},
    }  # fmt: skip
    assert tset.apply(track("Test Event"), "src_web") is None
    assert tset.apply(track(internal=True), "src_web") is None
    # another source: untouched
    other = track(debug=True)
    assert tset.apply(other, "src_ios") == track(debug=True)
    # where: an identify from the website is untouched
    identify = {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}
    assert tset.apply(copy.deepcopy(identify), "src_web") == identify


# each rule ------------------------------------------------------------------------------------


def test_rename_event():
    tset = one([{"rename_event": {"from": "Signed up", "to": "Signed Up"}}])
    assert tset.apply(track("Signed up"), "src_web")["event"] == "Signed Up"
    assert tset.apply(track("signed up"), "src_web")["event"] == "signed up"  # exact match
    page = {"type": "page", "name": "Home"}
    assert tset.apply(dict(page), "src_web") == page


def test_rename_property():
    tset = one([{"rename_property": {"from": "properties.price_usd", "to": "properties.price"}}])
    assert tset.apply(track(price_usd=5, price=1), "x")["properties"] == {"price": 5}
    assert tset.apply(track(other=1), "x")["properties"] == {"other": 1}  # nothing to rename
    assert tset.apply({"type": "track"}, "x") == {"type": "track"}


def test_rename_property_across_objects_and_keys_with_spaces():
    tset = one([{"rename_property": {"from": 'properties["order id"]', "to": "context.order.id"}}])
    msg = tset.apply(track(**{"order id": "o1"}), "x")
    assert msg["properties"] == {}
    assert msg["context"] == {"ip": "1.2.3.4", "order": {"id": "o1"}}
    # something that is not an object in the way: the message is left as it was
    blocked = track(**{"order id": "o1"})
    blocked["context"]["order"] = "a string"
    assert tset.apply(copy.deepcopy(blocked), "x") == blocked


def test_drop_property():
    tset = one([{"drop_property": "properties.debug"}])
    assert tset.apply(track(debug=1, keep=2), "x")["properties"] == {"keep": 2}
    assert tset.apply(track(keep=2), "x")["properties"] == {"keep": 2}
    many = one([{"drop_property": ["properties.a", "context.ip", "traits.deep.er"]}])
    msg = track(a=1, b=2)
    msg["traits"] = {"deep": {"er": 1, "st": 2}}
    out = many.apply(msg, "x")
    assert out["properties"] == {"b": 2}
    assert out["context"] == {}
    assert out["traits"] == {"deep": {"st": 2}}
    assert many.apply({"type": "track", "properties": None}, "x") == {
        "type": "track",
        "properties": None,
    }


def test_derive_property():
    cents = {"name": "properties.cents", "expr": "round(properties.revenue * 100)"}
    tset = one([{"derive_property": cents}])
    assert tset.apply(track(revenue=19.99), "x")["properties"] == {"revenue": 19.99, "cents": 1999}
    # null results are not written, and an existing value stays
    assert tset.apply(track(), "x")["properties"] == {}
    assert tset.apply(track(revenue="n/a", cents=5), "x")["properties"]["cents"] == 5
    # missing objects are created; identify traits
    email = {"name": "traits.email", "expr": "lower(trim(traits.email))"}
    traits = one([{"derive_property": email}])
    msg = {"type": "identify", "traits": {"email": " A@B.C "}}
    assert traits.apply(msg, "x")["traits"] == {"email": "a@b.c"}
    created = one([{"derive_property": {"name": "context.campaign.source", "expr": "'ads'"}}])
    assert created.apply({"type": "page"}, "x") == {
        "type": "page",
        "context": {"campaign": {"source": "ads"}},
    }


def test_derive_property_never_shares_objects():
    tset = one([{"derive_property": {"name": "properties.copy", "expr": "properties.items"}}])
    msg = tset.apply(track(items=[{"sku": "a"}]), "x")
    msg["properties"]["copy"][0]["sku"] = "changed"
    assert msg["properties"]["items"] == [{"sku": "a"}]


def test_map_values():
    plans = {"property": "properties.plan", "map": {"pro": "Pro", "free": "Free"}}
    tset = one([{"map_values": plans}])
    assert tset.apply(track(plan="pro"), "x")["properties"]["plan"] == "Pro"
    assert tset.apply(track(plan="team"), "x")["properties"]["plan"] == "team"
    assert tset.apply(track(), "x")["properties"] == {}  # absent stays absent
    other = {"property": "properties.plan", "map": {"pro": "Pro"}, "default": "Other"}
    default = one([{"map_values": other}])
    assert default.apply(track(plan="team"), "x")["properties"]["plan"] == "Other"
    assert default.apply(track(plan=None), "x")["properties"]["plan"] == "Other"
    assert default.apply(track(plan=["x"]), "x")["properties"]["plan"] == "Other"
    assert default.apply(track(), "x")["properties"] == {}


def test_map_values_compares_as_text():
    docs = yaml.safe_load(
        """
        - name: t
          rules:
            - map_values:
                property: properties.tier
                map: {7: gold, 2.5: silver, true: yes-true, null: none, "yes": quoted}
        """
    )
    tset = compile_transformations(docs, SOURCES)

    def mapped(value):
        return tset.apply(track(tier=value), "x")["properties"]["tier"]

    assert mapped(7) == "gold"
    assert mapped("7") == "gold"
    assert mapped(2.5) == "silver"
    assert mapped(True) == "yes-true"
    assert mapped(None) == "none"
    assert mapped("yes") == "quoted"
    assert mapped(3) == 3
    # the normalized map has text keys, so the JSON store keeps it as it is
    assert tset.to_dicts()[0]["rules"][0]["map_values"]["map"] == {
        "7": "gold", "2.5": "silver", "true": "yes-true", "null": "none", "yes": "quoted",
    }  # fmt: skip


def test_drop_event():
    tset = one([{"drop_event": "event == 'Test Event' or properties.internal == true"}])
    assert tset.apply(track("Test Event"), "x") is None
    assert tset.apply(track(internal=True), "x") is None
    assert tset.apply(track(internal="true"), "x") is not None
    assert tset.apply({"type": "identify"}, "x") is not None


def test_rules_run_in_order_and_a_drop_stops_everything():
    tset = one(
        [
            {"rename_event": {"from": "a", "to": "b"}},
            {"rename_event": {"from": "b", "to": "c"}},
            {"drop_event": "event == 'c' and properties.drop == true"},
            {"derive_property": {"name": "properties.after", "expr": "1"}},
        ]
    )
    assert tset.apply(track("a"), "x") == track("c", after=1)
    assert tset.apply(track("a", drop=True), "x") is None


def test_where():
    tset = one(
        [{"derive_property": {"name": "properties.big", "expr": "true"}}],
        where="properties.revenue > 100",
    )
    assert tset.apply(track(revenue=150), "x")["properties"]["big"] is True
    assert "big" not in tset.apply(track(revenue=50), "x")["properties"]
    assert "big" not in tset.apply(track(revenue="lots"), "x")["properties"]  # null: false


def test_transformations_run_in_file_order():
    tset = compile_transformations(
        [
            {"name": "first",
             "rules": [{"derive_property": {"name": "properties.n", "expr": "1"}}]},
            {"name": "second", "where": "properties.n == 1",
             "rules": [{"derive_property": {"name": "properties.n", "expr": "properties.n + 1"}}]},
        ],
        SOURCES,
    )  # fmt: skip
    assert tset.apply(track(), "src_web")["properties"]["n"] == 2


# selection --------------------------------------------------------------------------------------


def _tagging(name: str, **scope) -> dict:
    rule = {"derive_property": {"name": f"properties.{name}", "expr": "true"}}
    return {"name": name, "rules": [rule], **scope}


def test_per_source_selection():
    tset = compile_transformations(
        [
            _tagging("everyone"),
            _tagging("web", sources=["Website"]),
            _tagging("by_id", sources=["src_ios", "Backend"]),
            _tagging("to_webhook", destinations=["Webhook"]),
        ],
        SOURCES,
    )

    def tags(source_id):
        return sorted(tset.apply(track(), source_id)["properties"])

    assert tags("src_web") == ["everyone", "web"]
    assert tags("src_ios") == ["by_id", "everyone"]
    assert tags("src_api") == ["by_id", "everyone"]
    assert tags("src_created_later") == ["everyone"]
    assert [t.name for t in tset.for_source("src_web")] == ["everyone", "web"]
    assert [t.name for t in tset.for_destination("Webhook")] == ["to_webhook"]
    assert tset.for_destination("Other") == ()
    assert not tset.empty


def test_nothing_for_a_source_is_a_no_op():
    tset = compile_transformations([_tagging("web", sources=["Website"])], SOURCES)
    msg = track(debug=1)
    assert tset.apply(msg, "src_ios") is msg
    assert msg == track(debug=1)


def test_destination_transformations_work_on_a_copy():
    tset = compile_transformations(
        [
            {"name": "hide ip", "destinations": ["Webhook"],
             "rules": [{"drop_property": "context.ip"}]},
            {"name": "no tests", "destinations": ["Webhook", "Warehouse"],
             "rules": [{"drop_event": "event == 'Test'"}]},
        ],
        SOURCES,
    )  # fmt: skip
    msg = track()
    out = tset.apply_for_destination(msg, "Webhook")
    assert out == {**track(), "context": {}}
    assert msg == track()  # shared with other destinations: never changed
    assert tset.apply_for_destination(msg, "Elsewhere") is msg
    assert tset.apply_for_destination(track("Test"), "Warehouse") is None
    # destination transformations never run at intake
    assert tset.apply(track("Test"), "src_web") == track("Test")


def test_disabled_and_empty():
    assert compile_transformations(None, SOURCES).empty
    assert compile_transformations([], SOURCES).empty
    tset = compile_transformations([_tagging("off", enabled=False)], SOURCES)
    assert tset.empty
    assert tset.apply(track(), "src_web") == track()
    assert tset.to_dicts()[0]["enabled"] is False


# dry run --------------------------------------------------------------------------------------


def test_dry_run_does_not_mutate():
    docs = yaml.safe_load(EXAMPLE)["transformations"]
    message = track(price_usd=3, debug=True, plan="free")
    original = copy.deepcopy(message)
    result = dry_run(docs, message, SOURCES, source_id="src_web")
    assert message == original
    assert result["before"] == original
    assert result["before"] is not message
    assert result["after"]["properties"] == {"plan": "Free", "price": 3}
    assert result["dropped"] is False
    assert result["applied"] == ["tidy orders"]
    result["after"]["properties"]["plan"] = "changed"
    assert message == original


def test_dry_run_reports_drops_and_what_ran():
    docs = [
        _tagging("a"),
        {"name": "only pages", "where": "type == 'page'", "rules": [{"drop_event": "true"}]},
        {"name": "drop tests", "rules": [{"drop_event": "event == 'Test'"}]},
        _tagging("never_reached"),
    ]
    result = dry_run(docs, track("Test"), SOURCES, source_id="Website")  # a name works too
    assert result == {
        "before": track("Test"),
        "after": None,
        "dropped": True,
        "applied": ["a", "drop tests"],
    }


def test_dry_run_without_a_source_tries_every_source_transformation():
    docs = [_tagging("web", sources=["Website"]), _tagging("hook", destinations=["Webhook"])]
    assert dry_run(docs, track(), SOURCES)["applied"] == ["web"]
    assert dry_run(docs, track(), SOURCES, source_id="src_ios")["applied"] == []
    assert dry_run(docs, track(), SOURCES, destination="Webhook")["applied"] == ["hook"]


def test_dry_run_checks_its_input():
    with pytest.raises(Invalid) as info:
        dry_run([{"name": "t", "rules": [{"drop_event": "a ="}]}], track(), SOURCES)
    assert info.value.field == "transformations[0].rules[0].drop_event"
    with pytest.raises(Invalid) as info:
        dry_run([], ["not", "a", "message"], SOURCES)  # type: ignore[arg-type]
    assert info.value.field == "message"


# normalized form ------------------------------------------------------------------------------


def test_to_dicts_round_trips():
    docs = yaml.safe_load(EXAMPLE)["transformations"]
    docs.append(
        {
            "name": "by id",
            "sources": ["src_ios"],
            "enabled": False,
            "rules": [
                {"drop_property": ["properties['a b']", "context.x"]},
                {"map_values": {"property": "properties.p", "map": {"a": 1}, "default": None}},
            ],
        }
    )
    docs.append({"name": "hook", "destinations": ["Webhook"], "rules": [{"drop_event": "true"}]})
    tset = compile_transformations(docs, SOURCES)
    out = tset.to_dicts()
    assert out[0] == docs[0]  # canonical input comes back unchanged
    assert out[1]["sources"] == ["iOS"]  # ids come back as names: the file is portable
    assert out[1]["rules"][0] == {"drop_property": ['properties["a b"]', "context.x"]}
    assert out[1]["rules"][1] == {
        "map_values": {"property": "properties.p", "map": {"a": 1}, "default": None}
    }
    assert out[2] == docs[2]
    again = compile_transformations(out, SOURCES)
    assert again.to_dicts() == out
    assert orjson.loads(orjson.dumps(out)) == out  # storable as JSON
    assert yaml.safe_load(yaml.safe_dump(out)) == out
    out[0]["rules"].clear()
    assert tset.to_dicts()[0]["rules"]  # a copy


# errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "docs, field, message",
    [
        ({"name": "x"}, "transformations", "must be a list"),
        (["x"], "transformations[0]", "mapping"),
        ([{"rules": [{"drop_event": "true"}]}], "transformations[0].name", "needs a name"),
        ([{"name": "t"}], "transformations[0].rules", "non-empty list"),
        ([{"name": "t", "rules": []}], "transformations[0].rules", "non-empty list"),
        ([{"name": "t", "rule": []}], "transformations[0].rule", "unknown key"),
        ([{"name": "t", "sources": ["Webiste"], "rules": [{"drop_event": "true"}]}],
         "transformations[0].sources[0]", "unknown source 'Webiste'"),
        ([{"name": "t", "sources": [], "rules": [{"drop_event": "true"}]}],
         "transformations[0].sources", "non-empty"),
        ([{"name": "t", "sources": ["Website"], "destinations": ["W"],
           "rules": [{"drop_event": "true"}]}], "transformations[0].destinations", "not both"),
        ([{"name": "t", "where": "type = 'track'", "rules": [{"drop_event": "true"}]}],
         "transformations[0].where", "unexpected character '=' at column 6"),
        ([{"name": "t", "where": True, "rules": [{"drop_event": "true"}]}],
         "transformations[0].where", "string"),
        ([{"name": "t", "enabled": "yes", "rules": [{"drop_event": "true"}]}],
         "transformations[0].enabled", "true or false"),
        ([{"name": "t", "rules": [{"drop_event": "true"}]},
          {"name": "t", "rules": [{"drop_event": "true"}]}],
         "transformations[1].name", "already the name of transformations[0]"),
        ([{"name": "t", "rules": ["drop_event"]}], "transformations[0].rules[0]", "one key"),
        ([{"name": "t", "rules": [{"drop_event": "true", "rename_event": {}}]}],
         "transformations[0].rules[0]", "one key"),
        ([{"name": "t", "rules": [{"drop_event": "true"}, {"uppercase": "properties.x"}]}],
         "transformations[0].rules[1].uppercase", "unknown rule"),
        ([{"name": "t", "rules": [{"rename_event": {"from": "a"}}]}],
         "transformations[0].rules[0].rename_event.to", "is required"),
        ([{"name": "t", "rules": [{"rename_event": {"from": "a", "to": 3}}]}],
         "transformations[0].rules[0].rename_event.to", "event name"),
        ([{"name": "t", "rules": [{"rename_event": {"from": "a", "to": "b", "x": 1}}]}],
         "transformations[0].rules[0].rename_event.x", "unknown key"),
        ([{"name": "t", "rules": [{"rename_property": {"from": "properties.a", "to": "userId"}}]}],
         "transformations[0].rules[0].rename_property.to", "inside one of"),
        ([{"name": "t",
           "rules": [{"rename_property": {"from": "properties.a", "to": "properties.a"}}]}],
         "transformations[0].rules[0].rename_property.to", "same path"),
        ([{"name": "t", "rules": [{"drop_property": "messageId"}]}],
         "transformations[0].rules[0].drop_property", "inside one of"),
        ([{"name": "t", "rules": [{"drop_property": ["properties.a", "properties.b c"]}]}],
         "transformations[0].rules[0].drop_property[1]", "unexpected 'c' at column 14"),
        ([{"name": "t", "rules": [{"drop_property": "properties.items[0]"}]}],
         "transformations[0].rules[0].drop_property", "list element"),
        ([{"name": "t", "rules": [{"drop_property": []}]}],
         "transformations[0].rules[0].drop_property", "non-empty"),
        ([{"name": "t", "rules": [
            {"drop_event": "true"},
            {"drop_event": "true"},
            {"derive_property": {"name": "properties.x", "expr": "open('f')"}},
        ]}],
         "transformations[0].rules[2].derive_property.expr", "unknown function 'open' (the"),
        ([{"name": "t", "rules": [{"derive_property": {"name": "properties.x", "expr": 5}}]}],
         "transformations[0].rules[0].derive_property.expr", "string"),
        ([{"name": "t", "rules": [{"derive_property": {"expr": "1"}}]}],
         "transformations[0].rules[0].derive_property.name", "is required"),
        ([{"name": "t", "rules": [{"derive_property": "properties.x"}]}],
         "transformations[0].rules[0].derive_property", "mapping"),
        ([{"name": "t", "rules": [{"map_values": {"property": "properties.x", "map": {}}}]}],
         "transformations[0].rules[0].map_values.map", "non-empty mapping"),
        ([{"name": "t",
           "rules": [{"map_values": {"property": "properties.x", "map": {"a": 1}, "else": 2}}]}],
         "transformations[0].rules[0].map_values.else", "unknown key"),
        ([{"name": "t", "rules": [{"drop_event": "properties.__class__"}]}],
         "transformations[0].rules[0].drop_event", "'__'"),
    ],
)  # fmt: skip
def test_errors_name_the_field(docs, field, message):
    with pytest.raises(Invalid) as info:
        compile_transformations(docs, SOURCES)
    assert info.value.field == field
    assert message in info.value.message


# the demo stream ------------------------------------------------------------------------------


def test_demo_stream():
    messages = list(itertools.islice(Cast(people=40).messages(), 1500))
    tset = compile_transformations(
        [
            {"name": "carts", "where": "type == 'track'", "rules": [
                {"rename_event": {"from": "Product Added", "to": "Product Added To Cart"}},
                {"derive_property": {"name": "properties.price_cents",
                                     "expr": "round(properties.price * 100)"}},
                {"drop_event": "event == 'Cart Viewed'"},
            ]},
            {"name": "tidy", "sources": ["Website"], "rules": [
                {"map_values": {"property": "properties.category", "map": {"Footwear": "Shoes"}}},
                {"drop_property": ["context.userAgent", "properties.image_url"]},
            ]},
        ],
        SOURCES,
    )  # fmt: skip
    kept = [m for m in (tset.apply(copy.deepcopy(m), "src_web") for m in messages) if m]
    assert len(kept) == len(messages) - sum(m.get("event") == "Cart Viewed" for m in messages)
    assert not any(m.get("event") == "Product Added" for m in kept)
    assert any(m.get("event") == "Product Added To Cart" for m in kept)
    for m in kept:
        assert "userAgent" not in m.get("context", {})
        props = m.get("properties") or {}
        assert props.get("category") != "Footwear"
        if m["type"] == "track" and isinstance(props.get("price"), (int, float)):
            assert props["price_cents"] == round(props["price"] * 100)
