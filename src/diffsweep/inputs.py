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
import stat
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


# the largest input image diffsweep reads (8192 x 8192): a file that claims more is refused before it is decoded,
# whatever its size on disk (a decompression bomb states a huge size in a few bytes)
MAX_INPUT_PIXELS = 8192 * 8192


def image_problem(path: str | Path) -> str | None:
    """Why an input image cannot be used, or None when it decodes: it must be a regular file, an image PIL decodes,
    of at most MAX_INPUT_PIXELS pixels."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"input file {path} does not exist"
    except OSError as error:
        return f"input file {path} cannot be read ({error.strerror})"
    if stat.S_ISDIR(mode):
        return f"input file {path} is a folder, not an image file"
    if not stat.S_ISREG(mode):
        return f"input file {path} is not a regular file (a pipe, socket or device), so it is not read"
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_INPUT_PIXELS:
                return (f"input file {path} states {width}x{height}: more pixels than the {MAX_INPUT_PIXELS:,} "
                        f"(8192x8192) diffsweep reads")
            image.verify()
    except PermissionError:
        return f"input file {path} cannot be read (no permission)"
    except Image.DecompressionBombError:
        return f"input file {path} states more pixels than the {MAX_INPUT_PIXELS:,} (8192x8192) diffsweep reads"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"input file {path} is not a decodable image ({error})"
    return None


def image_size(path: str | Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """An input image, fully read, in `mode` (RGB images, L masks)."""
    with Image.open(path) as image:
        return image.convert(mode)
