"""Tiers (SPEC §9): a score's tier is the name of the tier with the largest ``minScore`` at
or below it, or ``None`` when no tier holds it (or the dimension has no tiers)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


class TierTable:
    """One dimension's tiers, prepared for lookups: ``minScore`` ascending with the name of
    each. ``tier_of`` is a binary search."""

    __slots__ = ("_floors", "_names")

    def __init__(self, tiers: Iterable[Mapping[str, Any]]):
        ordered = sorted((float(t["minScore"]), str(t["name"])) for t in tiers)
        self._floors = [floor for floor, _ in ordered]
        self._names = [name for _, name in ordered]

    def tier_of(self, score: float) -> str | None:
        at = bisect_right(self._floors, score)
        return self._names[at - 1] if at else None


def tier_tables(tiers: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> dict[str, TierTable]:
    """A profile's stored ``tiers`` document (dimension → tiers) as one table per dimension;
    a dimension without tiers has none, and its scores have no tier."""
    return {dimension: TierTable(entries) for dimension, entries in (tiers or {}).items()}
