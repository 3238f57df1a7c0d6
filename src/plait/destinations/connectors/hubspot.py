"""HubSpot contacts, through the CRM v3 API with a private app's access token
(``Authorization: Bearer …``). Followed: developers.hubspot.com, "Upsert a batch of
contacts" (``POST /crm/v3/objects/contacts/batch/upsert``), "Error handling" (the error
body: status, message, category, errors[], context; multi-status errors naming inputs by
``objectWriteTraceId``; 423 and 477), "Permanently delete a contact (GDPR-compliant)"
(``POST /crm/v3/objects/contacts/gdpr-delete``), "Retrieve a contact" by ``idProperty``,
the Properties API (``GET /crm/v3/properties/contacts``) and the rate-limit headers.

- identify → a contact upserted by email (``idProperty: email``): the email from the
  message's traits, else the profile's (an audience's identify carries only its flag);
  the traits as properties: Segment's traits as HubSpot's own (firstName → firstname,
  lastName → lastname, title → jobtitle, company or company.name → company, address.street
  / city / state / postalCode / country → address / city / state / zip / country), any
  other in lower snake case (planType → plan_type), ``properties`` mapping a trait to a
  property of your choice; values as HubSpot's strings (true → "true", a list → "a;b" for
  multiple checkboxes, null clears). Traits naming no property of the account are left out
  (its contact properties are read every 10 minutes; when the token may not read them,
  everything is sent); mapped properties, audience flags and ``user_id_property`` never are.
- an audience's entry or exit (its identify, or its Audience Entered/Exited of a full
  sync) → the property named as the audience's key, "true" / "false" (create it in
  HubSpot as a single checkbox).
- ``user_id_property``: a unique contact property that receives the userId, by which a
  privacy deletion finds the contact.

At most 100 inputs a request. The same email twice in a batch is one input (HubSpot refuses
duplicates), its properties merged in order; its messages share the outcome. Each input's
``objectWriteTraceId`` is its first delivery key, so a 207 names the refused inputs: those
are dead letters, the others were written. A 400 for several inputs that names some makes
those dead letters and sends the rest again; naming none, each input is sent alone to learn
which. 401/403 and other 4xx are dead letters; 429 is retried after Retry-After, else after
the rolling window (``X-HubSpot-RateLimit-Interval-Milliseconds`` when ``…-Remaining`` is
0; the daily limit: backoff); 423 (record locked) after 2 s; 477 (migration) and 5xx
retried. An identify without an email is a dead letter.

Privacy deletions carry the user id. With ``user_id_property`` the contact is looked up by
it and GDPR-deleted by its record id; else (or not found) a user id that is an email address
is GDPR-deleted by email (HubSpot blocklists an email it does not know); not found and no
email: nothing to delete. Without ``user_id_property``, a user id that is no email address
is a dead letter saying the deletion could not be forwarded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from plait.destinations.connectors.base import (
    RESPONSE_CHARS,
    Connector,
    Item,
    Outcome,
    Setting,
    known_settings,
    memberships,
    outcome_of,
    outcome_of_error,
    require_url,
)
from plait.store.workspaces import Invalid

SETTINGS = {
    "access_token": Setting(
        required=True, example="pat-na1-token", about="the private app's access token"
    ),
    "endpoint": Setting(example="https://api.hubapi.com"),
    "properties": Setting(
        "json", example={"plan": "plan_name"}, about="trait names to HubSpot property names"
    ),
    "user_id_property": Setting(
        example="plait_user_id", about="a unique-valued property that holds the user id"
    ),
}
NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")  # HubSpot's internal property names
SPEC = {"firstName": "firstname", "first_name": "firstname", "lastName": "lastname",
        "last_name": "lastname", "title": "jobtitle", "phone": "phone", "website": "website",
        "email": "email"}  # fmt: skip
ADDRESS = {"street": "address", "city": "city", "state": "state", "postalCode": "zip",
           "postal_code": "zip", "country": "country"}  # fmt: skip
SCHEMA_SECONDS = 600.0
# (endpoint, token digest) -> (until, the account's contact property names; None: unreadable)
_SCHEMAS: dict[tuple[str, str], tuple[float, frozenset[str] | None]] = {}


def property_name(trait: str) -> str:
    """A trait's name as a HubSpot property: lower snake case (planType → plan_type)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", trait).lower()
    return re.sub(r"[^a-z0-9_]+", "_", snake).strip("_")


def value_of(value: Any) -> str | None:
    """A trait's value as HubSpot's property string (None: it has no HubSpot form)."""
    if value is None:
        return ""  # clears the property
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ";".join(str(v) for v in value)
    return None


def _email(traits: Any) -> str | None:
    value = traits.get("email") if isinstance(traits, dict) else None
    return value.strip() if isinstance(value, str) and "@" in value else None


@dataclasses.dataclass
class _Input:
    """One contact of a request, and the items it stands for."""

    email: str
    trace: str
    items: list[int] = dataclasses.field(default_factory=list)
    auto: dict[str, str] = dataclasses.field(default_factory=dict)  # left out if unknown
    fixed: dict[str, str] = dataclasses.field(default_factory=dict)  # always sent


class HubSpot(Connector):
    name = "hubspot"
    max_batch = 100
    default_batch = 100
    lanes = 4  # HubSpot's limits are per account: 100-190 requests per 10 s
    secrets = ("access_token",)
    maps = True
    needs_traits = True
    deletes = True
    types = frozenset({"identify"})

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        token = settings.get("access_token")
        if not isinstance(token, str) or not token.strip():
            raise Invalid(f"{where}.access_token", "required: the private app's access token")
        endpoint = settings.get("endpoint", "https://api.hubapi.com")
        require_url({"endpoint": endpoint}, "endpoint", where)
        mapping = settings.get("properties") or {}
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and NAME.match(v)
            for k, v in mapping.items()
        ):
            raise Invalid(f"{where}.properties", "must map trait names to HubSpot property "
                                                 "names (lower case: a-z, 0-9, _)")  # fmt: skip
        by_user = settings.get("user_id_property")
        if by_user is not None and (not isinstance(by_user, str) or not NAME.match(by_user)):
            raise Invalid(
                f"{where}.user_id_property",
                "a HubSpot property name (lower case: a-z, 0-9, _) with unique values",
            )
        return {"access_token": token.strip(), "endpoint": endpoint.rstrip("/"),
                "properties": mapping, "user_id_property": by_user}  # fmt: skip

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
        context_traits = (message.get("context") or {}).get("traits")
        flags = memberships(message)
        auto: dict[str, str] = {}
        fixed: dict[str, str] = {}
        for trait, value in traits.items():
            if trait in flags:
                continue
            if trait in settings["properties"]:
                if (text := value_of(value)) is not None:
                    fixed[settings["properties"][trait]] = text
            elif trait == "address" and isinstance(value, dict):
                auto.update({ADDRESS[k]: t for k, v in value.items()
                             if k in ADDRESS and (t := value_of(v)) is not None})  # fmt: skip
            elif trait == "company" and isinstance(value, dict):
                if (text := value_of(value.get("name"))) is not None:
                    auto["company"] = text
            elif (name := SPEC.get(trait) or property_name(trait)) and NAME.match(name):
                if (text := value_of(value)) is not None:
                    auto[name] = text
        fixed.update({key: "true" if entered else "false" for key, entered in flags.items()})
        if settings["user_id_property"] and message.get("userId") is not None:
            fixed[settings["user_id_property"]] = str(message["userId"])
        return {"type": "upsert", "email": _email(traits) or _email(context_traits),
                "auto": auto, "fixed": fixed}  # fmt: skip

    def deletion(self, user_id: str, timestamp: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {"type": "delete", "userId": user_id, "timestamp": timestamp}

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        outcomes: list[Outcome | None] = [None] * len(items)
        inputs: dict[str, _Input] = {}  # by email, lower-cased: one input each
        for i, item in enumerate(items):
            msg = item.message
            if msg.get("type") == "delete":
                continue
            email = msg.get("email") or _email(item.traits)
            if email is None:
                outcomes[i] = Outcome(False, response="no email for the person (neither in the "
                                      "identify's traits nor the profile's): HubSpot contacts "
                                      "are upserted by email")  # fmt: skip
                continue
            entry = inputs.setdefault(email.lower(), _Input(email, item.key))
            entry.items.append(i)
            entry.auto.update(msg.get("auto") or {})
            entry.fixed.update(msg.get("fixed") or {})
        if inputs:
            groups = list(inputs.values())
            for group, outcome in zip(groups, await self._upsert(client, settings, groups),
                                      strict=True):  # fmt: skip
                for i in group.items:
                    outcomes[i] = outcome
        for i, item in enumerate(items):
            if item.message.get("type") == "delete":
                outcomes[i] = await self._delete(client, settings, item.message)
        return [o or Outcome(False, retry=True, response="not sent") for o in outcomes]

    def _headers(self, settings: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Bearer {settings['access_token']}",
                "Content-Type": "application/json", "Accept": "application/json"}  # fmt: skip

    async def _upsert(self, client: httpx.AsyncClient, settings: dict[str, Any],
                      groups: list[_Input]) -> list[Outcome]:  # fmt: skip
        known = await self._schema(client, settings)
        body = {"inputs": [{
            "idProperty": "email", "id": g.email, "objectWriteTraceId": g.trace,
            "properties": {**{k: v for k, v in g.auto.items() if known is None or k in known},
                           **g.fixed, "email": g.email},
        } for g in groups]}  # fmt: skip
        try:
            response = await client.post(
                f"{settings['endpoint']}/crm/v3/objects/contacts/batch/upsert",
                content=orjson.dumps(body),
                headers=self._headers(settings),
                timeout=15,
            )
        except httpx.HTTPError as exc:
            return [outcome_of_error(exc)] * len(groups)
        status = response.status_code
        if status != 207 and (status != 400 or len(groups) == 1):
            return [_outcome(response)] * len(groups)
        named = _named(response, groups)
        if not named:
            if len(groups) > 1:  # refused for some, not named: send each alone to learn which
                return [(await self._upsert(client, settings, [g]))[0] for g in groups]
            named = {0: response.text[:RESPONSE_CHARS]}
        if status == 207:  # the others were written
            done = Outcome(True, status=207, response="written (others in the batch refused)")
            return [Outcome(False, status=400, response=named[i]) if i in named else done
                    for i in range(len(groups))]  # fmt: skip
        rest = [g for i, g in enumerate(groups) if i not in named]  # a 400 wrote nothing
        again = iter(await self._upsert(client, settings, rest) if rest else [])
        return [Outcome(False, status=400, response=named[i]) if i in named else next(again)
                for i in range(len(groups))]  # fmt: skip

    async def _schema(self, client: httpx.AsyncClient,
                      settings: dict[str, Any]) -> frozenset[str] | None:  # fmt: skip
        """The account's contact property names (cached), None when they cannot be read."""
        at = (settings["endpoint"], hashlib.sha256(settings["access_token"].encode()).hexdigest())
        cached = _SCHEMAS.get(at)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            response = await client.get(f"{settings['endpoint']}/crm/v3/properties/contacts",
                                        headers=self._headers(settings), timeout=15)  # fmt: skip
            results = response.json().get("results") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return cached[1] if cached else None
        if results is None and response.status_code not in (401, 403):  # transient
            return cached[1] if cached else None
        names = None if results is None else frozenset(
            p["name"] for p in results if isinstance(p, dict) and isinstance(p.get("name"), str)
        )  # fmt: skip
        _SCHEMAS[at] = (time.monotonic() + SCHEMA_SECONDS, names)
        return names

    async def _delete(self, client: httpx.AsyncClient, settings: dict[str, Any],
                      message: dict[str, Any]) -> Outcome:  # fmt: skip
        user_id = str(message.get("userId") or "")
        by = settings["user_id_property"]
        base = f"{settings['endpoint']}/crm/v3/objects/contacts"
        try:
            found = None
            if by:
                found = await client.get(f"{base}/{quote(user_id, safe='')}",
                                         params={"idProperty": by, "properties": by},
                                         headers=self._headers(settings), timeout=15)  # fmt: skip
                if found.status_code not in (200, 404):
                    return _outcome(found)
            if found is not None and found.status_code == 200:
                body = {"objectId": str(found.json()["id"])}
            elif "@" in user_id:  # also a contact written before user_id_property was set
                body = {"objectId": user_id, "idProperty": "email"}
            elif found is not None:
                return Outcome(True, status=404, response=f"no contact with {by} {user_id!r}: "
                                                          "nothing to delete")  # fmt: skip
            else:
                return Outcome(False, response=f"not forwarded: the user id {user_id!r} is not "
                               "an email address and the destination has no user_id_property "
                               "to find the contact by; delete it in HubSpot")  # fmt: skip
            response = await client.post(f"{base}/gdpr-delete", content=orjson.dumps(body),
                                         headers=self._headers(settings), timeout=15)  # fmt: skip
        except httpx.HTTPError as exc:
            return outcome_of_error(exc)
        except (ValueError, KeyError, TypeError) as exc:  # a lookup answer without an id
            return Outcome(False, retry=True, response=f"contact lookup: {exc!r}"[:RESPONSE_CHARS])
        if response.status_code == 404:  # gone meanwhile
            return Outcome(True, status=404, response="no such contact: nothing to delete")
        return _outcome(response)


def _outcome(response: httpx.Response) -> Outcome:
    """outcome_of, with HubSpot's own: a 429's wait from its rate-limit window, 423 (a
    locked record: at least 2 s) and 477 (a migration) retried."""
    outcome = outcome_of(response)
    status = response.status_code
    if status == 429 and outcome.retry_after is None and "DAILY" not in response.text:
        # The rolling window's limit: retry when it has passed (the daily one: backoff).
        window = response.headers.get("x-hubspot-ratelimit-interval-milliseconds", "")
        if window.isdigit() and response.headers.get("x-hubspot-ratelimit-remaining") == "0":
            return dataclasses.replace(outcome, retry_after=int(window) / 1000)
    if status == 423:
        return dataclasses.replace(outcome, retry=True, retry_after=2.0)
    if status == 477:
        return dataclasses.replace(outcome, retry=True, retry_after=outcome.retry_after
                                   or _seconds(response.headers.get("retry-after")))  # fmt: skip
    return outcome


def _seconds(value: str | None) -> float | None:
    return float(value) if value and value.strip().isdigit() else None


def _named(response: httpx.Response, groups: list[_Input]) -> dict[int, str]:
    """The inputs a HubSpot error answer names (by objectWriteTraceId, or by id in
    ``context.ids``), each with its error."""
    try:
        body = response.json()
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    by_trace = {g.trace: i for i, g in enumerate(groups)}
    by_email = {g.email.lower(): i for i, g in enumerate(groups)}
    named: dict[int, str] = {}
    for error in [body, *(body.get("errors") or [])]:
        context = error.get("context") if isinstance(error, dict) else None
        if not isinstance(context, dict):
            continue
        text = orjson.dumps({k: error[k] for k in ("status", "category", "message", "context")
                             if k in error}).decode()[:RESPONSE_CHARS]  # fmt: skip
        for trace in _strings(context.get("objectWriteTraceId")):
            if trace in by_trace:
                named[by_trace[trace]] = text
        for value in _strings(context.get("ids")):
            if value.lower() in by_email:
                named[by_email[value.lower()]] = text
    return named


def _strings(value: Any) -> list[str]:
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [v for v in values if isinstance(v, str)]
