"""PII detection and handling (plait.govern.pii, detectors, crypto), without I/O."""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plait.demo import Cast
from plait.govern import detectors
from plait.govern.crypto import Keyring, PiiKeyError, is_encrypted, token_key_id
from plait.govern.detectors import KINDS, Detector
from plait.govern.pii import Finding, compile_policy
from plait.store.workspaces import Invalid

WS = "ws_1"
ALL = Detector(frozenset(KINDS), "US")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.parse(f"k2:{Keyring.generate_key()},k1:{Keyring.generate_key()}")


# Detectors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["john@example.com", " Jane.Doe+tag@Mail.Example.co.uk ", "o'brien@example.org", "a@b.io"],
)
def test_emails_are_detected(text):
    assert ALL.classify(text) == "email"


@pytest.mark.parametrize(
    "text", ["@jack", "foo@bar", "user@localhost", "https://u:p@host/x", "a@1.2.3.4", "me at x.com"]
)
def test_strings_with_an_at_sign_that_are_not_emails(text):
    assert ALL.classify(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "+14155550100",
        "+1 (415) 555-0100",
        "(415) 555-0100",
        "415-555-0100",
        "415.555.0100",
        "+44 20 7946 0958",
        "+49 30 901820",
    ],
)
def test_phones_are_detected(text):
    assert ALL.classify(text) == "phone"


@pytest.mark.parametrize(
    "text",
    [
        "4155550100",  # bare digits: an id as much as a phone
        "14155550100",
        "1037560966382",  # an order number
        "1730000000000",  # epoch milliseconds as text
        "2026-10-26",  # a date
        "26.10.2026",
        "2026-10-26T09:21:24.521Z",  # a timestamp
        "1234567.89",  # an amount
        "12:30:45",  # a time
        ".0.000000(",
        "+1 23",  # too short
        "SNK-RUN-05",
        "prod_1005",
        "W1037560966382",
        "b4fd333f-ee5d-4500-9967-bc86ce206e75",  # a UUID
        "12345678-1234-1234-1234-123456789012",  # an all-digit UUID
        "10.0.19045.3803",  # a Windows build number
        "1.70.0",  # a version
        "750 ml",
        "EU 42",
        "",
    ],
)
def test_ordinary_values_are_not_pii(text):
    assert ALL.classify(text) is None


def test_numbers_are_never_detected():
    policy = compile_policy({"actions": {"phone": "drop", "card_number": "drop"}})
    msg = {"properties": {"phone": 14155550100, "order": 4111111111111111, "price": 1.5}}
    assert policy.apply(msg, None, WS) == []
    assert msg["properties"]["order"] == 4111111111111111


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1111",  # Visa
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555555555554444",  # Mastercard
        "2223003122003222",  # Mastercard 2-series
        "378282246310005",  # Amex
        "3782 822463 10005",
        "6011111111111117",  # Discover
        "3530111333300000",  # JCB
    ],
)
def test_card_numbers_are_detected(text):
    assert ALL.classify(text) == "card_number"


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",
        "1234567812345670",  # Luhn passes, but no network starts with 1
        "9999999999999995",  # Luhn passes, no network
        "41111111111111111111",  # 20 digits
        "4111  1111 1111 1111",  # doubled separator
    ],
)
def test_card_lookalikes_are_not_cards(text):
    assert detectors.luhn_valid("4111111111111111")
    assert ALL.classify(text) != "card_number"


@pytest.mark.parametrize("text", ["123-45-6789", "078 05 1121", "AB123456C", "ab 12 34 56 c"])
def test_national_ids_are_detected(text):
    assert ALL.classify(text) == "national_id"


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",  # area 000
        "666-12-3456",  # area 666
        "900-12-3456",  # areas 900-999
        "123-00-4567",  # group 00
        "123-45-0000",  # serial 0000
        "123456789",  # bare: not detected as an SSN
        "QQ123456C",  # HMRC's specimen prefix (Q is never a first letter)
        "GB123456A",  # unallocated prefix
        "AB123456E",  # suffix beyond D
        "Northbound",
    ],
)
def test_invalid_national_ids_are_not_detected(text):
    assert ALL.classify(text) is None


@pytest.mark.parametrize(
    "text", ["203.0.113.7", "10.0.0.1", "2001:db8::1", "fe80::1", "::1", "::ffff:192.0.2.1"]
)
def test_ip_addresses_are_detected(text):
    assert ALL.classify(text) == "ip"


@pytest.mark.parametrize(
    "text", ["256.1.1.1", "01.02.03.04", "1.2.3", "12:30", "00:1A:2B:3C:4D:5E"]
)
def test_ip_lookalikes_are_not_addresses(text):
    assert ALL.classify(text) is None


def test_a_dotted_quad_under_a_version_key_is_a_version():
    policy = compile_policy({"actions": {"ip": "mask"}})
    msg = {"properties": {"app_version": "1.2.3.4", "server": "1.2.3.4", "v": ["1.2.3.4"]}}
    findings = policy.apply(msg, None, WS)
    assert msg["properties"] == {"app_version": "1.2.3.4", "server": "1.2.3.0", "v": ["1.2.3.0"]}
    assert [f.path for f in findings] == ["properties.server", "properties.v[0]"]


def test_detect_limits_the_kinds():
    only_cards = Detector(frozenset({"card_number"}), "US")
    assert only_cards.classify("4111111111111111") == "card_number"
    for text in ("john@example.com", "+14155550100", "203.0.113.7", "123-45-6789"):
        assert only_cards.classify(text) is None


def test_the_cheap_prefilter_lets_every_pii_value_through():
    # Step 1 may only reject what steps 2-3 would reject too.
    pii = ["john@example.com", "+14155550100", "(415) 555-0100", "4111111111111111",
           "123-45-6789", "AB 12 34 56 C", "203.0.113.7", "fe80::1", " 2001:db8::1"]  # fmt: skip
    for text in pii:
        assert ALL.candidate(text) and ALL.classify(text) is not None, text


SHAPED = st.one_of(st.from_regex(ALL.pattern, fullmatch=True), st.text(max_size=30))
WALKER = compile_policy({"actions": {kind: "mask" for kind in KINDS}})


@settings(max_examples=200, deadline=None)
@given(SHAPED)
def test_prefilter_never_hides_a_match(text):
    """Step 1 (Detector.candidate, and its copy inlined in the policy's walk) only rejects
    strings that steps 2-3 reject too."""
    detected = ALL.precise(text)
    if detected is not None:
        assert ALL.candidate(text)
    msg = {"properties": {"k": text}}
    findings = WALKER.apply(msg, None, WS)
    expected = ALL.classify(text)
    assert [f.kind for f in findings] == ([expected] if expected else [])


def test_phone_region_reads_national_numbers():
    uk = compile_policy({"phone_region": "GB", "actions": {"phone": "hash"}})
    msg = {"traits": {"phone": "020 7946 0958"}}
    uk.apply(msg, None, WS)
    assert msg["traits"]["phone"] == sha("+442079460958")


# Actions ----------------------------------------------------------------------------------


def identify() -> dict:
    return {
        "type": "identify",
        "userId": "u1",
        "traits": {
            "email": " John.Doe@Example.com ",
            "phone": "+1 (415) 555-0100",
            "card": "4111 1111 1111 1111",
            "ssn": "123-45-6789",
            "name": "John Doe",
            "address": {"city": "Paris", "contact": "john@example.com"},
        },
        "context": {"ip": "203.0.113.7", "traits": {"backup_email": "jd@example.org"}},
    }


def test_every_action_on_detected_kinds(keyring):
    policy = compile_policy(
        {
            "actions": {
                "email": "hash",
                "phone": "mask",
                "card_number": "drop",
                "national_id": "mask",
                "ip": "mask",
            }
        }
    )
    msg = identify()
    findings = policy.apply(msg, keyring, WS)
    traits = msg["traits"]
    assert traits["email"] == sha("john.doe@example.com")  # trimmed, lower-cased
    assert traits["phone"] == "*******0100"
    assert "card" not in traits
    assert traits["ssn"] == "***-**-6789"
    assert traits["name"] == "John Doe"
    assert traits["address"]["contact"] == sha("john@example.com")
    assert msg["context"]["ip"] == "203.0.113.0"
    assert msg["context"]["traits"]["backup_email"] == sha("jd@example.org")
    assert sorted(findings) == sorted(
        [
            Finding("traits.email", "email", "hash"),
            Finding("traits.phone", "phone", "mask"),
            Finding("traits.card", "card_number", "drop"),
            Finding("traits.ssn", "national_id", "mask"),
            Finding("traits.address.contact", "email", "hash"),
            Finding("context.traits.backup_email", "email", "hash"),
            Finding("context.ip", "ip", "mask"),
        ]
    )


def test_hash_normalizes_like_ad_platforms_require():
    policy = compile_policy({"actions": {"email": "hash", "phone": "hash"}})
    one = {"traits": {"email": "  JOHN@example.COM", "phone": "(415) 555-0100"}}
    two = {"traits": {"email": "john@example.com", "phone": "+1 415 555 0100"}}
    policy.apply(one, None, WS)
    policy.apply(two, None, WS)
    assert one == two
    assert one["traits"]["phone"] == sha("+14155550100")


def test_keep_reports_without_changing():
    policy = compile_policy({})  # defaults: cards and national ids dropped, the rest kept
    msg = identify()
    findings = policy.apply(msg, None, WS)
    assert msg["traits"]["email"] == " John.Doe@Example.com "
    assert msg["context"]["ip"] == "203.0.113.7"
    assert "card" not in msg["traits"] and "ssn" not in msg["traits"]
    assert Finding("traits.email", "email", "keep") in findings
    assert Finding("traits.ssn", "national_id", "drop") in findings
    assert not any(f.path == "context.ip" for f in findings)  # kept ips are not reported


def test_encrypt_detected_values_round_trips(keyring):
    policy = compile_policy({"actions": {"email": "encrypt", "phone": "encrypt"}})
    msg = identify()
    policy.apply(msg, keyring, WS)
    token = msg["traits"]["email"]
    assert token.startswith("enc:v1:k2:")
    assert keyring.decrypt(token, WS) == "john.doe@example.com"  # the normalized value
    assert keyring.decrypt(msg["traits"]["phone"], WS) == "+14155550100"
    again = identify()
    policy.apply(again, keyring, WS)
    assert again["traits"]["email"] == token  # deterministic: identity can still match


def test_masks():
    mask = detectors.mask
    assert mask("email", "john@example.com") == "j***@example.com"
    assert mask("card_number", "4111 1111 1111 1111") == "************1111"
    assert mask("national_id", "AB 12 34 56 C") == "*****456C"
    assert mask("ip", "2001:db8:85a3:8d3:1319:8a2e:370:7348") == "2001:db8:85a3::"
    assert mask("ip", "::ffff:192.0.2.77") == "::ffff:192.0.2.0"
    assert mask(None, "anything") == "****"
    assert mask("phone", "12") == "****"


def test_drop_in_lists_removes_the_items():
    policy = compile_policy({"actions": {"email": "drop"}})
    msg = {"properties": {"emails": ["a@example.com", "x", "b@example.com"], "n": [[1, "c@d.io"]]}}
    findings = policy.apply(msg, None, WS)
    assert msg["properties"] == {"emails": ["x"], "n": [[1]]}
    assert [f.path for f in findings] == [
        "properties.emails[0]",
        "properties.emails[2]",
        "properties.n[0][1]",
    ]


def test_scan_limits_where_detectors_look():
    policy = compile_policy({"scan": ["properties"], "actions": {"email": "drop"}})
    msg = {"properties": {"e": "a@example.com"}, "traits": {"e": "a@example.com"}}
    policy.apply(msg, None, WS)
    assert msg == {"properties": {}, "traits": {"e": "a@example.com"}}


def test_scanning_context_covers_context_ip_once():
    policy = compile_policy({"scan": ["context", "context.traits"], "actions": {"ip": "hash"}})
    msg = {"context": {"ip": "203.0.113.7", "library": {"version": "1.2.3.4"}}}
    findings = policy.apply(msg, None, WS)
    assert msg["context"]["ip"] == sha("203.0.113.7")  # hashed once, not twice
    assert findings == [Finding("context.ip", "ip", "hash")]


def test_context_ip_ipv6_and_drop():
    policy = compile_policy({"detect": ["ip"], "actions": {"ip": "drop"}})
    msg = {"context": {"ip": "2001:db8::1"}}
    policy.apply(msg, None, WS)
    assert msg == {"context": {}}
    msg = {"context": {"ip": "not an ip"}}
    assert policy.apply(msg, None, WS) == []


# Field rules ------------------------------------------------------------------------------


def test_field_rules_beat_detection(keyring):
    policy = compile_policy(
        {
            "actions": {"email": "hash"},
            "fields": {
                "traits.email": "encrypt",
                "traits.name": "mask",
                "properties.ssn": "drop",
                "context.traits.backup_email": "keep",
            },
        }
    )
    msg = identify()
    msg["properties"] = {"ssn": 123456789, "total": 5}
    findings = policy.apply(msg, keyring, WS)
    assert keyring.decrypt(msg["traits"]["email"], WS) == "john.doe@example.com"
    assert msg["traits"]["name"] == "****"
    assert msg["properties"] == {"total": 5}
    assert msg["context"]["traits"]["backup_email"] == "jd@example.org"  # exempted
    assert Finding("traits.email", "email", "encrypt") in findings
    assert Finding("traits.name", None, "mask") in findings
    assert Finding("properties.ssn", None, "drop") in findings
    assert not any(f.path == "context.traits.backup_email" for f in findings)
    assert sum(f.path == "traits.email" for f in findings) == 1


def test_field_rules_reach_through_lists_and_into_containers(keyring):
    policy = compile_policy(
        {
            "detect": [],
            "fields": {
                "properties.products.email": "hash",
                "traits.address": "encrypt",
                "traits.address.zip": "drop",
            },
        }
    )
    msg = {
        "properties": {"products": [{"email": "A@x.io"}, {"sku": "s"}, {"email": None}]},
        "traits": {"address": {"city": "Paris", "zip": "75001", "floor": 3, "lift": True}},
    }
    findings = policy.apply(msg, keyring, WS)
    products = msg["properties"]["products"]
    assert products == [{"email": sha("a@x.io")}, {"sku": "s"}, {"email": None}]
    address = msg["traits"]["address"]
    assert "zip" not in address
    decrypted = keyring.decrypt_values(address, WS)
    assert decrypted == {"city": "Paris", "floor": "3", "lift": "true"}  # scalars become text
    # Deeper rules first, so "traits.address.zip: drop" happens before the encryption.
    assert [f.path for f in findings] == [
        "properties.products[0].email",
        "traits.address.zip",
        "traits.address",
    ]


def test_field_rule_with_a_kind_normalizes_numbers():
    policy = compile_policy({"fields": {"traits.phone": {"action": "hash", "kind": "phone"}}})
    msg = {"traits": {"phone": 4155550100}}
    findings = policy.apply(msg, None, WS)
    assert msg["traits"]["phone"] == sha("+14155550100")
    assert findings == [Finding("traits.phone", "phone", "hash")]


def test_rules_are_idempotent(keyring):
    policy = compile_policy({"detect": [], "fields": {"traits.e": "encrypt", "traits.h": "hash"}})
    pre_hashed = sha("john@example.com").upper()
    msg = {"traits": {"e": "x", "h": pre_hashed}}
    policy.apply(msg, keyring, WS)
    once = copy.deepcopy(msg)
    policy.apply(msg, keyring, WS)
    assert msg == once
    assert msg["traits"]["h"] == pre_hashed.lower()  # a client's own SHA-256 is kept


def test_plan_fields_apply_their_kinds_action():
    policy = compile_policy(
        {"actions": {"phone": "hash"}},
        plan_fields={"properties.caller": "phone", "properties.contact": "email"},
    )
    msg = {"properties": {"caller": "4155550100", "contact": "a@b.io"}}
    findings = policy.apply(msg, None, WS)
    assert msg["properties"]["caller"] == sha("+14155550100")  # bare digits: the plan says
    assert msg["properties"]["contact"] == "a@b.io"  # email: keep (default)
    assert findings == [Finding("properties.caller", "phone", "hash")]


def test_plan_fields_without_a_pii_section():
    policy = compile_policy(None, {"properties.card": "card_number"})
    msg = {"properties": {"card": "4111111111111111", "e": "a@b.io"}}
    assert policy.apply(msg, None, WS) == [Finding("properties.card", "card_number", "drop")]
    assert msg == {"properties": {"e": "a@b.io"}}  # nothing else is detected


# Compiling --------------------------------------------------------------------------------


def test_null_keys_take_their_defaults():
    policy = compile_policy({"detect": None, "actions": None, "scan": None, "fields": None})
    assert policy.kinds == frozenset(KINDS)
    msg = {"traits": {"ssn": "123-45-6789"}}
    policy.apply(msg, None, WS)
    assert msg == {"traits": {}}


def test_nothing_to_do_compiles_to_none():
    assert compile_policy(None) is None
    assert compile_policy(None, {}) is None
    assert compile_policy({"detect": []}) is None
    assert compile_policy({"actions": {"card_number": "keep", "national_id": "keep"}}) is None
    assert compile_policy({"detect": [], "fields": {"traits.x": "keep"}}) is None
    assert compile_policy(None, {"traits.email": "email"}) is None  # email: keep
    assert compile_policy({}) is not None


@pytest.mark.parametrize(
    "doc, field",
    [
        ([], "pii"),
        ({"detect": "email"}, "pii.detect"),
        ({"detect": ["email", "dna"]}, "pii.detect[1]"),
        ({"actions": {"email": "shred"}}, "pii.actions.email"),
        ({"actions": {"dna": "drop"}}, "pii.actions.dna"),
        ({"actions": ["drop"]}, "pii.actions"),
        ({"fields": {"userId": "hash"}}, "pii.fields.userId"),
        ({"fields": {"traits..email": "hash"}}, "pii.fields.traits..email"),
        ({"fields": {"traits.email": "shred"}}, "pii.fields.traits.email"),
        ({"fields": {"traits.e": {"action": "hash", "kind": "dna"}}}, "pii.fields.traits.e.kind"),
        ({"fields": {"traits.e": {"action": "hash", "as": "x"}}}, "pii.fields.traits.e.as"),
        ({"fields": {"traits.e": {"kind": "email"}}}, "pii.fields.traits.e.action"),
        ({"fields": ["traits.email"]}, "pii.fields"),
        ({"scan": []}, "pii.scan"),
        ({"scan": ["events"]}, "pii.scan[0]"),
        ({"phone_region": "XX"}, "pii.phone_region"),
        ({"detekt": ["email"]}, "pii.detekt"),
    ],
)  # fmt: skip
def test_bad_sections_name_the_field(doc, field):
    with pytest.raises(Invalid) as info:
        compile_policy(doc)
    assert info.value.field == field


def test_bad_plan_fields_name_the_path():
    with pytest.raises(Invalid) as info:
        compile_policy(None, {"properties.x": "dna"})
    assert info.value.field == "plan_fields.properties.x"


def test_encrypting_without_keys_fails_clearly():
    policy = compile_policy({"fields": {"traits.email": "encrypt"}})
    assert policy.encrypts
    assert not compile_policy({}).encrypts
    with pytest.raises(PiiKeyError, match="PLAIT_PII_KEYS"):
        policy.apply({"traits": {}}, None, WS)


# Encryption -------------------------------------------------------------------------------


def test_round_trip_and_determinism(keyring):
    token = keyring.encrypt("jane@example.com", WS)
    assert is_encrypted(token) and keyring.is_encrypted(token)
    assert token_key_id(token) == "k2"
    assert keyring.decrypt(token, WS) == "jane@example.com"
    assert keyring.encrypt("jane@example.com", WS) == token
    assert keyring.encrypt("jane@example.com", "ws_2") != token
    assert keyring.encrypt("", WS) != keyring.encrypt(" ", WS)
    assert keyring.decrypt(keyring.encrypt("ünïcødé ✓", WS), WS) == "ünïcødé ✓"
    assert not is_encrypted("hello") and not is_encrypted(5)


def test_wrong_workspace_or_tampering_is_refused(keyring):
    token = keyring.encrypt("jane@example.com", WS)
    with pytest.raises(PiiKeyError, match="another workspace"):
        keyring.decrypt(token, "ws_2")
    head, data = token.rsplit(":", 1)
    flipped = data[:-2] + ("A" if data[-2] != "A" else "B") + data[-1]
    with pytest.raises(PiiKeyError, match="altered"):
        keyring.decrypt(f"{head}:{flipped}", WS)
    with pytest.raises(PiiKeyError):
        keyring.decrypt(f"{head}:{data[:10]}", WS)  # truncated
    with pytest.raises(PiiKeyError):
        keyring.decrypt(f"{head}:{data}!!", WS)  # not base64
    with pytest.raises(PiiKeyError, match="not an encrypted value"):
        keyring.decrypt("jane@example.com", WS)


def test_a_wrong_key_is_refused(keyring):
    token = keyring.encrypt("x", WS)
    impostor = Keyring.parse(f"k2:{Keyring.generate_key()}")
    with pytest.raises(PiiKeyError):
        impostor.decrypt(token, WS)
    stranger = Keyring.parse(f"k9:{Keyring.generate_key()}")
    with pytest.raises(PiiKeyError, match="'k2', which is not in PLAIT_PII_KEYS"):
        stranger.decrypt(token, WS)


def test_decrypt_values_copies_and_leaves_unknown_keys(keyring):
    other = Keyring.parse(f"k7:{Keyring.generate_key()}")
    foreign = other.encrypt("secret", WS)
    doc = {
        "email": keyring.encrypt("a@b.io", WS),
        "list": [keyring.encrypt("1", WS), 2, None, {"deep": keyring.encrypt("d", WS)}],
        "foreign": foreign,
        "plain": "enc:v1",
    }
    original = copy.deepcopy(doc)
    out = keyring.decrypt_values(doc, WS)
    assert out == {"email": "a@b.io", "list": ["1", 2, None, {"deep": "d"}], "foreign": foreign,
                   "plain": "enc:v1"}  # fmt: skip
    assert doc == original
    with pytest.raises(PiiKeyError):
        keyring.decrypt_values(doc, "ws_other")


def test_rotation_reencrypts_under_the_current_key():
    old_key, new_key = Keyring.generate_key(), Keyring.generate_key()
    before = Keyring.parse(f"k1:{old_key}")
    stored = {"traits": {"email": before.encrypt("a@b.io", WS), "n": 1}, "ids": ["x"]}
    during = Keyring.parse(f"k2:{new_key},k1:{old_key}")
    assert during.current == "k2" and during.key_ids == ("k2", "k1")
    assert during.decrypt(stored["traits"]["email"], WS) == "a@b.io"  # old keys decrypt
    rotated, changed = during.reencrypt_values(stored, WS)
    assert changed
    assert token_key_id(rotated["traits"]["email"]) == "k2"
    assert rotated["traits"]["n"] == 1 and rotated["ids"] == ["x"]
    again, changed = during.reencrypt_values(rotated, WS)
    assert not changed and again == rotated
    after = Keyring.parse(f"k2:{new_key}")
    assert after.decrypt_values(rotated, WS)["traits"]["email"] == "a@b.io"


def test_keys_come_from_the_environment():
    key = Keyring.generate_key()
    assert len(base64.b64decode(key)) == 64
    assert Keyring.from_env({}) is None
    assert Keyring.from_env({"PLAIT_PII_KEYS": "  "}) is None
    ring = Keyring.from_env({"PLAIT_PII_KEYS": f" k2:{key} , k1:{Keyring.generate_key()}"})
    assert ring.current == "k2"
    urlsafe = base64.urlsafe_b64encode(base64.b64decode(key)).decode().rstrip("=")
    assert Keyring.parse(f"k:{urlsafe}").encrypt("x", WS) == Keyring.parse(f"k:{key}").encrypt(
        "x", WS
    )


@pytest.mark.parametrize(
    "value, message",
    [
        ("nokey", "must be '<key id>:<base64 key>'"),
        ("k1:", "must be '<key id>:<base64 key>'"),
        ("k1:abc$", "not base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "5 bytes"),
        ("k 1:" + base64.b64encode(bytes(64)).decode(), "key id"),
        ("k1:{0},k1:{0}".format(base64.b64encode(bytes(64)).decode()), "appears twice"),
    ],
)
def test_malformed_keys_are_refused(value, message):
    with pytest.raises(PiiKeyError, match=message):
        Keyring.from_env({"PLAIT_PII_KEYS": value})


# The demo stream --------------------------------------------------------------------------


def test_demo_stream_finds_only_real_pii(keyring):
    """On realistic traffic every finding is an email or a phone under traits, and the
    message keys that are not PII survive."""
    messages = list(itertools.islice(Cast(people=40).messages(), 1500))
    policy = compile_policy({"actions": {"email": "encrypt", "phone": "mask", "ip": "mask"}})
    kinds = set()
    for msg in messages:
        before = copy.deepcopy(msg)
        msg.setdefault("context", {})["ip"] = "198.51.100.23"
        for finding in policy.apply(msg, keyring, WS):
            kinds.add((finding.kind, finding.path))
        assert msg["context"]["ip"] == "198.51.100.0"
        assert msg.get("properties") == before.get("properties")
        assert set(msg.get("traits", {})) == set(before.get("traits", {}))
    assert kinds == {
        ("email", "traits.email"),
        ("phone", "traits.phone"),
        ("email", "context.traits.email"),
        ("phone", "context.traits.phone"),
        ("ip", "context.ip"),
    }
