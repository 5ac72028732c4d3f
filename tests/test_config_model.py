"""The typed config (diffsweep.config.model) and the config schema name the same keys, section by section."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from conftest import compose_config
from diffsweep.config.model import RunConfig
from diffsweep.config.schema import load_schema
from diffsweep.planning.prepare import validated


def _sections(model: type[BaseModel], schema: dict, defs: dict, path: str = "") -> list[str]:
    """Keys the schema has that the model lacks, and the other way round, down through typed sections."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    keys = set(schema.get("properties", {}))
    fields = set(model.model_fields)
    mismatched = [f"{path}{key}: in the schema only" for key in sorted(keys - fields)]
    mismatched += [f"{path}{key}: in RunConfig only" for key in sorted(fields - keys)]
    for key in sorted(keys & fields):
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            mismatched += _sections(annotation, schema["properties"][key], defs, f"{path}{key}.")
    return mismatched


def test_every_schema_key_is_a_typed_config_field_and_back() -> None:
    schema = load_schema("config")
    assert _sections(RunConfig, schema, schema["$defs"]) == []


def test_a_composed_config_reads_by_attribute_and_writes_back_what_it_was_built_from(tmp_path: Path) -> None:
    doc = compose_config(["sweep.grid.seed=[1,2]", "distribute=local"], tmp_path / "runs")
    config = validated(doc)
    assert config.sweep.grid["seed"] == [1, 2] and config.distribute.backend == "local"
    assert config.distribute.tasks == doc["distribute"]["tasks"] and config.output.root == str(tmp_path / "runs")
    again = RunConfig.from_doc(config.to_doc())
    assert again == config and again.to_doc() == config.to_doc()
