"""JSON Schema (draft 2020-12) of the event contract, for producers in other languages.

`finpass-pipeline schema export DIR` writes `envelope.schema.json` (any event: the union keyed by
`event_type`) and one `<event_type>.schema.json` per type. The output is deterministic, so the
copies committed in `docs/schemas/` are checked against a fresh export by the test suite.

The schemas describe what `parse_event` accepts; a few rules are only partly expressible (money
must be > 0 for `amount`, and amount + fee + tax < 10^16) and are stated in descriptions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finpass_pipeline.events import EVENT_ADAPTER, EVENT_TYPES

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_schemas() -> dict[str, dict[str, Any]]:
    """Schema documents by name: `"envelope"`, then each event type in contract order."""
    envelope = EVENT_ADAPTER.json_schema()
    envelope["title"] = "FinPass event"
    envelope["description"] = (
        "Any FinPass pipeline event (CONTRACT.md §2-3); `event_type` selects the variant."
    )
    documents = {"envelope": envelope}
    for event_type, model in EVENT_TYPES.items():
        documents[event_type] = model.model_json_schema()
    for schema in documents.values():
        schema["$schema"] = DIALECT
    return documents


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
