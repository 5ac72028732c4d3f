"""Input files of generation parameters (`image`, `mask_image`): lookup, checks, identity.

Paths may be absolute or relative to the working directory (then the config tree). An item's
identity uses the file's content digest, not its path, so moving an input changes nothing and
editing it in place makes new items.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

FILE_PARAMS = ("image", "mask_image")
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


def identity_params(params: dict[str, Any]) -> dict[str, Any]:
    """Params as hashed: input files stand for their content, not their location."""
    # a path that is no file stays a path here: planning refuses it (image_problem) before any item is made
    return {k: (DIGEST_PREFIX + file_digest(v) if k in FILE_PARAMS and isinstance(v, str) and Path(v).is_file() else v)
            for k, v in params.items()}


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
