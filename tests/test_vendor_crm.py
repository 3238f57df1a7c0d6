"""CRM and email-marketing connectors against local servers that check the vendors'
documented request formats, credentials, batch limits and answers (their clouds cannot be
reached here): HubSpot's CRM v3 contacts (batch upsert, multi-status errors, GDPR delete)
and Mailchimp's Marketing API 3.0 audience members (batch subscribe, member tags,
permanent deletion)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
import pytest
from destination_world import DeliveryWorld
from webhook_server import WebhookServer

from plait.audiences import manage as audience_docs
from plait.destinations import manage
from plait.destinations.connectors import hubspot as hubspot_connector
from plait.store.workspaces import Invalid

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
KEY = "0123456789abcdef0123456789abcdef-us21"
LIST = "a1b2c3d4e5"


@pytest.fixture
def world(store):
    hubspot_connector._SCHEMAS.clear()  # a later server may reuse a port: read its own
    return DeliveryWorld(store)


def drain(world, rounds=4, pause=0.15):
    for _ in range(rounds):
        world.drain()
        asyncio.run(asyncio.sleep(pause))


def dead(world, key):
    return manage.queued(world.store, world.repo, world.ws, key, "failed")


def forget(world, user_id):
    import plait.destinations  # noqa: F401  (its steps in privacy deletions)
    from plait.govern import privacy

    created = privacy.create_request(world.store, world.ws, "DELETE_ONLY", "USER_ID", [user_id],
                                     "tok_test")  # fmt: skip
    return privacy.run_request(world.store, created["id"], [user_id], settle_seconds=0)


# -- HubSpot ---------------------------------------------------------------------------------

PROPERTIES = ("email", "firstname", "lastname", "jobtitle", "company", "city", "zip",
              "plan_tier", "newsletter", "interests", "lifecyclestage", "buyers",
              "plait_user_id")  # fmt: skip
STAGES = ("subscriber", "lead", "customer")


def hubspot_error(message, category, **context):
    error = {"status": "error", "message": message, "correlationId": "c0ffee00-0000", "category":
             category}  # fmt: skip
    return {**error, "context": context} if context else error


def hubspot_server(token, contacts, script=(), whole_batch_400=False):
    """HubSpot's CRM v3 as documented: Bearer auth; GET /crm/v3/properties/contacts; POST
    /crm/v3/objects/contacts/batch/upsert with at most 100 inputs (idProperty email, id the
    email, unique ids: duplicates are refused, property values strings of existing
    properties); an input with objectWriteTraceId that fails makes a 207 naming it in
    errors[].context (without them, or with ``whole_batch_400``, a 400 for the batch);
    GET a contact by idProperty; POST gdpr-delete (204). ``script``: answers of the first
    upserts (429 with the rate-limit headers, 5xx)."""
    upserts = []

    def respond(n, request):
        url = urlsplit(request.path)
        if request.headers.get("authorization") != f"Bearer {token}":
            return 401, {}, orjson.dumps(hubspot_error(
                "Authentication credentials not found.", "INVALID_AUTHENTICATION"))  # fmt: skip
        if request.method == "GET" and url.path == "/crm/v3/properties/contacts":
            return 200, {}, orjson.dumps({"results": [{"name": p, "type": "string"}
                                                      for p in PROPERTIES]})  # fmt: skip
        if request.method == "GET" and url.path.startswith("/crm/v3/objects/contacts/"):
            by = parse_qs(url.query)["idProperty"][0]
            value = unquote(url.path.rsplit("/", 1)[1])
            found = [c for c in contacts.values() if c["properties"].get(by) == value]
            if not found:
                return 404, {}, orjson.dumps(hubspot_error("Object not found.",
                                                           "OBJECT_NOT_FOUND"))  # fmt: skip
            return 200, {}, orjson.dumps(found[0])
        if request.headers.get("content-type") != "application/json":
            return 415, {}
        if url.path == "/crm/v3/objects/contacts/gdpr-delete":
            body = request.json
            if body.get("idProperty") == "email":
                contacts.pop(body["objectId"].lower(), None)  # unknown: blocklisted
            else:
                gone = [k for k, c in contacts.items() if c["id"] == body["objectId"]]
                if not gone:
                    return 404, {}, orjson.dumps(hubspot_error("Object not found.",
                                                               "OBJECT_NOT_FOUND"))  # fmt: skip
                contacts.pop(gone[0])
            return 204, {}, b""
        if url.path != "/crm/v3/objects/contacts/batch/upsert":
            return 404, {}
        inputs = request.json.get("inputs") or []
        upserts.append(inputs)
        if not 1 <= len(inputs) <= 100:
            return 400, {}, orjson.dumps(hubspot_error("inputs: 1 to 100", "VALIDATION_ERROR"))
        if len(upserts) <= len(script):
            status = script[len(upserts) - 1]
            headers = {"X-HubSpot-RateLimit-Interval-Milliseconds": "100",
                       "X-HubSpot-RateLimit-Max": "100", "X-HubSpot-RateLimit-Remaining": "0"
                       } if status == 429 else {}  # fmt: skip
            return status, headers, orjson.dumps(hubspot_error("You have reached your "
                                                               "ten_secondly_rolling limit.",
                                                               "RATE_LIMITS"))  # fmt: skip
        ids = [i["id"].lower() for i in inputs]
        if len(set(ids)) < len(ids):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            return 400, {}, orjson.dumps(hubspot_error(
                f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique",
                "VALIDATION_ERROR", ids=duplicates))  # fmt: skip
        errors, results = [], []
        for i in inputs:
            props = i.get("properties") or {}
            wrong = (i.get("idProperty") != "email" or "@" not in i["id"]
                     or not i.get("objectWriteTraceId")
                     or any(not isinstance(v, str) for v in props.values())
                     or any(p not in PROPERTIES for p in props)
                     or props.get("lifecyclestage", "lead") not in STAGES)  # fmt: skip
            if wrong:
                errors.append(hubspot_error(
                    f"Property values were not valid: {sorted(props)}", "VALIDATION_ERROR",
                    objectWriteTraceId=[i.get("objectWriteTraceId")]))  # fmt: skip
                continue
            contact = contacts.setdefault(i["id"].lower(), {"id": str(101 + len(contacts)),
                                                            "properties": {}})  # fmt: skip
            contact["properties"].update(props)
            results.append({**contact, "objectWriteTraceId": i["objectWriteTraceId"]})
        if errors and (whole_batch_400 or len(inputs) == 1):
            return 400, {}, orjson.dumps(hubspot_error(errors[0]["message"], "VALIDATION_ERROR"))
        body = {"status": "COMPLETE", "results": results, "startedAt": "2024-01-01T00:00:00Z",
                "completedAt": "2024-01-01T00:00:01Z"}  # fmt: skip
        if errors:
            return 207, {}, orjson.dumps({**body, "numErrors": len(errors), "errors": errors})
        return 200, {}, orjson.dumps(body)

    respond.upserts = upserts
    return respond


def hubspot(world, server, key="hub", **settings):
    doc = {"key": key, "type": "hubspot", "backoff": 0.01, "max_backoff": 0.02,
           "batch_size": settings.pop("batch_size", 10),
           "settings": {"access_token": TOKEN, "endpoint": server.url.removesuffix("/hook"),
                        **settings}}  # fmt: skip
    if "audiences" in settings:
        doc["audiences"] = doc["settings"].pop("audiences")
    manage.put(world.repo, world.ws, doc)


def test_hubspot_upserts_contacts_by_email_and_refused_inputs_become_dead_letters(world):
    contacts = {}
    respond = hubspot_server(TOKEN, contacts)
    with WebhookServer(respond) as server:
        hubspot(world, server, properties={"plan": "plan_tier"})
        sent = world.feed([
            {"type": "identify", "userId": "ann", "traits": {
                "email": "Ann@Shop.example", "firstName": "Ann", "lastName": "Lee", "title": "CTO",
                "company": {"name": "Acme"}, "address": {"city": "Paris", "postalCode": "75001"},
                "plan": "pro", "newsletter": True, "interests": ["golf", "tea"],
                "favoriteColor": "blue", "nested": {"x": 1}}},
            {"type": "identify", "userId": "ann",  # the same contact: merged into one input
             "traits": {"email": "ann@shop.example", "lastName": "Lee-Smith"}},
            {"type": "identify", "userId": "bob",  # refused by HubSpot: a 207 names it
             "traits": {"email": "bob@shop.example", "lifecyclestage": "astronaut"}},
            {"type": "identify", "userId": "cat", "traits": {"firstName": "Cat"}},  # no email
            {"type": "track", "userId": "ann", "event": "Order Completed"},  # not taken
        ])  # fmt: skip
        (inputs,) = respond.upserts  # one request; cat's never sent
        assert [i["id"] for i in inputs] == ["Ann@Shop.example", "bob@shop.example"]
        ann = inputs[0]
        assert ann["idProperty"] == "email" and ann["objectWriteTraceId"].startswith("hub-")
        assert ann["properties"] == {
            "email": "Ann@Shop.example",
            "firstname": "Ann",
            "lastname": "Lee-Smith",
            "jobtitle": "CTO",
            "company": "Acme",
            "city": "Paris",
            "zip": "75001",
            "plan_tier": "pro",
            "newsletter": "true",
            "interests": "golf;tea",
        }  # favoriteColor: no such property in the account; nested: no HubSpot form
        upsert = next(r for r in server.requests if r.path.endswith("/batch/upsert"))
        assert upsert.headers["authorization"] == f"Bearer {TOKEN}"
        assert contacts["ann@shop.example"]["properties"]["lastname"] == "Lee-Smith"
        failed = {d["message_id"]: d for d in dead(world, "hub")}
        assert set(failed) == {sent[2]["messageId"], sent[3]["messageId"]}
        bob = failed[sent[2]["messageId"]]
        assert bob["last_status"] == 400 and "VALIDATION_ERROR" in bob["last_response"]
        assert "no email for the person" in failed[sent[3]["messageId"]]["last_response"]
        status = manage.status(world.store, world.ws, "hub")
        assert status["delivered"] == 2 and status["filtered"] == 1


def test_hubspot_retries_throttling_and_server_errors_and_a_bad_token_is_a_dead_letter(world):
    respond = hubspot_server(TOKEN, {}, script=(429, 503))
    with WebhookServer(respond) as server:
        hubspot(world, server)
        world.feed([{"type": "identify", "userId": "dan", "traits": {"email": "dan@shop.example"}}])
        drain(world)
        upserts = [r.status for r in server.requests if r.path.endswith("/batch/upsert")]
        assert upserts == [429, 503, 200]
        assert manage.status(world.store, world.ws, "hub")["delivered"] == 1
        assert dead(world, "hub") == []
    with WebhookServer(hubspot_server("another-token", {})) as server:
        hubspot(world, server)
        world.feed([{"type": "identify", "userId": "eve", "traits": {"email": "eve@shop.example"}}])
        (letter,) = dead(world, "hub")
        assert letter["last_status"] == 401 and "INVALID_AUTHENTICATION" in letter["last_response"]


def test_hubspot_requests_never_exceed_100_inputs_and_an_unnamed_refusal_is_found(world):
    with pytest.raises(Invalid, match="1 to 100 for hubspot"):
        manage.put(world.repo, world.ws, {"key": "hub", "type": "hubspot", "batch_size": 101,
                                          "settings": {"access_token": TOKEN}})  # fmt: skip
    with pytest.raises(Invalid, match="settings.properties"):
        manage.put(world.repo, world.ws, {"key": "hub", "type": "hubspot", "settings": {
            "access_token": TOKEN, "properties": {"plan": "Plan Tier"}}})  # fmt: skip
    respond = hubspot_server(TOKEN, {}, whole_batch_400=True)
    with WebhookServer(respond) as server:
        hubspot(world, server, batch_size=100)
        sent = world.feed(
            [{"type": "identify", "userId": f"u{n}", "traits": {"email": f"u{n}@shop.example"}}
             for n in range(150)]
            + [{"type": "identify", "userId": "x", "traits": {"email": "x@shop.example",
                                                              "lifecyclestage": "astronaut"}}]
        )  # fmt: skip
        assert max(len(inputs) for inputs in respond.upserts) <= 100
        # the batch with x's input was refused whole, naming nobody: each input went alone
        assert manage.status(world.store, world.ws, "hub")["delivered"] == 150
        assert [d["message_id"] for d in dead(world, "hub")] == [sent[-1]["messageId"]]


def test_hubspot_gets_audience_flags_with_the_profiles_email_and_privacy_deletions(world):
    at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    audiences = [{"key": "buyers", "definition":
                  'performed "Order Completed" at least 1 times in last 30 days'}]  # fmt: skip
    audience_docs.save(world.repo, world.ws, {"audiences": audiences})
    world.feed([
        {"type": "identify", "userId": "ann", "traits": {"email": "ann@shop.example"}},
        {"type": "identify", "userId": "zed@shop.example", "traits": {"email": "zed@shop.example"}},
        {"type": "track", "userId": "ann", "event": "Order Completed", "timestamp": at},
    ])  # fmt: skip
    contacts = {}
    respond = hubspot_server(TOKEN, contacts)
    with WebhookServer(respond) as server:
        hubspot(world, server, audiences=["buyers"], user_id_property="plait_user_id")
        hubspot(world, server, key="hub2")  # no user_id_property
        world.drain()  # the full sync: ann's entry, with the email of her profile
        (inputs,) = respond.upserts
        assert inputs == [{"idProperty": "email", "id": "ann@shop.example",
                           "objectWriteTraceId": inputs[0]["objectWriteTraceId"],
                           "properties": {"buyers": "true", "plait_user_id": "ann",
                                          "email": "ann@shop.example"}}]  # fmt: skip
        contacts["zed@shop.example"] = {"id": "900", "properties": {"email": "zed@shop.example"}}

        assert forget(world, "ann")["receipt"]["forwarded_to"] == ["hub", "hub2"]
        assert forget(world, "zed@shop.example")["receipt"]["forwarded_to"] == ["hub", "hub2"]
        drain(world, rounds=2)
        lookups = [r.path for r in server.requests if r.method == "GET" and "/objects/" in r.path]
        assert "/crm/v3/objects/contacts/ann?idProperty=plait_user_id&properties=plait_user_id" \
            in lookups  # fmt: skip
        deletes = [r.json for r in server.requests if r.path.endswith("/gdpr-delete")]
        # hub: ann found by her user id, deleted by record id; zed (written before
        # user_id_property, not found by it) by email as his user id is one; hub2: zed by email
        assert sorted(deletes, key=str) == [
            {"objectId": "101"},
            {"objectId": "zed@shop.example", "idProperty": "email"},
            {"objectId": "zed@shop.example", "idProperty": "email"},
        ]
        assert contacts == {}
        assert dead(world, "hub") == []
        (letter,) = dead(world, "hub2")  # ann's user id is no email: not forwardable
        assert "not forwarded" in letter["last_response"] and "'ann'" in letter["last_response"]


def test_hubspot_names_values_and_waits_as_hubspot_expects():
    import httpx

    from plait.destinations.connectors.hubspot import _outcome, property_name, value_of

    assert [property_name(t) for t in ("planType", "Plan Tier", "last_login_at")] == [
        "plan_type", "plan_tier", "last_login_at"]  # fmt: skip
    assert [value_of(v) for v in (True, False, 3, 2.5, None, ["a", 1], {"x": 1})] == [
        "true", "false", "3", "2.5", "", "a;1", None]  # fmt: skip

    def answer(status, body=b"{}", **headers):
        return _outcome(httpx.Response(status, headers=headers, content=body))

    window = {"x-hubspot-ratelimit-interval-milliseconds": "10000",
              "x-hubspot-ratelimit-remaining": "0"}  # fmt: skip
    assert answer(429, **window).retry_after == 10.0  # the rolling window's end
    daily = answer(429, b'{"policyName": "DAILY"}', **window)
    assert daily.retry and daily.retry_after is None  # the daily limit: backoff
    assert answer(429, **{"retry-after": "3"}).retry_after == 3.0
    locked = answer(423)
    assert locked.retry and locked.retry_after == 2.0
    assert answer(477).retry and answer(502).retry
    assert not answer(401).retry and not answer(403).retry and not answer(400).retry


# -- Mailchimp -------------------------------------------------------------------------------


def problem(status, title, detail):
    return orjson.dumps({"type": "https://mailchimp.com/developer/marketing/docs/errors/",
                         "title": title, "status": status, "detail": detail,
                         "instance": "995c5cb0-3280-4a6e-808b-3b096d0bb219"})  # fmt: skip


def md5(email):
    return hashlib.md5(email.lower().encode()).hexdigest()


def mailchimp_server(api_key, list_id, members, script=()):
    """Mailchimp's Marketing API 3.0 as documented: Basic auth with any user name and the
    API key; POST /3.0/lists/{list_id} with at most 500 members (email_address,
    status_if_new; an existing member's status is kept), update_existing, merge_fields of
    the audience's tags and tags to add; the answer's new_members, updated_members and
    errors (an invalid address); POST …/members/{hash}/tags (active/inactive, 204; 404 for
    no member); POST …/members/{hash}/actions/delete-permanent (204); problem details for
    errors. ``script``: answers of the first batch requests (429, 5xx)."""
    batches = []

    def respond(n, request):
        url = urlsplit(request.path)
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        _, _, password = base64.b64decode(encoded or "").decode().partition(":")
        if scheme != "Basic" or password != api_key:
            return (
                401,
                {},
                problem(
                    401,
                    "API Key Invalid",
                    "Your API key may be invalid, or "
                    "you've attempted to access the wrong datacenter.",
                ),
            )
        prefix = f"/3.0/lists/{list_id}"
        if not url.path.startswith(prefix):
            return (
                404,
                {},
                problem(404, "Resource Not Found", "The requested resource could not be found."),
            )
        rest = url.path.removeprefix(prefix)
        if rest.startswith("/members/"):
            found = members.get(rest.split("/")[2])
            if found is None:
                return (
                    404,
                    {},
                    problem(
                        404, "Resource Not Found", "The requested resource could not be found."
                    ),
                )
            if rest.endswith("/actions/delete-permanent"):
                members.pop(rest.split("/")[2])
            elif rest.endswith("/tags"):
                for tag in request.json["tags"]:
                    (found["tags"].add if tag["status"] == "active" else found["tags"].discard)(
                        tag["name"])  # fmt: skip
            return 204, {}, b""
        if rest or request.headers.get("content-type") != "application/json":
            return 405, {}, problem(405, "Method Not Allowed", "")
        body = request.json
        batches.append(body)
        if len(batches) <= len(script):
            status = script[len(batches) - 1]
            return status, {}, problem(status, "Too Many Requests" if status == 429 else
                                       "Internal Server Error", "try again")  # fmt: skip
        sent = body.get("members") or []
        emails = [m.get("email_address", "").lower() for m in sent]
        if (
            not 1 <= len(sent) <= 500
            or body.get("update_existing") is not True
            or len(set(emails)) < len(emails)
            or any(
                m.get("status_if_new") not in ("subscribed", "pending")
                or "status" in m
                or set(m.get("merge_fields") or {}) - {"FNAME", "LNAME"}
                for m in sent
            )
        ):
            return 400, {}, problem(400, "Invalid Resource", "The resource submitted could not "
                                    "be validated.")  # fmt: skip
        created, updated, errors = [], [], []
        for m in sent:
            email = m["email_address"]
            if not email.rpartition("@")[2].count("."):
                errors.append({"email_address": email, "error": f"{email} looks fake or "
                               "invalid, please enter a real email address.",
                               "error_code": "ERROR_GENERIC", "field": "email_address",
                               "field_message": "Invalid email"})  # fmt: skip
                continue
            member = members.get(md5(email))
            if member is None:
                member = members[md5(email)] = {
                    "email_address": email,
                    "merge_fields": {},
                    "status": m["status_if_new"],
                    "tags": set(),
                }
                created.append(member)
            else:
                updated.append(member)
            member["merge_fields"].update(m.get("merge_fields") or {})
            member["tags"].update(m.get("tags") or ())
        shown = [{**m, "tags": sorted(m["tags"])} for m in created + updated]
        return 200, {}, orjson.dumps({
            "new_members": shown[:len(created)], "updated_members": shown[len(created):],
            "errors": errors, "total_created": len(created), "total_updated": len(updated),
            "error_count": len(errors)})  # fmt: skip

    respond.batches = batches
    return respond


def mailchimp(world, server, key="mc", **doc):
    settings = {"api_key": KEY, "list_id": LIST, "endpoint": server.url.removesuffix("/hook")
                + "/3.0", **doc.pop("settings", {})}  # fmt: skip
    manage.put(
        world.repo,
        world.ws,
        {
            "key": key,
            "type": "mailchimp",
            "backoff": 0.01,
            "max_backoff": 0.02,
            "settings": settings,
            **doc,
        },
    )


def test_mailchimp_batch_subscribes_members_and_errored_ones_become_dead_letters(world):
    members = {
        md5("dan@shop.example"): {
            "email_address": "dan@shop.example",
            "tags": set(),
            "status": "unsubscribed",
            "merge_fields": {},
        }
    }
    respond = mailchimp_server(KEY, LIST, members)
    with WebhookServer(respond) as server:
        mailchimp(world, server, batch_size=10)
        sent = world.feed([
            {"type": "identify", "userId": "ann", "traits": {
                "email": "ann@shop.example", "firstName": "Ann", "plan": "pro"}},
            {"type": "identify", "userId": "ann", "traits": {"last_name": "Lee"}},  # merged
            {"type": "identify", "userId": "dan", "traits": {"email": "dan@shop.example",
                                                             "firstName": "Dan"}},
            {"type": "identify", "userId": "bob", "traits": {"email": "bob@localhost"}},
            {"type": "identify", "userId": "cat", "traits": {"firstName": "Cat"}},  # no email
        ])  # fmt: skip
        (batch,) = respond.batches
        request = next(r for r in server.requests if r.path == f"/3.0/lists/{LIST}")
        assert request.headers["authorization"].startswith("Basic ")
        assert batch["update_existing"] is True
        assert batch["members"] == [
            {
                "email_address": "ann@shop.example",
                "status_if_new": "subscribed",
                "merge_fields": {"FNAME": "Ann", "LNAME": "Lee"},
            },
            {
                "email_address": "dan@shop.example",
                "status_if_new": "subscribed",
                "merge_fields": {"FNAME": "Dan"},
            },
            {"email_address": "bob@localhost", "status_if_new": "subscribed"},
        ]
        assert members[md5("ann@shop.example")]["status"] == "subscribed"
        assert members[md5("dan@shop.example")]["status"] == "unsubscribed"  # kept
        failed = {d["message_id"]: d for d in dead(world, "mc")}
        assert set(failed) == {sent[3]["messageId"], sent[4]["messageId"]}
        assert failed[sent[3]["messageId"]]["last_status"] == 400
        assert "ERROR_GENERIC" in failed[sent[3]["messageId"]]["last_response"]
        assert "no email for the person" in failed[sent[4]["messageId"]]["last_response"]
        assert manage.status(world.store, world.ws, "mc")["delivered"] == 3
    manage.put(world.repo, world.ws, {"key": "mc2", "type": "mailchimp", "settings": {
        "api_key": KEY, "list_id": LIST, "status": "pending",
        "merge_fields": {"company": "COMPANY"}}})  # fmt: skip
    settings = manage.compiled(world.repo, world.ws)["mc2"].settings
    assert settings["endpoint"] == "https://us21.api.mailchimp.com/3.0"  # the key's dc
    assert settings["status"] == "pending" and settings["merge_fields"] == {"company": "COMPANY"}
    for bad, match in (
        ({"api_key": "nodatacenter"}, "api_key"),
        ({"status": "cleaned"}, "settings.status"),
        ({"merge_fields": {"company": "company"}}, "settings.merge_fields"),
    ):
        with pytest.raises(Invalid, match=match):
            manage.put(world.repo, world.ws, {"key": "mc3", "type": "mailchimp", "settings": {
                "api_key": KEY, "list_id": LIST, **bad}})  # fmt: skip


def test_mailchimp_retries_429_and_5xx_and_bad_credentials_or_list_are_dead_letters(world):
    respond = mailchimp_server(KEY, LIST, {}, script=(429, 502))
    with WebhookServer(respond) as server:
        mailchimp(world, server)
        world.feed([{"type": "identify", "userId": "ann", "traits": {"email": "ann@shop.example"}}])
        drain(world)
        assert [r.status for r in server.requests] == [429, 502, 200]
        assert manage.status(world.store, world.ws, "mc")["delivered"] == 1
    with WebhookServer(mailchimp_server("other-us21", LIST, {})) as server:
        mailchimp(world, server)
        world.feed([{"type": "identify", "userId": "bob", "traits": {"email": "bob@shop.example"}}])
    with WebhookServer(mailchimp_server(KEY, LIST, {})) as server:
        mailchimp(world, server, settings={"list_id": "nosuchlist"})
        world.feed([{"type": "identify", "userId": "dan", "traits": {"email": "dan@shop.example"}}])
    letters = dead(world, "mc")
    assert [d["last_status"] for d in letters] == [401, 404]
    assert "API Key Invalid" in letters[0]["last_response"]
    assert "Resource Not Found" in letters[1]["last_response"]


def test_mailchimp_requests_never_exceed_500_members(world):
    with pytest.raises(Invalid, match="1 to 500 for mailchimp"):
        manage.put(
            world.repo,
            world.ws,
            {
                "key": "mc",
                "type": "mailchimp",
                "batch_size": 501,
                "settings": {"api_key": KEY, "list_id": LIST},
            },
        )
    members = {}
    respond = mailchimp_server(KEY, LIST, members)
    with WebhookServer(respond) as server:
        mailchimp(world, server)  # batch_size: the default, 500
        world.feed([{"type": "identify", "userId": f"u{n}",
                     "traits": {"email": f"u{n}@shop.example"}} for n in range(700)])  # fmt: skip
        assert max(len(b["members"]) for b in respond.batches) <= 500
        assert len(members) == 700
        assert manage.status(world.store, world.ws, "mc")["delivered"] == 700


def test_mailchimp_tags_audience_members_on_entry_and_untags_them_on_exit(world):
    audiences = [{"key": "pros", "definition": 'traits.plan = "pro"'}]
    audience_docs.save(world.repo, world.ws, {"audiences": audiences})
    world.feed([
        {"type": "identify", "userId": "ann",
         "traits": {"email": "ann@shop.example", "firstName": "Ann", "plan": "pro"}},
        {"type": "identify", "userId": "bob",
         "traits": {"email": "bob@shop.example", "plan": "pro"}},
        {"type": "identify", "userId": "cat", "traits": {"email": "cat@shop.example"}},
    ])  # fmt: skip
    members = {
        md5("bob@shop.example"): {
            "email_address": "bob@shop.example",
            "tags": {"old"},
            "status": "subscribed",
            "merge_fields": {},
        }
    }
    respond = mailchimp_server(KEY, LIST, members)

    def tags(email):
        return members[md5(email)]["tags"]

    with WebhookServer(respond) as server:
        mailchimp(world, server, audiences=["pros"])
        world.drain()  # the full sync: both members tagged, in one batch
        (batch,) = respond.batches
        assert {m["email_address"]: m.get("tags") for m in batch["members"]} == {
            "ann@shop.example": ["pros"],
            "bob@shop.example": ["pros"],
        }
        ann = next(m for m in batch["members"] if m["email_address"] == "ann@shop.example")
        assert ann["merge_fields"] == {"FNAME": "Ann"}  # from her profile
        assert tags("ann@shop.example") == {"pros"} and tags("bob@shop.example") == {"old", "pros"}

        world.feed([{"type": "identify", "userId": "ann", "traits": {"plan": "free"}}])  # exits
        untag = server.requests[-1]
        assert untag.path == f"/3.0/lists/{LIST}/members/{md5('ann@shop.example')}/tags"
        assert untag.json == {"tags": [{"name": "pros", "status": "inactive"}]}
        assert tags("ann@shop.example") == set()
        assert len(respond.batches) == 1  # an exit alone changes no member's fields

        world.feed([{"type": "identify", "userId": "cat", "traits": {"plan": "pro"}}])  # enters
        assert respond.batches[-1]["members"] == [
            {"email_address": "cat@shop.example", "status_if_new": "subscribed",
             "tags": ["pros"]}]  # fmt: skip
        assert tags("cat@shop.example") == {"pros"}
        assert dead(world, "mc") == []
        assert manage.status(world.store, world.ws, "mc")["delivered"] == 4


def test_a_privacy_deletion_deletes_the_mailchimp_member_when_the_user_id_is_an_email(world):
    members = {}
    respond = mailchimp_server(KEY, LIST, members)
    with WebhookServer(respond) as server:
        mailchimp(world, server)
        world.feed([
            {"type": "identify", "userId": "Eve@Shop.example",
             "traits": {"email": "eve@shop.example"}},
            {"type": "identify", "userId": "frank", "traits": {"email": "frank@shop.example"}},
        ])  # fmt: skip
        assert len(members) == 2
        assert forget(world, "Eve@Shop.example")["receipt"]["forwarded_to"] == ["mc"]
        assert forget(world, "frank")["receipt"]["forwarded_to"] == ["mc"]
        world.drain()
        deleted = [r for r in server.requests if r.path.endswith("/actions/delete-permanent")]
        assert [r.path for r in deleted] == [
            f"/3.0/lists/{LIST}/members/{md5('eve@shop.example')}/actions/delete-permanent"
        ]
        assert list(members) == [md5("frank@shop.example")]
        (letter,) = dead(world, "mc")  # frank's user id is no email: not forwardable
        assert letter["message_id"] is None and "not forwarded" in letter["last_response"]
