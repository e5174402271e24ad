"""How bad it is when a control does not hold: one scale for baselines, runbooks, findings,
rules, metrics and the server's queries.

:class:`Severity` is what models carry (a baseline control's ``severity``, a runbook's, a
finding's). :data:`SeverityName` is the same four words as a ``Literal``, for the checks'
declarations (``CheckSpec(severity="high")``), which are plain dataclasses that mypy checks
against literals; a test keeps the two equal.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal


# Most severe first: the order reports and metrics list them in. (No docstring: it would
# become the description in the generated baseline schema.)
class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for low up to 3 for critical: ``max(..., key=lambda s: s.rank)`` is the most severe."""
        return _RANK[self]


SeverityName = Literal["critical", "high", "medium", "low"]

_RANK: Final = {s: len(Severity) - 1 - i for i, s in enumerate(Severity)}
