"""Reuse (`reuse: true`): items an earlier version of the same sweep made, found again by their id, are committed
into this run from there instead of being made again.

An item's id covers its builder and every parameter it was made with (a later stage's id also covers its parent's),
so the same id is the same work: after a change to a later stage's params only that stage is generated. The earlier
runs are read as untrusted data: through the run folder's readers, only `ok` items whose outputs are still the bytes
their manifest line hashed, read once, checked, then decoded from memory. Images and latents are reused (their
files round-trip exactly through the writer); video and audio items are made again.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from diffsweep.errors import DiffsweepError
from diffsweep.media import Generated
from diffsweep.planning.plan import Plan
from diffsweep.planning.stages import LATENTS_EXTENSION
from diffsweep.store.folder import VERSION_RE, RunFolder
from diffsweep.store.records import ItemRecord
from diffsweep.store.writer import LATENTS, PendingItem

log = logging.getLogger("diffsweep")

# no output file is read past this size, whatever a record claims (a 4096x4096 PNG is under 64 MiB)
MAX_OUTPUT_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Found:
    """An earlier run's record of an item, and the run it is in."""

    record: ItemRecord
    run: RunFolder
    run_id: str


def earlier_runs(run_dir: Path) -> Iterator[RunFolder]:
    """The other versions of this run's sweep, newest first; folders that are not runs are passed over."""
    others = [p for p in run_dir.parent.iterdir() if VERSION_RE.match(p.name) and p.name != run_dir.name]
    for path in sorted(others, key=lambda p: int(p.name[1:]), reverse=True):
        run = RunFolder(path)
        try:
            run.check_is_run()
        except DiffsweepError as error:
            log.info("reuse: %s is passed over: %s", path, error, extra={"console": False})
            continue
        yield run


def find_reusable(plan: Plan, run: RunFolder, done: set[str]) -> list[PendingItem]:
    """The planned items not `done` that an earlier version of the sweep made, as items for the writer (their
    outputs decoded, their record's time, truncation and scheduler carried over, and where they come from)."""
    if plan.rerun_of_items:  # a rerun of some items makes them again, as asked
        return []
    wanted: dict[str, Found] = {}
    for earlier in earlier_runs(run.path):
        run_id = f"{run.path.parent.name}/{earlier.path.name}"
        for record in earlier.records():
            if record.ok and record.files and record.item_id not in done and record.item_id not in wanted:
                wanted[record.item_id] = Found(record, earlier, run_id)
    if not wanted:
        return []
    reused: list[PendingItem] = []
    for item in plan.items():
        found = wanted.get(item.item_id)
        if found is None or found.record.builder_hash != item.builder_hash or found.record.stage != item.stage:
            continue
        generated, preview = _read_outputs(found)
        if generated is None:
            continue
        sidecar = found.run.sidecar(found.record)
        reused.append(PendingItem(item, plan.builders[item.builder_hash], generated, found.record.seconds,
                                  scheduler=sidecar.scheduler if sidecar else None,
                                  prompt_truncated=found.record.prompt_truncated, preview=preview,
                                  reused_from=found.run_id))
    return reused


def _read_outputs(found: Found) -> tuple[Generated | None, np.ndarray | None]:
    """An item's outputs as the writer takes them back: an image, or latents with their preview; (None, None) for
    any other kind, or when a file is not the one its record hashed."""
    record = found.record
    checked = [_checked_bytes(found, output) for output in record.outputs]
    blobs = [blob for blob in checked if blob is not None]
    if len(blobs) != len(checked):
        return None, None
    suffixes = [Path(output).suffix for output in record.outputs]
    try:
        if suffixes == [".png"]:
            return Generated("image", _pixels(blobs[0])), None
        if suffixes == [".png", LATENTS_EXTENSION]:
            from safetensors.torch import load  # noqa: PLC0415 - start-up time: only a chain handing latents on

            return Generated(LATENTS, load(blobs[1])["latents"]), _pixels(blobs[0])
    except (OSError, ValueError, KeyError, Image.DecompressionBombError) as error:
        log.warning("reuse: item %s of %s cannot be read (%s); it is made again", record.item_id[:12],
                    found.run_id, error)
        return None, None
    return None, None


def _checked_bytes(found: Found, output: str) -> bytes | None:
    """An output's bytes, read once: only when they are the size and SHA-256 its manifest line committed."""
    check = (found.record.files or {}).get(output)
    path = found.run.path / output
    if check is None or check.bytes > MAX_OUTPUT_BYTES or path.is_symlink() or not path.is_file():
        return None
    with path.open("rb") as handle:
        data = handle.read(check.bytes + 1)
    if len(data) != check.bytes or hashlib.sha256(data).hexdigest() != check.sha256:
        log.warning("reuse: %s of %s is not as committed; the item is made again", output, found.run_id)
        return None
    return data


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "RGB":
            raise ValueError(f"a {image.mode} image, where diffsweep writes RGB")
        return np.asarray(image)
