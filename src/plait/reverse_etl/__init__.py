"""Reverse ETL: a scheduled SQL query whose rows become identify or track calls, sent into
the pipeline (through one of the workspace's sources, as an import is) or straight to one
destination's queue.

    reverse_etl:
      - key: crm_plans
        source: CRM                       # the source the calls come from (its PII policy)
        query: SELECT id, email, plan, updated_at FROM customers
        database: postgresql://crm@db/crm # omitted: the workspace's lake (DuckDB)
        cursor: updated_at                # incremental: rows after the last run's value
        type: identify                    # or track (with event: or an "event" column)
        map: {userId: id, traits.email: email}   # as `plait import --map`
        every: 15 minutes                 # omitted: run by hand (`plait syncs run`)
        destination: hubspot              # omitted: into the pipeline

- **Incremental.** With a ``cursor``, a run reads ``SELECT * FROM (query) WHERE cursor >
  last ORDER BY cursor`` and records, after each chunk, the last value every row up to
  which was sent (a value shared by rows that continue into the next chunk is not passed:
  those rows are read again after a crash, and the log drops them as repeats). Rows whose
  cursor is NULL are read by a full run only (the first, or ``full=True``).
- **Deterministic ids.** A row's messageId is ``retl-<sync>-<hash of the row>``: reading
  an unchanged row again (a run without a cursor, a crash) adds nothing to the log; a
  changed row is a new call.
- **Read-only.** A database is read in a read-only transaction (PostgreSQL); the lake
  through the same confined DuckDB connection as ``plait lake sql`` (one SELECT).
- **Nothing dropped silently.** A row that cannot become a valid call is counted and the
  first reasons are kept with the run (``plait syncs show``).
"""

from plait.reverse_etl.definitions import (
    SECTION,
    Sync,
    SyncError,
    check,
    compile_syncs,
    delete,
    documents,
    masked,
    put,
    save,
)
from plait.reverse_etl.runs import Scheduler, run, run_due
from plait.reverse_etl.state import RunResult, status

__all__ = ["SECTION", "RunResult", "Scheduler", "Sync", "SyncError", "check", "compile_syncs",
           "delete", "documents", "masked", "put", "run", "run_due", "save", "status"]  # fmt: skip
