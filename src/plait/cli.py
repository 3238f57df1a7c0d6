"""The ``plait`` command."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from plait.settings import get_settings
from plait.store import Store, open_store
from plait.store.workspaces import Invalid, NotFound, Workspaces

app = typer.Typer(help="Plait: an open-source Customer Data Platform.", no_args_is_help=True)
sources_app = typer.Typer(help="Sources and their write keys.", no_args_is_help=True)
tokens_app = typer.Typer(help="Admin API tokens.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(tokens_app, name="tokens")

console = Console(soft_wrap=True)  # never wrap a printed key or token
err = Console(stderr=True)

WorkspaceOpt = typer.Option("demo", "--workspace", "-w", help="Workspace slug or id.")


def open_configured_store() -> Store:
    settings = get_settings()
    return open_store(
        settings.resolved_database_url(),
        settings.sqlite_synchronous,
        dedup_window_seconds=settings.dedup_window_seconds,
    )


def fail(message: str, code: int = 1):
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _repo_and_workspace(workspace: str) -> tuple[Workspaces, str]:
    repo = Workspaces(open_configured_store())
    try:
        return repo, repo.get_workspace(workspace)["id"]
    except NotFound as exc:
        fail(str(exc))


@app.command()
def serve(
    host: str = typer.Option(None, help="Address to bind (PLAIT_HOST, default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (PLAIT_PORT, default 8080)."),
    workers: int = typer.Option(None, min=1, help="Server processes (PLAIT_WORKERS, default 1)."),
    demo: bool = typer.Option(True, help="Create the demo workspace on first start."),
):
    """Run the server: collection API, admin API, health and metrics."""
    import os
    import tempfile

    from plait.runtime import MULTIPROCESS_DIR_ENV

    settings = get_settings()
    host, port = host or settings.host, port or settings.port
    workers = workers or settings.workers
    metrics_dir = None
    if workers > 1 or settings.pipeline:
        # Several processes (server workers, the pipeline) each write their metrics to
        # files here and /metrics adds them up. Set before prometheus_client is imported.
        metrics_dir = tempfile.TemporaryDirectory(prefix="plait-metrics-")
        os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir.name

    import uvicorn

    from plait.api.bootstrap import ensure_demo
    from plait.observability import configure_logging

    store = open_configured_store()  # applies migrations once, before any worker starts
    if demo:
        boot = ensure_demo(Workspaces(store))
        if boot.write_key:
            console.print(f"[bold green]Demo workspace created[/] ({boot.workspace_id})")
            console.print(f"  write key  [bold]{boot.write_key}[/]  (source {boot.source_id})")
            console.print(f"  admin token [bold]{boot.admin_token}[/]")
            console.print("  Keys are stored hashed and shown only now: keep them.")
    url = settings.resolved_database_url()
    console.print(f"Plait on http://{host}:{port}  store: {store.kind} ({url})  workers: {workers}")
    configure_logging(settings.log_level)
    options = dict(
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=settings.access_log,
        proxy_headers=settings.trust_forwarded_for,  # else uvicorn trusts a local proxy itself
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    pipeline = None
    if settings.pipeline:
        # The pipeline in a process of its own, started and stopped with the server: in the
        # server's process it shared the GIL with the event loop (freshness p99 2.0 s at
        # 5,000 events/s, against 0.34 s in its own process).
        import multiprocessing

        pipeline = multiprocessing.get_context("spawn").Process(
            target=run_pipeline_process, args=(os.getpid(),), name="plait-pipeline", daemon=True
        )
        pipeline.start()
        os.environ["PLAIT_PIPELINE"] = "false"  # the server processes leave it to that one
        settings = settings.model_copy(update={"pipeline": False})
    try:
        if workers == 1:
            from plait.api.app import PlaitApp

            uvicorn.run(PlaitApp(settings, store), **options)
            return
        store.dispose()
        uvicorn.run("plait.api.app:create_app", factory=True, workers=workers, **options)
    finally:
        if pipeline is not None:
            pipeline.terminate()  # a batch cut short rolls back with its checkpoint
            pipeline.join(10)
        if metrics_dir is not None:
            metrics_dir.cleanup()


def run_pipeline_process(server_pid: int) -> None:
    """`plait serve`'s pipeline process: it ends with the server, even a killed one."""
    import os
    import signal
    import threading
    import time

    from plait import reverse_etl
    from plait.destinations.dispatcher import Dispatcher
    from plait.observability import configure_logging
    from plait.pipeline.runner import Pipeline
    from plait.runtime import tune_gc

    def exit_with_the_server() -> None:
        while os.getppid() == server_pid:
            time.sleep(0.5)
        os._exit(0)  # mid-batch is safe: the batch rolls back with its checkpoint

    threading.Thread(target=exit_with_the_server, daemon=True).start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops this
    settings = get_settings()
    configure_logging(settings.log_level)
    tune_gc()
    store = open_configured_store()
    if settings.delivery:
        Dispatcher(store, settings.delivery_poll_seconds).start()
    reverse_etl.Scheduler(store, settings.resolved_lake_dir()).start()
    Pipeline(store, **settings.pipeline_options()).run_forever(settings.pipeline_poll_seconds)


@app.command()
def apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Workspace YAML."),
    prune: bool = typer.Option(False, help="Disable sources the file does not list."),
):
    """Apply a workspace file idempotently."""
    from plait.api import workspace_file
    from plait.govern import audit
    from plait.govern.config import SECTIONS

    repo = Workspaces(open_configured_store())
    try:
        doc = workspace_file.parse(file.read_text())
        result = workspace_file.apply(repo, doc, prune, get_settings().keyring())
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    if result.changed:
        details = {"created": result.created, "updated": result.updated,
                   "disabled": result.disabled}  # fmt: skip
        with repo.engine.begin() as conn:
            audit.record(conn, result.workspace_id, audit.cli_actor(), "config.apply",
                         "workspace", details)  # fmt: skip
    if not result.changed:
        console.print("No changes.")
    for label, names in (("created", result.created), ("updated", result.updated),
                         ("disabled", result.disabled)):  # fmt: skip
        for name in names:
            what = "setting" if name in ("identity", *SECTIONS) else "source"
            console.print(f"{label}: {what} {name}")
    for name, key in result.new_write_keys.items():
        console.print(f"write key for {name}: [bold]{key}[/]")


@app.command()
def export(
    workspace: str = WorkspaceOpt,
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default stdout)."),
):
    """Export a workspace as YAML (write keys are never exported)."""
    from plait.api import workspace_file

    repo = Workspaces(open_configured_store())
    try:
        text = workspace_file.export(repo, workspace)
    except NotFound as exc:
        fail(str(exc))
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@sources_app.command("list")
def sources_list(workspace: str = WorkspaceOpt):
    """List sources."""
    repo, ws = _repo_and_workspace(workspace)
    table = Table("id", "name", "type", "enabled", "active keys")
    for s in repo.list_sources(ws):
        keys = [k for k in repo.list_write_keys(ws, s["id"]) if k["revoked_at"] is None]
        hints = ", ".join(f"{k['id']} (…{k['hint']})" for k in keys)
        table.add_row(s["id"], s["name"], s["type"], "yes" if s["enabled"] else "no", hints)
    console.print(table)


@sources_app.command("create")
def sources_create(
    name: str,
    type: str = typer.Option("http", "--type", "-t", help="javascript, python, node, http ..."),
    workspace: str = WorkspaceOpt,
):
    """Create a source; prints its first write key."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        source, key = repo.create_source(ws, name, type)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    console.print(f"source {source['id']} created; write key [bold]{key}[/]")


def _set_enabled(name: str, workspace: str, enabled: bool) -> None:
    repo, ws = _repo_and_workspace(workspace)
    try:
        repo.update_source(ws, name, enabled=enabled)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"source {name} {'enabled' if enabled else 'disabled'}")


@sources_app.command("enable")
def sources_enable(name: str, workspace: str = WorkspaceOpt):
    """Enable a source."""
    _set_enabled(name, workspace, True)


@sources_app.command("disable")
def sources_disable(name: str, workspace: str = WorkspaceOpt):
    """Disable a source: its write keys get 401 until it is enabled again."""
    _set_enabled(name, workspace, False)


@sources_app.command("add-key")
def sources_add_key(
    name: str,
    rotate: bool = typer.Option(False, help="Revoke every older key of the source."),
    workspace: str = WorkspaceOpt,
):
    """Create a write key for a source (and with --rotate, revoke the others)."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        if rotate:
            key, revoked = repo.rotate_write_key(ws, name)
        else:
            key, revoked = repo.create_write_key(ws, name), []
    except NotFound as exc:
        fail(str(exc))
    console.print(f"write key [bold]{key}[/]")
    for key_id in revoked:
        console.print(f"revoked {key_id}")


@sources_app.command("revoke-key")
def sources_revoke_key(name: str, key_id: str, workspace: str = WorkspaceOpt):
    """Revoke one write key of a source."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        repo.revoke_write_key(ws, name, key_id)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"revoked {key_id}")


@tokens_app.command("create")
def tokens_create(
    name: str,
    scope: list[str] = typer.Option(["admin"], "--scope", "-s", help="Repeat for several."),
    workspace: str = WorkspaceOpt,
):
    """Create an admin API token; prints it once."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        record, secret = repo.create_token(ws, name, scope)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    console.print(f"token {record['id']} ({' '.join(record['scopes'])}): [bold]{secret}[/]")


@tokens_app.command("list")
def tokens_list(workspace: str = WorkspaceOpt):
    """List tokens (never their secrets)."""
    repo, ws = _repo_and_workspace(workspace)
    table = Table("id", "name", "scopes", "revoked")
    for t in repo.list_tokens(ws):
        table.add_row(t["id"], t["name"], " ".join(t["scopes"]), "yes" if t["revoked_at"] else "")
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, workspace: str = WorkspaceOpt):
    """Revoke a token."""
    repo, ws = _repo_and_workspace(workspace)
    try:
        repo.revoke_token(ws, token_id)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"revoked {token_id}")


@app.command("workspaces")
def workspaces_list():
    """List workspaces."""
    repo = Workspaces(open_configured_store())
    table = Table("id", "slug", "name")
    for w in repo.list_workspaces():
        table.add_row(w["id"], w["slug"], w["name"])
    console.print(table)


@app.command("workspace-create")
def workspace_create(slug: str, name: str = typer.Option(None)):
    """Create a workspace and an admin token for it."""
    repo = Workspaces(open_configured_store())
    try:
        ws = repo.create_workspace(slug, name)
    except Invalid as exc:
        fail(f"{exc.field}: {exc.message}")
    _, token = repo.create_token(ws["id"], "admin", ["admin"])
    console.print(f"workspace {ws['id']} created; admin token [bold]{token}[/]")


# Commands in their own modules (registered here so `plait --help` lists them all).


_TAIL_STYLES = {"track": "green", "page": "blue", "screen": "blue", "identify": "magenta",
                "group": "yellow", "alias": "red"}  # fmt: skip


@app.command("tail")
def tail_command(
    workspace: str = WorkspaceOpt,
    source: list[str] = typer.Option([], "--source", "-s", help="Source name or id (repeatable)."),
    msg_type: list[str] = typer.Option([], "--type", "-t", help="track, page ... (repeatable)."),
    event: list[str] = typer.Option(
        [], "--event", "-e", help="Glob on the event or page name, e.g. 'Order*' (repeatable)."
    ),
    user: list[str] = typer.Option([], "--user", "-u", help="userId or anonymousId (repeatable)."),
    from_start: bool = typer.Option(False, "--from-start", help="Start at the log's beginning."),
    after: int = typer.Option(None, "--after", min=0, help="Start after this log offset."),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="Stop after N events."),
    follow: bool = typer.Option(True, help="Wait for new events, or stop at the log's end."),
    as_json: bool = typer.Option(False, "--json", help="One compact JSON message a line."),
    full: bool = typer.Option(False, "--full", help="Pretty-print each whole message."),
    interval: float = typer.Option(0.5, min=0.05, help="Seconds between polls."),
):
    """Stream incoming events live, filtered (like Segment's debugger)."""
    from rich.json import JSON
    from rich.text import Text

    from plait.log import backend_for
    from plait.log.tail import Tail, TailFilter, describe
    from plait.spec import MESSAGE_TYPES

    if from_start and after is not None:
        fail("use --from-start or --after, not both")
    if unknown := sorted({t.lower() for t in msg_type} - MESSAGE_TYPES):
        fail(f"--type {', '.join(unknown)}: choose from {', '.join(sorted(MESSAGE_TYPES))}")
    store = open_configured_store()
    repo = Workspaces(store)
    try:
        ws = repo.get_workspace(workspace)
        source_ids = [repo.get_source(ws["id"], ref)["id"] for ref in source]
    except NotFound as exc:
        fail(str(exc))
    names = {s["id"]: s["name"] for s in repo.list_sources(ws["id"])}
    flt = TailFilter.of(source_ids, msg_type, event, user)
    tail = Tail(backend_for(store), ws["id"], flt, 0 if from_start else after,
                poll_interval=interval)  # fmt: skip
    if not as_json:
        where = "the start" if from_start else f"offset {tail.position}"
        err.print(f"[dim]Tailing workspace {ws['slug']} ({ws['id']}) after {where}"
                  f"{'; Ctrl-C to stop' if follow else ''}.[/]")  # fmt: skip
    shown = 0
    try:
        for item in tail.events(limit, follow):
            shown += 1
            if as_json:
                sys.stdout.write(item.record.payload + "\n")
                sys.stdout.flush()
                continue
            msg, source_id = item.message, item.record.source_id
            if source_id not in names:  # a source created since the tail started
                names |= {s["id"]: s["name"] for s in repo.list_sources(ws["id"])}
                names.setdefault(source_id, source_id)
            when = str(msg.get("timestamp", ""))
            who = msg.get("userId") or msg.get("anonymousId") or ""
            console.print(Text.assemble(
                (f"#{item.record.offset:<7} ", "dim"), (f"{when[:10]} {when[11:19]}  ", "dim"),
                (f"{item.record.type:<8} ", _TAIL_STYLES.get(item.record.type, "")),
                (f"{describe(msg)[:60]:<60} ", "bold"),
                (f"{who:<38} ", "cyan" if msg.get("userId") else "dim cyan"),
                (names[source_id], "dim"),
            ), no_wrap=True, overflow="ellipsis", soft_wrap=False)  # fmt: skip
            if full:
                console.print(JSON(item.record.payload))
    except KeyboardInterrupt:
        if not as_json:
            err.print(f"[dim]Stopped; {shown} events shown.[/]")
    except BrokenPipeError:  # `plait tail --json | head`: the reader left
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@app.command("demo")
def demo_command(
    url: str = typer.Option("http://127.0.0.1:8080", help="Plait's base URL."),
    write_key: str = typer.Option(
        None, "--write-key", "-k", envvar="PLAIT_WRITE_KEY", help="A source's write key."
    ),
    people: int = typer.Option(1000, "--people", "-p", min=0, help="Simulated customers."),
    seed: int = typer.Option(1, help="Same seed, same people, journeys and messageIds."),
    days: float = typer.Option(30.0, min=0.01, help="Simulated period, ending now."),
    rate: float = typer.Option(None, help="Events a second (default: as fast as accepted)."),
    batch_size: int = typer.Option(100, min=1, max=2500, help="Messages per request."),
    concurrency: int = typer.Option(4, min=1, max=256, help="Requests in flight."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write the messages; send nothing."),
    output: Path = typer.Option(None, "--output", "-o", help="With --dry-run: JSONL file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Send realistic multi-channel customer journeys through the collection API."""
    from plait import demo

    cast = demo.Cast(people, seed, days)
    if output is not None and not dry_run:
        fail("--output writes the messages instead of sending them: add --dry-run")
    if dry_run:
        if output is None:
            sys.stdout.flush()
            try:
                count = demo.write_jsonl(cast.messages(), sys.stdout.buffer)
                sys.stdout.buffer.flush()
            except BrokenPipeError:  # `plait demo --dry-run | head`
                import os

                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return
        else:
            with output.open("wb") as out:
                count = demo.write_jsonl(cast.messages(), out)
        err.print(f"{count:,} messages for {people:,} people (seed {seed})"
                  + (f" written to {output}" if output else ""))  # fmt: skip
        return
    if not write_key:
        fail(
            "a write key is needed: --write-key KEY or PLAIT_WRITE_KEY (plait serve prints "
            "the demo source's on first start; plait sources add-key NAME makes one)"
        )
    if rate is not None and rate <= 0:
        fail("--rate must be more than 0")
    console.print(f"Sending {people:,} people's journeys over {days:g} days (seed {seed}) "
                  f"to {url}" + (f" at {rate:,.0f} events/s" if rate else ""))  # fmt: skip
    stats, error = demo.SendStats(), None
    try:
        demo.send_with_progress(cast, url, write_key, console=console, stats=stats,
                                batch_size=batch_size, rate=rate, concurrency=concurrency,
                                quiet=quiet)  # fmt: skip
    except demo.SendError as exc:
        error = str(exc)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/]")
    if stats.batches:
        console.print(demo.summary(stats))
    if error:
        fail(error)
    if stats.email_clicks:
        console.print(
            f'The log also has an identify and an "Email Clicked" track derived '
            f"from each of the {stats.email_clicks:,} email-link pages (ajs_ in URLs)."
        )
    console.print("Watch events arrive with [bold]plait tail[/] (--json to pipe them).")
    if stats.failed or (stats.rejected and not stats.accepted):
        raise typer.Exit(1)


@app.command("import")
def import_command(
    file: Path = typer.Argument(..., help="CSV/TSV, JSONL (also .gz) or Parquet file."),
    source: str = typer.Option(..., "--source", "-s", help="Source name or id."),
    workspace: str = WorkspaceOpt,
    msg_type: str = typer.Option(None, "--type", "-t", help="identify or track, for every row."),
    type_column: str = typer.Option(
        None, "--type-column", help="Column saying identify or track (default: a 'type' column)."
    ),
    maps: list[str] = typer.Option(
        [], "--map", "-m", help="FIELD=COLUMN: userId=cust_id, traits.email=Email (repeatable)."
    ),
    infer_types: bool = typer.Option(
        True, help="CSV: numbers and true/false in traits and properties become JSON ones."
    ),
    file_format: str = typer.Option(None, "--format", "-f", help="csv, jsonl or parquet."),
    delimiter: str = typer.Option(None, help="CSV delimiter (default ',', a tab for .tsv)."),
    encoding: str = typer.Option("utf-8", help="CSV text encoding."),
    rejected: Path = typer.Option(None, help="Rejected-rows report (default FILE.rejected.jsonl)."),
    restart: bool = typer.Option(False, "--restart", help="Start over from the first row."),
    chunk_size: int = typer.Option(1000, min=1, help="Rows per transaction."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Import a file's rows as identify or track calls (resumable, never duplicates)."""
    import signal
    import time

    from rich.filesize import decimal
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from plait.collect import files

    store = open_configured_store()
    repo = Workspaces(store)
    try:
        options = files.ImportOptions(
            msg_type=msg_type, type_column=type_column, fields=files.parse_map(maps),
            infer_types=infer_types, format=file_format, delimiter=delimiter, encoding=encoding,
            chunk_size=chunk_size, rejected_path=rejected, restart=restart,
        )  # fmt: skip
        ws = repo.get_workspace(workspace)
        src = repo.get_source(ws["id"], source)
        if not src["enabled"]:
            fail(f"source {src['name']!r} is disabled (plait sources enable {src['name']!r})")
        job = files.FileImport(store, ws["id"], src["id"], file, options)
    except (files.FileImportError, NotFound) as exc:
        fail(str(exc))
    target = f"source {src['name']} ({src['id']}) of workspace {ws['slug']}"
    if job.already_finished:
        console.print(f"{file} was already imported into {target}; --restart imports it again.")
    elif job.resume_from:
        console.print(f"Resuming {file} after row {job.resume_from:,} "
                      f"({job.state['accepted']:,} accepted, {job.state['rejected']:,} rejected "
                      "so far); --restart starts over.")  # fmt: skip
    else:
        console.print(f"Importing {file} ({job.format}, {decimal(job.total_bytes)}) into {target}")

    by_rows = job.total_rows is not None  # Parquet: progress in rows, else in bytes
    bar = Progress(
        TextColumn("[bold]import"), BarColumn(),
        MofNCompleteColumn() if by_rows else DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]:,.0f} rows/s"),
        TimeRemainingColumn(), console=err, disable=quiet or job.already_finished,
    )  # fmt: skip
    task = bar.add_task("import", total=job.total_rows if by_rows else job.total_bytes,
                        rows=job.resume_from, rate=0.0)  # fmt: skip
    started = time.perf_counter()

    def update(p: files.Progress) -> None:
        rate = (p.rows_done - job.resume_from) / max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=p.rows_done if by_rows else p.bytes_done,
                   rows=p.rows_done, rate=rate)  # fmt: skip

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with bar:
            result = job.run(progress=update)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted:[/] rows up to {job.rows_done:,} are committed; "
                  "run the same command again to resume.")  # fmt: skip
        raise typer.Exit(130) from None
    except (files.FileImportError, OSError) as exc:
        fail(f"{exc} (rows up to {job.rows_done:,} are committed)")
    finally:
        signal.signal(signal.SIGTERM, previous)

    table = Table("rows", "count", title=None if job.already_finished else f"{file}")
    table.add_row("read", f"{result.rows_done:,}")
    table.add_row("accepted", f"{result.accepted:,}")
    if not result.already_finished:
        table.add_row("  new in the log (this run)", f"{result.inserted:,}")
        table.add_row("  already in the log (this run)", f"{result.duplicates:,}")
    table.add_row("rejected", f"{result.rejected:,}")
    console.print(table)
    if result.reasons:
        reasons = Table("rejected because", "field", "rows")
        for (field, reason), count in result.reasons.most_common():
            reasons.add_row(reason, field or "", f"{count:,}")
        console.print(reasons)
    if result.rejected_path is not None:
        console.print(f"Rejected rows are in {result.rejected_path}")
    if result.rejected and not result.accepted:
        fail("every row was rejected")


# Pipeline and profiles ------------------------------------------------------------------

profiles_app = typer.Typer(help="Profiles: explain and unmerge.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


@app.command("worker")
def worker_command(
    once: bool = typer.Option(False, "--once", help="Catch up, then exit."),
    interval: float = typer.Option(
        None, min=0.01, help="Seconds between log polls (PLAIT_PIPELINE_POLL_SECONDS)."
    ),
):
    """Run the pipeline (identity, profiles) and the deliveries in this process. Several
    workers may run at once: each workspace (and destination) is processed by one of them
    at a time."""
    import asyncio

    from plait import reverse_etl
    from plait.destinations.dispatcher import Dispatcher
    from plait.observability import configure_logging
    from plait.pipeline.runner import Pipeline
    from plait.runtime import tune_gc

    settings = get_settings()
    configure_logging(settings.log_level)
    tune_gc()
    store = open_configured_store()
    pipeline = Pipeline(store, **settings.pipeline_options())
    dispatcher = Dispatcher(store, settings.delivery_poll_seconds) if settings.delivery else None
    if once:
        synced = reverse_etl.run_due(store, settings.resolved_lake_dir())
        console.print(f"processed {pipeline.catch_up():,} messages"
                      + (f"; ran syncs {', '.join(synced)}" if synced else ""))  # fmt: skip
        pipeline.run_audience_scheduler()
        if dispatcher is not None:
            asyncio.run(dispatcher.drain())
        return
    console.print("Pipeline worker running (Ctrl-C stops it)")
    if dispatcher is not None:
        dispatcher.start()
    syncs = reverse_etl.Scheduler(store, settings.resolved_lake_dir()).start()
    try:
        pipeline.run_forever(interval or settings.pipeline_poll_seconds)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        syncs.stop()
        if dispatcher is not None:
            dispatcher.stop()


@app.command("rebuild")
def rebuild_command(
    workspace: str = WorkspaceOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
):
    """Recompute the identity graph and profiles from the whole log (after a rule change).
    Operator unmerges are kept and applied again."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from plait.log import backend_for
    from plait.pipeline.maintenance import rebuild

    repo, ws_id = _repo_and_workspace(workspace)
    total = backend_for(repo.store).count(ws_id)
    if not yes:
        typer.confirm(
            f"Recompute every profile of {workspace} from {total:,} messages?", abort=True
        )
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err) as bar:
        # Two passes over the log: identities (the whole log at once), then profiles.
        tasks = {name: bar.add_task(name, total=total) for name in ("identity", "profiles")}
        processed = rebuild(repo.store, ws_id, progress=lambda name, n: bar.advance(tasks[name], n))
    # The lake's events carry the profiles of before: `plait sql` writes them again.
    from plait.lake.writer import reset_events

    reset_events(repo.store, ws_id, get_settings().resolved_lake_dir())
    console.print(f"rebuilt from {processed:,} messages")


def _print_json(data) -> None:
    import orjson
    from rich.json import JSON

    console.print(JSON(orjson.dumps(data).decode()))


@profiles_app.command("explain")
def profiles_explain(
    ref: str = typer.Argument(..., help="A profile id, or type:value such as email:jo@x.com"),
    workspace: str = WorkspaceOpt,
    as_json: bool = typer.Option(False, "--json", help="The explanation as JSON."),
):
    """Why a profile is one person: identifiers, the edges (and the messages that made
    them), merges and unmerges."""
    from plait.identity.explain import ProfileNotFound, explain_ref

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        with repo.store.engine.connect() as conn:
            why = explain_ref(conn, ws_id, ref)
    except ProfileNotFound as exc:
        fail(str(exc))
    if as_json:
        _print_json(why)
        return
    merged = f"  (merged: {', '.join(why['merged_ids'])})" if why["merged_ids"] else ""
    console.print(f"[bold]{why['profile_id']}[/]{merged}")
    table = Table("identifier", "first seen in message", "offset")
    for ident in why["identifiers"]:
        table.add_row(f"{ident['type']}:{ident['value']}", ident["message_id"],
                      str(ident["log_offset"]))  # fmt: skip
    console.print(table)
    edges = Table("linked", "to", "by message", "offset")
    for edge in why["edges"]:
        edges.add_row(f"{edge['from']['type']}:{edge['from']['value']}",
                      f"{edge['to']['type']}:{edge['to']['value']}", edge["message_id"],
                      str(edge["log_offset"]))  # fmt: skip
    console.print(edges)
    for item in why["lineage"]:
        if item["kind"] == "merge":
            console.print(f"merged {item['other_id']} into {item['profile_id']} by message "
                          f"{item['message_id']} (offset {item['log_offset']})")  # fmt: skip
        else:
            removed, reason = item["removed"], item.get("reason") or "-"
            console.print(f"unmerged {item['profile_id']} -> {item['other_id']}: removed "
                          f"{removed['type']}:{removed['value']} ({reason})")  # fmt: skip


@profiles_app.command("unmerge")
def profiles_unmerge(
    ref: str = typer.Argument(..., help="The profile: an id or type:value"),
    identifier: str = typer.Option(..., "--identifier", "-i", help="type:value to remove"),
    linked_to: str = typer.Option(
        None, "--linked-to", help="Remove only the link between --identifier and this one."
    ),
    reason: str = typer.Option("", help="Why (kept in the lineage)."),
    workspace: str = WorkspaceOpt,
):
    """Remove an identifier (a shared family computer) or a link from a profile: it splits
    into the components that remain, and the removal holds for future messages."""
    from plait.identity.explain import ProfileNotFound
    from plait.pipeline.maintenance import unmerge

    repo, ws_id = _repo_and_workspace(workspace)
    try:
        result = unmerge(repo.store, ws_id, ref, identifier, linked_to, reason)
    except (ProfileNotFound, ValueError) as exc:
        fail(str(exc))
    console.print(f"{result.profile_id}: {result.messages} messages resolved again into "
                  f"{', '.join(result.profiles) or 'no profile'}")  # fmt: skip


# Privacy, audit and retention (plait/cli_privacy.py).
from plait.cli_privacy import audit_command, privacy_app, retention_app  # noqa: E402

app.add_typer(privacy_app, name="privacy")
app.add_typer(retention_app, name="retention")
app.command("audit")(audit_command)

# Governance (plait/cli_governance.py): violations, plan, quarantine, transform, pii.
from plait.cli_governance import register as register_governance  # noqa: E402

register_governance(app)

# The lake (plait/cli_lake.py): plait sql.
from plait.cli_lake import register as register_lake  # noqa: E402

register_lake(app)

from plait.cli_audiences import register as register_audiences  # noqa: E402

register_audiences(app)

# Destinations (plait/cli_destinations.py): plait destinations, plait deliveries.
from plait.cli_destinations import register as register_destinations  # noqa: E402

register_destinations(app)

# Reverse ETL (plait/cli_syncs.py): plait syncs.
from plait.cli_syncs import register as register_syncs  # noqa: E402

register_syncs(app)

# Console users (plait/cli_users.py): plait users.
from plait.cli_users import register as register_users  # noqa: E402

register_users(app)
