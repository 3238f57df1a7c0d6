"""prepare()'s fast path: a plain, valid message checked and enriched in one pass.

validate() and enrich() name precisely what is wrong with a message and handle every
shape the spec allows. Most messages are plain (string ids, object fields, timestamps as
SDKs write them) and valid: for those this module does the same work in fewer steps, as
ingestion runs it once per event on the event loop. It only ever accepts: anything else
makes it return None and the message goes through validate() and enrich(), so rows are
the same by construction. tests/test_fast_ingest.py checks that the two paths agree.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from plait.collect import querystring
from plait.collect.guard import Guard
from plait.log.backends import Row
from plait.spec import MAX_MESSAGE_BYTES, MAX_MESSAGE_ID_LENGTH, MESSAGE_TYPES, Enrichment
from plait.spec.timestamps import ClockSkew, format_timestamp, parse_timestamp

_OBJECT_OR_NULL = frozenset((dict, type(None)))
_STRING_OR_NULL = frozenset((str, type(None)))
# Set by the server whatever a client sends: a message carrying one takes the general
# path (SDKs never send them), so that the payload shows the size of every other field.
_SERVER_FIELDS = frozenset(("receivedAt", "sourceId", "workspaceId"))
# Enrichment replaces or drops writeKey and the three timestamps, so the payload does not
# show their size: when one is a longer string the message takes the general path, and
# the payload plus what they can weigh bounds the size as sent (6 bytes a character once
# escaped, the name, quotes and separators; 4 for a null context that became {}).
_SHORT = 64
_SURELY_SMALL = MAX_MESSAGE_BYTES - 4 * (6 * _SHORT + 32) - 4


def _short(value: object) -> bool:
    return type(value) is str and len(value) <= _SHORT


class FastPath:
    """One request's enrichment, prepared once; :meth:`row` per message."""

    __slots__ = (
        "env", "received", "correct", "sent_at_text", "context", "integrations", "ip", "guard",
    )  # fmt: skip

    def __init__(self, env: Enrichment, received: int, guard: Guard | None = None):
        self.env = env
        self.guard = guard  # collect/guard.py: the PII policy and suppressions
        self.received = received  # the rows' received_at
        # Without a batch sentAt a timestamp stands as sent: a correction by nothing.
        self.correct = ClockSkew(env.received_at, env.sent_at or env.received_at).correct
        self.sent_at_text = env.sent_at_text
        self.context = env.batch_context or None
        self.integrations = env.batch_integrations or None
        self.ip = env.ip or None

    def row(self, msg: Any, msg_type: str | None) -> Row | str | None:
        """``msg``'s log row, or None when validate() and enrich() must judge it, or the
        guard's rejection code.

        The checks are validate()'s, stricter (no conversions, no subclasses) and inline:
        this runs once per event.
        """
        if type(msg) is not dict:
            return None
        get = msg.get
        declared = get("type")
        if msg_type is None:
            if type(declared) is not str or declared not in MESSAGE_TYPES:
                return None
            msg_type = declared
        elif declared is not None and declared != msg_type:
            return None
        user_id, anonymous_id = get("userId"), get("anonymousId")
        if (
            type(user_id) not in _STRING_OR_NULL
            or type(anonymous_id) not in _STRING_OR_NULL
            or (user_id is not None and not user_id.strip())
            or (anonymous_id is not None and not anonymous_id.strip())
            or (user_id is None and anonymous_id is None)
        ):
            return None
        if msg_type == "track":
            event = get("event")
            if type(event) is not str or not event.strip():
                return None
        elif msg_type == "page" or msg_type == "screen":
            if type(get("name")) not in _STRING_OR_NULL:
                return None
        elif msg_type != "identify":  # group, alias
            other = get("groupId" if msg_type == "group" else "previousId")
            if type(other) is not str or not other.strip():
                return None
            if msg_type == "alias" and user_id is None:
                return None
        context, integrations = get("context"), get("integrations")
        if (
            type(context) not in _OBJECT_OR_NULL
            or type(integrations) not in _OBJECT_OR_NULL
            or type(get("properties")) not in _OBJECT_OR_NULL
            or type(get("traits")) not in _OBJECT_OR_NULL
        ):
            return None
        message_id = get("messageId")
        if message_id is not None and (
            type(message_id) is not str
            or not 0 < len(message_id) <= MAX_MESSAGE_ID_LENGTH
            or "\x00" in message_id
        ):
            return None
        write_key = get("writeKey")
        if (write_key is not None and not _short(write_key)) or not (
            _SERVER_FIELDS.isdisjoint(msg)
        ):
            return None
        if self.context:
            context = {**self.context, **context} if context else dict(self.context)
        elif context is None:
            context = {}
        if msg_type == "page" and querystring.applies_to(
            {"type": "page", "context": context, "properties": get("properties")}
        ):
            return None  # the dict path derives the query string's calls

        out = msg.copy()  # msg stays as sent, should its size be needed
        if declared is None:
            out["type"] = msg_type
        text, sent_text = get("originalTimestamp"), get("sentAt")
        if text is None:
            text = get("timestamp")
        elif (replaced := get("timestamp")) is not None and not _short(replaced):
            return None
        if (
            sent_text is None
            and type(text) is str
            and (corrected := self.correct(text)) is not None
        ):  # the common case, inline
            out["originalTimestamp"] = text  # in format_timestamp's form already
            out["timestamp"] = corrected
            if self.sent_at_text is not None:
                out["sentAt"] = self.sent_at_text
        elif not self._timestamps(text, sent_text, out):
            return None
        if message_id is None:
            message_id = out["messageId"] = "api-" + os.urandom(16).hex()
        added_ip = self.ip is not None and "ip" not in context
        if added_ip:
            context["ip"] = self.ip  # in place, as enrich() does
        out["context"] = context
        if self.integrations:
            out["integrations"] = (
                {**self.integrations, **integrations} if integrations else dict(self.integrations)
            )
        out.pop("writeKey", None)
        env = self.env
        out["receivedAt"] = env.received_at_text
        out["sourceId"] = env.source_id
        out["workspaceId"] = env.workspace_id
        if self.guard is not None:
            # The guard changes the message in place: the batch's context objects are
            # shared by all its messages, so this message gets its own copy first. Its
            # other objects are its own (msg's, parsed for it alone).
            if self.context:
                out["context"] = context = orjson.loads(orjson.dumps(context))
            code = self.guard(out)
            if code is not None:
                return code
        try:
            payload = orjson.dumps(out)
        except orjson.JSONEncodeError:  # nested deeper than orjson writes
            return None
        if len(payload) > _SURELY_SMALL:
            if added_ip:
                del context["ip"]  # the size is of the message as sent
            if len(orjson.dumps(msg)) > MAX_MESSAGE_BYTES:
                return None
        return (env.workspace_id, env.source_id, message_id, msg_type, self.received,
                payload.decode())  # fmt: skip

    def _timestamps(self, text: Any, sent_text: Any, out: dict[str, Any]) -> bool:
        """enrich()'s timestamps, into ``out``, from the original timestamp and sentAt
        sent; False where enrich() would reject one (or one is a long string: see
        _SURELY_SMALL)."""
        env = self.env
        if sent_text is not None and not _short(sent_text):
            return False
        if text is not None and not _short(text):
            return False
        try:
            sent_at = env.sent_at if sent_text is None else parse_timestamp(sent_text)
            if sent_text is not None:
                out["sentAt"] = format_timestamp(sent_at)
            elif sent_at is not None:
                out["sentAt"] = self.sent_at_text
            if text is None:
                out["timestamp"] = env.received_at_text
            else:
                original = parse_timestamp(text)
                out["originalTimestamp"] = format_timestamp(original)
                if sent_at is not None:
                    original = env.received_at - (sent_at - original)
                out["timestamp"] = format_timestamp(original)
        except (ValueError, OverflowError):
            return False
        return True
