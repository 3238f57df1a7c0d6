"""Segment's query-string API on page URLs: ajs_uid, ajs_aid, ajs_event, ajs_prop_*, ajs_trait_*.

analytics.js applies these in the browser itself, so Plait derives the calls only for page
messages from other libraries (the pixel, servers, mobile). Derived messages get
deterministic messageIds, so a retried page call never derives them twice.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BROWSER_LIBRARIES = ("analytics.js", "analytics-next")


def _page_url(msg: dict[str, Any]) -> str | None:
    page = (msg.get("context") or {}).get("page")
    url = page.get("url") if isinstance(page, dict) else None
    if not url:
        url = (msg.get("properties") or {}).get("url")
    return url if isinstance(url, str) else None


def applies_to(msg: dict[str, Any]) -> bool:
    if msg.get("type") != "page":
        return False
    library = (msg.get("context") or {}).get("library")
    name = library.get("name") if isinstance(library, dict) else None
    if isinstance(name, str) and name.startswith(BROWSER_LIBRARIES):
        return False
    url = _page_url(msg)
    return bool(url) and "ajs_" in url


def derive(page: dict[str, Any]) -> list[dict[str, Any]]:
    """Identify/track messages named by the page URL's ajs_* parameters (page enriched)."""
    url = _page_url(page)
    try:
        params = parse_qsl(urlsplit(url).query, keep_blank_values=False)
    except ValueError:  # a URL that does not parse (e.g. "http://[::1/") derives nothing
        return []
    values = {k: v for k, v in params if v.strip()}  # a blank ajs_event names nothing
    traits = {
        k[len("ajs_trait_") :]: v for k, v in params if k.startswith("ajs_trait_") and len(k) > 10
    }
    props = {
        k[len("ajs_prop_") :]: v for k, v in params if k.startswith("ajs_prop_") and len(k) > 9
    }
    anonymous_id = values.get("ajs_aid") or page.get("anonymousId")
    user_id = values.get("ajs_uid") or page.get("userId")
    digest = hashlib.md5(page["messageId"].encode()).hexdigest()
    base = {"context": page.get("context") or {}, "timestamp": page["timestamp"]}
    if anonymous_id:
        base["anonymousId"] = anonymous_id
    derived = []
    if values.get("ajs_uid"):
        derived.append({**base, "type": "identify", "userId": values["ajs_uid"], "traits": traits,
                        "messageId": f"ajs-identify-{digest}"})  # fmt: skip
    if values.get("ajs_event"):
        track = {**base, "type": "track", "event": values["ajs_event"], "properties": props,
                 "messageId": f"ajs-track-{digest}"}  # fmt: skip
        if user_id:
            track["userId"] = user_id
        derived.append(track)
    return derived
