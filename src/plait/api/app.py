"""Assembling the server: the collection endpoints, the admin API, health and metrics."""

from __future__ import annotations

import logging

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from plait import reverse_etl, ui
from plait.api import (
    admin,
    audiences_api,
    destinations_api,
    governance_api,
    identity_api,
    lake_api,
    overview_api,
    privacy_api,
    profile_api,
    syncs_api,
    users_api,
)
from plait.api.sign_in_guard import SignInGuard
from plait.collect.bodies import BodyError, read_body
from plait.collect.guard import IngestGuards
from plait.collect.http import CollectApp
from plait.collect.keys import WriteKeyCache
from plait.destinations.dispatcher import Dispatcher
from plait.govern import privacy
from plait.lake import use_lake_dir
from plait.log import LogWriter, backend_for
from plait.observability import LOG_LAST_OFFSET, LOG_PENDING, exposition, record_commit
from plait.pipeline.runner import Pipeline
from plait.runtime import tune_gc
from plait.settings import Settings, get_settings
from plait.store import Store, open_store
from plait.store.workspaces import Workspaces

logger = logging.getLogger("plait.api")


async def health(request: Request) -> Response:
    return admin.json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    try:
        await run_in_threadpool(request.app.state.store.ping)
    except Exception as exc:  # any failure to reach the store means "not ready"
        logger.warning("store unreachable: %s", exc)
        return admin.json_response({"status": "unavailable", "store": str(exc)}, 503)
    return admin.json_response({"status": "ready", "store": request.app.state.store.kind})


async def metrics(request: Request) -> Response:
    LOG_LAST_OFFSET.set(await run_in_threadpool(request.app.state.log.last_offset))
    LOG_PENDING.set(request.app.state.writer.pending)
    body, content_type = exposition()
    return Response(body, media_type=content_type)


class PlaitApp:
    """The ASGI entry point. /v1/* goes straight to the collection app (the hot path),
    but for /v1/spaces/* (the Profile API); everything else to Starlette. Lifespan opens
    the store, starts the log writer and, unless PLAIT_PIPELINE=false, the pipeline in a
    thread (woken by every commit)."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self.store = store
        use_lake_dir(settings.resolved_lake_dir())  # where a deletion reaches the lake
        self.writer: LogWriter | None = None
        self.pipeline: Pipeline | None = None
        self.web = Starlette(
            routes=[
                Route("/health", health),
                Route("/ready", ready),
                Route("/metrics", metrics),
                *admin.routes,
                *governance_api.routes,
                *identity_api.routes,
                *profile_api.routes,
                *privacy_api.routes,
                *lake_api.routes,
                *audiences_api.routes,
                *destinations_api.routes,
                *syncs_api.routes,
                *users_api.routes,
                *overview_api.routes,
                *ui.routes,
            ]
        )
        self.collect: CollectApp | None = None
        self.dispatcher: Dispatcher | None = None
        self.syncs: reverse_etl.Scheduler | None = None

    async def startup(self) -> None:
        if self.store is None:
            self.store = await run_in_threadpool(
                open_store,
                self.settings.resolved_database_url(),
                self.settings.sqlite_synchronous,
                dedup_window_seconds=self.settings.dedup_window_seconds,
            )
        tune_gc()
        # Requests a restart interrupted cannot go on: their identifiers were never kept.
        await run_in_threadpool(privacy.fail_interrupted, self.store)
        log = backend_for(self.store)
        if self.settings.pipeline:
            self.pipeline = Pipeline(self.store, **self.settings.pipeline_options())
            self.pipeline.start(self.settings.pipeline_poll_seconds)
            if self.settings.delivery:
                self.dispatcher = Dispatcher(self.store, self.settings.delivery_poll_seconds)
                self.dispatcher.start()
            self.syncs = reverse_etl.Scheduler(self.store, self.settings.resolved_lake_dir())
            self.syncs.start()
        self.writer = LogWriter(log, self.settings.max_pending_messages, self._on_commit)
        self.writer.start()
        workspaces = Workspaces(self.store)
        keyring = self.settings.keyring()
        self.collect = CollectApp(
            self.writer,
            WriteKeyCache(workspaces, self.settings.write_key_cache_seconds),
            self.settings.public_url,
            self.settings.trust_forwarded_for,
            IngestGuards(self.store.engine, self.settings.governance_cache_seconds, keyring),
        )
        state = self.web.state
        state.store, state.log, state.writer, state.workspaces, state.keyring = (
            self.store, log, self.writer, workspaces, keyring
        )  # fmt: skip
        state.settings = self.settings
        state.sign_in_guard = SignInGuard()

    def _on_commit(self, rows: int, inserted: int) -> None:
        record_commit(rows, inserted)
        if self.pipeline is not None and inserted:
            self.pipeline.notify()

    async def shutdown(self) -> None:
        await run_in_threadpool(privacy.wait_for_background, 30)
        if self.writer is not None:
            await self.writer.stop()
        if self.pipeline is not None:
            await run_in_threadpool(self.pipeline.stop)
            self.pipeline = None
        if self.dispatcher is not None:
            await run_in_threadpool(self.dispatcher.stop)
            self.dispatcher = None
        if self.syncs is not None:
            await run_in_threadpool(self.syncs.stop)
            self.syncs = None

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path.startswith("/v1/") and not path.startswith("/v1/spaces/"):
                await self.collect(scope, receive, send)
            elif path == "/_bare" and self.settings.bench_bare_endpoint:
                await _bare(receive, send)
            else:
                await self.web(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.web(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _bare(receive, send) -> None:
    """The benchmark's baseline: read the body, answer 200, nothing else."""
    try:
        await read_body(receive)
        status, body = 200, orjson.dumps({"success": True})
    except BodyError as exc:
        status, body = exc.status, b"{}"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def create_app() -> PlaitApp:
    """The app from PLAIT_* settings: what each worker process of ``plait serve --workers``
    builds (the store was migrated by the parent before the workers started)."""
    from plait.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    return PlaitApp(settings)
