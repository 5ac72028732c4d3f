"""Encoding outputs to bytes: PNG with embedded provenance, MP4 video, WAV audio.

Encoders return bytes so the record step can write them atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from diffsweep.providers.base import Generated

EXTENSIONS = {"image": ".png", "video": ".mp4", "audio": ".wav"}
PNG_RECORD_KEY = "diffsweep"
DEFAULT_SAMPLE_RATE = 16000  # where a pipeline does not say its own


def to_uint8(array: Any) -> np.ndarray:
    """Float [0, 1] pixels to uint8 exactly as diffusers' numpy_to_pil rounds them."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def a1111_parameters(params: Mapping[str, Any], builder: Mapping[str, Any], builder_hash: str,
                     scheduler: str | None = None, size: tuple[int, int] | None = None) -> str:
    """The `parameters` text that A1111, ComfyUI readers and civitai parse.

    Line 1 is the prompt, then `Negative prompt: ...`, then one comma-separated `Key: value` line. `Size` is the
    (width, height) of the image made, where known; else the requested one.
    """
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields: list[tuple[str, Any]] = [
        ("Steps", params.get("num_inference_steps")),
        ("Sampler", scheduler or (builder.get("scheduler") or {}).get("name") or "default"),
        ("CFG scale", params.get("guidance_scale")),
        ("Seed", params.get("seed")),
        ("Size", f"{size[0]}x{size[1]}" if size else f"{params['width']}x{params['height']}"
         if "width" in params and "height" in params else None),
        ("Model hash", builder_hash[:10]),
        ("Model", builder.get("model")),
        ("Version", "diffsweep"),
    ]
    fields += [(f"Lora {k.removeprefix('lora.')}", v) for k, v in sorted(params.items()) if k.startswith("lora.")]
    # values with commas or colons are quoted, as A1111 does, so its parser keeps them whole
    text = ", ".join(f"{k}: {_a1111_value(v)}" for k, v in fields if v is not None)
    lines.append(text)
    return "\n".join(lines)


def _a1111_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if ("," in text or ":" in text or "\n" in text) else text


def encode_png(generated: Generated, parameters: str, record: Mapping[str, Any]) -> bytes:
    """PNG bytes with a `parameters` text chunk (A1111) and a `diffsweep` one (the full JSON record).

    `parameters` is tEXt when the text is Latin-1 (what most readers expect) and iTXt otherwise.
    """
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_itxt(PNG_RECORD_KEY, json.dumps(record, ensure_ascii=False, sort_keys=True))
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(generated.array)).save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()



def encode_mp4(frames: Any, fps: int) -> bytes:
    """H.264 / yuv420p MP4 of (F, H, W, 3) frames through imageio-ffmpeg's bundled ffmpeg."""
    import imageio_ffmpeg

    pixels = to_uint8(frames)
    count, height, width = pixels.shape[:3]
    # yuv420p needs even sizes; pad by edge replication rather than resample the frames
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        pixels = np.pad(pixels, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(
            path, (width + pad_w, height + pad_h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=1, quality=None, bitrate=None, output_params=["-crf", "18", "-preset", "medium"],
            ffmpeg_log_level="error")
        writer.send(None)
        for frame in pixels:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        with open(path, "rb") as handle:
            return handle.read()
    finally:
        os.unlink(path)


def encode_wav(samples: Any, sample_rate: int) -> bytes:
    """16-bit PCM WAV at the pipeline's sample rate (mono, or channels last)."""
    import soundfile

    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] < audio.shape[1]:
        audio = audio.T  # (channels, samples) -> (samples, channels)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def decode_mp4(data: bytes) -> np.ndarray:
    """(F, H, W, 3) uint8 frames of an MP4, for verification and tests."""
    import imageio_ffmpeg

    fd, path = tempfile.mkstemp(suffix=".mp4")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        reader = imageio_ffmpeg.read_frames(path)
        meta = reader.__next__()
        width, height = meta["size"]
        frames = [np.frombuffer(frame, dtype=np.uint8).reshape(height, width, 3) for frame in reader]
        return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)
    finally:
        os.unlink(path)
