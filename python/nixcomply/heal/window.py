"""Maintenance windows: when disruptive runbooks (and generation switches) may run.

A window opens at ``start`` on each of its ``days`` and lasts until the next ``end``; an
``end`` at or before ``start`` means the window crosses midnight (22:00–02:00 opened on
Monday closes on Tuesday at 02:00). Times are wall-clock times in the host's time zone.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Final, Literal

from pydantic import Field, model_validator

from nixcomply.model.base import StrictModel

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = timedelta(days=1)


class MaintenanceWindow(StrictModel):
    """When disruptive actions may run; ``end`` before ``start`` crosses midnight."""

    start: time
    end: time
    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1, description="days on which a window starts"
    )

    @model_validator(mode="after")
    def _nonempty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self


def _duration(window: MaintenanceWindow) -> timedelta:
    start = timedelta(hours=window.start.hour, minutes=window.start.minute, seconds=window.start.second)
    end = timedelta(hours=window.end.hour, minutes=window.end.minute, seconds=window.end.second)
    return end - start if end > start else end - start + _DAY


def _opening(window: MaintenanceWindow, day: datetime) -> datetime:
    return day.replace(
        hour=window.start.hour, minute=window.start.minute, second=window.start.second, microsecond=0
    )


def in_window(window: MaintenanceWindow | None, at: datetime) -> bool:
    """Whether ``at`` (timezone-aware) falls inside ``window``; no window means always."""
    if window is None:
        return True
    local = at.astimezone()
    length = _duration(window)
    # a window containing `at` opened today or yesterday (windows are shorter than a day)
    for back in (0, 1):
        opened = _opening(window, local - back * _DAY)
        if WEEKDAYS[opened.weekday()] in window.days and opened <= local < opened + length:
            return True
    return False


def next_opening(window: MaintenanceWindow | None, at: datetime) -> datetime:
    """``at`` itself when inside the window, otherwise the next time the window opens."""
    if window is None or in_window(window, at):
        return at
    local = at.astimezone()
    for ahead in range(8):
        opened = _opening(window, local + ahead * _DAY)
        if opened > local and WEEKDAYS[opened.weekday()] in window.days:
            return opened
    raise AssertionError("a window with at least one day opens within a week")  # pragma: no cover
