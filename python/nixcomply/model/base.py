"""The two model bases: one for nixcomply's own formats, one for formats it only reads.

Every file, request and record nixcomply defines (baselines, runbooks, the reconciler
configuration, evidence statements, plans and reports) is a :class:`StrictModel`: an unknown
field is an error that names it, never a value silently dropped, and a validated value cannot
change afterwards. Schemas are built on first use, so importing a module stays cheap.

Formats nixcomply does not own (Nix's JSON output) are read with :class:`ForeignModel`, which
ignores fields a newer Nix adds.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are errors, instances are frozen, the schema is built on first use.

    A subclass that also accepts a field by its Python name as well as its alias adds
    ``model_config = ConfigDict(populate_by_name=True)``; pydantic merges it with this one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ForeignModel(BaseModel):
    """A format another program owns (Nix's JSON): unknown fields are ignored, instances frozen."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)
