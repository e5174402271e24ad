"""The JSON Schema of baseline files, generated from the pydantic models.

Committed as ``baseline/baseline.schema.json`` so editors can validate and complete baseline
YAML; ``nixcomply baseline schema --check`` (run by the tests) keeps it in step with the models.
"""

from __future__ import annotations

import json

from nixcomply.baseline.models import Baseline


def schema_text() -> str:
    schema = Baseline.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "nixcomply baseline"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
