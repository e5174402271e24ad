"""The collector pause the server holds while it ingests (core/gcpause.py): nested and
overlapping pauses end with the collector as it was, and an upload is verified and stored
with the collector paused and the same answer."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_server import Served
from test_server_api import enrolled

from nixcomply.core import gcpause
from nixcomply.server.db import queries


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        (gc.enable if was else gc.disable)()


def _nested_then_fail(seen: list[bool]) -> None:
    with gcpause.paused():
        seen.append(gc.isenabled())
        with gcpause.paused():
            seen.append(gc.isenabled())
        seen.append(gc.isenabled())  # the outer pause still holds
        raise RuntimeError("x")


@pytest.mark.usefixtures("collector_on")
def test_a_pause_restores_the_collector_even_on_error() -> None:
    seen: list[bool] = []
    with pytest.raises(RuntimeError):
        _nested_then_fail(seen)
    assert seen == [False, False, False]
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    was = gc.isenabled()
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.usefixtures("collector_on")
def test_overlapping_pauses_in_two_threads_end_with_the_collector_on() -> None:
    # thread a pauses first and ends first; b began inside a's pause and ends after it
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def a() -> None:
        with gcpause.paused():
            a_in.set()
            assert b_in.wait(30)
        seen["after a"] = gc.isenabled()
        a_out.set()

    def b() -> None:
        assert a_in.wait(30)
        with gcpause.paused():
            b_in.set()
            assert a_out.wait(30)
            seen["b after a ended"] = gc.isenabled()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert seen == {"after a": False, "b after a ended": False}
    assert gc.isenabled()


def test_freeze_startup_moves_what_exists_out_of_the_collectors_sight() -> None:
    gcpause.freeze_startup()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("collector_on")
def test_an_upload_is_stored_with_the_collector_paused(
    fleet: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    store_log = queries.store_log

    def recording(*args: Any, **kwargs: Any) -> None:
        seen.append(gc.isenabled())
        store_log(*args, **kwargs)

    monkeypatch.setattr(queries, "store_log", recording)
    host = enrolled(fleet, tmp_path)
    host.record(5)
    [response] = host.push()
    assert (response.accepted_size, response.stored) == (5, 5)
    assert seen == [False]
    assert gc.isenabled()
