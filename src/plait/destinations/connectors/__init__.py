"""The connectors, by the ``type`` a destination names."""

from __future__ import annotations

from plait.destinations.connectors.amplitude import Amplitude
from plait.destinations.connectors.base import Connector, Item, Outcome
from plait.destinations.connectors.braze import Braze
from plait.destinations.connectors.customerio import CustomerIo
from plait.destinations.connectors.duckdb_file import DuckDBFile
from plait.destinations.connectors.email_smtp import EmailSmtp
from plait.destinations.connectors.ga4 import GA4
from plait.destinations.connectors.hubspot import HubSpot
from plait.destinations.connectors.mailchimp import Mailchimp
from plait.destinations.connectors.meta_capi import MetaCapi
from plait.destinations.connectors.mixpanel import Mixpanel
from plait.destinations.connectors.nats_stream import NatsStream
from plait.destinations.connectors.parquet_files import ParquetFiles
from plait.destinations.connectors.postgres import Postgres
from plait.destinations.connectors.redis_profiles import RedisProfiles
from plait.destinations.connectors.slack import Slack
from plait.destinations.connectors.webhook import Webhook

KINDS = (Webhook, Postgres, DuckDBFile, ParquetFiles, RedisProfiles, NatsStream, EmailSmtp,
         Amplitude, Mixpanel, Slack, HubSpot, Mailchimp, Braze, CustomerIo, GA4,
         MetaCapi)  # fmt: skip
CONNECTORS: dict[str, Connector] = {kind.name: kind() for kind in KINDS}

__all__ = ["CONNECTORS", "Connector", "Item", "Outcome"]
