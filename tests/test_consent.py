"""Consent semantics (plait.govern.consent), following Segment's consent management."""

from __future__ import annotations

import pytest

from plait.govern.consent import (
    PREFERENCE_EVENT,
    ConsentConfig,
    allows,
    combined,
    compile_consent,
    effective_preferences,
    is_preference_update,
    message_preferences,
    normalize_preferences,
)
from plait.store.workspaces import Invalid


def event(prefs=..., **fields) -> dict:
    msg = {"type": "track", "event": "Order Completed", "context": {"library": {}}} | fields
    if prefs is not ...:
        msg["context"]["consent"] = {"categoryPreferences": prefs}
    return msg


# Message preferences ----------------------------------------------------------------------


def test_no_consent_object_means_no_preferences():
    assert message_preferences({"type": "track"}) is None
    assert message_preferences({"context": None}) is None
    assert message_preferences({"context": {}}) is None
    assert message_preferences({"context": {"consent": None}}) is None
    assert message_preferences({"context": {"consent": {}}}) is None  # empty consent object
    assert message_preferences({"context": {"consent": {"categoryPreferences": None}}}) is None


def test_preferences_are_read_and_case_folded():
    prefs = message_preferences(event({"Advertising": True, "Analytics": False, "C0004": True}))
    assert prefs == {"advertising": True, "analytics": False, "c0004": True}


def test_empty_category_preferences_mean_everything_false():
    prefs = message_preferences(event({}))
    assert prefs == {}
    assert not allows(prefs, ["advertising"])
    assert allows(prefs, [])  # unmapped destinations still receive


def test_only_json_true_grants_consent():
    prefs = message_preferences(event({"a": "true", "b": 1, "c": None, "d": True}))
    assert prefs == {"a": False, "b": False, "c": False, "d": True}


def test_unreadable_consent_grants_nothing():
    assert message_preferences({"context": {"consent": "granted"}}) == {}
    assert message_preferences(event(["advertising"])) == {}
    assert normalize_preferences("yes") == {}


def test_a_category_given_twice_in_different_case_is_false_if_either_is():
    assert normalize_preferences({"Ads": True, "ads": False}) == {"ads": False}
    assert normalize_preferences({"ads": False, "Ads": True}) == {"ads": False}
    assert normalize_preferences({"Ads": True, "ADS": True}) == {"ads": True}


# allows -----------------------------------------------------------------------------------


def test_no_preferences_flow_everywhere():
    assert allows(None, ["advertising", "analytics"])
    assert allows(None, [])


def test_unmapped_destination_receives_everything():
    assert allows({"advertising": False}, [])
    assert allows({}, ())


def test_several_categories_all_need_consent():
    prefs = {"advertising": True, "analytics": False}
    assert allows(prefs, ["advertising"])
    assert not allows(prefs, ["analytics"])
    assert not allows(prefs, ["advertising", "analytics"])
    assert allows({"advertising": True, "analytics": True}, ["advertising", "analytics"])


def test_a_category_missing_from_the_preferences_is_false():
    assert not allows({"advertising": True}, ["functional"])
    assert not allows({"advertising": True}, ["advertising", "functional"])


def test_destination_categories_match_case_insensitively():
    assert allows(message_preferences(event({"Advertising": True})), ["ADVERTISING"])


# Profile-level consent --------------------------------------------------------------------


def test_the_preference_event_is_recognised():
    update = event({"Advertising": False}, event=PREFERENCE_EVENT)
    assert PREFERENCE_EVENT == "Segment Consent Preference Updated"
    assert is_preference_update(update)
    assert message_preferences(update) == {"advertising": False}  # where Segment puts them
    assert not is_preference_update(event({}, event="Consent Preference Updated"))
    assert not is_preference_update({"type": "identify", "event": PREFERENCE_EVENT})
    assert not is_preference_update(event())


def test_combined_needs_both_when_both_are_known():
    device = {"advertising": True, "analytics": True}
    profile = {"advertising": False, "analytics": True}
    assert combined(device, profile) == {"advertising": False, "analytics": True}
    # A category only one side knows is false: missing means false.
    assert combined({"advertising": True}, {"analytics": True}) == {
        "advertising": False,
        "analytics": False,
    }


def test_combined_falls_back_to_whichever_is_known():
    assert combined(None, None) is None
    assert combined({"ads": True}, None) == {"ads": True}
    assert combined(None, {"ads": False}) == {"ads": False}
    assert combined({}, {"ads": True}) == {"ads": False}  # empty preferences: all false


def test_withdrawing_on_the_profile_stops_an_old_device_at_once():
    config = compile_consent({"destinations": {"Google Ads": ["advertising"], "Webhook": []}})
    profile = message_preferences(
        event({"Advertising": False}, event=PREFERENCE_EVENT)
    )  # the latest preference event of the person
    old_device = event({"Advertising": True})
    prefs = effective_preferences(old_device, profile)
    assert not config.allows("Google Ads", prefs)
    assert config.allows("Webhook", prefs)
    # A message without consent from that person is governed by the profile alone.
    assert not config.allows("Google Ads", effective_preferences(event(), profile))
    # And a person who never expressed anything flows everywhere.
    assert config.allows("Google Ads", effective_preferences(event(), None))


def test_the_preference_event_itself_flows_everywhere():
    config = compile_consent({"destinations": {"Google Ads": ["advertising"]}})
    update = event({"Advertising": False}, event=PREFERENCE_EVENT)
    assert effective_preferences(update, {"advertising": False}) is None
    assert config.allows("Google Ads", effective_preferences(update, {"advertising": False}))


# Configuration ----------------------------------------------------------------------------


def test_compile_consent_maps_destinations_to_categories():
    config = compile_consent(
        {"destinations": {"Google Ads": ["Advertising", "advertising"], "Webhook": [], "X": None}}
    )
    assert config.destinations == {"Google Ads": ("advertising",), "Webhook": (), "X": ()}
    prefs = message_preferences(event({"Advertising": True}))
    assert config.allows("Google Ads", prefs)
    assert config.allows("Webhook", {})
    assert config.allows("Not Mapped", {})  # unknown names are unmapped
    assert not config.allows("Google Ads", {})
    assert config.allows("Google Ads", None)
    assert config.categories("Google Ads") == ("advertising",)


def test_no_consent_section_maps_nothing():
    assert compile_consent(None) == ConsentConfig()
    assert compile_consent({}) == ConsentConfig()
    assert compile_consent({"destinations": None}).allows("Google Ads", {})


@pytest.mark.parametrize(
    "doc, field",
    [
        ([], "consent"),
        ({"destinatons": {}}, "consent.destinatons"),
        ({"destinations": ["Google Ads"]}, "consent.destinations"),
        ({"destinations": {"Google Ads": "advertising"}}, "consent.destinations.Google Ads"),
        ({"destinations": {"Google Ads": ["ok", ""]}}, "consent.destinations.Google Ads[1]"),
        ({"destinations": {"Google Ads": [3]}}, "consent.destinations.Google Ads[0]"),
        ({"destinations": {" ": []}}, "consent.destinations"),
    ],
)
def test_bad_consent_sections_name_the_field(doc, field):
    with pytest.raises(Invalid) as info:
        compile_consent(doc)
    assert info.value.field == field
