"""Encoding outputs to bytes: PNG with embedded provenance, MP4 video (with an AAC track for video with sound), WAV
audio; and the output kinds they are written as.

Encoders return bytes so the record step can write them atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin


@dataclass(frozen=True)
class Generated:
    """One item's raw output, before encoding: an image (H,W,3), frames (F,H,W,3) or audio samples; video with
    sound has its frames in `array` and its (channels, samples) in `audio`."""

    kind: str
    array: Any  # numpy float32 in [0, 1] for image/video, [-1, 1] for audio
    sample_rate: int | None = None
    audio: Any = None  # numpy float32 in [-1, 1], for video with sound


@dataclass(frozen=True)
class OutputKind:
    """One kind of output a pipeline spec declares (`PipelineSpec.output`), and what its file holds."""

    extension: str
    moving: bool  # a sequence of frames: sheets show a strip, scores sample frames, the viewer plays it
    sound: bool  # carries audio: its records state samples and sample_rate


KINDS = {
    "image": OutputKind(".png", moving=False, sound=False),
    "video": OutputKind(".mp4", moving=True, sound=False),
    "audio": OutputKind(".wav", moving=False, sound=True),
    "video_audio": OutputKind(".mp4", moving=True, sound=True),  # H.264 plus an AAC track
}
EXTENSIONS = {name: kind.extension for name, kind in KINDS.items()}
PNG_RECORD_KEY = "diffsweep"
DEFAULT_SAMPLE_RATE = 16000  # where a pipeline does not say its own


def kind_of(path: str, sound: bool) -> str:
    """The kind of an item's output file: its extension, and for an MP4 whether its record says it holds sound
    (`ItemRecord.has_sound`); "file" for anything diffsweep does not write."""
    suffix = PurePath(path).suffix.lower()
    fitting = [name for name, kind in KINDS.items() if kind.extension == suffix]
    return next((name for name in fitting if len(fitting) == 1 or KINDS[name].sound == sound), "file")


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
    import imageio_ffmpeg  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

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


def encode_mp4_with_audio(frames: Any, fps: int, samples: Any, sample_rate: int) -> bytes:
    """encode_mp4's H.264 video with an AAC track of `samples` ((channels, samples) or mono, in [-1, 1]) at
    `sample_rate`, muxed by PyAV: the video packets are copied, not re-encoded."""
    import av  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

    audio = np.ascontiguousarray(np.clip(np.atleast_2d(np.asarray(samples, dtype=np.float32)), -1.0, 1.0))
    layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
    buffer = io.BytesIO()
    with av.open(io.BytesIO(encode_mp4(frames, fps)), "r") as source, av.open(buffer, "w", format="mp4") as target:
        video_in = source.streams.video[0]
        video_out = target.add_stream_from_template(video_in)
        sound = target.add_stream("aac", rate=sample_rate, layout=layout)
        for packet in source.demux(video_in):
            if packet.dts is not None:  # the demuxer ends with an empty flush packet
                packet.stream = video_out
                target.mux(packet)
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sample_rate, 0
        target.mux(sound.encode(frame))  # PyAV splits it into the encoder's 1024-sample frames
        target.mux(sound.encode(None))
    return buffer.getvalue()


def encode_wav(samples: Any, sample_rate: int) -> bytes:
    """16-bit PCM WAV at the pipeline's sample rate (mono, or channels last)."""
    import soundfile  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[0] < audio.shape[1]:
        audio = audio.T  # (channels, samples) -> (samples, channels)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def decode_streams(kind: str, data: bytes) -> list[np.ndarray]:
    """What an output file of `kind` holds, as integer arrays, one per stream: pixels, frames or 16-bit samples; a
    video with sound gives its frames and its samples. Reruns and runs are compared on these (verify, rundiff)."""
    if kind == "image":
        with Image.open(io.BytesIO(data)) as image:
            return [np.asarray(image.convert("RGB"))]
    if kind == "video":
        return [decode_mp4(data)]
    if kind == "video_audio":
        return [decode_mp4(data), np.round(decode_mp4_audio(data) * 32767).astype(np.int16)]
    import soundfile  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

    return [soundfile.read(io.BytesIO(data), dtype="int16")[0]]


def decode_mp4_audio(data: bytes) -> np.ndarray:
    """(channels, samples) float32 of an MP4's audio track, as PyAV decodes it (empty when it has none)."""
    import av  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

    with av.open(io.BytesIO(data), "r") as container:
        if not container.streams.audio:
            return np.zeros((0, 0), np.float32)
        chunks = [frame.to_ndarray() for frame in container.decode(audio=0)]
    return np.concatenate(chunks, axis=-1) if chunks else np.zeros((0, 0), np.float32)


def decode_mp4(data: bytes) -> np.ndarray:
    """(F, H, W, 3) uint8 frames of an MP4, for verification and tests."""
    import imageio_ffmpeg  # noqa: PLC0415 - start-up time: codecs load only for the media that need them

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
