"""The lake: processed events and profile snapshots as Parquet files, queried with DuckDB
(``plait sql``, ``POST /api/v1/sql``). Importing it adds its step to privacy deletions
(``plait.lake.erasure``): the server imports it, and so does ``plait privacy request``."""

from plait.govern import privacy
from plait.lake.erasure import erase_from_lake, use_lake_dir
from plait.lake.query import LakeQueryError, run_sql
from plait.lake.writer import export_events, export_profiles, reset_events


def _register() -> None:
    if not any(name == "lake" for name, _ in privacy.AFTER_COMMIT_STEPS):
        at = next(
            (i for i, (name, _) in enumerate(privacy.AFTER_COMMIT_STEPS) if name == "physical"),
            len(privacy.AFTER_COMMIT_STEPS),
        )
        privacy.AFTER_COMMIT_STEPS.insert(at, ("lake", erase_from_lake))


_register()

__all__ = [
    "LakeQueryError",
    "erase_from_lake",
    "export_events",
    "export_profiles",
    "reset_events",
    "run_sql",
    "use_lake_dir",
]
