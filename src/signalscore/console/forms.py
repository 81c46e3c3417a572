"""The console's forms: HTML fields in, API bodies out, and the API's field errors back at
the fields that caused them.

A form never validates on its own. It turns its inputs into the very body the API takes
(`RuleUpsert`, `ProfileCreate`, ...) and hands it to the same models and services, so the
API is the one source of truth. Most inputs are named by the JSON path they fill
(`pointValues.ranges[1].max`), so an error's `field` names its input. Where the form and
the body differ (blank rows left out, so body index 1 may be row 2 of the form; list
choices, keyed by their label in the body), the form records `aliases` from body paths to
its own; `FieldErrors` places each error at the nearest field or row the page shows, and
lists every error in a summary at the top of the form that links to its field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from signalscore.body import check_structure
from signalscore.errors import AppError, FieldError, Invalid
from signalscore.rules.point_values import key_path, shape_of
from signalscore.validation import validation_error

# The last segment of a JSON path: `.name`, `[3]` or `["a key"]`.
_LAST_SEGMENT = re.compile(r'(\.[^.\[\]]+|\[\d+\]|\["(?:[^"\\]|\\.)*"\])$')
_INTEGER = re.compile(r"^[+-]?\d{1,20}$")
_ROW_INDEX = re.compile(r"^(?P<base>[A-Za-z.]+)\[(?P<index>\d{1,4})\]\.(?P<part>[A-Za-z]+)$")


def field_id(path: str) -> str:
    """An HTML id for a field path (`pointValues.ranges[1].max` -> `f-pointValues-ranges-1-max`)."""
    return "f-" + (re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "form")


def parent_path(path: str) -> str | None:
    found = _LAST_SEGMENT.search(path)
    if found is None or found.start() == 0:
        return None
    return path[: found.start()]


@dataclass
class PlacedError:
    path: str
    message: str
    anchor: str | None  # the field or row it is shown at; None: the summary only

    @property
    def anchor_id(self) -> str | None:
        return None if self.anchor is None else field_id(self.anchor)


@dataclass
class FieldErrors:
    """Errors placed at the fields of one form."""

    placed: list[PlacedError] = field(default_factory=list)
    message: str | None = None  # the error's own message, when no field explains it

    def at(self, anchor: str) -> list[str]:
        return [e.message for e in self.placed if e.anchor == anchor]

    def __bool__(self) -> bool:
        return bool(self.placed) or self.message is not None

    @classmethod
    def none(cls) -> FieldErrors:
        return cls()

    @classmethod
    def place(
        cls,
        error: AppError,
        anchors: Iterable[str],
        aliases: dict[str, str] | None = None,
        *,
        strip_prefix: str = "",
    ) -> FieldErrors:
        """Each of `error.fields` at the nearest anchor: its path (after `strip_prefix`, and
        translated by `aliases`), else its parent's, and so on up."""
        known = set(anchors)
        aliases = aliases or {}
        placed: list[PlacedError] = []
        for item in error.fields:
            path = item.field
            anchor: str | None = None
            if path.startswith(strip_prefix):
                candidate: str | None = path[len(strip_prefix) :]
                while candidate:
                    target = aliases.get(candidate, candidate)
                    if target in known:
                        anchor = target
                        break
                    candidate = parent_path(candidate)
            placed.append(PlacedError(path=path, message=item.message, anchor=anchor))
        return cls(placed=placed, message=None if placed else error.message)


def validated(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """`model` from `body`, checked as the API checks a JSON body (`body.checked_body`
    without the parse): the structural limits (no NUL, ...), then the model; any problem is
    raised as the API's `Invalid`, with its paths."""
    check_structure(body)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = validation_error(exc.errors(include_url=False, include_input=False))
        raise (error if isinstance(error, Invalid) else Invalid(error.message)) from None


def number(text: str) -> Any:
    """A typed number for the API to judge: blank -> None, an integer, a float, or the text
    itself (then the API's validation says what is wrong with it, at its path)."""
    stripped = text.strip()
    if not stripped:
        return None
    if _INTEGER.fullmatch(stripped):
        return int(stripped)
    try:
        return float(stripped)
    except ValueError:
        return stripped


def shown(value: Any) -> str:
    """A stored number as an input's value (integers without `.0`)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def row_indexes(names: Iterable[str], base: str) -> list[int]:
    """The row indexes under `base` among the posted field names, sorted."""
    found: set[int] = set()
    for name in names:
        match = _ROW_INDEX.fullmatch(name)
        if match is not None and match.group("base") == base:
            found.add(int(match.group("index")))
    return sorted(found)[:200]


# --- Rules -----------------------------------------------------------------------------


@dataclass
class Row:
    """One row of a repeated group: its index in the form and its inputs by part name."""

    index: int
    values: dict[str, str]

    def blank(self) -> bool:
        return not any(v.strip() for v in self.values.values())


def _rows(base: str, parts: Sequence[str], form: Any, extra: int) -> list[Row]:
    names = [name for name, _ in form.pairs]
    rows = [
        Row(i, {part: form.get(f"{base}[{i}].{part}") for part in parts})
        for i in row_indexes(names, base)
    ]
    start = rows[-1].index + 1 if rows else 0
    rows += [Row(start + n, dict.fromkeys(parts, "")) for n in range(extra)]
    return rows


def _padded(rows: list[Row], parts: Sequence[str], at_least: int, blank: int) -> list[Row]:
    count = max(at_least - len(rows), blank)
    start = len(rows)
    return rows + [Row(start + n, dict.fromkeys(parts, "")) for n in range(count)]


RANGE_PARTS = ("min", "max", "points")
CHOICE_PARTS = ("label", "points")
DECAY_PARTS = ("afterDays", "factor")
MAX_DECAY_ROWS = 10


@dataclass
class RuleForm:
    """The rule editor: one (template, dimension) of a profile, its points by answer type,
    and its optional decay steps."""

    template_id: str
    dimension: str
    answer_type: str
    true_points: str = ""
    false_points: str = ""
    ranges: list[Row] = field(default_factory=list)
    choices: list[Row] = field(default_factory=list)
    mode: str = "additive"
    decay: list[Row] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> str:
        return shape_of(self.answer_type)

    @classmethod
    def blank(cls, template_id: str, dimension: str, answer_type: str) -> RuleForm:
        form = cls(template_id, dimension, answer_type)
        form.ranges = _padded([], RANGE_PARTS, 3, 0)
        form.choices = _padded([], CHOICE_PARTS, 4, 0)
        form.decay = _padded([], DECAY_PARTS, 2, 0)
        return form

    @classmethod
    def from_rule(cls, rule: Any) -> RuleForm:
        """Prefilled from a stored rule (`rules.schemas.Rule`), with blank rows to add."""
        form = cls(rule.signalTemplateId, rule.dimension, rule.answerType)
        values = rule.pointValues
        form.true_points = shown(values.get("true"))
        form.false_points = shown(values.get("false"))
        form.ranges = _padded(
            [
                Row(
                    i,
                    {
                        "min": shown(r.get("min")),
                        "max": shown(r.get("max")),
                        "points": shown(r["points"]),
                    },
                )
                for i, r in enumerate(values.get("ranges", []))
            ],
            RANGE_PARTS,
            3,
            2,
        )
        form.choices = _padded(
            [
                Row(i, {"label": label, "points": shown(points)})
                for i, (label, points) in enumerate(values.get("choices", {}).items())
            ],
            CHOICE_PARTS,
            4,
            3,
        )
        form.mode = values.get("mode", "additive")
        steps = (rule.decay or {}).get("steps", [])
        form.decay = _padded(
            [
                Row(i, {"afterDays": shown(s["afterDays"]), "factor": shown(s["factor"])})
                for i, s in enumerate(steps)
            ],
            DECAY_PARTS,
            2,
            1 if len(steps) < MAX_DECAY_ROWS else 0,
        )
        return form

    @classmethod
    def from_post(cls, form: Any) -> RuleForm:
        """As posted (rows as sent, so a page shown again after an error keeps them)."""
        rule = cls(form.get("signalTemplateId"), form.get("dimension"), form.get("answerType"))
        rule.true_points = form.get("pointValues.true")
        rule.false_points = form.get("pointValues.false")
        rule.ranges = _rows("pointValues.ranges", RANGE_PARTS, form, 0)
        rule.choices = _rows("pointValues.choices", CHOICE_PARTS, form, 0)
        rule.mode = form.get("pointValues.mode", "additive")
        rule.decay = _rows("decay.steps", DECAY_PARTS, form, 0)
        return rule

    def anchors(self) -> set[str]:
        """Every field and row path this form shows."""
        found = {"signalTemplateId", "dimension", "answerType", "pointValues", "decay"}
        if self.shape == "boolean":
            found |= {"pointValues.true", "pointValues.false"}
        elif self.shape == "numeric":
            found.add("pointValues.ranges")
            for row in self.ranges:
                found.add(f"pointValues.ranges[{row.index}]")
                found |= {f"pointValues.ranges[{row.index}].{p}" for p in RANGE_PARTS}
        else:
            found |= {"pointValues.choices", "pointValues.mode"}
            found |= {f"pointValues.choices[{row.index}]" for row in self.choices}
        found.add("decay.steps")
        for row in self.decay:
            found.add(f"decay.steps[{row.index}]")
            found |= {f"decay.steps[{row.index}].{p}" for p in DECAY_PARTS}
        return found

    def body(self) -> dict[str, Any]:
        """The `PUT .../rules` body; records `aliases` from its paths to the form's."""
        self.aliases = {}
        body: dict[str, Any] = {
            "signalTemplateId": self.template_id,
            "dimension": self.dimension,
            "answerType": self.answer_type,
            "pointValues": self._point_values(),
        }
        steps: list[dict[str, Any]] = []
        for row in self.decay:
            if row.blank():
                continue
            at = len(steps)
            self._alias(f"decay.steps[{at}]", f"decay.steps[{row.index}]", DECAY_PARTS)
            steps.append({p: number(row.values[p]) for p in DECAY_PARTS})
        if steps:
            body["decay"] = {"steps": steps}
        return body

    def _alias(self, sent: str, shown_at: str, parts: Sequence[str]) -> None:
        self.aliases[sent] = shown_at
        for part in parts:
            self.aliases[f"{sent}.{part}"] = f"{shown_at}.{part}"

    def _point_values(self) -> dict[str, Any]:
        if self.shape == "boolean":
            document: dict[str, Any] = {}
            for key, text in (("true", self.true_points), ("false", self.false_points)):
                if text.strip():
                    document[key] = number(text)
            return document
        if self.shape == "numeric":
            ranges: list[dict[str, Any]] = []
            for row in self.ranges:
                if row.blank():
                    continue
                at = len(ranges)
                self._alias(
                    f"pointValues.ranges[{at}]", f"pointValues.ranges[{row.index}]", RANGE_PARTS
                )
                item: dict[str, Any] = {
                    "min": number(row.values["min"]),
                    "max": number(row.values["max"]),
                }
                if row.values["points"].strip():
                    item["points"] = number(row.values["points"])
                ranges.append(item)
            return {"ranges": ranges}
        choices: dict[str, Any] = {}
        for row in self.choices:
            if row.blank():
                continue
            label = row.values["label"]
            # The body is a JSON object keyed by label: a label typed twice would silently
            # keep one row, so the row is pointed at under a path the API never sends.
            path = key_path("pointValues.choices", label)
            if label in choices:
                self.aliases[f"console.duplicate[{row.index}]"] = (
                    f"pointValues.choices[{row.index}]"
                )
                continue
            self.aliases[path] = f"pointValues.choices[{row.index}]"
            choices[label] = number(row.values["points"])
        return {"choices": choices, "mode": self.mode}

    def duplicate_labels(self) -> list[FieldError]:
        """Rows whose label repeats an earlier row's exactly (see `_point_values`)."""
        seen: set[str] = set()
        problems: list[FieldError] = []
        for row in self.choices if self.shape == "list" else []:
            label = row.values["label"]
            if row.blank():
                continue
            if label in seen:
                problems.append(
                    FieldError(
                        field=f"console.duplicate[{row.index}]",
                        code="DUPLICATE_CHOICE",
                        message=f"choice {label!r} is already an earlier row",
                    )
                )
            seen.add(label)
        return problems

    def hidden_fields(self) -> list[tuple[str, str]]:
        """The form's inputs as (name, value), to carry a previewed rule to its apply."""
        fields = [
            ("signalTemplateId", self.template_id),
            ("dimension", self.dimension),
            ("answerType", self.answer_type),
        ]
        if self.shape == "boolean":
            fields += [
                ("pointValues.true", self.true_points),
                ("pointValues.false", self.false_points),
            ]
        elif self.shape == "numeric":
            for row in self.ranges:
                fields += [
                    (f"pointValues.ranges[{row.index}].{p}", row.values[p]) for p in RANGE_PARTS
                ]
        else:
            fields.append(("pointValues.mode", self.mode))
            for row in self.choices:
                fields += [
                    (f"pointValues.choices[{row.index}].{p}", row.values[p]) for p in CHOICE_PARTS
                ]
        for row in self.decay:
            fields += [(f"decay.steps[{row.index}].{p}", row.values[p]) for p in DECAY_PARTS]
        return fields


# --- Tiers -----------------------------------------------------------------------------

TIER_PARTS = ("name", "minScore")
MAX_TIER_ROWS = 10


@dataclass
class TiersForm:
    """A profile's tiers, per dimension rows of (name, minScore); a dimension left blank
    has none."""

    rows: dict[str, list[Row]]
    aliases: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, tiers: Mapping[Any, Any] | None, dimensions: Sequence[str]) -> TiersForm:
        rows: dict[str, list[Row]] = {}
        for dimension in dimensions:
            stored = (tiers or {}).get(dimension, [])
            filled = [
                Row(i, {"name": t.name, "minScore": shown(t.minScore)})
                for i, t in enumerate(stored)
            ]
            rows[dimension] = _padded(
                filled, TIER_PARTS, 3, 2 if len(filled) < MAX_TIER_ROWS - 1 else 0
            )
        return cls(rows)

    @classmethod
    def from_post(cls, form: Any, dimensions: Sequence[str]) -> TiersForm:
        return cls({d: _rows(f"tiers.{d}", TIER_PARTS, form, 0) for d in dimensions})

    def anchors(self) -> set[str]:
        found = {"tiers"}
        for dimension, rows in self.rows.items():
            found.add(f"tiers.{dimension}")
            for row in rows:
                found.add(f"tiers.{dimension}[{row.index}]")
                found |= {f"tiers.{dimension}[{row.index}].{p}" for p in TIER_PARTS}
        return found

    def body(self) -> dict[str, Any] | None:
        self.aliases = {}
        document: dict[str, Any] = {}
        for dimension, rows in self.rows.items():
            entries: list[dict[str, Any]] = []
            for row in rows:
                if row.blank():
                    continue
                sent, shown_at = (
                    f"tiers.{dimension}[{len(entries)}]",
                    f"tiers.{dimension}[{row.index}]",
                )
                self.aliases[sent] = shown_at
                for part in TIER_PARTS:
                    self.aliases[f"{sent}.{part}"] = f"{shown_at}.{part}"
                entries.append(
                    {"name": row.values["name"], "minScore": number(row.values["minScore"])}
                )
            if entries:
                document[dimension] = entries
        return document or None
