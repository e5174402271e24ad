"""Flap suppression, cooldown doubling and maintenance-window deferral, on the real SQLite state."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from nixcomply.heal.policy import Gate, may_run, record_outcome
from nixcomply.heal.window import MaintenanceWindow
from nixcomply.host.state import State

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KEY = "L1-SERVICE-001:RB-SERVICE-001"


def gate(
    state: State, at: datetime, *, disruptive: bool = False, window: MaintenanceWindow | None = None
) -> Gate:
    return may_run(
        state,
        check="service_health",
        runbook="RB-SERVICE-001",
        cooldown_key=KEY,
        disruptive=disruptive,
        window=window,
        at=at,
    ).gate


def heal(state: State, at: datetime, outcome: str = "success") -> bool:
    return record_outcome(
        state,
        check="service_health",
        runbook="RB-SERVICE-001",
        cooldown_key=KEY,
        cooldown=timedelta(minutes=5),
        outcome=outcome,
        at=at,
    )


def test_three_successful_heals_in_120_minutes_suppress_and_survive_restart(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        assert not heal(state, T0)
        assert not heal(state, T0 + timedelta(minutes=50))
        assert gate(state, T0 + timedelta(minutes=100)) == Gate.RUN
        assert heal(state, T0 + timedelta(minutes=100))
    with State.open(tmp_path) as state:  # a restart does not forget
        assert gate(state, T0 + timedelta(hours=10)) == Gate.SUPPRESSED
        state.clear_suppressed()
        assert gate(state, T0 + timedelta(hours=10)) == Gate.RUN


def test_heals_spread_over_more_than_120_minutes_do_not_suppress(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        for minutes in (0, 61, 122, 183):
            assert not heal(state, T0 + timedelta(minutes=minutes))


def test_failed_heals_do_not_count_as_flaps(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        for minutes in (0, 10, 20, 30, 40):
            assert not heal(state, T0 + timedelta(minutes=minutes), "failed")
        assert state.suppressed() == {}


def test_cooldown_doubles_on_repeated_failure_up_to_a_cap(tmp_path: Path) -> None:
    with State.open(tmp_path) as state:
        waits = []
        at = T0
        for _ in range(12):
            heal(state, at, "failed")
            cooldown = state.cooldown(KEY)
            assert cooldown is not None
            waits.append(cooldown[0] - at)
            assert gate(state, at + timedelta(seconds=1)) == Gate.COOLDOWN
            at = cooldown[0]
            assert gate(state, at) == Gate.RUN
        assert waits[:4] == [
            timedelta(minutes=10),
            timedelta(minutes=20),
            timedelta(minutes=40),
            timedelta(minutes=80),
        ]
        assert waits[-1] == timedelta(hours=24)
        heal(state, at, "success")  # success resets the doubling
        cooldown = state.cooldown(KEY)
        assert cooldown is not None
        assert cooldown[0] - at == timedelta(minutes=5)
        assert cooldown[1] == 0


def test_disruptive_runbook_waits_for_the_window(tmp_path: Path) -> None:
    local = T0.astimezone()
    start = (local + timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (local + timedelta(hours=3)).time().replace(second=0, microsecond=0)
    window = MaintenanceWindow(start=start, end=end)
    with State.open(tmp_path) as state:
        verdict = may_run(
            state,
            check="generation",
            runbook="RB-DRIFT-001",
            cooldown_key="k",
            disruptive=True,
            window=window,
            at=T0,
        )
        assert verdict.gate == Gate.DEFERRED
        assert verdict.until is not None
        assert timedelta(minutes=59) <= verdict.until - T0 <= timedelta(hours=1)
        assert gate(state, T0, disruptive=False, window=window) == Gate.RUN
        assert gate(state, T0 + timedelta(hours=2), disruptive=True, window=window) == Gate.RUN
        assert time(0, 0) <= start
