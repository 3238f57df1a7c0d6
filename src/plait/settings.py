"""Process settings, read from PLAIT_* environment variables."""

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PLAIT_")

    # Where state and the log live. Empty means the embedded SQLite file under data_dir.
    database_url: str = ""
    data_dir: Path = Path("plait-data")
    # The lake (Parquet files queried with DuckDB); empty means data_dir/"lake", also when
    # state lives in PostgreSQL.
    lake_dir: Path | None = None
    # POST /api/v1/sql writes a new profile snapshot when the last is older than this.
    lake_snapshot_seconds: float = 60.0
    # FULL fsyncs every group commit, so a 2xx survives a power cut, not only a crash.
    sqlite_synchronous: str = "FULL"
    # On SQLite, a messageId is deduplicated for at least this long (at most twice it),
    # from memory: ~100 bytes per message in the window. PostgreSQL dedups forever.
    dedup_window_hours: float = 24.0

    # Run the pipeline (identity, profiles) with `plait serve` (in a process of its own);
    # turn it off when separate `plait worker` processes run it. It polls the log this often.
    pipeline: bool = True
    pipeline_poll_seconds: float = 0.1
    # Audiences and computed traits: the pipeline's scheduler looks for expired windows and
    # new definitions this often, and reconciles everything over the lake this often.
    audience_tick_seconds: float = 1.0
    audience_reconcile_seconds: float = 3600.0
    # Deliver to destinations where the pipeline runs (serve's pipeline process, each
    # `plait worker`); a destination with nothing to do looks for new messages this often.
    delivery: bool = True
    delivery_poll_seconds: float = 0.2

    host: str = "127.0.0.1"
    port: int = 8080
    # Server processes. One is enough for most; more use more cores (they share the store,
    # and the log's appends serialize on its write lock).
    workers: int = 1
    # Messages accepted but not yet committed; past this the API answers 429.
    max_pending_messages: int = 200_000
    # Seconds a write key lookup is cached; a revoked key stops working within this time.
    write_key_cache_seconds: float = 2.0
    # Public base URL written into the analytics.js settings document (apiHost); by
    # default it is derived from the request's Host header.
    public_url: str = ""
    log_level: str = "INFO"
    access_log: bool = False
    # Adds /_bare, an endpoint that only reads the body: the ingestion benchmark's baseline.
    bench_bare_endpoint: bool = False
    # Seconds a workspace's governance (PII policy, suppressions) is cached at ingestion: a
    # change applies to new messages within this time.
    governance_cache_seconds: float = 2.0
    # Keys for the PII policy's `encrypt` action, "id:base64key,..." (the first encrypts;
    # the others only decrypt, during a rotation). Never stored in the database.
    pii_keys: str = ""
    # Take the client IP from X-Forwarded-For (only behind a proxy you trust).
    trust_forwarded_for: bool = False

    def keyring(self):
        from plait.govern.pii import Keyring  # settings is a leaf: imported when asked

        return Keyring.from_env({"PLAIT_PII_KEYS": self.pii_keys})

    @property
    def dedup_window_seconds(self) -> float:
        return self.dedup_window_hours * 3600

    def pipeline_options(self) -> dict:
        """What a Pipeline of this process takes from the settings."""
        return {
            "lake_dir": self.resolved_lake_dir(),
            "audience_tick_seconds": self.audience_tick_seconds,
            "reconcile_seconds": self.audience_reconcile_seconds,
        }

    def resolved_lake_dir(self) -> Path:
        return self.lake_dir if self.lake_dir else self.data_dir / "lake"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'plait.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
