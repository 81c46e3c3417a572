"""Chart geometry for server-drawn SVG (the markup is in templates/_charts.html).

Only numbers are computed here; the templates draw them with presentation attributes and
CSS classes (no inline `style`, which the Content-Security-Policy forbids) inside a
`viewBox`, so a chart scales to any width. Every chart also states its data in text (a
`<title>` per mark and a table or list beside it) for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

WIDTH = 600
HEIGHT = 220
LEFT = 44
RIGHT = 12
TOP = 12
BOTTOM = 34


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Frame:
    """A chart's axes and plot area (the templates draw it)."""

    x_ticks: list[Tick]
    y_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom_y: float = HEIGHT - BOTTOM
    right_x: float = WIDTH - RIGHT


@dataclass(frozen=True, kw_only=True)
class Histogram(Frame):
    bars: list[Bar]
    total: int = 0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _scale(most: int) -> tuple[int, int]:
    """(top of the count axis, step between ticks): whole numbers, at most 4 steps."""
    if most <= 0:
        return 1, 1
    step = max(1, -(-most // 4))
    return step * -(-most // step), step


def _y_ticks(top: int, step: int, plot_top: float, plot_bottom: float) -> list[Tick]:
    return [
        Tick(round(plot_bottom - (plot_bottom - plot_top) * value / top, 1), str(value))
        for value in range(0, top + 1, step)
    ]


def histogram(buckets: Sequence[Any]) -> Histogram:
    """Bars for a distribution's histogram (`scores.schemas.Bucket`: min, max, count)."""
    plot_left, plot_right = LEFT, WIDTH - RIGHT
    plot_top, plot_bottom = TOP, HEIGHT - BOTTOM
    top, step = _scale(max((b.count for b in buckets), default=0))
    span = (plot_right - plot_left) / max(len(buckets), 1)
    bars: list[Bar] = []
    for i, bucket in enumerate(buckets):
        height = (plot_bottom - plot_top) * bucket.count / top
        last = i == len(buckets) - 1
        label = f"{_number(bucket.min)}–{_number(bucket.max)}{']' if last else ')'}"
        bars.append(
            Bar(
                x=round(plot_left + i * span + 1, 1),
                y=round(plot_bottom - height, 1),
                width=round(max(span - 2, 1), 1),
                height=round(height, 1),
                label=f"[{label}",
                count=bucket.count,
            )
        )
    x_ticks = [Tick(round(plot_left + i * span, 1), _number(b.min)) for i, b in enumerate(buckets)]
    if buckets:
        x_ticks.append(Tick(plot_right, _number(buckets[-1].max)))
    return Histogram(
        bars=bars,
        x_ticks=x_ticks,
        y_ticks=_y_ticks(top, step, plot_top, plot_bottom),
        total=sum(b.count for b in buckets),
    )


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    score: float | None
    at: datetime
    label: str


@dataclass(frozen=True)
class Series:
    name: str
    points: list[Point]
    css: str

    @property
    def path(self) -> str:
        """A step line through the points that have a score (a deletion breaks it)."""
        parts: list[str] = []
        pen_down = False
        previous: Point | None = None
        for point in self.points:
            if point.score is None:
                pen_down = False
                previous = None
                continue
            if not pen_down:
                parts.append(f"M{point.x},{point.y}")
                pen_down = True
            elif previous is not None:
                parts.append(f"H{point.x}V{point.y}")
            previous = point
        return " ".join(parts)


@dataclass(frozen=True, kw_only=True)
class LineChart(Frame):
    series: list[Series]


def line_chart(named: Sequence[tuple[str, Sequence[tuple[datetime, float | None]]]]) -> LineChart:
    """Score (0-100) over time, one series per name, points in time order."""
    plot_left, plot_right = LEFT, WIDTH - RIGHT
    plot_top, plot_bottom = TOP, HEIGHT - BOTTOM
    times = [at for _, points in named for at, _ in points]
    if times:
        start, end = min(times), max(times)
    else:
        start = end = datetime.now()
    span = (end - start).total_seconds() or 1.0

    def x_of(at: datetime) -> float:
        if start == end:
            return (plot_left + plot_right) / 2
        return round(plot_left + (plot_right - plot_left) * (at - start).total_seconds() / span, 1)

    def y_of(score: float) -> float:
        return round(plot_bottom - (plot_bottom - plot_top) * score / 100, 1)

    series = []
    for i, (name, points) in enumerate(named):
        series.append(
            Series(
                name=name,
                css=f"series-{i % 6}",
                points=[
                    Point(
                        x=x_of(at),
                        y=y_of(score) if score is not None else plot_bottom,
                        score=score,
                        at=at,
                        label=f"{name}: {'deleted' if score is None else _number(score)} at "
                        f"{at:%Y-%m-%d %H:%M:%S} UTC",
                    )
                    for at, score in points
                ],
            )
        )
    x_ticks = []
    if times:
        x_ticks = [Tick(x_of(start), f"{start:%Y-%m-%d %H:%M}")]
        if end != start:
            x_ticks.append(Tick(x_of(end), f"{end:%Y-%m-%d %H:%M}"))
    y_ticks = [Tick(y_of(v), str(v)) for v in (0, 25, 50, 75, 100)]
    return LineChart(series=series, x_ticks=x_ticks, y_ticks=y_ticks)
