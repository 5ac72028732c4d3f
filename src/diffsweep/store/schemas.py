"""The JSON Schemas of a run folder's records, generated from their one declaration (`diffsweep.store.records`).

schemas/ ships them for other readers (a test keeps the committed files equal to what this generates); after
changing a record, write them again with `python -m diffsweep.store.schemas`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from diffsweep.paths import schemas_dir
from diffsweep.store.records import ItemRecord, RunInfo, ScoreRecord, ShardLayout, Sidecar

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://diffsweep.dev/schemas/"


class _Schema(GenerateJsonSchema):
    """Draft 2020-12 without the per-field titles pydantic derives from Python names (they say nothing new)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _schema(model: type[BaseModel], name: str, title: str, description: str) -> dict[str, Any]:
    """What diffsweep reads (the validation schema), plus what it derives and writes beside it (computed fields,
    `readOnly`: a reader may rely on them, a writer need not give them)."""
    generated: JsonSchemaValue = model.model_json_schema(schema_generator=_Schema, mode="validation")
    _add_derived(generated, model.model_json_schema(schema_generator=_Schema, mode="serialization"))
    generated.pop("title", None)
    generated.pop("description", None)
    return {"$schema": DIALECT, "$id": f"{BASE_ID}{name}.schema.json", "title": title, "description": description,
            **generated}


def _add_derived(schema: JsonSchemaValue, written: JsonSchemaValue) -> None:
    for node, shown in [(schema, written), *((schema["$defs"][name], definition)
                                             for name, definition in written.get("$defs", {}).items()
                                             if name in schema.get("$defs", {}))]:
        for key, prop in shown.get("properties", {}).items():
            if prop.get("readOnly") and key not in node["properties"]:
                node["properties"][key] = prop
                node["required"] = [*node.get("required", []), key]


def item_schema() -> dict[str, Any]:
    """A manifest line; a sidecar (and a PNG's `diffsweep` chunk) is the same record with the sidecar's fields."""
    schema = _schema(ItemRecord, "item", "diffsweep item record",
                     "One line of manifest.jsonl; an item's sidecar JSON (and its PNG `diffsweep` chunk) adds the "
                     "sidecar fields, optional here.")
    sidecar = Sidecar.model_json_schema(schema_generator=_Schema, mode="validation")
    for name in (name for name in Sidecar.model_fields if name not in ItemRecord.model_fields):
        schema["properties"][name] = sidecar["properties"][name]
    schema.setdefault("$defs", {}).update(sidecar.get("$defs", {}))
    return schema


def record_schemas() -> dict[str, dict[str, Any]]:
    """Schema file stem -> schema, for every record file of a run folder."""
    return {
        "item": item_schema(),
        "run": _schema(RunInfo, "run", "diffsweep run.json",
                       "The run as a whole and the history of its attempts; a distributed run adds its shards, the "
                       "config's hash and the latest worker of each shard."),
        "layout": _schema(ShardLayout, "layout", "diffsweep shards/layout.json",
                          "How a distributed run's plan is cut into shards of whole batches."),
        "score": _schema(ScoreRecord, "score", "diffsweep score line",
                         "One line of scores.jsonl: a metric's value for an item, or why it was skipped."),
    }


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_all(folder: Path | None = None) -> list[Path]:
    folder = folder or schemas_dir()
    written = []
    for stem, schema in record_schemas().items():
        path = folder / f"{stem}.schema.json"
        path.write_text(schema_text(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(path)
