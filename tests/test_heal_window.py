"""Maintenance-window arithmetic, including windows that cross midnight (property tests)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nixcomply.heal.window import WEEKDAYS, MaintenanceWindow, in_window, next_opening

WEEK = 7 * 24 * 60


def window(
    start: tuple[int, int], end: tuple[int, int], days: Sequence[str] | None = None
) -> MaintenanceWindow:
    data: dict[str, object] = {"start": time(*start), "end": time(*end)}
    if days is not None:
        data["days"] = list(days)
    return MaintenanceWindow.model_validate(data)


def reference(w: MaintenanceWindow, at: datetime) -> bool:
    """Minute-of-week arithmetic, independent of the implementation's day stepping."""
    local = at.astimezone()
    minute = local.weekday() * 1440 + local.hour * 60 + local.minute
    start = w.start.hour * 60 + w.start.minute
    end = w.end.hour * 60 + w.end.minute
    length = end - start if end > start else end - start + 1440
    for day in w.days:
        opens = WEEKDAYS.index(day) * 1440 + start
        if (minute - opens) % WEEK < length:
            return True
    return False


times = st.tuples(st.integers(0, 23), st.integers(0, 59))
moments = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0, tzinfo=UTC)
)


@st.composite
def valid_windows(draw: st.DrawFn) -> MaintenanceWindow:
    start = draw(times)
    end = draw(times.filter(lambda t: t != start))
    days = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True))
    return window(start, end, days)


@settings(max_examples=400, deadline=None)
@given(valid_windows(), moments)
def test_in_window_matches_reference(w: MaintenanceWindow, at: datetime) -> None:
    assert in_window(w, at) == reference(w, at)


@settings(max_examples=200, deadline=None)
@given(valid_windows(), moments)
def test_next_opening_is_the_first_open_moment(w: MaintenanceWindow, at: datetime) -> None:
    opens = next_opening(w, at)
    assert opens >= at
    assert in_window(w, opens)
    if opens != at:
        assert not in_window(w, opens - timedelta(minutes=1))
        gap = opens - at
        for k in range(1, 20):
            assert not in_window(w, at + gap * k / 20 - timedelta(minutes=1))
    assert opens - at <= timedelta(days=7)


def test_no_window_is_always_open() -> None:
    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert in_window(None, at)
    assert next_opening(None, at) == at


def test_midnight_crossing_window_belongs_to_the_day_it_opens() -> None:
    w = window((22, 0), (2, 0), ["mon"])
    tz = datetime(2026, 11, 23).astimezone().tzinfo  # 2026-11-23 is a Monday
    monday_late = datetime(2026, 11, 23, 23, 30, tzinfo=tz)
    tuesday_early = datetime(2026, 11, 24, 1, 59, tzinfo=tz)
    tuesday_late = datetime(2026, 11, 24, 23, 0, tzinfo=tz)
    assert in_window(w, monday_late)
    assert in_window(w, tuesday_early)  # still Monday's window
    assert not in_window(w, datetime(2026, 11, 24, 2, 0, tzinfo=tz))  # end is exclusive
    assert not in_window(w, tuesday_late)  # Tuesday opens no window
    assert next_opening(w, tuesday_late) == datetime(2026, 11, 30, 22, 0, tzinfo=tz)


def test_empty_window_and_no_days_are_rejected() -> None:

    with pytest.raises(ValidationError, match="would be empty"):
        window((2, 0), (2, 0))
    with pytest.raises(ValidationError):
        window((2, 0), (3, 0), [])
