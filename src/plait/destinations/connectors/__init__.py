"""The connectors, by the ``type`` a destination names."""

from __future__ import annotations

from plait.destinations.connectors.amplitude import Amplitude
from plait.destinations.connectors.base import Connector, Item, Outcome
from plait.destinations.connectors.nats_stream import NatsStream
from plait.destinations.connectors.postgres import Postgres
from plait.destinations.connectors.redis_profiles import RedisProfiles
from plait.destinations.connectors.slack import Slack
from plait.destinations.connectors.webhook import Webhook

CONNECTORS: dict[str, Connector] = {
    c.name: c for c in (Webhook(), Postgres(), RedisProfiles(), NatsStream(), Amplitude(), Slack())
}

__all__ = ["CONNECTORS", "Connector", "Item", "Outcome"]
