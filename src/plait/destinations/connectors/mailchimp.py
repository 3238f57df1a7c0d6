"""Mailchimp audience members, through the Marketing API 3.0 (``https://<dc>.api.mailchimp.
com/3.0``, dc the API key's suffix after ``-``; ``endpoint`` overrides it), HTTP Basic auth
with any user name and the API key. Followed: mailchimp.com/developer/marketing, "Batch
subscribe or unsubscribe" (``POST /lists/{list_id}``: at most 500 members, update_existing,
status_if_new, merge_fields, tags, and the answer's new_members / updated_members / errors),
the release note of 2022-01-24 (batch tags reach existing members too), "Add or remove
member tags" (``POST /lists/{list_id}/members/{subscriber_hash}/tags``), "Delete list
member" permanently (``…/actions/delete-permanent``) and "Errors" (problem detail: type,
title, status, detail, instance).

- identify → a member subscribed or updated in the batch: ``status_if_new`` the ``status``
  setting (``subscribed``, or ``pending`` for double opt-in; an existing member's status
  never changes), ``merge_fields`` from the traits by the ``merge_fields`` setting (trait →
  merge tag; default firstName / first_name → FNAME, lastName / last_name → LNAME), the
  message's traits over the profile's; the email from the message's traits, else the
  profile's.
- an audience's entry (its identify, or its Audience Entered of a full sync) → the member
  subscribed or updated with the audience's key as a tag, in the batch; its exit → that tag
  made inactive (the tags endpoint; not a member: nothing to remove). The member's tags
  follow the messages' order. Connect audiences that emit identify (the default) or both.
- the same email twice in a batch is one member, its fields merged in order; its messages
  share the outcome. A person without an email is a dead letter saying so.

The batch's ``errors`` (``email_address``, ``error``, ``error_code``) are dead letters, the
others delivered. 401, 403, 404 and other 4xx are dead letters; 429 and 5xx are retried.

Privacy deletions carry the user id, and Mailchimp knows members only by email: a user id
that is an email address is deleted permanently (not a member: nothing to delete); any
other is a dead letter saying the deletion could not be forwarded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from typing import Any

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

STATUSES = ("subscribed", "pending")
SETTINGS = {
    "api_key": Setting(
        required=True, example="mailchimp-key-us21", about="ends with its data center, e.g. -us21"
    ),
    "list_id": Setting(required=True, example="a1b2c3d4e5", about="the audience's (list's) id"),
    "status": Setting(
        "choice", example="subscribed", choices=STATUSES, about="pending for double opt-in"
    ),
    "merge_fields": Setting(
        "json", example={"firstName": "FNAME"}, about="trait names to merge tags"
    ),
    "endpoint": Setting(example="https://us21.api.mailchimp.com/3.0"),
}
DEFAULT_MERGE_FIELDS = {"firstName": "FNAME", "first_name": "FNAME", "lastName": "LNAME",
                        "last_name": "LNAME"}  # fmt: skip
TAG = re.compile(r"^[A-Z][A-Z0-9_]{0,9}$")  # a merge tag: at most 10 characters
DC = re.compile(r"^[a-z]+[0-9]+$")
AT_ONCE = 4  # tag and deletion requests of a batch sent at once (Mailchimp allows 10)


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def _email(traits: Any) -> str | None:
    value = traits.get("email") if isinstance(traits, dict) else None
    return value.strip() if isinstance(value, str) and "@" in value else None


def _merge_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | dict):  # a dict: an address merge field
        return value
    return None


def merge_fields(traits: Any, mapping: dict[str, str]) -> dict[str, Any]:
    if not isinstance(traits, dict):
        return {}
    return {mapping[k]: v for k, value in traits.items()
            if k in mapping and (v := _merge_value(value)) is not None}  # fmt: skip


@dataclasses.dataclass
class _Member:
    email: str
    items: list[int] = dataclasses.field(default_factory=list)
    upsert: bool = False
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)
    tags: dict[str, bool] = dataclasses.field(default_factory=dict)  # the last state wins


class Mailchimp(Connector):
    name = "mailchimp"
    max_batch = 500
    default_batch = 500
    lanes = 2  # Mailchimp allows 10 connections at once per account
    secrets = ("api_key",)
    maps = True
    needs_traits = True
    deletes = True
    types = frozenset({"identify"})

    def check(self, settings: dict[str, Any], where: str) -> dict[str, Any]:
        known_settings(settings, SETTINGS, where)
        key = settings.get("api_key")
        if not isinstance(key, str) or not key.strip():
            raise Invalid(f"{where}.api_key", "required: a Mailchimp API key (…-us21)")
        key = key.strip()
        if settings.get("endpoint") is not None:
            endpoint = require_url(settings, "endpoint", where).rstrip("/")
        else:
            dc = key.rpartition("-")[2]
            if "-" not in key or not DC.match(dc):
                raise Invalid(f"{where}.api_key", "must end with its data center, e.g. -us21")
            endpoint = f"https://{dc}.api.mailchimp.com/3.0"
        list_id = settings.get("list_id")
        if not isinstance(list_id, str) or not re.fullmatch(r"[A-Za-z0-9]+", list_id):
            raise Invalid(f"{where}.list_id", "required: the audience's (list's) id")
        status = settings.get("status", "subscribed")
        if status not in STATUSES:
            raise Invalid(f"{where}.status", "subscribed, or pending for double opt-in")
        mapping = settings.get("merge_fields", DEFAULT_MERGE_FIELDS)
        if not isinstance(mapping, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and TAG.match(v)
            for k, v in mapping.items()
        ):
            raise Invalid(f"{where}.merge_fields", "must map trait names to merge tags (A-Z, "
                                                   "0-9, _; at most 10)")  # fmt: skip
        return {"api_key": key, "endpoint": endpoint, "list_id": list_id, "status": status,
                "merge_fields": mapping}  # fmt: skip

    def payload(self, message: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
        flags = memberships(message)
        return {"type": "member",
                "email": _email(traits) or _email((message.get("context") or {}).get("traits")),
                "upsert": not flags or any(flags.values()),  # an exit alone only untags
                "merge_fields": merge_fields(traits, settings["merge_fields"]),
                "tags": flags}  # fmt: skip

    def deletion(self, user_id: str, timestamp: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {"type": "delete", "userId": user_id, "timestamp": timestamp}

    async def send(
        self, client: httpx.AsyncClient, settings: dict[str, Any], items: list[Item],
        workspace_id: str,
    ) -> list[Outcome]:  # fmt: skip
        outcomes: list[Outcome | None] = [None] * len(items)
        members: dict[str, _Member] = {}  # by email, lower-cased
        for i, item in enumerate(items):
            msg = item.message
            if msg.get("type") == "delete":
                continue
            email = msg.get("email") or _email(item.traits)
            if email is None:
                outcomes[i] = Outcome(False, response="no email for the person (neither in the "
                                      "identify's traits nor the profile's): Mailchimp members "
                                      "are known by email")  # fmt: skip
                continue
            member = members.setdefault(email.lower(), _Member(email))
            member.items.append(i)
            if msg.get("upsert"):
                if not member.upsert:  # the profile's fields under the messages'
                    member.fields = {**merge_fields(item.traits, settings["merge_fields"]),
                                     **member.fields}  # fmt: skip
                member.upsert = True
            member.fields.update(msg.get("merge_fields") or {})
            member.tags.update(msg.get("tags") or {})
        results = await self._subscribe(client, settings, [m for m in members.values()
                                                           if m.upsert])  # fmt: skip
        gate = asyncio.Semaphore(AT_ONCE)

        async def untag(member: _Member) -> None:
            gone = [k for k, on in member.tags.items() if not on]
            if gone and (results.get(member.email.lower()) or Outcome(True)).ok:
                async with gate:
                    outcome = await self._untag(client, settings, member.email, gone)
                if not outcome.ok or member.email.lower() not in results:
                    results[member.email.lower()] = outcome

        async def delete(i: int) -> None:
            async with gate:
                outcomes[i] = await self._delete(client, settings, items[i].message)

        await asyncio.gather(*(untag(m) for m in members.values()),
                             *(delete(i) for i, item in enumerate(items)
                               if item.message.get("type") == "delete"))  # fmt: skip
        for key, member in members.items():
            for i in member.items:
                outcomes[i] = results.get(key) or Outcome(True, response="nothing to change")
        return [o or Outcome(False, retry=True, response="not sent") for o in outcomes]

    def _auth(self, settings: dict[str, Any]) -> tuple[str, str]:
        return ("plait", settings["api_key"])  # Mailchimp takes any user name

    async def _subscribe(self, client: httpx.AsyncClient, settings: dict[str, Any],
                         members: list[_Member]) -> dict[str, Outcome]:  # fmt: skip
        """The batch subscribe/update of ``members``: an outcome by lower-cased email."""
        if not members:
            return {}
        body = {"update_existing": True, "members": [{
            "email_address": m.email, "status_if_new": settings["status"],
            **({"merge_fields": m.fields} if m.fields else {}),
            **({"tags": [k for k, on in m.tags.items() if on]} if any(m.tags.values()) else {}),
        } for m in members]}  # fmt: skip
        try:
            response = await client.post(
                f"{settings['endpoint']}/lists/{settings['list_id']}", content=orjson.dumps(body),
                auth=self._auth(settings), headers={"Content-Type": "application/json"},
                timeout=30,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            return dict.fromkeys((m.email.lower() for m in members), outcome_of_error(exc))
        outcome = outcome_of(response)
        errors: dict[str, str] = {}
        if outcome.ok:
            try:
                found = response.json().get("errors") or []
            except (ValueError, AttributeError):
                found = []
            for error in found:
                if isinstance(error, dict) and isinstance(error.get("email_address"), str):
                    errors[error["email_address"].strip().lower()] = orjson.dumps(
                        error).decode()[:RESPONSE_CHARS]  # fmt: skip
        return {m.email.lower(): Outcome(False, status=400, response=errors[m.email.lower()])
                if m.email.lower() in errors else outcome for m in members}  # fmt: skip

    async def _untag(self, client: httpx.AsyncClient, settings: dict[str, Any], email: str,
                     tags: list[str]) -> Outcome:  # fmt: skip
        url = (f"{settings['endpoint']}/lists/{settings['list_id']}/members/"
               f"{subscriber_hash(email)}/tags")  # fmt: skip
        body = {"tags": [{"name": tag, "status": "inactive"} for tag in tags]}
        try:
            response = await client.post(url, content=orjson.dumps(body), timeout=15,
                                         auth=self._auth(settings),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        except httpx.HTTPError as exc:
            return outcome_of_error(exc)
        if response.status_code == 404:  # not a member of the audience: no tag to remove
            return Outcome(True, status=404, response="not a member: no tag to remove")
        return outcome_of(response)

    async def _delete(self, client: httpx.AsyncClient, settings: dict[str, Any],
                      message: dict[str, Any]) -> Outcome:  # fmt: skip
        user_id = str(message.get("userId") or "").strip()
        if "@" not in user_id:
            return Outcome(False, response=f"not forwarded: Mailchimp knows members by email "
                           f"address only, and the user id {user_id!r} is not one; delete the "
                           "member in Mailchimp")  # fmt: skip
        url = (f"{settings['endpoint']}/lists/{settings['list_id']}/members/"
               f"{subscriber_hash(user_id)}/actions/delete-permanent")  # fmt: skip
        try:
            response = await client.post(url, auth=self._auth(settings), timeout=15)
        except httpx.HTTPError as exc:
            return outcome_of_error(exc)
        if response.status_code == 404:
            return Outcome(True, status=404, response="not a member: nothing to delete")
        return outcome_of(response)
