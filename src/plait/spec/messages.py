"""Validation and enrichment of Segment-spec messages.

Validation says what is wrong with a message in terms a client can fix (the field and
why); enrichment adds what the server knows: messageId when missing, receivedAt, the
clock-skew-corrected timestamp, context.ip, and the source and workspace ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from plait.spec.timestamps import format_timestamp, parse_timestamp

MESSAGE_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
MAX_MESSAGE_ID_LENGTH = 100

_OBJECT_FIELDS = ("context", "integrations", "traits", "properties")
_TIMESTAMP_FIELDS = ("timestamp", "originalTimestamp", "sentAt")
# Fields each type must carry beyond userId/anonymousId.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "track": ("event",),
    "group": ("groupId",),
    "alias": ("previousId", "userId"),
}


class MessageError(ValueError):
    """A message the client must fix. ``field`` names the offending field."""

    def __init__(self, field: str, reason: str, code: str = "invalid_field"):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.code = code

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": self.reason}


@dataclass(slots=True)
class Enrichment:
    """What the server adds to every message of one request."""

    received_at: datetime
    workspace_id: str
    source_id: str
    ip: str | None = None
    sent_at: datetime | None = None  # the batch's sentAt, when the batch carries one
    batch_context: dict[str, Any] | None = None
    batch_integrations: dict[str, Any] | None = None
    received_at_text: str = field(init=False)
    sent_at_text: str | None = field(init=False)  # sent_at, formatted once

    def __post_init__(self) -> None:
        self.received_at_text = format_timestamp(self.received_at)
        self.sent_at_text = None if self.sent_at is None else format_timestamp(self.sent_at)


def _identifier(msg: dict[str, Any], name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    if type(value) is str:  # the common case, first
        if not value.strip():
            raise MessageError(name, "must not be empty")
        return value
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MessageError(name, "must be a string or a number")
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        raise MessageError(name, "must not be empty")
    if text is not value:
        msg[name] = text  # Segment stores ids as strings
    return text


def validate(msg: Any, msg_type: str | None = None) -> dict[str, Any]:
    """Check one message; returns it (ids normalized to strings) or raises MessageError.

    ``msg_type`` is the type the endpoint implies (``/v1/track``); in a batch each
    message names its own.
    """
    if not isinstance(msg, dict):
        raise MessageError("message", "must be a JSON object", "invalid_message")
    declared = msg.get("type")
    if msg_type is None:
        if not isinstance(declared, str) or declared not in MESSAGE_TYPES:
            raise MessageError("type", f"must be one of {', '.join(sorted(MESSAGE_TYPES))}")
        msg_type = declared
    elif declared is not None and declared != msg_type:
        raise MessageError("type", f"is {declared!r} but the endpoint takes {msg_type!r}")
    msg["type"] = msg_type

    user_id = _identifier(msg, "userId")
    anonymous_id = _identifier(msg, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise MessageError("userId", "userId or anonymousId is required", "missing_identity")

    for name in _REQUIRED.get(msg_type, ()):
        if name == "event":
            event = msg.get("event")
            if not isinstance(event, str) or not event.strip():
                raise MessageError("event", "is required and must be a non-empty string")
        elif _identifier(msg, name) is None:
            raise MessageError(name, f"is required for {msg_type}")

    if msg_type in ("page", "screen"):
        name = msg.get("name")
        if name is not None and not isinstance(name, str):
            raise MessageError("name", "must be a string")

    for name in _OBJECT_FIELDS:
        value = msg.get(name)
        if value is not None and not isinstance(value, dict):
            raise MessageError(name, "must be an object")

    message_id = msg.get("messageId")
    if message_id is not None:
        if not isinstance(message_id, str) or not message_id:
            raise MessageError("messageId", "must be a non-empty string")
        if len(message_id) > MAX_MESSAGE_ID_LENGTH:
            raise MessageError("messageId", f"must be at most {MAX_MESSAGE_ID_LENGTH} characters")
        if "\x00" in message_id:  # PostgreSQL text cannot hold NUL: it would fail the commit
            raise MessageError("messageId", "must not contain NUL characters")
    return msg


def _timestamp(msg: dict[str, Any], name: str) -> datetime | None:
    value = msg.get(name)
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        raise MessageError(name, "must be an ISO-8601 timestamp") from None


def enrich(msg: dict[str, Any], env: Enrichment) -> dict[str, Any]:
    """Add server-side fields to a validated message, in place, and return it.

    timestamp = receivedAt - (sentAt - originalTimestamp), as Segment corrects client
    clock skew; without sentAt the client's timestamp stands; without either, receivedAt.
    """
    original = _timestamp(msg, "originalTimestamp") or _timestamp(msg, "timestamp")
    sent_at = _timestamp(msg, "sentAt") or env.sent_at
    if original is not None:
        msg["originalTimestamp"] = format_timestamp(original)
        corrected = original
        if sent_at is not None:
            try:
                corrected = env.received_at - (sent_at - original)
            except OverflowError:
                raise MessageError("sentAt", "is too far from the message's timestamp") from None
        msg["timestamp"] = format_timestamp(corrected)
    else:
        msg["timestamp"] = env.received_at_text
    if sent_at is env.sent_at and sent_at is not None:  # the batch's: formatted once
        msg["sentAt"] = env.sent_at_text
    elif sent_at is not None:
        msg["sentAt"] = format_timestamp(sent_at)
    msg["receivedAt"] = env.received_at_text
    if not msg.get("messageId"):
        msg["messageId"] = "api-" + os.urandom(16).hex()

    context = msg.get("context")
    if env.batch_context:
        context = {**env.batch_context, **context} if context else dict(env.batch_context)
    elif context is None:
        context = {}
    if env.ip and "ip" not in context:
        context["ip"] = env.ip
    msg["context"] = context
    if env.batch_integrations:
        integrations = msg.get("integrations")
        msg["integrations"] = (
            {**env.batch_integrations, **integrations}
            if integrations
            else dict(env.batch_integrations)
        )
    msg.pop("writeKey", None)
    msg["sourceId"] = env.source_id
    msg["workspaceId"] = env.workspace_id
    return msg
