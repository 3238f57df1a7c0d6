"""The Segment message model: validation and enrichment. Pure: no I/O."""

from plait.spec.messages import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_ID_LENGTH,
    MESSAGE_TYPES,
    Enrichment,
    MessageError,
    enrich,
    validate,
)

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_MESSAGES",
    "MAX_MESSAGE_BYTES",
    "MAX_MESSAGE_ID_LENGTH",
    "MESSAGE_TYPES",
    "Enrichment",
    "MessageError",
    "enrich",
    "validate",
]
