"""The Profile API, path-compatible with Segment's (profiles.segment.com).

    GET /v1/spaces/{space}/collections/{users|accounts}/profiles/{id_type}:{value}/{resource}

``space`` is the workspace id or slug; ``id_type`` any identifier type (``user_id``,
``anonymous_id``, ``email``, ``phone``, a custom type, ``group_id`` for accounts) or
``segment_id`` (the profile id; a merged-away id answers for its survivor). Values are
normalized as the pipeline does, so ``email:Jo@X.com`` finds ``jo@x.com``. Resources:
``traits``, ``external_ids``, ``events``, ``links`` and ``metadata``, shaped as Segment's
documentation shows them, and ``consent`` (Plait's: consent per category, with history).
Values the PII policy encrypted are shown in clear only to a token with ``pii:read``.

Differences from Segment: events cover the whole history (Segment: 14 days), and
``GET .../collections/{collection}/profiles?identifier=type:value`` (or ``?q=value``, an
exact value under any identifier type; with neither, every profile of the collection, in
pages) searches profiles:
``{"data": [{"segment_id", "collection", "created_at", "external_ids": [...]}], "cursor"}``.

Auth: the access token as the Basic-auth username (empty password), as Segment's, or
``Authorization: Bearer``; it needs the ``profiles:read`` scope. Errors are Segment's
``{"error": {"code", "message"}}``: ``authentication_error`` 401, ``forbidden`` 403 (a
token without the scope), ``not_found`` 404 (also a space the token does not belong to:
whether it exists is not revealed), ``validation_error`` 400.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait.api.admin import ApiError, error_response, json_response
from plait.govern import audit
from plait.govern.consent_stage import profile_consent_of
from plait.govern.pii import Keyring
from plait.govern.privacy import lookup_values
from plait.identity import graph_store
from plait.identity.identifiers import PII_TYPES, extract
from plait.identity.rules import Rules
from plait.identity.stage import account_id_for
from plait.profiles import queries
from plait.profiles.queries import EventWindow, Profile
from plait.spec.timestamps import format_ms, parse_timestamp
from plait.store.workspaces import NotFound, TokenAuth, read_token, read_workspace

SCOPE = "profiles:read"
COLLECTIONS = {"users": "user", "accounts": "account"}
DEFAULT_LIMIT = 10
MAX_LIMITS = {"traits": 200, "external_ids": 100, "events": 100, "links": 20, "search": 100}
TRAIT_CLASSES = ("audience", "computed_trait", "trait")
MAX_LIST_ITEMS = 200
_ID_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,63}$")


def not_found(what: str = "Profile") -> ApiError:
    return ApiError(404, "not_found", f"{what} was not found.")


def invalid(param: str, reason: str) -> ApiError:
    return ApiError(400, "validation_error", f"The parameter `{param}` {reason}.")


@dataclass
class Call:
    """One request, authenticated, with its workspace and a connection to read with."""

    conn: sa.Connection
    workspace_id: str
    rules: Rules
    collection: str
    kind: str  # user | account
    params: QueryParams
    path_params: dict[str, Any]
    path: str
    keyring: Keyring | None = None  # the PII keys, to find encrypted identifiers

    def profile(self) -> Profile:
        id_type, value = split_identifier("id", self.path_params["external_id"])
        # An email or phone the PII policy hashed or encrypted is found by its plain value
        # too: each form it may be stored in is tried.
        forms = [value]
        if id_type in PII_TYPES:
            forms += lookup_values(self.workspace_id, id_type, value, self.rules,
                                   keyring=self.keyring)[1:]  # fmt: skip
        for form in forms:
            found = queries.find_profile(
                self.conn, self.workspace_id, self.kind, id_type, form, self.rules
            )
            if found is not None:
                return found
        raise not_found()

    def cursor(self, has_more: bool, next_: str) -> dict[str, Any]:
        return {"url": self.path, "has_more": has_more, "next": next_ if has_more else ""}


# Request plumbing ---------------------------------------------------------------------


def endpoint(handler: Callable[[Call], dict]):
    """Authenticate, find the workspace, run ``handler`` in a thread, map errors."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            data = await run_in_threadpool(_serve, handler, request)
            response = json_response(data)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message)
        response.headers["Request-Id"] = str(uuid.uuid4())
        return response

    return run


def _serve(handler: Callable[[Call], dict], request: Request) -> dict:
    """The whole request, from the token to the handler's reads, on one connection."""
    with request.app.state.store.engine.connect() as conn:
        auth = authenticate(conn, request.headers.get("authorization", ""))
        try:
            workspace = read_workspace(conn, request.path_params["space"])
        except NotFound:
            raise not_found("Space") from None
        if workspace["id"] != auth.workspace_id:
            raise not_found("Space")  # the same answer as for a space that does not exist
        collection = request.path_params["collection"]
        if collection not in COLLECTIONS:
            raise invalid("collection", "must be users or accounts")
        rules = graph_store.load_rules(conn, workspace["id"])
        call = Call(conn, workspace["id"], rules, collection, COLLECTIONS[collection],
                    request.query_params, request.path_params, request.url.path,
                    request.app.state.keyring)  # fmt: skip
        data = handler(call)
    return _decrypted(request, auth, workspace["id"], data)


def _decrypted(request: Request, auth: TokenAuth, workspace_id: str, data: dict) -> dict:
    """Values the PII policy encrypted, in clear for a token with the pii:read scope (each
    such read is audited); as stored for any other."""
    keyring = request.app.state.keyring
    if keyring is None or not auth.allows("pii:read") or b'"enc:v1:' not in orjson.dumps(data):
        return data
    with request.app.state.store.engine.begin() as conn:
        audit.record(conn, workspace_id, auth.actor, "pii.read", request.url.path, {})
    return keyring.decrypt_values(data, workspace_id)


def authenticate(conn: sa.Connection, header: str) -> TokenAuth:
    """The token from Basic auth (as its username, as Segment's) or a Bearer header."""
    scheme, _, credentials = header.partition(" ")
    secret = ""
    if scheme.lower() == "basic":
        try:
            secret = base64.b64decode(credentials.strip(), validate=True).decode().split(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            secret = ""
    elif scheme.lower() == "bearer":
        secret = credentials.strip()
    if not secret:
        raise ApiError(401, "authentication_error",
                       "Send the access token as the Basic auth username.")  # fmt: skip
    auth = read_token(conn, secret)
    if auth is None:
        raise ApiError(401, "authentication_error", "The access token is not valid.")
    if not auth.allows(SCOPE):
        raise ApiError(403, "forbidden", f"The access token lacks the {SCOPE} scope.")
    return auth


# Parameters ---------------------------------------------------------------------------


def split_identifier(param: str, text: str) -> tuple[str, str]:
    id_type, sep, value = text.partition(":")
    if not sep or not value or not _ID_TYPE.match(id_type):
        raise invalid(param, "must be an identifier type and value such as user_id:u123")
    return id_type, value


def limit_param(params: QueryParams, resource: str) -> int:
    maximum = MAX_LIMITS[resource]
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise invalid("limit", f"must be an integer between 1 and {maximum}")
    return limit


def list_param(params: QueryParams, name: str) -> tuple[str, ...]:
    """A comma-separated list (the parameter may also repeat)."""
    raw = params.getlist(name)
    if not raw:
        return ()
    items = [item.strip() for item in ",".join(raw).split(",")]
    if not all(items) or len(items) > MAX_LIST_ITEMS or max(map(len, items)) > 200:
        raise invalid(name, f"must be a comma-separated list of up to {MAX_LIST_ITEMS} names")
    return tuple(dict.fromkeys(items))


def flag_param(params: QueryParams, name: str) -> bool:
    raw = (params.get(name) or "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise invalid(name, "must be true or false")
    return raw in ("true", "1")


def time_param(params: QueryParams, name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return int(parse_timestamp(raw).timestamp() * 1000)
    except ValueError:
        raise invalid(name, "must be an ISO 8601 date or time such as 2024-01-02") from None


def sort_param(params: QueryParams) -> bool:
    """True for descending (Segment's default)."""
    raw = params.get("sort", "desc")
    if raw not in ("asc", "desc"):
        raise invalid("sort", "must be asc or desc")
    return raw == "desc"


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def cursor_param(params: QueryParams, *types: type) -> tuple | None:
    """The ``next`` cursor a previous page returned, checked against its shape."""
    raw = params.get("next")
    if not raw:
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if not isinstance(key, list) or [type(k) for k in key] != list(types):
        raise invalid("next", "is not a cursor this list returned")
    return tuple(key)


# Shapes -------------------------------------------------------------------------------


iso = format_ms


def external_id(row: sa.Row, collection: str) -> dict[str, Any]:
    return {
        "source_id": row.source_id,
        "collection": collection,
        "id": row.value,
        "type": row.type,
        "created_at": iso(row.first_seen),
        "encoding": "none",
        "first_message_id": row.message_id,
    }


def trait_value(row: sa.Row, verbose: bool) -> Any:
    value = orjson.loads(row.value)
    if not verbose:
        return value
    # message_id: Plait's addition, the message that set the value (its provenance).
    return {"value": value, "source_id": row.source_id, "updated_at": iso(row.timestamp),
            "message_id": row.message_id}  # fmt: skip


def event(row: sa.Row, call: Call) -> dict[str, Any]:
    """A stored message as Segment's Profile API shows an event."""
    msg = orjson.loads(row.payload)
    ids = [{"collection": "users", "type": t, "id": v, "encoding": "none"}
           for t, v in extract(msg, call.rules)]  # fmt: skip
    related = {"users": row.profile_id}
    shaped: dict[str, Any] = {
        "external_ids": ids,
        "context": msg.get("context") or {},
        "type": row.type,
        "message_id": row.message_id,
        "source_id": row.source_id,
        "timestamp": iso(row.timestamp),
    }
    if row.type in ("track", "page", "screen"):
        shaped["properties"] = msg.get("properties") or {}
    if row.type in ("identify", "group"):
        shaped["traits"] = msg.get("traits") or {}
    if row.event is not None:
        shaped["event"] = row.event
    if row.type == "group" and msg.get("groupId") not in (None, ""):
        group_id = str(msg["groupId"]).strip()
        ids.append({"collection": "accounts", "type": "group_id", "id": group_id,
                    "encoding": "none"})  # fmt: skip
        related["accounts"] = account_id_for(call.workspace_id, group_id)
    if row.type == "alias":
        shaped["previous_id"] = msg.get("previousId")
    shaped["related"] = related
    return shaped


# Resources ----------------------------------------------------------------------------


def get_traits(call: Call) -> dict:
    limit = limit_param(call.params, "traits")
    keys = list_param(call.params, "include")
    classes = list_param(call.params, "class") or TRAIT_CLASSES
    if not set(classes) <= set(TRAIT_CLASSES):
        raise invalid("class", "must be audience, computed_trait or trait")
    verbose = flag_param(call.params, "verbose")
    from_key = call.params.get("next") or None
    profile = call.profile()
    # Only plain traits exist so far: audiences and computed traits are empty classes.
    rows = []
    if "trait" in classes:
        rows = queries.trait_rows(call.conn, profile.id, keys, from_key, limit)
    traits = {row.key: trait_value(row, verbose) for row in rows[:limit]}
    more = len(rows) > limit
    return {"traits": traits, "cursor": call.cursor(more, rows[-1].key if more else "")}


def get_external_ids(call: Call) -> dict:
    limit = limit_param(call.params, "external_ids")
    types = list_param(call.params, "include")
    flag_param(call.params, "verbose")  # every field is always there
    after = cursor_param(call.params, int, str, str)
    profile = call.profile()
    rows = queries.identifier_rows(call.conn, call.workspace_id, profile.id, types, after, limit)
    page, more = rows[:limit], len(rows) > limit
    next_ = encode_cursor(page[-1].first_seen, page[-1].type, page[-1].value) if more else ""
    return {
        "data": [external_id(row, call.collection) for row in page],
        "cursor": call.cursor(more, next_),
    }


def get_events(call: Call) -> dict:
    params = call.params
    limit = limit_param(params, "events")
    window = EventWindow(
        start_ms=time_param(params, "start"),
        end_ms=time_param(params, "end"),
        descending=sort_param(params),
        include=list_param(params, "include"),
        exclude=list_param(params, "exclude"),
        after=cursor_param(params, int, int),
    )
    if None not in (window.start_ms, window.end_ms) and window.start_ms >= window.end_ms:
        raise invalid("end", "must be later than `start`")
    profile = call.profile()
    rows = queries.event_rows(call.conn, call.workspace_id, profile, window, limit)
    page, more = rows[:limit], len(rows) > limit
    next_ = encode_cursor(page[-1].timestamp, page[-1].log_offset) if more else ""
    return {"data": [event(row, call) for row in page], "cursor": call.cursor(more, next_)}


def get_links(call: Call) -> dict:
    limit = limit_param(call.params, "links")
    after = cursor_param(call.params, int, str)
    profile = call.profile()
    pairs = queries.linked_ids(call.conn, profile, after, limit)
    page, more = pairs[:limit], len(pairs) > limit
    to_collection = "users" if profile.kind == "account" else "accounts"
    owned = queries.identifiers_of(call.conn, call.workspace_id, [pid for _, pid in page])
    data = [
        {"to_collection": to_collection,
         "external_ids": [external_id(row, to_collection) for row in owned[pid]]}
        for _, pid in page
    ]  # fmt: skip
    return {"data": data, "cursor": call.cursor(more, encode_cursor(*page[-1]) if more else "")}


def get_metadata(call: Call) -> dict:
    flag_param(call.params, "verbose")  # every field is always there
    profile = call.profile()
    first = queries.log_row(call.conn, profile.first_offset)
    latest = queries.event_rows(call.conn, call.workspace_id, profile, EventWindow(), 1)
    last = latest[0] if latest else first  # an account's first group call may be gone
    metadata = {
        "created_at": iso(profile.created_at),
        "updated_at": iso(max(profile.created_at, latest[0].timestamp if latest else 0)),
        "expires_at": None,
        "first_message_id": first.message_id if first else None,
        "first_source_id": first.source_id if first else None,
        "last_message_id": last.message_id if last else None,
        "last_source_id": last.source_id if last else None,
    }
    return {"metadata": metadata}


def get_consent(call: Call) -> dict:
    """Plait's addition: the profile's consent per category and its history."""
    return {"consent": profile_consent_of(call.conn, call.profile().id)}


RESOURCES: dict[str, Callable[[Call], dict]] = {
    "consent": get_consent,
    "traits": get_traits,
    "external_ids": get_external_ids,
    "events": get_events,
    "links": get_links,
    "metadata": get_metadata,
}


@endpoint
def profile_resource(call: Call) -> dict:
    handler = RESOURCES.get(call.path_params["resource"])
    if handler is None:
        raise not_found("Resource")
    return handler(call)


@endpoint
def search_profiles(call: Call) -> dict:
    """Profiles by ``identifier=type:value``, by ``q=value`` under any type, or all."""
    params = call.params
    limit = limit_param(params, "search")
    identifier, q = params.get("identifier"), params.get("q")
    if identifier is not None and q is not None:
        raise invalid("q", "cannot be combined with `identifier`")
    id_type, value = split_identifier("identifier", identifier) if identifier else (None, q)
    if value is not None and not value.strip():
        raise invalid("q", "must not be empty")
    after = cursor_param(params, str)
    found = queries.search_profiles(
        call.conn, call.workspace_id, call.kind, call.rules,
        id_type=id_type, value=value, after=after[0] if after else None, limit=limit,
    )  # fmt: skip
    page, more = found[:limit], len(found) > limit
    owned = queries.identifiers_of(call.conn, call.workspace_id, [p.id for p in page])
    data = [
        {"segment_id": p.id, "collection": call.collection, "created_at": iso(p.created_at),
         "external_ids": [external_id(row, call.collection) for row in owned[p.id]]}
        for p in page
    ]  # fmt: skip
    return {"data": data, "cursor": call.cursor(more, encode_cursor(page[-1].id) if more else "")}


async def unknown_route(request: Request) -> Response:
    return error_response(404, "not_found", "Resource was not found.")


PREFIX = "/v1/spaces/{space}/collections/{collection}/profiles"
routes = [
    Route(PREFIX, search_profiles, methods=["GET"]),
    Route(PREFIX + "/{external_id:path}/{resource}", profile_resource, methods=["GET"]),
    Route("/v1/spaces/{rest:path}", unknown_route),
]
