"""The contract every provider meets on its tiny offline pipeline (one `conf/provider/tiny_*.yaml` each).

build → save → load through from_pretrained → a 2-item grid → outputs exist, decode and carry their
records → regenerating reproduces them → batched equals unbatched where the provider can batch.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from PIL import Image

from conftest import assert_batch_equivalent, compose_config, read_manifest, read_run_json
from diffsweep import media, providers
from diffsweep.paths import conf_dir
from diffsweep.run.local import run_sweep
from diffsweep.run.verify import verify_run

TINY_PRESETS = sorted(p.stem for p in (conf_dir() / "provider").glob("tiny_*.yaml"))
# one end-to-end run per output kind belongs to the quick check (make test-fast)
QUICK_PRESETS = {"tiny_sd": "image", "tiny_wan": "video", "tiny_audioldm": "audio", "tiny_ltx2": "video_audio"}


def decoded(path: Path) -> Any:
    """What a third-party reader gets out of an output file."""
    if path.suffix == ".png":
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    if path.suffix == ".mp4":
        return media.decode_mp4(path.read_bytes())
    samples, rate = soundfile.read(io.BytesIO(path.read_bytes()), dtype="float32")
    return samples, rate


def check_output(path: Path, params: dict[str, Any], sample_rate_hint: int = 16000) -> None:
    content = decoded(path)
    made = json.loads(path.with_suffix(".json").read_text())["made"]  # the record states what the file holds
    if path.suffix == ".png":
        assert (made["height"], made["width"]) == content.shape[:2]
    elif path.suffix == ".mp4":
        assert (made["frames"], made["height"], made["width"]) == content.shape[:3]
    else:
        assert (made["samples"], made["sample_rate"]) == (len(content[0]), content[1])
    if path.suffix == ".png":
        assert content.shape == (params["height"], params["width"], 3)
        with Image.open(path) as image:
            record = json.loads(image.text["diffsweep"])
        assert record["params"] == params
    elif path.suffix == ".mp4":
        assert content.shape[0] == params["num_frames"]
        assert content.shape[1:3] == (params["height"], params["width"])
    else:
        samples, rate = content
        assert rate == sample_rate_hint
        expected = params.get("audio_length_in_s")
        assert len(samples) > 0
        if expected is not None:
            assert abs(len(samples) / rate - expected) <= 0.1 * expected + 0.05


def _outputs(run_dir: Path) -> dict[str, Any]:
    return {r["item_id"]: decoded(run_dir / r["outputs"][0]) for r in read_manifest(run_dir)}


@pytest.mark.quick
def test_the_quick_check_runs_every_output_kind_end_to_end() -> None:
    for preset, kind in QUICK_PRESETS.items():
        builder = compose_config([f"provider={preset}"])["builder"]
        assert providers.get(builder["provider"]).spec(builder["pipeline"]).output == kind, preset
    assert set(QUICK_PRESETS.values()) == set(media.KINDS)


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.quick) if p in QUICK_PRESETS else p
                                    for p in TINY_PRESETS])
def test_tiny_provider_contract(preset: str, tmp_path: Path) -> None:
    overrides = [f"provider={preset}", "sweep.name=contract", "sweep.grid.seed=[0,1]",
                 "sweep.grid.prompt=[a red fox in fresh snow]"]
    doc = compose_config(overrides, tmp_path / "runs")
    result = run_sweep(doc, out=io.StringIO())
    assert result.status == "complete", read_manifest(result.run_dir)
    run_dir = result.run_dir
    run = read_run_json(run_dir)
    assert run["counts"]["done"] == 2 and run["cache"]["loads"] + run["cache"]["hits"] >= 1
    records = read_manifest(run_dir)
    assert len(records) == 2 and len({r["item_id"] for r in records}) == 2
    for record in records:
        (output,) = record["outputs"]
        assert (run_dir / output).with_suffix(".json").is_file()
        check_output(run_dir / output, record["params"])

    assert verify_run(run_dir).passed  # regenerating from the saved config reproduces every item

    builder = run["builders"][0]
    spec = providers.get(builder["provider"]).spec(builder["pipeline"])
    if spec.batchable:
        unbatched = run_sweep(compose_config([*overrides, "sweep.batch_size=1"], tmp_path / "runs"), out=io.StringIO())
        batched, single = _outputs(run_dir), _outputs(unbatched.run_dir)
        assert batched.keys() == single.keys()
        first, second = batched.values()
        for item_id, content in batched.items():
            if isinstance(content, tuple):
                np.testing.assert_allclose(content[0], single[item_id][0], atol=1e-3)
            elif content.ndim == 4:
                # H.264 turns a one-level rounding flip of noisy tiny-model frames into a local change of a few
                # levels; the same item from another batch must still be far closer than another item is
                apart = np.abs(first.astype(int) - second.astype(int)).mean()
                assert np.abs(content.astype(int) - single[item_id].astype(int)).mean() < 0.1 * apart, item_id
            else:
                assert_batch_equivalent(content, single[item_id])
