"""Every table, in one place. Migrations are written against these definitions and a test
checks the migrated schema against them (no drift).

Every tenant-owned table is keyed by organisation first so that a distributed PostgreSQL
(Citus, sharded by organisation) can take it further.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from signalscore.db.types import UTCDateTime
from signalscore.vocabulary import ANSWER_TYPES, DIMENSIONS, OBJECT_TYPES, sql_in

# Stable constraint names on both backends, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

OBJECT_ID_CODE_POINT_ORDER = sa.String(500).with_variant(
    sa.String(500, collation="C"), "postgresql"
)

ORG_ID = sa.String(24)
# JSONB on PostgreSQL (compact, comparable), JSON text on SQLite.
JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")
# The same, with Python's None stored as SQL NULL rather than the JSON text `null`.
NULLABLE_JSON_DOCUMENT = sa.JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)

organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", ORG_ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column(
        "organization_id",
        ORG_ID,
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # What listings show: `sk_live_` plus the first characters of the secret.
    sa.Column("prefix", sa.String(20), nullable=False),
    # SHA-256 hex of the whole key. Keys carry 238 bits of entropy, so a fast hash is the
    # right tool: it makes the stored value useless to a thief without slowing every request.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
)


def _org_column() -> sa.Column[str]:
    return sa.Column(
        "organization_id",
        ORG_ID,
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    )


scoring_profiles = sa.Table(
    "scoring_profiles",
    metadata,
    _org_column(),
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.String(1000), nullable=True),
    # SPEC §9: {dimension: [{name, minScore}, ...]} ordered by minScore descending, only the
    # dimensions that have tiers; NULL when none has.
    sa.Column("tiers", JSON_DOCUMENT, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(sql_in("type", OBJECT_TYPES), name="type"),
)

signal_templates = sa.Table(
    "signal_templates",
    metadata,
    _org_column(),
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.String(1000), nullable=True),
    sa.Column("object_type", sa.String(16), nullable=False),
    sa.Column("answer_type", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(sql_in("object_type", OBJECT_TYPES), name="object_type"),
    sa.CheckConstraint(sql_in("answer_type", ANSWER_TYPES), name="answer_type"),
)

scoring_rules = sa.Table(
    "scoring_rules",
    metadata,
    _org_column(),
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("profile_id", sa.Uuid(), nullable=False),
    sa.Column("signal_template_id", sa.String(100), nullable=False),
    sa.Column("dimension", sa.String(16), nullable=False),
    sa.Column("answer_type", sa.String(16), nullable=False),
    sa.Column("point_values", JSON_DOCUMENT, nullable=False),
    # SPEC §13: `{"steps": [{"afterDays", "factor"}]}`, or NULL (no decay).
    sa.Column("decay", NULLABLE_JSON_DOCUMENT, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["organization_id", "profile_id"],
        ["scoring_profiles.organization_id", "scoring_profiles.id"],
        name="fk_scoring_rules_profile",
        ondelete="CASCADE",
    ),
    # A template in use cannot be deleted (the API answers 409 first; this is the backstop).
    sa.ForeignKeyConstraint(
        ["organization_id", "signal_template_id"],
        ["signal_templates.organization_id", "signal_templates.id"],
        name="fk_scoring_rules_template",
        ondelete="RESTRICT",
    ),
    sa.UniqueConstraint(
        "organization_id",
        "profile_id",
        "signal_template_id",
        "dimension",
        name="uq_scoring_rules_profile_template_dimension",
    ),
    sa.CheckConstraint(sql_in("dimension", DIMENSIONS), name="dimension"),
    sa.Index("ix_scoring_rules_template", "organization_id", "signal_template_id"),
)

signal_values = sa.Table(
    "signal_values",
    metadata,
    _org_column(),
    sa.Column("object_type", sa.String(16), primary_key=True),
    sa.Column("object_id", sa.String(500), primary_key=True),
    sa.Column("signal_template_id", sa.String(100), primary_key=True),
    sa.Column("value", JSON_DOCUMENT, nullable=False),
    sa.Column("observed_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["organization_id", "signal_template_id"],
        ["signal_templates.organization_id", "signal_templates.id"],
        name="fk_signal_values_template",
        ondelete="CASCADE",
    ),
    sa.Index("ix_signal_values_template", "organization_id", "signal_template_id"),
)

profile_assignments = sa.Table(
    "profile_assignments",
    metadata,
    _org_column(),
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("profile_id", sa.Uuid(), nullable=False),
    sa.Column("object_type", sa.String(16), nullable=False),
    sa.Column("object_id", sa.String(500), nullable=False),
    sa.Column("assigned_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["organization_id", "profile_id"],
        ["scoring_profiles.organization_id", "scoring_profiles.id"],
        name="fk_profile_assignments_profile",
        ondelete="CASCADE",
    ),
    sa.UniqueConstraint(
        "organization_id",
        "profile_id",
        "object_type",
        "object_id",
        name="uq_profile_assignments_profile_object",
    ),
    sa.Index("ix_profile_assignments_object", "organization_id", "object_type", "object_id"),
)

# How many objects each profile has assigned: what a distribution's `assigned` reads instead
# of counting them (scores/counts.py). Kept by every assignment write, in its transaction
# (assignments/service.py, assignments/bulk.py); deleted with the profile.
assignment_counts = sa.Table(
    "assignment_counts",
    metadata,
    _org_column(),
    sa.Column("profile_id", sa.Uuid(), primary_key=True),
    sa.Column("assigned", sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(
        ["organization_id", "profile_id"],
        ["scoring_profiles.organization_id", "scoring_profiles.id"],
        name="fk_assignment_counts_profile",
        ondelete="CASCADE",
    ),
)

# The recompute queue (SPEC §7): at most one entry per object. An entry is pending while
# `lease_until` is NULL (or expired) and running while a worker holds an unexpired lease;
# `rerun` records a trigger that arrived while it was running, so it computes once more.
# `lane` is 0 (interactive: value writes, assignments, POST /compute) or 1 (background: a rule
# change's fan-out); workers claim interactive entries first, fairly across organisations,
# and each organisation's oldest first (`recompute.queue.Lane`, `recompute.worker.claim_batch`,
# which walks `ix_recompute_queue_claim`).
recompute_queue = sa.Table(
    "recompute_queue",
    metadata,
    _org_column(),
    sa.Column("object_type", sa.String(16), primary_key=True),
    sa.Column("object_id", sa.String(500), primary_key=True),
    sa.Column("enqueued_at", UTCDateTime(), nullable=False),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("rerun", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("lane", sa.SmallInteger(), nullable=False, server_default=sa.text("0")),
    sa.CheckConstraint("lane IN (0, 1)", name="lane"),
    sa.Index("ix_recompute_queue_claim", "lane", "organization_id", "enqueued_at"),
)

# Profiles whose every assigned object must be queued (their rules changed), for profiles too
# large to queue in the rule write's own transaction. The rule write queues the first chunk
# of objects (in (object_type, object_id) order) itself and leaves this row with a cursor after
# the last one; workers queue the rest a chunk at a time (recompute/queue.py).
recompute_profiles = sa.Table(
    "recompute_profiles",
    metadata,
    _org_column(),
    sa.Column("profile_id", sa.Uuid(), primary_key=True),
    sa.Column("cursor_type", sa.String(16), nullable=False),
    sa.Column("cursor_id", sa.String(500), nullable=False),
    sa.Column("enqueued_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["organization_id", "profile_id"],
        ["scoring_profiles.organization_id", "scoring_profiles.id"],
        name="fk_recompute_profiles_profile",
        ondelete="CASCADE",
    ),
)

# One row per (profile, object, dimension that has rules): the current score, the previous
# one, and the per-rule contributions that explain it. On PostgreSQL the table has
# fillfactor 50 (migration 0005) so that recomputes can update rows in place (HOT).
score_results = sa.Table(
    "score_results",
    metadata,
    _org_column(),
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("profile_id", sa.Uuid(), nullable=False),
    sa.Column("object_type", sa.String(16), nullable=False),
    # Ranked reads order ties by objectId in code point order on both backends: SQLite's
    # BINARY collation does, and on PostgreSQL the column is "C" whatever the database's
    # default collation (migration 0011).
    sa.Column("object_id", OBJECT_ID_CODE_POINT_ORDER, nullable=False),
    sa.Column("dimension", sa.String(16), nullable=False),
    sa.Column("score", sa.Float(), nullable=False),
    sa.Column("previous_score", sa.Float(), nullable=True),
    sa.Column("contributions", JSON_DOCUMENT, nullable=False),
    # A fingerprint of `contributions` (recompute/compute.py compares a new result with it
    # instead of loading the document); NULL on rows stored before it existed.
    sa.Column("contributions_hash", sa.BigInteger(), nullable=True),
    sa.Column("previous_contributions", JSON_DOCUMENT, nullable=False),
    sa.Column("signal_coverage", sa.Integer(), nullable=False),
    sa.Column("total_rules", sa.Integer(), nullable=False),
    sa.Column("computed_at", UTCDateTime(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    # SPEC §9: the tier of `score` under the profile's tiers when it was computed.
    sa.Column("tier", sa.String(50), nullable=True),
    sa.Column("previous_tier", sa.String(50), nullable=True),
    # SPEC §13: the earliest instant a decay step of one of the row's rules passes for its
    # values, when the row was computed; NULL when none will. The sweep queues rows past it.
    sa.Column("next_change_at", UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(
        ["organization_id", "profile_id"],
        ["scoring_profiles.organization_id", "scoring_profiles.id"],
        name="fk_score_results_profile",
        ondelete="CASCADE",
    ),
    sa.UniqueConstraint(
        "organization_id",
        "object_type",
        "object_id",
        "profile_id",
        "dimension",
        name="uq_score_results_object_profile_dimension",
    ),
    # Ranked reads walk it in either direction; distributions scan it without the table
    # (migration 0011, scores/service.py).
    sa.Index(
        "ix_score_results_rank",
        "organization_id",
        "profile_id",
        "dimension",
        "score",
        "object_id",
        "tier",
    ),
    # The decay sweep's scan: only rows that will change with time alone (migration 0014).
    sa.Index(
        "ix_score_results_next_change",
        "next_change_at",
        postgresql_where=sa.text("next_change_at IS NOT NULL"),
        sqlite_where=sa.text("next_change_at IS NOT NULL"),
    ),
)

# How many score rows a (profile, dimension) has at each (score, tier): what a distribution
# (SPEC §9) reads instead of counting a million rows. Kept in the transaction of every score
# change, from its events (scores/counts.py); a row exists only while its count is above 0.
# `tier` is '' for rows without a tier (tier names are never empty).
score_counts = sa.Table(
    "score_counts",
    metadata,
    _org_column(),
    sa.Column("profile_id", sa.Uuid(), primary_key=True),
    sa.Column("dimension", sa.String(16), primary_key=True),
    sa.Column("score", sa.Float(), primary_key=True),
    sa.Column("tier", sa.String(50), primary_key=True),
    sa.Column("count", sa.BigInteger(), nullable=False),
)

# The event log (SPEC §10): one row per change of a score row, in the transaction that makes
# it. `sequence` increases within the organisation and is handed out from `event_counters`
# right before the commit, under that row's lock, so events become visible in sequence order
# (signalscore/events/log.py). An event's `id` is derived from (organisation, sequence), so it
# is not stored.
score_events = sa.Table(
    "score_events",
    metadata,
    _org_column(),
    sa.Column("sequence", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # No foreign key: the events of a deleted profile outlive it.
    sa.Column("profile_id", sa.Uuid(), nullable=False),
    sa.Column("object_type", sa.String(16), nullable=False),
    sa.Column("object_id", sa.String(500), nullable=False),
    sa.Column("dimension", sa.String(16), nullable=False),
    sa.Column("score", sa.Float(), nullable=True),
    sa.Column("previous_score", sa.Float(), nullable=True),
    sa.Column("tier", sa.String(50), nullable=True),
    sa.Column("previous_tier", sa.String(50), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("changes", JSON_DOCUMENT, nullable=False),
    # An object's history, newest first.
    sa.Index("ix_score_events_object", "organization_id", "object_type", "object_id", "sequence"),
)

# Per organisation: the last sequence handed out, and the last one retention deleted (an
# `after` below it has missed events: 410 EVENTS_EXPIRED).
event_counters = sa.Table(
    "event_counters",
    metadata,
    sa.Column(
        "organization_id",
        ORG_ID,
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("last_sequence", sa.BigInteger(), nullable=False),
    sa.Column("expired_through", sa.BigInteger(), nullable=False),
)

# Webhook subscriptions (SPEC §11) and where each one's delivery stands. Events after
# `delivered_through` that match the subscription are still to deliver; a batch in flight is
# (delivered_through, pending_through] under `pending_message_id` (the `webhook-id` of every
# attempt at it), retried at `next_attempt_at`. `secret` is kept as is: it signs deliveries.
webhook_subscriptions = sa.Table(
    "webhook_subscriptions",
    metadata,
    _org_column(),
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("event_types", JSON_DOCUMENT, nullable=False),
    sa.Column("profile_ids", JSON_DOCUMENT, nullable=True),
    sa.Column("description", sa.String(1000), nullable=True),
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("disabled_reason", sa.String(500), nullable=True),
    sa.Column("delivered_through", sa.BigInteger(), nullable=False),
    sa.Column("pending_through", sa.BigInteger(), nullable=True),
    sa.Column("pending_message_id", sa.Uuid(), nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("failing_since", UTCDateTime(), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# The delivery log: one row per attempt (the newest kept per subscription, see webhooks/).
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    _org_column(),
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("subscription_id", sa.Uuid(), nullable=False),
    sa.Column("message_id", sa.Uuid(), nullable=False),
    sa.Column("event_ids", JSON_DOCUMENT, nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("duration_ms", sa.Float(), nullable=False),
    sa.Column("error", sa.String(500), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(
        ["organization_id", "subscription_id"],
        ["webhook_subscriptions.organization_id", "webhook_subscriptions.id"],
        name="fk_webhook_deliveries_subscription",
        ondelete="CASCADE",
    ),
    sa.Index(
        "ix_webhook_deliveries_subscription", "organization_id", "subscription_id", "created_at"
    ),
)

# Per-key request counters for rate limiting when several processes share PostgreSQL
# (fixed one-minute windows; old windows are pruned as new ones start).
rate_limit_counters = sa.Table(
    "rate_limit_counters",
    metadata,
    sa.Column("api_key_id", sa.Uuid(), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("window_start", sa.BigInteger(), primary_key=True),
    sa.Column("count", sa.Integer(), nullable=False),
)

# Console sign-ins (SPEC §14): an API key exchanged once for a session. The cookie holds
# `<organization_id>.<secret>`; only the SHA-256 of the secret is stored, keyed by
# organisation first like every tenant table. A session ends at `expires_at`, at sign-out
# (the row is deleted), or when its key is revoked (every lookup joins the active key).
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    _org_column(),
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "api_key_id",
        sa.Uuid(),
        sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)
