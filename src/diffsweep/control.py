"""Control images prepared from input images (`control_preprocess`): built-in Canny and `none`, controlnet-aux
detectors as an optional extra.

A prepared image is a pure function of its input file's content, the preprocessor and its settings, so it is made
in memory wherever it is needed (the item id, the pipeline call, the run folder's copy) and memoised. Its content
digest stands for the control image in the item id, and the run folder keeps one copy per digest under `control/`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from diffsweep.hub import hub_offline
from diffsweep.inputs import file_digest, load_image

PARAM = "control_preprocess"
THRESHOLDS = {"control_low_threshold": 100, "control_high_threshold": 200}  # OpenCV's usual Canny pair
SETTINGS = {"canny": tuple(THRESHOLDS)}
"""Each built-in preprocessor's settings, which are generation parameters (so grid axes), with defaults."""
# controlnet-aux detectors (name -> class); each loads its own weights from lllyasviel/Annotators
AUX_DETECTORS = {"depth_midas": "MidasDetector", "lineart": "LineartDetector", "openpose": "OpenposeDetector",
                 "hed": "HEDdetector", "softedge_pidi": "PidiNetDetector", "mlsd": "MLSDdetector",
                 "normal_bae": "NormalBaeDetector"}
AUX_WEIGHTS = "lllyasviel/Annotators"
PREPARED_FOLDER = "control"


def active(params: Mapping[str, Any]) -> str | None:
    """The preprocessor an item's control image goes through, or None when it is used as given."""
    name = params.get(PARAM)
    return None if name in (None, "none") else name


def settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocessor's settings as the item has them (defaults filled in)."""
    name = active(params)
    return {key: params.get(key, THRESHOLDS[key]) for key in SETTINGS.get(name or "", ())}


def problems(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, message) for preprocessing an item cannot have, said before anything is written."""
    name = active(params)
    found = []
    if name is None:
        found += [(key, f"{key} applies to control_preprocess=canny; this item's control_preprocess is "
                        f"{params.get(PARAM) or 'none'}") for key in THRESHOLDS if key in params]
    elif name == "canny":
        low, high = settings(params).values()
        if low > high:
            found.append(("control_low_threshold", f"control_low_threshold {low} is above control_high_threshold "
                                                   f"{high}; Canny keeps edges above the high one and extends them "
                                                   f"down to the low one"))
    else:
        found += [(key, f"{key} applies to control_preprocess=canny, not {name}") for key in THRESHOLDS
                  if key in params]
        found += _aux_problems(name)
    if name is not None and "control_image" not in params:
        found.append((PARAM, "control_preprocess needs a control_image to prepare"))
    return found


def _aux_problems(name: str) -> list[tuple[str, str]]:

    if importlib.util.find_spec("controlnet_aux") is None:
        return [(PARAM, f"{name} runs controlnet-aux's {AUX_DETECTORS[name]}, which is not installed: "
                        f"pip install 'diffsweep[control]' (canny is built in)")]
    if hub_offline():
        from huggingface_hub import scan_cache_dir  # noqa: PLC0415 - start-up time: the hub client loads only when a model is looked up

        cached = any(repo.repo_id == AUX_WEIGHTS for repo in scan_cache_dir().repos)
        if not cached:
            return [(PARAM, f"{name} loads its detector's weights from {AUX_WEIGHTS}, which is not in the local "
                            f"Hugging Face cache, and HF_HUB_OFFLINE is set; download it first with "
                            f"`hf download {AUX_WEIGHTS}`, or use control_preprocess=canny (built in, no weights)")]
    return []


def prepared(path: str, params: Mapping[str, Any]) -> np.ndarray:
    """The control image an item's pipeline gets from input `path`: (H, W, 3) uint8."""
    name = active(params)
    if name is None:
        return np.asarray(load_image(path))
    return _prepare(path, file_digest(path), name, tuple(sorted(settings(params).items())))


@functools.lru_cache(maxsize=64)
def _prepare(path: str, digest: str, name: str, options: tuple[tuple[str, Any], ...]) -> np.ndarray:
    image = load_image(path)
    if name == "canny":
        values = dict(options)
        edges = canny(np.asarray(image.convert("L")), values["control_low_threshold"], values["control_high_threshold"])
        result = np.repeat(edges[..., None], 3, axis=2)
    else:
        result = np.asarray(_aux_detector(name)(image, output_type="pil").convert("RGB").resize(image.size))
    result.setflags(write=False)
    return result


@functools.cache
def _aux_detector(name: str) -> Any:
    import controlnet_aux  # noqa: PLC0415 - optional extra (control): loaded only for its detectors

    return getattr(controlnet_aux, AUX_DETECTORS[name]).from_pretrained(AUX_WEIGHTS)


def png(array: np.ndarray) -> bytes:
    """A prepared image as PNG bytes, with no metadata, so equal images give equal files."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def digest(path: str, params: Mapping[str, Any]) -> str:
    """SHA-256 of a prepared image's PNG file: what stands for it in the item id (so a change to the algorithm's
    output makes new items). A controlnet-aux detector cannot run while planning (it loads weights), so its image
    is named by its input, detector and settings instead."""
    name = active(params)
    if name in SETTINGS:
        return hashlib.sha256(png(prepared(path, params))).hexdigest()
    recipe = f"{file_digest(path)}|{name}|{sorted(settings(params).items())}"
    return hashlib.sha256(recipe.encode()).hexdigest()


def record(path: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """What an item record says of one prepared control image: where it came from and where the run keeps it."""
    sha = digest(path, params)
    return {"source": path, "preprocess": active(params), "settings": settings(params),
            "path": f"{PREPARED_FOLDER}/{sha[:16]}.png", "sha256": sha}


# ----- Canny ----------------------------------------------------------------------------------------------------------
def _gaussian_kernel(sigma: float = 1.4, radius: int = 2) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _filter(image: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """1-D correlation along `axis` with edge replication (what OpenCV calls BORDER_REPLICATE)."""
    radius = len(kernel) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode="edge")
    length = image.shape[axis]
    return sum(weight * np.take(padded, range(i, i + length), axis=axis) for i, weight in enumerate(kernel))


def canny(gray: np.ndarray, low: float, high: float) -> np.ndarray:
    """Canny edges of a uint8 greyscale image as a uint8 mask (255 = edge): a 5x5 Gaussian blur (sigma 1.4), Sobel
    gradients, non-maximum suppression along the gradient and hysteresis between `low` and `high` (on the Sobel
    magnitude of 0-255 values, the scale OpenCV's thresholds use). Plain numpy, so the same on every machine."""
    blur = _gaussian_kernel()
    smooth = _filter(_filter(gray.astype(np.float64), blur, 0), blur, 1)
    derivative, average = np.array([-1.0, 0.0, 1.0]), np.array([1.0, 2.0, 1.0])
    gx = _filter(_filter(smooth, derivative, 1), average, 0)
    gy = _filter(_filter(smooth, derivative, 0), average, 1)
    magnitude = np.hypot(gx, gy)
    angle = np.rad2deg(np.arctan2(gy, gx)) % 180
    direction = ((angle + 22.5) // 45).astype(int) % 4  # 0: horizontal gradient, 1: 45°, 2: vertical, 3: 135°
    padded = np.pad(magnitude, 1)
    h, w = magnitude.shape

    def shifted(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    neighbours = {0: ((0, 1), (0, -1)), 1: ((1, 1), (-1, -1)), 2: ((1, 0), (-1, 0)), 3: ((1, -1), (-1, 1))}
    peak = np.zeros_like(magnitude, dtype=bool)
    for index, (ahead, behind) in neighbours.items():
        keep = (magnitude >= shifted(*ahead)) & (magnitude > shifted(*behind))
        peak |= (direction == index) & keep
    thin = np.where(peak, magnitude, 0.0)
    weak = thin >= low
    edges = thin >= high
    while True:  # hysteresis: weak pixels joined (8-connected) to a strong edge become edges
        grown = np.pad(edges, 1)
        grown = np.logical_or.reduce([grown[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)]) & weak
        if np.array_equal(grown, edges):
            return edges.astype(np.uint8) * 255
        edges = grown
