"""A workspace with a source and a pipeline, for the destination tests: messages put in
the log, processed, and delivered by a dispatcher run until nothing is due."""

from __future__ import annotations

import asyncio

from log_messages import append

from plait.destinations.dispatcher import Dispatcher
from plait.pipeline.runner import Pipeline
from plait.store.workspaces import Workspaces


class DeliveryWorld:
    deliver_on_feed = True  # feed() delivers too (after processing)

    def __init__(self, store):
        self.store = store
        self.repo = Workspaces(store)
        self.ws = self.repo.create_workspace("acme")["id"]
        self.src = self.repo.create_source(self.ws, "Website", "javascript")[0]["id"]
        self.pipeline = Pipeline(store)

    def feed(self, messages, source=None):
        stored = append(self.store, self.ws, messages, source or self.src)
        while self.pipeline.catch_up(self.ws):  # the audience step's messages too
            pass
        if self.deliver_on_feed:
            self.drain()
        return stored

    def drain(self, dispatcher: Dispatcher | None = None):
        asyncio.run((dispatcher or Dispatcher(self.store)).drain(self.ws))
