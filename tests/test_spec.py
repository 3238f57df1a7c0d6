"""plait.spec: validation, enrichment and timestamps, without I/O."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.spec import (
    MAX_MESSAGE_ID_LENGTH,
    MESSAGE_TYPES,
    Enrichment,
    MessageError,
    enrich,
    validate,
)
from plait.spec.timestamps import format_timestamp, now_utc, parse_timestamp

RECEIVED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def env(**overrides) -> Enrichment:
    values = {"received_at": RECEIVED, "workspace_id": "ws_1", "source_id": "src_1"}
    return Enrichment(**(values | overrides))


def error_of(msg, msg_type=None) -> MessageError:
    with pytest.raises(MessageError) as info:
        validate(msg, msg_type)
    return info.value


# validate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}},
        {"type": "track", "anonymousId": "a1", "event": "Signed Up", "properties": {}},
        {"type": "page", "userId": "u1", "name": "Home"},
        {"type": "screen", "userId": "u1", "name": "Home"},
        {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"plan": "pro"}},
        {"type": "alias", "userId": "u1", "previousId": "a1"},
    ],
    ids=lambda m: m["type"],
)
def test_valid_messages_of_every_type_pass_unchanged(msg):
    before = copy.deepcopy(msg)
    assert validate(msg) is msg
    assert msg == before


def test_the_endpoint_type_is_filled_in_and_must_agree_with_the_declared_one():
    msg = {"userId": "u1", "event": "E"}
    assert validate(msg, "track")["type"] == "track"
    assert validate({"type": "track", "userId": "u", "event": "E"}, "track")["type"] == "track"
    err = error_of({"type": "identify", "userId": "u1"}, "track")
    assert err.field == "type"


@pytest.mark.parametrize("declared", [None, "bogus", "", 5, [], {}, ["track"], True])
def test_a_batch_message_must_name_a_known_type(declared):
    msg = {"userId": "u1", "event": "E"}
    if declared is not None:
        msg["type"] = declared
    err = error_of(msg)
    assert err.field == "type" and err.code == "invalid_field"


def test_a_message_must_be_an_object():
    for value in ([], "track", 5, None, True):
        err = error_of(value, "track")
        assert (err.field, err.code) == ("message", "invalid_message")


@pytest.mark.parametrize("msg_type", sorted(MESSAGE_TYPES))
def test_user_id_or_anonymous_id_is_required(msg_type):
    msg = {"event": "E", "groupId": "g", "previousId": "p"}
    err = error_of(msg, msg_type)
    assert (err.field, err.code) == ("userId", "missing_identity")


@pytest.mark.parametrize("field", ["userId", "anonymousId"])
@pytest.mark.parametrize("value", [True, False, [], {}, ["u"], {"id": 1}, "", "   "])
def test_identifiers_must_be_non_empty_strings_or_numbers(field, value):
    other = "anonymousId" if field == "userId" else "userId"
    err = error_of({field: value, other: "ok"}, "identify")
    assert err.field == field


def test_numeric_identifiers_are_stored_as_strings():
    msg = validate({"type": "group", "userId": 42, "anonymousId": 1.5, "groupId": 7})
    assert (msg["userId"], msg["anonymousId"], msg["groupId"]) == ("42", "1.5", "7")


@pytest.mark.parametrize("event", [None, "", "  ", 5, 1.5, True, [], {"name": "E"}])
def test_track_needs_an_event_string(event):
    msg = {"userId": "u1"}
    if event is not None:
        msg["event"] = event
    assert error_of(msg, "track").field == "event"


def test_group_needs_a_group_id_and_alias_needs_previous_id_and_user_id():
    assert error_of({"userId": "u1"}, "group").field == "groupId"
    assert error_of({"userId": "u1", "groupId": ""}, "group").field == "groupId"
    assert error_of({"userId": "u1", "groupId": {"id": 1}}, "group").field == "groupId"
    assert error_of({"userId": "u1"}, "alias").field == "previousId"
    # anonymousId is not enough for an alias: it renames a userId
    assert error_of({"anonymousId": "a1", "previousId": "p"}, "alias").field == "userId"


@pytest.mark.parametrize("field", ["context", "integrations", "traits", "properties"])
@pytest.mark.parametrize("value", ["text", 5, [], [{"a": 1}], True])
def test_object_fields_must_be_objects(field, value):
    err = error_of({"userId": "u1", "event": "E", field: value}, "track")
    assert (err.field, err.code) == (field, "invalid_field")
    assert err.as_dict() == {"code": "invalid_field", "field": field, "message": err.reason}


@pytest.mark.parametrize("msg_type", ["page", "screen"])
def test_page_and_screen_names_must_be_strings(msg_type):
    assert error_of({"userId": "u1", "name": 5}, msg_type).field == "name"
    assert validate({"userId": "u1", "name": "Home"}, msg_type)["name"] == "Home"


def test_message_id_must_be_a_short_non_empty_string():
    ok = "m" * MAX_MESSAGE_ID_LENGTH
    assert validate({"userId": "u", "messageId": ok}, "identify")["messageId"] == ok
    for bad in ("m" * (MAX_MESSAGE_ID_LENGTH + 1), "", 5, ["m"], {"id": "m"}):
        assert error_of({"userId": "u", "messageId": bad}, "identify").field == "messageId"


def test_message_id_with_a_nul_character_is_refused():
    # A NUL cannot be stored in a PostgreSQL text column: it would fail the whole group
    # commit that carries it, so it is refused up front.
    assert error_of({"userId": "u", "messageId": "a\x00b"}, "identify").field == "messageId"


# enrich --------------------------------------------------------------------------------


def test_enrich_adds_server_fields_and_removes_the_write_key():
    msg = validate({"userId": "u1", "event": "E", "writeKey": "secret"}, "track")
    out = enrich(msg, env(ip="10.1.2.3"))
    assert out is msg
    assert "writeKey" not in out
    assert out["receivedAt"] == "2024-05-06T07:08:09.123Z"
    assert out["timestamp"] == out["receivedAt"]  # no client time: arrival stands
    assert "originalTimestamp" not in out
    assert out["messageId"].startswith("api-") and len(out["messageId"]) == 36
    assert out["context"] == {"ip": "10.1.2.3"}
    assert (out["sourceId"], out["workspaceId"]) == ("src_1", "ws_1")


def test_generated_message_ids_are_unique_and_a_client_message_id_is_kept():
    ids = {enrich(validate({"userId": "u"}, "identify"), env())["messageId"] for _ in range(200)}
    assert len(ids) == 200
    kept = enrich(validate({"userId": "u", "messageId": "mine"}, "identify"), env())
    assert kept["messageId"] == "mine"


def test_skew_correction_uses_sent_at_from_the_message():
    msg = {"userId": "u", "timestamp": "2020-01-01T00:00:00Z", "sentAt": "2020-01-01T00:00:10Z"}
    out = enrich(validate(msg, "identify"), env())
    assert out["originalTimestamp"] == "2020-01-01T00:00:00.000Z"
    assert out["sentAt"] == "2020-01-01T00:00:10.000Z"
    assert out["timestamp"] == format_timestamp(RECEIVED - timedelta(seconds=10))


def test_skew_correction_uses_the_batch_sent_at_and_original_timestamp_wins():
    msg = {
        "userId": "u",
        "originalTimestamp": "2030-06-01T12:00:00.000+02:00",
        "timestamp": "1999-01-01T00:00:00Z",  # ignored: originalTimestamp is the client time
    }
    sent = datetime(2030, 6, 1, 10, 0, 30, tzinfo=UTC)
    out = enrich(validate(msg, "identify"), env(sent_at=sent))
    assert out["originalTimestamp"] == "2030-06-01T10:00:00.000Z"
    assert out["timestamp"] == format_timestamp(RECEIVED - timedelta(seconds=30))
    assert out["sentAt"] == "2030-06-01T10:00:30.000Z"


def test_without_sent_at_the_client_timestamp_stands():
    out = enrich(
        validate({"userId": "u", "timestamp": "2021-02-03T04:05:06.789Z"}, "identify"), env()
    )
    assert out["timestamp"] == out["originalTimestamp"] == "2021-02-03T04:05:06.789Z"


@pytest.mark.parametrize("field", ["timestamp", "originalTimestamp", "sentAt"])
@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", 1700000000, [], {}])
def test_bad_timestamps_are_field_errors(field, value):
    with pytest.raises(MessageError) as info:
        enrich(validate({"userId": "u", field: value}, "identify"), env())
    assert info.value.field == field


def test_timestamps_out_of_the_representable_range_are_field_errors_not_crashes():
    for msg in (
        {"userId": "u", "timestamp": "0001-01-01T00:30:00+01:00"},
        {"userId": "u", "timestamp": "9999-12-31T23:00:00-02:00"},
        {"userId": "u", "timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"},
    ):
        with pytest.raises(MessageError):
            enrich(validate(msg, "identify"), env())


def test_batch_context_and_integrations_merge_with_the_message_keys_winning():
    msg = validate(
        {
            "userId": "u",
            "context": {"locale": "fr-FR", "ip": "1.1.1.1"},
            "integrations": {"All": False},
        },
        "identify",
    )
    batch_context = {"locale": "en-US", "library": {"name": "analytics-python"}}
    out = enrich(
        msg,
        env(
            ip="9.9.9.9",
            batch_context=batch_context,
            batch_integrations={"All": True, "Mixpanel": False},
        ),
    )
    assert out["context"] == {
        "locale": "fr-FR",
        "library": {"name": "analytics-python"},
        "ip": "1.1.1.1",  # the client's own ip is never overwritten
    }
    assert out["integrations"] == {"All": False, "Mixpanel": False}
    assert batch_context == {"locale": "en-US", "library": {"name": "analytics-python"}}
    other = enrich(validate({"userId": "v"}, "identify"), env(batch_context=batch_context))
    assert other["context"] == batch_context and other["context"] is not batch_context


# timestamps ----------------------------------------------------------------------------


def test_parse_timestamp_forms():
    expected = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert parse_timestamp("2024-01-02T03:04:05.678Z") == expected
    assert parse_timestamp("2024-01-02T03:04:05.678") == expected  # naive means UTC
    assert parse_timestamp("2024-01-02T05:04:05.678+02:00") == expected
    assert parse_timestamp("2024-01-02T05:04:05.678+02:00").tzinfo is UTC
    for bad in (None, 1704164645, 1.5, [], "", "not a date", "2024-02-30"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_format_timestamp_is_utc_milliseconds_with_z():
    tz = timezone(timedelta(hours=-5))
    assert format_timestamp(datetime(2024, 1, 2, 3, 4, 5, 678999, tzinfo=tz)) == (
        "2024-01-02T08:04:05.678Z"
    )
    assert format_timestamp(datetime(2024, 1, 2, tzinfo=UTC)) == "2024-01-02T00:00:00.000Z"
    assert format_timestamp(datetime(999, 1, 2, tzinfo=UTC)) == "0999-01-02T00:00:00.000Z"
    assert now_utc().tzinfo is UTC


# properties ----------------------------------------------------------------------------

OFFSETS = st.sampled_from([timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-8)])
# Millisecond datetimes in a sane range, so the expected value is exact.
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))


@given(original=instants, sent=instants, received=instants, offset=OFFSETS)
def test_corrected_timestamp_is_received_minus_the_client_delay(original, sent, received, offset):
    local = original.astimezone(timezone(offset)).isoformat()
    msg = {"userId": "u", "timestamp": local, "sentAt": sent.isoformat()}
    out = enrich(validate(msg, "identify"), env(received_at=received))
    assert parse_timestamp(out["timestamp"]) == received - (sent - original)
    assert parse_timestamp(out["originalTimestamp"]) == original
    assert parse_timestamp(out["receivedAt"]) == received


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_timestamp_round_trips_at_millisecond_precision(dt):
    text = format_timestamp(dt)
    assert text.endswith("Z") and len(text) == 24
    assert parse_timestamp(text) == dt.replace(microsecond=dt.microsecond // 1000 * 1000)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
timestamps_like = st.one_of(
    st.text(max_size=30),
    st.datetimes(
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]
        )
    ).map(lambda d: d.isoformat()),
)
FIELDS = [
    "type",
    "userId",
    "anonymousId",
    "event",
    "groupId",
    "previousId",
    "messageId",
    "name",
    "traits",
    "properties",
    "context",
    "integrations",
    "writeKey",
]
messages = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            **{name: json_values for name in FIELDS},
            "type": st.sampled_from(sorted(MESSAGE_TYPES)) | json_values,
            "userId": st.text(max_size=5) | json_values,
            "event": st.text(max_size=5) | json_values,
            "timestamp": timestamps_like | json_values,
            "originalTimestamp": timestamps_like,
            "sentAt": timestamps_like | json_values,
        },
    ),
)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(
    msg=messages,
    msg_type=st.none() | st.sampled_from(sorted(MESSAGE_TYPES)),
    sent_at=st.none() | instants,
)
def test_validate_and_enrich_raise_nothing_but_message_error(msg, msg_type, sent_at):
    try:
        out = enrich(validate(msg, msg_type), env(sent_at=sent_at))
    except MessageError as exc:
        assert exc.field and exc.code
        return
    assert out["type"] in MESSAGE_TYPES
    assert out.get("userId") or out.get("anonymousId")
    assert "writeKey" not in out
    for name in ("timestamp", "receivedAt"):
        parse_timestamp(out[name])
