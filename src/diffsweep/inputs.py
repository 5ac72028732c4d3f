"""Input files of generation parameters (`image`, `mask_image`, `control_image`, `ip_adapter_image`): lookup, checks,
identity.

Paths may be absolute or relative to the working directory (then the config tree). `image` may
also be a list of paths, for pipelines that take several input images (Qwen-Image-Edit-Plus,
Flux.2's reference images). An item's identity uses each file's content digest, not its path, so
moving an input changes nothing and editing it in place makes new items. A control image that is prepared
(`control_preprocess`) stands for the prepared image's content (diffsweep.control).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

FILE_PARAMS = ("image", "mask_image", "control_image", "ip_adapter_image")
DIGEST_PREFIX = "sha256:"


@functools.lru_cache(maxsize=1024)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (memoised per path, size and mtime)."""
    stat = Path(path).stat()
    return _digest(str(path), stat.st_size, stat.st_mtime_ns)


def named_paths(key: str, value: Any) -> list[tuple[str, str]]:
    """(key path, file) for each file an input parameter names: `image` for one, `image[i]` in a list."""
    if isinstance(value, str):
        return [(key, value)]
    if isinstance(value, (list, tuple)):
        return [(f"{key}[{i}]", path) for i, path in enumerate(value) if isinstance(path, str)]
    return []


def map_paths(value: Any, change: Callable[[str], Any]) -> Any:
    """An input parameter's value with `change` applied to its path, or to each path of a list."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, (list, tuple)):
        return [change(path) if isinstance(path, str) else path for path in value]
    return value


def _content(path: str) -> str:
    # a path that is no file stays a path here: planning refuses it (image_problem) before any item is made
    return DIGEST_PREFIX + file_digest(path) if Path(path).is_file() else path


def identity_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as hashed: input files stand for their content, not their location."""
    from diffsweep import control  # prepares control images from inputs, so it builds on this module

    hashed = {k: map_paths(v, _content) if k in FILE_PARAMS else v for k, v in params.items()}
    if control.active(params) and "control_image" in params:
        hashed["control_image"] = map_paths(params["control_image"], lambda path: DIGEST_PREFIX + control.digest(
            path, params) if Path(path).is_file() else path)
    return hashed


def image_problem(path: str | Path) -> str | None:
    """Why an input image cannot be used, or None when it decodes."""
    path = Path(path)
    if path.is_dir():
        return f"input file {path} is a folder, not an image file"
    if not path.is_file():
        return f"input file {path} does not exist"
    try:
        with Image.open(path) as image:
            image.verify()
    except PermissionError:
        return f"input file {path} cannot be read (no permission)"
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        return f"input file {path} is not a decodable image ({error})"
    return None


def image_size(path: str | Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """An input image, fully read, in `mode` (RGB images, L masks)."""
    with Image.open(path) as image:
        return image.convert(mode)
