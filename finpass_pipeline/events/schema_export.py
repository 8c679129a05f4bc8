"""JSON Schema (draft 2020-12) of the event contract, for producers in other languages.

`finpass-pipeline schema export DIR` writes `envelope.schema.json` (any event in any supported
version: the union keyed by `event_type`, then `schema_version`), one
`<event_type>.v<N>.schema.json` per type and version, and `<event_type>.schema.json`, the
type's current version (what a new producer sends). The output is deterministic, so the copies
committed in `docs/schemas/` are checked against a fresh export by the test suite; `schema
check` (`events.compat`) checks that the models still accept what the committed versions do.

The schemas describe exactly what `parse_event` accepts, apart from the rules JSON Schema cannot
state (`events.SEMANTIC_RULES`, the README's semantic table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from finpass_pipeline.events import EVENT_ADAPTER, EVENT_TYPES, event_versions
from finpass_pipeline.events.wire_types import (
    JSON_VALUE_DEF,
    JSON_VALUE_PLACEHOLDER,
    JSON_VALUE_SCHEMA,
)

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_schemas() -> dict[str, dict[str, Any]]:
    """Schema documents by name: `"envelope"`, then each event type in contract order (its
    current version), then `"<event_type>.v<N>"` for every type and version."""
    envelope = finish(EVENT_ADAPTER.json_schema())
    envelope["title"] = "FinPass event"
    envelope["description"] = (
        "Any FinPass pipeline event (CONTRACT.md §2-3); `event_type` selects the variant."
    )
    documents = {"envelope": envelope}
    for event_type, model in EVENT_TYPES.items():
        documents[event_type] = schema_of(model)
    for event_type, versions in event_versions().items():
        for version, model in versions.items():
            documents[versioned(event_type, version)] = schema_of(model)
    return documents


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The exported schema of one event model."""
    return finish(model.model_json_schema())


def finish(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the dialect and the recursive JSON value definition to a pydantic schema."""
    schema["$schema"] = DIALECT
    if _link_json_values(schema):
        schema.setdefault("$defs", {})[JSON_VALUE_DEF] = JSON_VALUE_SCHEMA
    return schema


def versioned(event_type: str, version: int) -> str:
    """The schema name of one version of a type: `payment.initiated.v1`."""
    return f"{event_type}.v{version}"


def _link_json_values(node: Any) -> bool:
    # Replace every JSON_VALUE_PLACEHOLDER with a $ref to the recursive definition.
    found = False
    if isinstance(node, dict):
        for key, value in node.items():
            if value == JSON_VALUE_PLACEHOLDER:
                node[key] = {"$ref": f"#/$defs/{JSON_VALUE_DEF}"}
                found = True
            else:
                found = _link_json_values(value) or found
    elif isinstance(node, list):
        for item in node:
            found = _link_json_values(item) or found
    return found


def render(schema: dict[str, Any]) -> str:
    """The file content for one schema: pretty, keys sorted, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_schemas(directory: Path) -> list[Path]:
    """Write every schema into `directory` (created if missing); return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in event_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
