"""Preview bodies (SPEC §12)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PlainValidator, WithJsonSchema

from signalscore.profiles.schemas import TiersSpec
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import MAX_RULES_PER_PROFILE
from signalscore.schemas import RequestModel, ResponseModel, whole_number
from signalscore.scores.schemas import Distribution
from signalscore.vocabulary import Dimension

#: The largest `sampleSize`: a sample's ids are held in memory while it is scored.
MAX_SAMPLE_SIZE = 100_000
#: How many objects `topMovers` lists.
TOP_MOVERS = 20


SampleSize = Annotated[
    int,
    PlainValidator(whole_number("sampleSize", "SAMPLE_SIZE", 1, MAX_SAMPLE_SIZE)),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_SAMPLE_SIZE}),
]


class PreviewRequest(RequestModel):
    rules: list[RuleUpsert] = Field(
        max_length=MAX_RULES_PER_PROFILE,
        description="The complete rule set the profile would have, each validated as "
        "`PUT .../rules` validates it; at most one rule per (signalTemplateId, dimension).",
    )
    tiers: TiersSpec | None = Field(
        default=None,
        description="The tiers the profile would have: omitted keeps the current ones, null "
        "previews without tiers.",
    )
    sampleSize: SampleSize | None = Field(
        default=None,
        description="Score a uniform random sample of this many assigned objects instead of "
        "all of them.",
    )


class TierTransition(ResponseModel):
    from_: str | None = Field(
        serialization_alias="from", description="The stored tier; null for none or no row."
    )
    to: str | None = Field(description="The tier under the proposed rules and tiers.")
    count: int


class Mover(ResponseModel):
    objectId: str
    before: float
    after: float
    delta: float = Field(description="after - before, rounded to 2 decimals.")


class DimensionPreview(ResponseModel):
    before: Distribution = Field(description="The previewed objects' stored rows.")
    after: Distribution = Field(description="The same objects under the proposed rules.")
    tierTransitions: list[TierTransition] = Field(
        description="Objects whose tier would change, by (from, to); most first, then by "
        "`from` and `to` (null first)."
    )
    topMovers: list[Mover] = Field(
        description=f"The {TOP_MOVERS} objects whose score would move most (largest |delta|, "
        "ties by objectId), among those with a row before and after; none that would not move."
    )


class Preview(ResponseModel):
    objects: int = Field(description="How many assigned objects were scored.")
    sampled: bool
    dimensions: dict[Dimension, DimensionPreview]
