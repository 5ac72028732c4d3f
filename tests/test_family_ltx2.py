"""LTX-2 on its tiny stand-in: video with sound, an MP4 whose H.264 and AAC tracks PyAV reads back as the records say;
image-to-video, previews, the viewer, sheets and scores, and its rules."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from conftest import read_manifest, run_cli
from diffsweep import media, providers
from diffsweep.config.schema import load_schema
from diffsweep.errors import EXIT_CONFIG
from diffsweep.providers.base import ensure_tiny
from diffsweep.reports.diff import diff_runs
from diffsweep.reports.scoring import decode as decode_for_scores
from diffsweep.reports.sheets import tile
from diffsweep.store.records import ItemRecord
from family_checks import check_item, decode, picture, previews_of, refusal, run_ok

CLI_RUN = ["provider=tiny_ltx2", "sweep.grid.prompt=[a fox barking,a boat horn]", "sweep.grid.seed=[0]",
           "sweep.params.width=64", "previews.every=2"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """One real CLI run: two prompts in one batched call, with step previews."""
    work = tmp_path_factory.mktemp("ltx2")
    result = run_cli(CLI_RUN, cwd=work)
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    return run_dir, sorted(read_manifest(run_dir), key=lambda r: r["index"])


def test_the_mp4_has_an_h264_video_and_an_aac_sound_track_as_recorded(cli_run: tuple[Path, list[dict]]) -> None:
    run_dir, records = cli_run
    assert len(records) == 2
    sounds = []
    item_schema = Draft202012Validator(load_schema("item"))  # the published contract states the sound too
    for record in records:
        item_schema.validate(record)
        item_schema.validate(json.loads((run_dir / record["outputs"][0]).with_suffix(".json").read_text()))
        decoded = check_item(run_dir, record)  # frames, size, sample rate and sample count against the records
        assert decoded.pixels.shape == (9, 32, 64, 3)
        made, params = record["made"], record["params"]
        assert made["sample_rate"] == 16000 and made["duration"] > 0
        with av.open(str(run_dir / record["outputs"][0])) as container:
            (video,), (audio,) = container.streams.video, container.streams.audio
            assert video.codec_context.name == "h264" and video.average_rate == Fraction(params["fps"])
            assert audio.codec_context.name == "aac" and audio.codec_context.channels == 2
            # the sound lasts about as long as the picture: num_frames / fps seconds
            assert abs(made["duration"] - params["num_frames"] / params["fps"]) < 0.1
        assert np.abs(decoded.audio).max() > 1e-3  # the vocoder's sound, not silence
        sounds.append(decoded.audio)
    assert not np.allclose(sounds[0], sounds[1])  # each prompt gets its own sound
    assert [p.name for p in previews_of(run_dir, records[0])] == ["step_0002.png"]


def test_viewer_sheets_and_scores_treat_it_as_video_with_sound(cli_run: tuple[Path, list[dict]]) -> None:
    run_dir, records = cli_run
    data = (run_dir / "data.js").read_text(encoding="utf-8")
    payload = json.loads(data[data.index("{"):data.rindex("}") + 1])
    kinds = {output["kind"] for item in payload["items"] for output in item["outputs"]}
    assert kinds == {"video_audio"}  # the viewer plays it with sound
    record = ItemRecord.from_json(records[0])
    strip = tile(run_dir, record)
    assert not isinstance(strip, str) and strip.width > strip.height  # a strip of frames, not a mark
    scored = decode_for_scores(run_dir / record.outputs[0], video_frames=3)
    assert scored.kind == "video" and scored.frames.shape == (3, 32, 64, 3)


def test_a_run_diff_hears_a_changed_sound_under_the_same_pictures(cli_run: tuple[Path, list[dict]],
                                                                  tmp_path: Path) -> None:
    run_dir, records = cli_run
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(run_dir, a)
    shutil.copytree(run_dir, b)
    output = records[0]["outputs"][0]
    decoded = decode(run_dir / output)
    frames, fps, sound = decoded.pixels / 255.0, records[0]["params"]["fps"], decoded.audio
    # the same frames through the same encoder give the same H.264 stream; only the AAC track differs
    (a / output).write_bytes(media.encode_mp4_with_audio(frames, fps, sound, decoded.sample_rate))
    (b / output).write_bytes(media.encode_mp4_with_audio(frames, fps, -sound, decoded.sample_rate))
    by_index = {item.index_a: item for item in diff_runs(a, b).items}
    assert by_index[0].verdict == "different" and by_index[0].note == "the same pictures; the sound differs"
    assert by_index[1].verdict == "identical"


def test_image_to_video_one_item_per_call(tmp_path: Path) -> None:
    image = picture(tmp_path / "first.png", (48, 40), (220, 120, 30))
    run_dir, records = run_ok(["provider=tiny_ltx2", "builder.pipeline=LTX2ImageToVideoPipeline",
                               "sweep.grid.prompt=[a fox,a boat]", f"+sweep.params.image='{image}'"], tmp_path)
    assert len(records) == 2
    # diffusers cannot give a batch of several items its single input image
    assert "first call (1 item(s))" in (run_dir / "run.log").read_text(encoding="utf-8")
    for record in records:
        assert record["params"]["image"] == image
        assert check_item(run_dir, record).pixels.shape == (9, 32, 32, 3)  # resized to height x width


def test_the_custom_provider_keeps_the_sound_of_a_pipeline_it_describes_by_signature(tmp_path: Path) -> None:
    folder = ensure_tiny(providers.get("ltx2"), "ltx2")
    run_dir, (record,) = run_ok(["builder.provider=custom", "builder.pipeline=LTX2Pipeline", f"builder.model={folder}",
                                 "sweep.params.num_inference_steps=2", "+sweep.params.height=32",
                                 "+sweep.params.width=32", "+sweep.params.num_frames=9",
                                 "+sweep.params.max_sequence_length=16"], tmp_path / "default")
    assert check_item(run_dir, record).audio is not None  # an AAC track, as the records say
    # the MP4 plays at the frame rate the pipeline made it for: its `frame_rate` default, and fps is passed to it
    assert record["params"]["fps"] == 24 and _video_rate(run_dir / record["outputs"][0]) == 24
    slow_dir, (slow,) = run_ok(["builder.provider=custom", "builder.pipeline=LTX2Pipeline", f"builder.model={folder}",
                                "sweep.params.num_inference_steps=2", "+sweep.params.height=32",
                                "+sweep.params.width=32", "+sweep.params.num_frames=9",
                                "+sweep.params.max_sequence_length=16", "+sweep.params.fps=12"], tmp_path / "slow")
    assert _video_rate(slow_dir / slow["outputs"][0]) == 12
    assert slow["made"]["samples"] > record["made"]["samples"]  # 9 frames at 12 fps last longer: so does the sound


def _video_rate(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate)


def test_a_dry_run_writes_and_builds_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_cli([*CLI_RUN, "dry_run=true"], cwd=tmp_path, env={"DIFFSWEEP_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    assert "LTX2Pipeline" in result.stdout
    assert not (tmp_path / "runs").exists() and not cache.exists()


def test_a_bad_frame_count_is_refused_by_the_cli_with_its_key(tmp_path: Path) -> None:
    result = run_cli(["provider=tiny_ltx2", "+sweep.params.num_frames=12"], cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "sweep.params.num_frames: num_frames 12 must be 8k+1 for ltx2; nearest: 9 or 17" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["sweep.params.height=48"], "sweep.params.height: height 48 must be a multiple of 32 for ltx2; nearest: 32 or 64"),
    (["+sweep.params.max_sequence_length=2048"], "max_sequence_length 2048 exceeds 1024"),
    (["+sweep.params.stg_scale=-1"], "sweep.params.stg_scale"),
    (["+sweep.params.audio_guidance_scale=loud"], "sweep.params.audio_guidance_scale"),
    (["+sweep.params.strength=0.5"], "sweep.params.strength: not a parameter of LTX2Pipeline"),
])
def test_rules_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert message in refusal("tiny_ltx2", overrides, tmp_path / "runs")
