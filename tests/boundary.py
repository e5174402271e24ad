"""The process boundary of unit tests, as a pytest plugin (registered in conftest.py).

Unit tests mock ``nixcomply.core.process.run``, the one subprocess gateway, with
``autospec=True`` and assert the exact argv. The ``run`` fixture is that mock (answering an
empty success unless a test says otherwise), :func:`result` builds what a command returns,
and :func:`argv_of` reads the argv of one recorded call.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

import pytest

from nixcomply.core.process import Result


def result(
    stdout: str = "", *, argv: Sequence[str] = ("tool",), returncode: int = 0, stderr: str = ""
) -> Result:
    """What a finished command returns to its caller."""
    return Result(argv=tuple(argv), returncode=returncode, stdout=stdout, stderr=stderr, duration=0.01)


def argv_of(call: Any) -> list[str]:
    """The argv of one call of the mocked ``process.run`` (``run.call_args``, ``run.call_args_list[i]``)."""
    return [os.fspath(a) for a in call.args[0]]


@pytest.fixture
def run() -> Iterator[mock.MagicMock]:
    """``nixcomply.core.process.run``, mocked with autospec; answers ``result()`` by default."""
    with mock.patch("nixcomply.core.process.run", autospec=True) as patched:
        patched.return_value = result()
        yield patched
