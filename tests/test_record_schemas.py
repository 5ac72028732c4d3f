"""The published JSON Schemas of run records are generated from the records' one declaration and describe what
diffsweep really writes and reads."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from diffsweep.paths import schemas_dir
from diffsweep.store import records
from diffsweep.store.schemas import record_schemas, schema_text


@pytest.mark.parametrize("stem", sorted(record_schemas()))
def test_the_committed_schema_is_the_generated_one(stem: str) -> None:
    committed = (schemas_dir() / f"{stem}.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(record_schemas()[stem]), (
        f"schemas/{stem}.schema.json is not what the records declare: run `python -m diffsweep.store.schemas`")


@pytest.mark.parametrize("stem", sorted(record_schemas()))
def test_every_generated_schema_is_a_valid_draft_2020_12_schema(stem: str) -> None:
    Draft202012Validator.check_schema(record_schemas()[stem])


def test_a_record_written_by_diffsweep_meets_its_schema_and_a_broken_one_is_refused_by_both() -> None:
    item = records.ItemRecord(index=3, item_id="a" * 64, builder_hash="b" * 64, status="ok",
                              params={"prompt": "a fox", "seed": 7}, seed=7, outputs=["items/0003-aaaaaaaaaaaa.png"],
                              seconds=0.25, made=records.Made(width=64, height=64))
    validator = Draft202012Validator(record_schemas()["item"])
    validator.validate(item.to_json())
    # one declaration, two readers that agree: what the schema refuses, diffsweep does not read either
    for broken in ({**item.to_json(), "status": "failed"}, {**item.to_json(), "outputs": ["../outside.png"]},
                   {**item.to_json(), "index": -1}, {**item.to_json(), "seed": True}):
        assert not validator.is_valid(broken)
        with pytest.raises(records.RecordError):
            records.ItemRecord.from_json(broken)
    with pytest.raises(records.RecordError):  # JSON has no NaN, and a record holds none
        records.ItemRecord.from_json_bytes(json.dumps({**item.to_json(), "seconds": float("nan")}))
