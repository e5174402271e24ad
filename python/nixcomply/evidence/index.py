"""The control-to-bundle index of an export packet (``index/controls.csv``).

One row per framework reference, control and bundle, so an auditor can go from "HIPAA
164.312(b)" or "SOC 2 CC7.2" to the records that show it. The framework references come
from the signed statements themselves (each control result carries its references), so
``verify`` recomputes the index from the bundles and flags a packet whose index was edited.

Columns: framework (hipaa, soc2, cis_v8, nist_800_53, nist_csf, or ``-`` for a control
without references), reference, control, status, event, outcome, observed_at, seq,
bundle_id, path, predicate_type. Rows are sorted by framework, reference, control, seq.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Final

from nixcomply.evidence.statement import FRAMEWORKS, Statement

INDEX_FILE: Final = "index/controls.csv"
INDEX_COLUMNS: Final = (
    "framework",
    "reference",
    "control",
    "status",
    "event",
    "outcome",
    "observed_at",
    "seq",
    "bundle_id",
    "path",
    "predicate_type",
)

# (seq, bundle path, bundle id, statement)
IndexInput = tuple[int, str, str, Statement]


def control_index(selected: Sequence[IndexInput]) -> bytes:
    """The control-to-bundle CSV: one row per (framework reference, control, bundle);
    controls without any framework reference get a row with framework ``-``."""
    rows = []
    for seq, path, bundle_id, statement in selected:
        p = statement.predicate
        for c in p.controls:
            refs = c.frameworks.items() or [("-", "")]
            for fw, ref in refs:
                rows.append(
                    (
                        fw,
                        ref,
                        c.id,
                        c.status.value,
                        p.event,
                        p.outcome.value,
                        p.observed_at.isoformat().replace("+00:00", "Z"),
                        seq,
                        bundle_id,
                        path,
                        statement.predicate_type,
                    )
                )
    order = {fw: i for i, fw in enumerate((*FRAMEWORKS, "-"))}
    rows.sort(key=lambda r: (order[str(r[0])], str(r[1]), str(r[2]), int(r[7])))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue().encode()
