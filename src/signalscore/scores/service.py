"""Reading scores (SPEC §4 Scores, §9): by object, ranked, and as a distribution. Reading
never computes. Every function is scoped to one organisation in its SQL; the answers are
built from rows by the response models (`ScoreRow.from_row`).

Ranked reads walk `ix_score_results_rank` (organization, profile, dimension, score,
object_id, tier):

- A page is ordered by score (either direction), then `objectId` ascending. The index
  serves the ascending order as it is. For the descending one, only score runs backwards
  while ties still go by ascending `objectId`, which no single index order gives. The page is
  therefore read as index ranges that each follow the index: the rest of the cursor's own
  score (`score = s AND object_id > o`, forwards), then the next rows beyond it (backwards,
  which is exact for every score above the last one read), and the last score's rows again
  forwards, from its smallest `objectId`. At most three short range reads, whatever the
  ties: never a sort of a large group of equal scores. They return positions only and run
  as one statement with the rows' own read (`_page_statement`): a page is one round trip.
- A distribution reads the (score, tier) counts kept with every score change
  (`scores/counts.py`; scores have 2 decimals, so at most 10,001 per tier), instead of a
  `GROUP BY` over a million rows; the histogram, mean, percentiles and tier counts are
  computed from them in Python, exactly.
"""

from __future__ import annotations

import functools
import uuid
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from signalscore import cursors
from signalscore.db.tables import score_results, scoring_profiles
from signalscore.errors import Invalid
from signalscore.profiles.service import get_profile
from signalscore.scores import counts as score_counts
from signalscore.scores.schemas import Bucket, Distribution, TierCount
from signalscore.vocabulary import Dimension

s = score_results
p = scoring_profiles

SCORE_COLUMNS = (
    s.c.id,
    s.c.profile_id,
    s.c.organization_id,
    s.c.object_type,
    s.c.object_id,
    s.c.dimension,
    s.c.score,
    s.c.previous_score,
    s.c.tier,
    s.c.previous_tier,
    # The documents as JSON text: answers pass them on (`scores.schemas.score_row_json`).
    sa.cast(s.c.contributions, sa.Text).label("contributions_text"),
    sa.cast(s.c.previous_contributions, sa.Text).label("previous_contributions_text"),
    s.c.signal_coverage,
    s.c.total_rules,
    s.c.computed_at,
    s.c.next_change_at,
    s.c.version,
)


def read_scores(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Sequence[str],
    profile_id: uuid.UUID | None,
    dimension: str | None,
) -> list[Row[Any]]:
    """The rows of these (normalised) objects (`SCORE_COLUMNS`), in the order of
    `object_ids`, then `profileId`, then `dimension`: answers render them with
    `score_row_json`, other readers build `ScoreRow.from_row`."""
    order = {object_id: i for i, object_id in enumerate(dict.fromkeys(object_ids))}
    query = sa.select(*SCORE_COLUMNS).where(
        s.c.organization_id == org_id,
        s.c.object_type == object_type,
        s.c.object_id.in_(list(order)),
    )
    if profile_id is not None:
        query = query.where(s.c.profile_id == profile_id)
    if dimension is not None:
        query = query.where(s.c.dimension == dimension)
    rows = list(conn.execute(query))
    rows.sort(key=lambda r: (order[r.object_id], str(r.profile_id), r.dimension))
    return rows


# --- Ranked reads ------------------------------------------------------------------------


Order = Literal["desc", "asc"]


@dataclass(frozen=True)
class RankedRead:
    """`GET /profiles/{id}/scores`: what to read (`minScore`/`maxScore` inclusive)."""

    dimension: Dimension
    order: Order = "desc"
    tier: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    limit: int = 100
    cursor: str | None = None

    def fingerprint(self, profile_id: uuid.UUID) -> str:
        """What a cursor belongs to: the same profile, dimension, order and filters."""
        return cursors.fingerprint(
            str(profile_id), self.dimension, self.order, self.tier, self.min_score, self.max_score
        )


@dataclass(frozen=True)
class _Range:
    """Scores a read may return: low <= score (or < low if `low_open`), and score <= high
    (or < high if `high_open`)."""

    low: float = 0.0
    high: float = 100.0
    low_open: bool = False
    high_open: bool = False

    def empty(self) -> bool:
        return self.low > self.high or ((self.high_open or self.low_open) and self.low >= self.high)

    def holds(self, score: float) -> bool:
        above = score > self.low if self.low_open else score >= self.low
        below = score < self.high if self.high_open else score <= self.high
        return above and below

    def beyond(self, score: float, order: Order) -> _Range:
        """This range, strictly past `score` in `order`."""
        if order == "asc":
            return _intersect(self, _Range(low=score, low_open=True))
        return _intersect(self, _Range(high=score, high_open=True))


def encode_cursor(belongs: str, score: float, object_id: str) -> str:
    return cursors.encode(belongs, score, object_id)


def _storable(object_id: Any) -> bool:
    """Whether a cursor's objectId could be a stored one: text of at most 512 characters
    (500 before normalisation, a contact's canonical URL adds a little) that PostgreSQL can
    hold (no NUL, valid UTF-8)."""
    if not isinstance(object_id, str) or len(object_id) > 512 or "\x00" in object_id:
        return False
    try:
        object_id.encode()
    except UnicodeEncodeError:
        return False
    return True


def decode_cursor(cursor: str, belongs: str) -> tuple[float, str]:
    """The (score, objectId) a cursor continues after; 422 `INVALID_CURSOR` for anything that
    is not a cursor of this very read (another profile, dimension, order or filter)."""
    score, object_id = cursors.decode(cursor, belongs, 2)
    if (
        not _storable(object_id)
        or isinstance(score, bool)
        or not isinstance(score, int | float)
        or not 0 <= score <= 100
    ):
        raise cursors.invalid()
    return float(score), object_id


def _tier_range(tiers: list[dict[str, Any]], name: str) -> tuple[str, _Range]:
    """The tier's stored name (matched ignoring case, as names are unique) and its scores:
    from its `minScore` up to the next larger one (exclusive), or 100."""
    for i, tier in enumerate(tiers):  # minScore descending
        if tier["name"].casefold() == name.casefold():
            if i == 0:
                return tier["name"], _Range(low=float(tier["minScore"]))
            upper = float(tiers[i - 1]["minScore"])
            return tier["name"], _Range(low=float(tier["minScore"]), high=upper, high_open=True)
    known = ", ".join(repr(t["name"]) for t in tiers) or "none"
    raise Invalid.one(
        "tier", "UNKNOWN_TIER", f"the profile has no tier {name!r} in this dimension ({known})"
    )


def _intersect(a: _Range, b: _Range) -> _Range:
    if a.high < b.high or (a.high == b.high and a.high_open):
        high, high_open = a.high, a.high_open
    else:
        high, high_open = b.high, b.high_open
    if a.low > b.low or (a.low == b.low and a.low_open):
        low, low_open = a.low, a.low_open
    else:
        low, low_open = b.low, b.low_open
    return _Range(low=low, high=high, low_open=low_open, high_open=high_open)


def ranked_page(
    conn: Connection, org_id: str, profile_id: uuid.UUID, read: RankedRead
) -> tuple[list[Row[Any]], str | None]:
    """One page of the profile's rows in `read.dimension`, by score (`read.order`), then
    `objectId` ascending, and the cursor of the next page (None on the last); 404 for an
    unknown profile. One statement (`_page_statement`) finds the page's positions by range
    reads of the index that return only (score, objectId), then reads their rows whole,
    once each, and answers whether the profile exists; a `tier` filter first reads the
    profile's tiers, where the tier's scores start."""
    fingerprint = read.fingerprint(profile_id)
    try:
        after = None if read.cursor is None else decode_cursor(read.cursor, fingerprint)
    except Invalid:
        get_profile(conn, org_id, profile_id)  # an unknown profile is a 404 first
        raise
    scores = _Range(
        low=0.0 if read.min_score is None else read.min_score,
        high=100.0 if read.max_score is None else read.max_score,
    )
    values: dict[str, Any] = {
        "org_id": org_id,
        "profile_id": profile_id,
        "dimension": read.dimension,
        "wanted": read.limit + 1,  # one more than a page: whether another page follows
    }
    if read.tier is not None:
        tiers = (get_profile(conn, org_id, profile_id).tiers or {}).get(read.dimension, [])
        name, held = _tier_range([t.model_dump() for t in tiers], read.tier)
        # The stored tier decides; the range only lets the read start where the tier does.
        values["tier"] = name
        scores = _intersect(scores, held)
    rest_of_tie = False
    if not scores.empty() and after is not None:
        values["after_score"], values["after_object"] = after
        rest_of_tie = scores.holds(after[0])
        scores = scores.beyond(after[0], read.order)
    bounds = None
    if not scores.empty():
        bounds = (scores.low_open, scores.high_open)
        values["low"], values["high"] = scores.low, scores.high
    if not rest_of_tie and bounds is None:
        if conn.execute(_PROFILE, values).first() is None:
            get_profile(conn, org_id, profile_id)  # raises the 404
        return [], None
    statement = _page_statement(read.order, read.tier is not None, rest_of_tie, bounds)
    found = list(conn.execute(statement, values))
    if not found:
        get_profile(conn, org_id, profile_id)  # raises the 404
    if not found or found[0].id is None:
        return [], None
    found.sort(key=lambda r: r.object_id)
    found.sort(key=lambda r: r.score, reverse=read.order == "desc")
    page = found[: read.limit]
    cursor = None
    if len(found) > read.limit:
        cursor = encode_cursor(fingerprint, page[-1].score, page[-1].object_id)
    return page, cursor


# The statements of a page take their values as bound parameters (`ranked_page`), so each of
# their few shapes is built once: building and keying one costs about as much as the
# database takes to run it.
_PROFILE = sa.select(p.c.type).where(
    p.c.organization_id == sa.bindparam("org_id"), p.c.id == sa.bindparam("profile_id")
)
_WANTED = sa.bindparam("wanted", type_=sa.Integer)


@functools.cache
def _page_statement(
    order: Order, tier: bool, rest_of_tie: bool, bounds: tuple[bool, bool] | None
) -> sa.Select[Any]:
    """The first `wanted` rows of a page, whole, in one statement: the range reads of its
    positions (the rest of the cursor's own score if `rest_of_tie`, then the scores within
    `bounds`, (low_open, high_open), if any), merged, each once, and cut to `wanted` in the
    page's order, then each position joined to its row by the row's full key
    (`uq_score_results_object_profile_dimension`, one probe a row); and the profile LEFT
    JOINed to them, so that no row at all means no such profile (404) and one of NULLs an
    empty page. Rows come in no particular order. Each read is a CTE (SQLite takes no ORDER
    BY/LIMIT in a member of a compound select)."""
    keys = sa.select(s.c.score, s.c.object_id).where(
        s.c.organization_id == sa.bindparam("org_id"),
        s.c.profile_id == sa.bindparam("profile_id"),
        s.c.dimension == sa.bindparam("dimension"),
    )
    if tier:
        keys = keys.where(s.c.tier == sa.bindparam("tier"))
    reads: list[sa.Select[Any]] = []
    if rest_of_tie:
        reads.append(
            keys.where(
                s.c.score == sa.bindparam("after_score"),
                s.c.object_id > sa.bindparam("after_object"),
            )
            .order_by(s.c.object_id)
            .limit(_WANTED)
        )
    if bounds is not None:
        low_open, high_open = bounds
        # One lower and one upper bound: SQLite's planner uses only the first bound of each
        # side it finds, so a second one would leave it scanning from the end of the index.
        low, high = sa.bindparam("low", type_=sa.Float), sa.bindparam("high", type_=sa.Float)
        reads += _beyond(
            keys.where(
                s.c.score > low if low_open else s.c.score >= low,
                s.c.score < high if high_open else s.c.score <= high,
            ),
            order,
        )
    parts = [r.cte() for r in reads]
    merged = sa.union(*(sa.select(c.c.score, c.c.object_id) for c in parts)).subquery()
    by_score = merged.c.score.desc() if order == "desc" else merged.c.score
    positions = (
        sa.select(merged.c.score, merged.c.object_id)
        .order_by(by_score, merged.c.object_id)
        .limit(_WANTED)
        .subquery()
    )
    rows = (
        sa.select(*SCORE_COLUMNS)
        .select_from(positions)
        .join(
            s,
            sa.and_(
                s.c.organization_id == sa.bindparam("org_id"),
                s.c.object_type == _PROFILE.scalar_subquery(),
                s.c.object_id == positions.c.object_id,
                s.c.profile_id == sa.bindparam("profile_id"),
                s.c.dimension == sa.bindparam("dimension"),
            ),
        )
        .subquery()
    )
    return (
        sa.select(*rows.c)
        .select_from(p.outerjoin(rows, sa.true()))
        .where(p.c.organization_id == sa.bindparam("org_id"), p.c.id == sa.bindparam("profile_id"))
    )


def _beyond(keys: sa.Select[Any], order: Order) -> list[sa.Select[Any]]:
    """Range reads whose positions, merged in the page's order, begin with the first
    `wanted` that `keys` selects by score in `order`, then objectId ascending."""
    if order == "asc":
        return [keys.order_by(s.c.score, s.c.object_id).limit(_WANTED)]
    # Backwards down the index: exact for every score but the lowest one read, whose rows
    # came largest objectId first and may be the wrong ones of a larger tie; so that score's
    # rows again, forwards from its smallest objectId.
    backwards = keys.order_by(s.c.score.desc(), s.c.object_id.desc()).limit(_WANTED).cte()
    lowest = sa.select(sa.func.min(backwards.c.score)).scalar_subquery()
    tie = keys.where(s.c.score == lowest).order_by(s.c.object_id).limit(_WANTED)
    return [sa.select(backwards.c.score, backwards.c.object_id), tie]


# --- Distributions -----------------------------------------------------------------------


def bucket_edges(buckets: int) -> list[float]:
    """The `buckets + 1` edges of equal-width buckets over [0, 100]."""
    return [100 * i / buckets for i in range(buckets)] + [100.0]


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def nearest_rank(sorted_counts: list[tuple[float, int]], total: int, percent: int) -> float:
    """The score at rank ceil(percent/100 × total) of the ascending scores (nearest rank),
    from (score, count) pairs in ascending score order."""
    rank = max(1, -(-percent * total // 100))
    seen = 0
    for score, count in sorted_counts:
        seen += count
        if seen >= rank:
            return score
    raise ValueError("rank beyond the rows")


def distribution(
    conn: Connection, org_id: str, profile_id: uuid.UUID, dimension: Dimension, buckets: int
) -> Distribution:
    """SPEC §9 distribution of the profile's rows in `dimension`."""
    profile = get_profile(conn, org_id, profile_id)
    assigned = score_counts.assigned(conn, org_id, profile_id)
    groups = score_counts.groups(conn, org_id, profile_id, dimension)
    tiers = (profile.tiers or {}).get(dimension, [])
    return distribution_of(dimension, assigned, groups, tiers, buckets)


def distribution_of(
    dimension: Dimension,
    assigned: int,
    groups: Iterable[Any],
    tiers: Sequence[Any],
    buckets: int,
) -> Distribution:
    """SPEC §9 distribution from (score, tier, count) groups (tuples or rows): the
    histogram, exact mean, nearest-rank percentiles and the counts of `tiers` (objects with
    `name` and `minScore`, minScore descending). The stored one (`distribution`) and a preview's
    (`preview.service`) are both built here."""
    by_score: dict[float, int] = {}
    by_tier: dict[str | None, int] = {}
    for score, tier, count in groups:
        by_score[score] = by_score.get(score, 0) + count
        by_tier[tier] = by_tier.get(tier, 0) + count
    ascending = sorted(by_score.items())
    scored = sum(by_score.values())
    edges = bucket_edges(buckets)
    counts = [0] * buckets
    for score, count in ascending:
        counts[min(bisect_right(edges, score) - 1, buckets - 1)] += count
    histogram = [
        Bucket(min=_number(edges[i]), max=_number(edges[i + 1]), count=counts[i])
        for i in range(buckets)
    ]
    tier_counts = [
        TierCount(name=t.name, minScore=t.minScore, count=by_tier.get(t.name, 0)) for t in tiers
    ]
    if not scored:
        return Distribution(
            dimension=dimension,
            assigned=assigned,
            scored=0,
            mean=None,
            p50=None,
            p90=None,
            histogram=histogram,
            tiers=tier_counts,
        )
    total = sum((Fraction(score) * count for score, count in ascending), Fraction(0))
    return Distribution(
        dimension=dimension,
        assigned=assigned,
        scored=scored,
        mean=float(round(total / scored, 2)),
        p50=nearest_rank(ascending, scored, 50),
        p90=nearest_rank(ascending, scored, 90),
        histogram=histogram,
        tiers=tier_counts,
    )
