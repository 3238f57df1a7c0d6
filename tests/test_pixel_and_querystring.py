"""The tracking pixel (GET /v1/pixel/<type>) and Segment's query-string API (ajs_* on page
URLs), over a real server."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import quote

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from plait.collect.http import PIXEL_GIF
from plait.log import backend_for
from plait.spec.timestamps import parse_timestamp

http = httpx.Client(timeout=30.0)


def records(server):
    return backend_for(server.store).read(0, 10_000)


def stored(server) -> list[dict]:
    return [orjson.loads(r.payload) for r in records(server)]


def rejected_total(url: str) -> float:
    text = http.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "plait_messages_rejected_total"
    )


def pixel(server, path_and_query: str) -> httpx.Response:
    response = http.get(f"{server.url}{path_and_query}")
    assert response.status_code == 200, path_and_query
    assert response.headers["content-type"] == "image/gif"
    assert response.content == PIXEL_GIF and PIXEL_GIF.startswith(b"GIF89a")
    assert "no-store" in response.headers["cache-control"]
    return response


# Pixel --------------------------------------------------------------------------------


def test_pixel_with_base64_data(server):
    message = {
        "writeKey": server.write_key,
        "userId": "u1",
        "event": "Email Opened ~~~>>>???",  # base64 of this has '+' and '/' in it
        "messageId": "px-std",
        "properties": {"subject": "Spring sale", "n": 3},
    }
    standard = base64.b64encode(orjson.dumps(message)).decode()
    assert "+" in standard or "/" in standard
    urlsafe = base64.urlsafe_b64encode(orjson.dumps({**message, "messageId": "px-url"}))
    pixel(server, f"/v1/pixel/track?data={quote(standard, safe='')}")
    pixel(server, f"/v1/pixel/track?data={urlsafe.decode().rstrip('=')}")
    # an email template often pastes btoa() output unencoded: '+' arrives as a space
    raw = base64.b64encode(orjson.dumps({**message, "messageId": "px-raw"})).decode()
    pixel(server, f"/v1/pixel/track?data={raw}")
    payloads = stored(server)
    assert [p["messageId"] for p in payloads] == ["px-std", "px-url", "px-raw"]
    for payload in payloads:
        assert payload["type"] == "track"
        assert payload["event"] == message["event"]
        assert payload["properties"] == {"subject": "Spring sale", "n": 3}
        assert "writeKey" not in payload
        assert payload["sourceId"] == server.source_id
        assert payload["context"]["ip"] == "127.0.0.1"


def test_pixel_with_flat_parameters(server):
    query = httpx.QueryParams(
        {
            "writeKey": server.write_key,
            "userId": "u1",
            "event": "Email Opened",
            "messageId": "px-flat",
            "properties.subject": "Hi there",
            "properties.campaign.name": "spring",
            "context.campaign.source": "newsletter",
        }
    )
    pixel(server, f"/v1/pixel/track?{query}")
    pixel(server, f"/v1/pixel/page?writeKey={server.write_key}&anonymousId=a1&name=Inbox")
    track, page = stored(server)
    assert track["type"] == "track" and track["event"] == "Email Opened"
    assert track["properties"] == {"subject": "Hi there", "campaign": {"name": "spring"}}
    assert track["context"] == {"campaign": {"source": "newsletter"}, "ip": "127.0.0.1"}
    assert "writeKey" not in track
    assert (page["type"], page["anonymousId"], page["name"]) == ("page", "a1", "Inbox")


def test_bad_pixels_still_answer_a_gif_and_are_counted(server):
    key = server.write_key
    good = base64.b64encode(orjson.dumps({"writeKey": key, "userId": "u", "event": "E"})).decode()
    bad = [
        "/v1/pixel/track?writeKey=wrong-key&userId=u1&event=E",
        "/v1/pixel/track?userId=u1&event=E",  # no write key
        f"/v1/pixel/bogus?writeKey={key}&userId=u1&event=E",  # no such type
        f"/v1/pixel/track?writeKey={key}&userId=u1",  # a track without an event
        f"/v1/pixel/identify?writeKey={key}",  # no identity
        f"/v1/pixel/track?writeKey={key}&userId=u&event=E&properties=x&properties.a=b",
        "/v1/pixel/track?data=%%%%not-base64!!",
        "/v1/pixel/track?data=" + base64.b64encode(b"[1, 2, 3]").decode(),
        "/v1/pixel/track?data=" + base64.b64encode(b'{"userId": "\xff"}').decode(),
        "/v1/pixel/track?data=" + good[:-7],  # truncated
        "/v1/pixel/track?data=",
        "/v1/pixel/track",
    ]
    for path in bad:
        before = rejected_total(server.url)
        pixel(server, path)
        assert rejected_total(server.url) == before + 1, path
    assert records(server) == []
    server.repo.update_source(server.workspace_id, server.source_id, enabled=False)
    before = rejected_total(server.url)
    pixel(server, f"/v1/pixel/track?data={quote(good)}")
    assert rejected_total(server.url) == before + 1
    assert records(server) == []


# Query-string API ----------------------------------------------------------------------

LANDING = (
    "https://shop.example.com/landing?utm_source=mail&ajs_uid=user-9&ajs_aid=anon-3"
    "&ajs_event=Clicked%20Email&ajs_prop_campaign=spring&ajs_prop_variant=b"
    "&ajs_trait_email=ann%40example.com&ajs_trait_plan=pro"
)


def page_message(url: str, message_id: str = "page-1", library: str = "analytics-python"):
    return {
        "anonymousId": "a-page",
        "messageId": message_id,
        "name": "Landing",
        "context": {"library": {"name": library, "version": "1.0"}, "page": {"url": url}},
    }


def post(server, path: str, body) -> httpx.Response:
    response = http.post(f"{server.url}{path}", json=body, auth=(server.write_key, ""))
    assert response.status_code == 200, response.text
    return response


def test_a_page_url_with_ajs_parameters_derives_identify_and_track(server):
    post(server, "/v1/page", page_message(LANDING))
    page, identify, track = stored(server)
    assert page["type"] == "page" and page["messageId"] == "page-1"
    assert identify["type"] == "identify"
    assert identify["userId"] == "user-9"
    assert identify["anonymousId"] == "anon-3"
    assert identify["traits"] == {"email": "ann@example.com", "plan": "pro"}
    assert track["type"] == "track"
    assert track["event"] == "Clicked Email"
    assert track["userId"] == "user-9"
    assert track["properties"] == {"campaign": "spring", "variant": "b"}
    for derived in (identify, track):
        assert derived["messageId"].startswith(f"ajs-{derived['type']}-")
        assert derived["timestamp"] == page["timestamp"]
        assert derived["receivedAt"] == page["receivedAt"]
        assert (derived["sourceId"], derived["workspaceId"]) == (
            server.source_id,
            server.workspace_id,
        )
        assert derived["context"]["ip"] == "127.0.0.1"

    # a retried page derives the same messageIds: nothing new is stored
    post(server, "/v1/p", page_message(LANDING))
    post(server, "/v1/batch", {"batch": [{**page_message(LANDING), "type": "page"}]})
    assert len(records(server)) == 3
    # another page (another messageId) derives new ones
    post(server, "/v1/page", page_message(LANDING, "page-2"))
    got = records(server)
    assert len(got) == 6
    assert len({r.message_id for r in got}) == 6


def test_derived_calls_keep_the_pages_corrected_timestamp_in_a_batch(server):
    body = {
        "sentAt": "2020-01-01T00:01:00.000Z",
        "batch": [
            {**page_message(LANDING), "type": "page", "timestamp": "2020-01-01T00:00:00.000Z"}
        ],
    }
    post(server, "/v1/batch", body)
    page, identify, track = stored(server)
    received = parse_timestamp(page["receivedAt"])
    assert parse_timestamp(page["timestamp"]) == received - timedelta(minutes=1)
    assert identify["timestamp"] == page["timestamp"]
    assert track["timestamp"] == page["timestamp"]


def test_query_string_variants(server):
    # properties.url stands in for context.page.url
    post(
        server,
        "/v1/page",
        {
            "userId": "known",
            "messageId": "by-props",
            "properties": {"url": "https://x.example/?ajs_event=Viewed"},
        },
    )
    # only ajs_uid: an identify with no traits, no track
    post(server, "/v1/page", page_message("https://x.example/?ajs_uid=only-uid", "uid-only"))
    # only ajs_aid, or no ajs_ at all: nothing derived
    post(server, "/v1/page", page_message("https://x.example/?ajs_aid=a&ajs_prop_x=1", "aid"))
    post(server, "/v1/page", page_message("https://x.example/?utm_source=x", "plain"))
    # a URL that does not parse does not break the page
    post(server, "/v1/page", page_message("http://[::1/?ajs_uid=broken", "broken-url"))
    # track and screen messages never derive
    post(server, "/v1/screen", {**page_message(LANDING, "screen"), "name": "S"})
    types = [(r.type, r.message_id.split("-")[0]) for r in records(server)]
    assert types == [
        ("page", "by"),
        ("track", "ajs"),
        ("page", "uid"),
        ("identify", "ajs"),
        ("page", "aid"),
        ("page", "plain"),
        ("page", "broken"),
        ("screen", "screen"),
    ]
    payloads = stored(server)
    assert payloads[1]["event"] == "Viewed"
    assert payloads[1]["userId"] == "known"
    assert payloads[1]["properties"] == {}
    assert payloads[3]["userId"] == "only-uid" and payloads[3]["traits"] == {}


def test_a_blank_ajs_event_derives_no_track_and_keeps_the_page(server):
    post(server, "/v1/page", page_message("https://x.example/?ajs_uid=u-7&ajs_event=%20", "blank"))
    assert [r.type for r in records(server)] == ["page", "identify"]


def test_browser_libraries_apply_the_query_string_themselves(server):
    for n, library in enumerate(["analytics.js", "analytics-next", "analytics.js-next"]):
        post(server, "/v1/page", page_message(LANDING, f"browser-{n}", library))
    assert [r.type for r in records(server)] == ["page", "page", "page"]


def test_a_pixel_page_with_ajs_parameters_derives_calls(server):
    query = httpx.QueryParams(
        {
            "writeKey": server.write_key,
            "anonymousId": "a1",
            "messageId": "px-page",
            "context.page.url": LANDING,
        }
    )
    pixel(server, f"/v1/pixel/page?{query}")
    pixel(server, f"/v1/pixel/page?{query}")
    assert [r.type for r in records(server)] == ["page", "identify", "track"]
