"""What every model family's own tests check on its tiny stand-in, through the real loading path.

Outputs are read back with third-party decoders only: PIL for PNG, PyAV for MP4 (video frames and any audio
track). The size and length an item's records claim must be the size and length of its file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, read_manifest
from diffsweep.config.schema import validate_config
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.planning.prepare import prepare
from diffsweep.run.local import run_sweep

PROMPT = "sweep.grid.prompt=[a red fox in fresh snow]"
ONE_SEED = "sweep.grid.seed=[0]"


@dataclass(frozen=True)
class Decoded:
    """What PIL or PyAV read out of one output file."""

    pixels: np.ndarray  # (H, W, 3) for an image, (F, H, W, 3) for a video
    audio: np.ndarray | None = None  # (channels, samples) float, when the MP4 has an audio track
    audio_codec: str | None = None
    sample_rate: int | None = None


def decode(path: Path) -> Decoded:
    if path.suffix == ".png":
        with Image.open(path) as image:
            return Decoded(np.asarray(image.convert("RGB")))
    assert path.suffix == ".mp4", path
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    audio = codec = rate = None
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            codec, rate = stream.codec_context.name, stream.codec_context.sample_rate
            chunks = [frame.to_ndarray() for frame in container.decode(audio=0)]
            audio = np.concatenate(chunks, axis=-1) if chunks else np.zeros((1, 0), np.float32)
    return Decoded(np.stack(frames), audio, codec, rate)


def run_ok(overrides: list[str], root: Path, cache: Any = None) -> tuple[Path, list[dict[str, Any]]]:
    """Run a sweep in-process (the real plan, load and record path), one seed unless the overrides give more;
    records sorted by grid index."""
    result = run_sweep(compose_config([PROMPT, ONE_SEED, *overrides], root), out=io.StringIO(), cache=cache)
    records = read_manifest(result.run_dir)
    assert result.status == "complete", records
    return result.run_dir, sorted(records, key=lambda r: r["index"])


def check_item(run_dir: Path, record: dict[str, Any], size: tuple[int, int] | None = None) -> Decoded:
    """The file decodes, and its size (and frame count) is what the manifest and the sidecar say; `size` (width,
    height) is the size to expect where the input image sets it and the records carry no height/width."""
    (output,) = record["outputs"]
    decoded = decode(run_dir / output)
    params = record["params"]
    sidecar = json.loads((run_dir / output).with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["params"] == params
    shape = decoded.pixels.shape
    if size is None:
        size = (params["width"], params["height"])
    else:
        assert "height" not in params and "width" not in params, params
    assert shape[-3:-1] == (size[1], size[0]), (shape, params)
    made = {"width": size[0], "height": size[1]}  # the size (and length) each record says was made
    if decoded.pixels.ndim == 4:
        made["frames"] = shape[0]
    if decoded.audio is not None:
        made |= check_sound(decoded, record["made"])
    assert record["made"] == sidecar["made"] == made, (record["made"], sidecar["made"])
    if decoded.pixels.ndim == 4:
        assert shape[0] == params["num_frames"], (shape, params)
    else:
        with Image.open(run_dir / output) as image:
            assert json.loads(image.text["diffsweep"])["params"] == params
    return decoded


def check_sound(decoded: Decoded, made: dict[str, Any]) -> dict[str, Any]:
    """An MP4's AAC track holds the sound its record states: the rate, and the samples up to AAC's framing (the
    encoder pads the last of its 1024-sample frames); the stated duration is samples / rate. Returns those fields."""
    sound = {key: made[key] for key in ("samples", "sample_rate", "duration")}
    assert decoded.audio_codec == "aac" and decoded.sample_rate == sound["sample_rate"], (decoded.audio_codec, made)
    assert sound["duration"] == round(sound["samples"] / sound["sample_rate"], 3), made
    assert sound["samples"] <= decoded.audio.shape[-1] <= sound["samples"] + 2048, (decoded.audio.shape, made)
    return sound


def previews_of(run_dir: Path, record: dict[str, Any]) -> list[Path]:
    """The step previews written next to an item's output."""
    stem = record["outputs"][0].rsplit(".", 1)[0]
    return sorted((run_dir / f"{stem}.previews").glob("step_*.png"))


def picture(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    """A small input image with a diagonal edge."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[...] = colour
    array[np.triu_indices(min(size), 1)] = 255 - np.array(colour, np.uint8)
    Image.fromarray(array).save(path)
    return str(path)


def make_lora(pipeline: str, factory: str, folder: Path, target_modules: list[str]) -> str:
    """A random LoRA (non-zero B, so it shows) for a tiny transformer, saved in diffusers' format with peft."""
    import diffusers
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from diffsweep.providers import tiny_factories

    pipeline_class = getattr(diffusers, pipeline)
    pipe = pipeline_class(**tiny_factories()[factory]())
    torch.manual_seed(1)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                            target_modules=target_modules))
    pipeline_class.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer),
                                     safe_serialization=True)
    return f"+builder.loras=[{{name: style, source: '{folder}'}}]"


def refusal(preset: str, overrides: list[str], root: Path) -> str:
    """The message of the configuration error the preset with `overrides` is refused with at plan time (exit 2,
    validated as the CLI validates, nothing written under `root`)."""
    with pytest.raises(ConfigError) as caught:
        doc = compose_config([f"provider={preset}", "sweep.grid.prompt=[a fox]", *overrides], root)
        validate_config(doc)
        prepare(doc)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not root.exists()
    return str(caught.value)
