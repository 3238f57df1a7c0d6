"""Table definitions shared by the repositories. Migrations create them (see migrations/)."""

import sqlalchemy as sa

metadata = sa.MetaData()

# BIGINT in PostgreSQL; SQLite only auto-assigns INTEGER PRIMARY KEY columns.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("slug", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("type", sa.String(50), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("workspace_id", "name", name="uq_sources_workspace_name"),
)

write_keys = sa.Table(
    "write_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("source_id", sa.String(64), sa.ForeignKey("sources.id"), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(8), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(1000), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger),
    sa.Column("user_id", sa.String(64), index=True),  # a console user's session
    sa.Column("expires_at", sa.BigInteger),  # sessions end; API tokens (NULL) do not
)

# The durable, append-only event log. log_offset only grows (AUTOINCREMENT in SQLite,
# an identity in PostgreSQL) and readers checkpoint on it.
log_messages = sa.Table(
    "log_messages",
    metadata,
    sa.Column("log_offset", BigId, sa.Identity(), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("message_id", sa.String(100), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),  # microseconds since epoch
    sa.Column("payload", sa.Text, nullable=False),  # the enriched message as JSON
    # Deduplication: this unique index on PostgreSQL; on SQLite (migration 0002 drops it,
    # it made appends 5x slower) the log backend's window of recent messageIds.
    sa.UniqueConstraint("workspace_id", "message_id", name="uq_log_workspace_message"),
    # A source's arrivals over time (the overview's counts, the dedup window's restart).
    sa.Index("ix_log_source_received", "workspace_id", "source_id", "received_at"),
    sa.Index("ix_log_workspace_offset", "workspace_id", "log_offset"),
    sqlite_autoincrement=True,
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("log_offset", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

imports = sa.Table(
    "imports",
    metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("source_id", sa.String(64), sa.ForeignKey("sources.id"), nullable=False),
    sa.Column("path", sa.String(1000), nullable=False),
    sa.Column("rows_done", sa.BigInteger, nullable=False),
    sa.Column("accepted", sa.BigInteger, nullable=False),
    sa.Column("rejected", sa.BigInteger, nullable=False),
    sa.Column("finished", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Identity and profiles (issue 3): state derived from the log by the pipeline; a rebuild
# deletes and recomputes all of it but workspace_settings and identity_removals (input).

workspace_settings = sa.Table(  # per-workspace configuration documents, e.g. "identity"
    "workspace_settings",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),  # JSON
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

profiles = sa.Table(  # people (kind user) and accounts (kind account, from group calls)
    "profiles",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("first_offset", sa.BigInteger, nullable=False),  # the log offset that made it
    sa.Column("created_at", sa.BigInteger, nullable=False),  # event time, ms
    sa.Column("merged_into", sa.String(40), index=True),  # set once merged away
)

identifiers = sa.Table(
    "identifiers",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), primary_key=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("first_seen", sa.BigInteger, nullable=False),  # event time, ms
    sa.Column("last_seen", sa.BigInteger, nullable=False),  # the latest event hour, ms
    sa.Column("log_offset", sa.BigInteger, nullable=False),  # the first message with it
    sa.Column("message_id", sa.String(100), nullable=False),
)

identity_edges = sa.Table(  # two identifiers seen in one message (first such message)
    "identity_edges",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("a_type", sa.String(64), primary_key=True),
    sa.Column("a_value", sa.String(256), primary_key=True),
    sa.Column("b_type", sa.String(64), primary_key=True),
    sa.Column("b_value", sa.String(256), primary_key=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("log_offset", sa.BigInteger, nullable=False),
    sa.Column("message_id", sa.String(100), nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
)

identity_removals = sa.Table(  # an operator's unmerge: an identifier, or a link, removed
    "identity_removals",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False, index=True),
    sa.Column("a_type", sa.String(64), nullable=False),
    sa.Column("a_value", sa.String(256), nullable=False),
    sa.Column("b_type", sa.String(64)),  # set for a link
    sa.Column("b_value", sa.String(256)),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

lineage = sa.Table(  # merges and unmerges, with their evidence
    "lineage",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),  # merge | unmerge
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),  # survivor / split
    sa.Column("other_id", sa.String(40), nullable=False, index=True),  # merged / split off
    sa.Column("log_offset", sa.BigInteger),  # the message that merged (merges only)
    sa.Column("message_id", sa.String(100)),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON: identifiers, reason
)

message_profiles = sa.Table(  # every processed message and the profile it belongs to
    "message_profiles",
    metadata,
    sa.Column("log_offset", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("profile_id", sa.String(40)),  # None: no usable identifier
    sa.Column("timestamp", sa.BigInteger, nullable=False),  # corrected event time, ms
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("event", sa.String(200)),
    # The message as governance left it (transformed, properties omitted), only where it
    # differs from the log's payload.
    sa.Column("payload", sa.Text),
    sa.Index("ix_message_profiles_profile", "profile_id", "timestamp"),
)

traits = sa.Table(  # a profile's (or account's) current traits, latest event time wins
    "traits",
    metadata,
    sa.Column("profile_id", sa.String(40), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),  # JSON
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("log_offset", sa.BigInteger, nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("message_id", sa.String(100), nullable=False),
)

trait_history = sa.Table(  # every value a message set, in arrival order
    "trait_history",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("profile_id", sa.String(40), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("log_offset", sa.BigInteger, nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("message_id", sa.String(100), nullable=False),
    sa.Index("ix_trait_history_profile", "profile_id", "key"),
)

account_members = sa.Table(
    "account_members",
    metadata,
    sa.Column("account_id", sa.String(40), primary_key=True),
    sa.Column("profile_id", sa.String(40), primary_key=True, index=True),
    sa.Column("timestamp", sa.BigInteger, nullable=False),  # the first group call
    sa.Column("log_offset", sa.BigInteger, nullable=False),
)

# Governance and privacy (issue 4). Configuration lives in workspace_settings ("tracking_plans",
# "transformations", "pii", "consent", "retention"); every version of a tracking plan is kept.

tracking_plan_versions = sa.Table(
    "tracking_plan_versions",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("plan_id", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("doc", sa.Text, nullable=False),  # JSON
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

violations = sa.Table(  # derived: what the tracking plans found, per message and field
    "violations",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("plan_id", sa.String(100), nullable=False),
    sa.Column("plan_version", sa.Integer, nullable=False),
    sa.Column("log_offset", sa.BigInteger, nullable=False, index=True),
    sa.Column("message_id", sa.String(100), nullable=False),
    sa.Column("event_type", sa.String(16), nullable=False),
    sa.Column("event_name", sa.String(200)),
    sa.Column("kind", sa.String(32), nullable=False),  # unplanned_event | ... | naming
    sa.Column("type", sa.String(64), nullable=False),  # Segment's violationType
    sa.Column("field", sa.String(500), nullable=False),
    sa.Column("description", sa.String(1000), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # allowed | omitted | blocked
    sa.Column("timestamp", sa.BigInteger, nullable=False),  # event time, ms
    sa.Index("ix_violations_workspace_event", "workspace_id", "event_name"),
)

quarantine = sa.Table(  # derived: blocked messages (their payload stays in the log)
    "quarantine",
    metadata,
    sa.Column("log_offset", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("workspace_id", sa.String(64), nullable=False, index=True),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("plan_id", sa.String(100), nullable=False),
    sa.Column("plan_version", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(1000), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

profile_consent = sa.Table(  # a profile's current consent per category
    "profile_consent",
    metadata,
    sa.Column("profile_id", sa.String(40), primary_key=True),
    sa.Column("category", sa.String(200), primary_key=True),
    sa.Column("allowed", sa.Boolean, nullable=False),
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("log_offset", sa.BigInteger, nullable=False),
)

consent_history = sa.Table(  # every "Segment Consent Preference Updated" a profile sent
    "consent_history",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("preferences", sa.Text, nullable=False),  # JSON {category: bool}
    sa.Column("timestamp", sa.BigInteger, nullable=False),
    sa.Column("log_offset", sa.BigInteger, nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("message_id", sa.String(100), nullable=False),
)

privacy_requests = sa.Table(  # Segment's regulations: the subject is kept only as hashes
    "privacy_requests",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False, index=True),
    sa.Column("regulation_type", sa.String(40), nullable=False),
    sa.Column("subject_type", sa.String(64), nullable=False),
    sa.Column("subject_hashes", sa.Text, nullable=False),  # JSON list
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("receipt", sa.Text),  # JSON: what was removed, counts, no personal data
    sa.Column("error", sa.String(2000)),
)

unlinked_messages = sa.Table(  # messages kept in the log but given no profile (blocked by a
    # plan, dropped by a transformation or a suppression): their identities, hashed, so that a
    # deletion finds them without reading the whole log
    "unlinked_messages",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("value_hash", sa.String(64), primary_key=True),  # identity_hash(ws, type, value)
    sa.Column("log_offset", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Index("ix_unlinked_messages_offset", "log_offset"),  # retention and replays delete by it
)

suppressions = sa.Table(  # identities whose messages ingestion rejects
    "suppressions",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("value_hash", sa.String(64), primary_key=True),  # identity_hash(ws, type, value)
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

audit_log = sa.Table(  # append-only (triggers refuse UPDATE and DELETE)
    "audit_log",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),  # tok_... or cli:<user>
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("target", sa.String(500), nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON, never personal data
    sa.Index("ix_audit_workspace_at", "workspace_id", "at"),
)

# Computed traits and audiences (issue 5). Definitions live in workspace_settings
# ("computed_traits", "audiences"); these tables are the engine's state: what each profile
# is now (to emit only changes), the history of entering and leaving, when time alone may
# change a profile's values, and which definitions were backfilled.

audience_members = sa.Table(
    "audience_members",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("audience_key", sa.String(100), primary_key=True),
    sa.Column("profile_id", sa.String(40), primary_key=True),
    sa.Column("entered_at", sa.BigInteger, nullable=False),  # ms
    sa.Index("ix_audience_members_profile", "profile_id"),
)

audience_history = sa.Table(  # every entry and exit, with when and why
    "audience_history",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("audience_key", sa.String(100), nullable=False),
    sa.Column("profile_id", sa.String(40), nullable=False, index=True),
    sa.Column("change", sa.String(8), nullable=False),  # entered | exited
    sa.Column("at", sa.BigInteger, nullable=False),  # ms
    sa.Column("reason", sa.String(16), nullable=False),  # event | time | backfill | merge ...
    sa.Index("ix_audience_history_key_at", "workspace_id", "audience_key", "at"),
)

computed_values = sa.Table(  # computed traits' current values (absent: no row)
    "computed_values",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("trait_key", sa.String(100), primary_key=True),
    sa.Column("profile_id", sa.String(40), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),  # JSON
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_computed_values_profile", "profile_id"),
)

audience_schedule = sa.Table(  # when time alone may change a profile's values next
    "audience_schedule",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("profile_id", sa.String(40), primary_key=True),
    sa.Column("due_at", sa.BigInteger, nullable=False),  # ms
    sa.Index("ix_audience_schedule_due", "workspace_id", "due_at"),
)

audience_state = sa.Table(  # per definition: the meaning last backfilled, SQL traits' last run
    "audience_state",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(120), primary_key=True),  # audience:<key> | trait:<key>
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

audience_cache = sa.Table(  # per profile: the events each definition counts, so an
    # evaluation reads one row instead of the profile's history (rebuilt from the history
    # when missing or made for other definitions)
    "audience_cache",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("profile_id", sa.String(40), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),  # JSON {fp, upto, m: {list id: matches}}
)

# Destinations (issue 6). Definitions live in workspace_settings ("destinations"); each
# destination follows the processed log from a checkpoint of its own (checkpoints,
# consumer "destination:<ws>:<key>"). These tables hold what it has not delivered for good
# yet (queued: retrying, or waiting behind an earlier message of the same person) and what
# it gave up on (failed: the dead letters), and its counters.

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", BigId, sa.Identity(), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("destination", sa.String(100), nullable=False),
    sa.Column("log_offset", sa.BigInteger, nullable=False),
    sa.Column("person", sa.String(200), nullable=False),  # ordering key: profile or message
    sa.Column("status", sa.String(8), nullable=False),  # queued | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("first_attempt_at", sa.BigInteger),  # ms; None: not tried yet
    sa.Column("next_attempt_at", sa.BigInteger, nullable=False),  # ms
    sa.Column("last_status", sa.Integer),  # HTTP status (None: no response)
    sa.Column("last_response", sa.Text),  # the response's start, or the error
    # What to send when it is no message of the log (a forwarded deletion); else None.
    sa.Column("payload", sa.Text),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint(
        "workspace_id", "destination", "log_offset", name="uq_deliveries_message"
    ),  # fmt: skip
    sa.Index("ix_deliveries_due", "workspace_id", "destination", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_person", "workspace_id", "destination", "person", "log_offset"),
)

destination_stats = sa.Table(  # counters and the last response, per destination
    "destination_stats",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("destination", sa.String(100), primary_key=True),
    sa.Column("delivered", sa.BigInteger, nullable=False),
    sa.Column("filtered", sa.BigInteger, nullable=False),  # left out by filters or consent
    sa.Column("retried", sa.BigInteger, nullable=False),  # attempts that failed, retryable
    sa.Column("failed", sa.BigInteger, nullable=False),  # given up on (dead letters)
    sa.Column("last_status", sa.Integer),
    sa.Column("last_response", sa.Text),
    sa.Column("last_attempt_at", sa.BigInteger),
    sa.Column("last_delivered_at", sa.BigInteger),
    # One dispatcher at a time sends for a destination (several workers on PostgreSQL).
    sa.Column("owner", sa.String(64)),
    sa.Column("lease_until", sa.BigInteger),
)

# Reverse ETL (issue 6): each sync's cursor and last run; its definition is the workspace's
# "reverse_etl" setting.

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("workspace_id", sa.String(64), primary_key=True),
    sa.Column("sync", sa.String(100), primary_key=True),
    sa.Column("cursor", sa.Text),  # JSON {"kind", "value"}: rows after it are read next
    sa.Column("running_since", sa.BigInteger),  # one run at a time (several workers)
    sa.Column("last_run_at", sa.BigInteger),
    sa.Column("last_status", sa.String(8)),  # ok / failed
    sa.Column("last_error", sa.Text),
    sa.Column("last_rows", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),  # read, over every run
    sa.Column("sent", sa.BigInteger, nullable=False),  # into the log or the destination's queue
    sa.Column("rejected", sa.BigInteger, nullable=False),
)

# The console (issue 7): users sign in with a password and get a session token carrying
# their role's scopes.

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace_id", sa.String(64), sa.ForeignKey("workspaces.id"), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # admin / editor / viewer
    sa.Column("password_hash", sa.String(300), nullable=False),  # scrypt, salted
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("disabled_at", sa.BigInteger),
    sa.UniqueConstraint("workspace_id", "email", name="uq_users_workspace_email"),
)
