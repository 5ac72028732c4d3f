"""Grid axes and their lazy expansion into points.

An axis is a list, a numeric range `{start, stop, step}` (stop excluded, like `range`), or a text
file `{file: path}` with one value per line. `product` combines axes like `itertools.product`
(the last axis changes fastest, which defines each point's grid index); `zip` pairs them up.
Points can be produced in any axis nesting order while keeping their original grid index, so
the planner can put costly axes outermost without materialising the grid.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsweep.errors import ConfigError, ConfigIssue
from diffsweep.paths import find_file


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[Any, ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def range_length(spec: Mapping[str, Any]) -> int:
    """How many values a range axis holds, computed without making them."""
    start, stop = spec["start"], spec["stop"]
    step = spec.get("step", 1)
    if all(_is_int(v) for v in (start, stop, step)):
        return len(range(start, stop, step))
    return max(0, math.ceil((stop - start) / step - 1e-9))


def expand_range(spec: Mapping[str, Any]) -> list[Any]:
    start, stop = spec["start"], spec["stop"]
    step = spec.get("step", 1)
    if all(_is_int(v) for v in (start, stop, step)):
        return list(range(start, stop, step))
    # round away float noise (0.1 * 3 = 0.30000000000000004) so values hash as written
    return [round(start + i * step, 10) for i in range(range_length(spec))]


class NotTextError(ValueError):
    """A values file that is not UTF-8 text."""


def numbered_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the values in a UTF-8 text file: non-empty lines, `#` starts a comment
    line. A byte-order mark (Windows editors write one) is not part of the first value."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise NotTextError(f"{path} is UTF-16 text; save it as UTF-8")
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise NotTextError(f"{path} is a binary file, not UTF-8 text with one value per line (a NUL byte on "
                           f"line {line})")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise NotTextError(f"{path} is not UTF-8 text: byte 0x{data[error.start]:02x} on line {line} is not UTF-8 "
                           f"(saved in another encoding, e.g. Latin-1 or UTF-16?); save it as UTF-8") from None
    # lines end at \n (or \r\n) only: U+2028, form feeds and other separators str.splitlines knows are text
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return [(number, line.strip()) for number, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")]


def read_lines(path: Path) -> list[str]:
    return [text for _, text in numbered_lines(path)]


def _same_value_key(value: Any) -> str:
    """Values that make the same item compare equal: 7 and 7.0 are one guidance scale."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Mapping):
        return json.dumps({k: _same_value_key(v) for k, v in value.items()}, sort_keys=True)
    if isinstance(value, (list, tuple)):
        return json.dumps([_same_value_key(v) for v in value])
    return json.dumps(value, sort_keys=True, default=str)


def repeated(values: Sequence[Any]) -> list[list[int]]:
    """Positions of values that occur more than once, one list per repeated value."""
    positions: dict[str, list[int]] = {}
    for position, value in enumerate(values):
        positions.setdefault(_same_value_key(value), []).append(position)
    return [found for found in positions.values() if len(found) > 1]


def expand_axis(name: str, spec: Any, base_dirs: Sequence[Path], source: str | None = None) -> Axis:
    """Turn one config axis into its list of values (errors name `sweep.grid.<name>`).

    Relative file paths are looked up in `base_dirs` in order (the folder of the config file the axis is
    written in, the working directory, then the config tree), so sweeps can reference files beside them.
    """
    where = f"sweep.grid.{name}"
    if isinstance(spec, Mapping) and "file" in spec:
        path = find_file(spec["file"], base_dirs)
        try:
            values: list[Any] = read_lines(path)
        except NotTextError as error:
            raise ConfigError(ConfigIssue(f"{where}.file", str(error), source)) from None
        except OSError as error:
            raise ConfigError(ConfigIssue(f"{where}.file", f"cannot read {path}: {error.strerror or error}", source)) from error
        if not values:
            raise ConfigError(ConfigIssue(f"{where}.file", f"{path} has no values (one per line expected)", source))
    elif isinstance(spec, Mapping):
        values = expand_range(spec)
        if not values:
            raise ConfigError(ConfigIssue(where, f"range {dict(spec)} is empty", source))
    else:
        values = list(spec)
    return Axis(name, tuple(values))


class Grid:
    """A product or zip of axes with random access by grid index."""

    def __init__(self, axes: Sequence[Axis], mode: str, where: str = "sweep.grid"):
        self.axes = list(axes)
        self.mode = mode
        if mode == "zip" and len({len(a.values) for a in self.axes}) > 1:
            lengths = ", ".join(f"{a.name} has {len(a.values)}" for a in self.axes)
            raise ConfigError(ConfigIssue(where, f"zip mode needs axes of equal length; {lengths}"))

    def __len__(self) -> int:
        if not self.axes:
            return 1
        if self.mode == "zip":
            return len(self.axes[0].values)
        return math.prod(len(a.values) for a in self.axes)

    def point(self, index: int) -> dict[str, Any]:
        if self.mode == "zip":
            return {a.name: a.values[index] for a in self.axes}
        point = {}
        for axis in reversed(self.axes):
            index, position = divmod(index, len(axis.values))
            point[axis.name] = axis.values[position]
        return {a.name: point[a.name] for a in self.axes}

    def iter_points(self, outer_first: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
        """(grid index, point) for every point; in product mode the named axes vary slowest."""
        if self.mode == "zip" or not self.axes:
            yield from ((i, self.point(i)) for i in range(len(self)))
            return
        order = [a for name in outer_first for a in self.axes if a.name == name]
        order += [a for a in self.axes if a not in order]
        strides = {}
        stride = 1
        for axis in reversed(self.axes):
            strides[axis.name] = stride
            stride *= len(axis.values)
        for positions in itertools.product(*(range(len(a.values)) for a in order)):
            index = sum(strides[a.name] * p for a, p in zip(order, positions, strict=True))
            yield index, {a.name: a.values[p] for a, p in zip(order, positions, strict=True)}
