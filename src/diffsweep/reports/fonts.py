"""Text on sheets in a real font, with per-character fallback so any prompt renders as glyphs.

The primary face is DejaVu Sans (Debian's fonts-dejavu-core, or the copy matplotlib ships). A
character it lacks is drawn with the first installed fallback that has it: Noto Sans, Noto Sans
CJK, Noto Color Emoji (fonts-noto-core, fonts-noto-cjk, fonts-noto-color-emoji). Coverage is read
from each font's character map, so no box ("tofu") is drawn where any installed font has the glyph.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts",
             "/Library/Fonts", "/System/Library/Fonts", "C:/Windows/Fonts")
PRIMARY = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}
# In order of preference; a font is used only for the characters the ones before it lack.
FALLBACKS = ("NotoSans-Regular.ttf", "NotoSansCJK-Regular.ttc", "NotoSansCJKjp-Regular.otf",
             "NotoSansCJKsc-Regular.otf", "NotoSansSymbols2-Regular.ttf", "NotoColorEmoji.ttf", "DejaVuSans.ttf")
BITMAP_STRIKE = 109  # the only size Noto Color Emoji's bitmaps come in
# What the primary face (DejaVu Sans, or Pillow's own font) surely has: printable ASCII and the marks diffsweep's own
# labels use. Most sheets then read no character map, and fontTools is not even loaded for them.
PRIMARY_HAS = frozenset(map(chr, range(0x20, 0x7F))) | frozenset("·…−→×±²√")


@functools.cache
def installed_fonts() -> dict[str, Path]:
    """Font file name -> path, over the usual system and user font folders (first found wins)."""
    found: dict[str, Path] = {}
    for folder in FONT_DIRS:
        for root, _, files in os.walk(Path(folder).expanduser()):
            for name in files:
                if name.lower().endswith((".ttf", ".otf", ".ttc")):
                    found.setdefault(name, Path(root) / name)
    return found


def _bundled_dejavu(bold: bool) -> Path | None:
    """matplotlib's own copy of DejaVu Sans, where matplotlib is installed and the system has none."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra (scores): loaded only to score or plot
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / PRIMARY[bold]
    return path if path.is_file() else None


@functools.cache
def _charmap(path: Path) -> frozenset[int]:
    from fontTools.ttLib import TTFont  # noqa: PLC0415 - start-up time: fonts are looked up only when a sheet is drawn

    with TTFont(path, fontNumber=0, lazy=True) as font:
        return frozenset(font.getBestCmap() or {})


@dataclass(frozen=True)
class Face:
    """One font file at one size; bitmap-only fonts are drawn at their strike and scaled."""

    path: Path | None  # None: Pillow's built-in font (no real font installed)
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    scale: float = 1.0  # drawn size / font size, for bitmap strikes
    colour: bool = False

    def covers(self, char: str) -> bool:
        return self.path is None or ord(char) in _charmap(self.path)


class Typeface:
    """A primary face plus fallbacks at one pixel size; measures and draws mixed-script text."""

    def __init__(self, size: int, bold: bool = False):
        self.size = size
        self.line_height = round(size * 1.35)
        fonts = installed_fonts()
        primary = fonts.get(PRIMARY[bold]) or _bundled_dejavu(bold) or fonts.get(PRIMARY[False])
        self.faces = [self._face(primary)] if primary else [Face(None, ImageFont.load_default(size=size))]
        for name in FALLBACKS:
            path = fonts.get(name)
            if path and path != primary:
                try:
                    self.faces.append(self._face(path))
                except OSError as error:  # a broken font file is skipped, not fatal
                    log.debug("font %s unusable: %s", path, error)

    def _face(self, path: Path) -> Face:
        try:
            return Face(path, ImageFont.truetype(str(path), self.size))
        except OSError:
            if "Emoji" not in path.name:
                raise
            # colour bitmap fonts load only at their strike size
            return Face(path, ImageFont.truetype(str(path), BITMAP_STRIKE), self.size / BITMAP_STRIKE * 1.1, True)

    @property
    def primary(self) -> Face:
        return self.faces[0]

    def face_for(self, char: str) -> Face:
        if char in PRIMARY_HAS or char.isspace() or self.primary.covers(char):
            return self.primary
        return next((face for face in self.faces[1:] if face.covers(char)), self.primary)

    def runs(self, text: str) -> Iterator[tuple[Face, str]]:
        """`text` cut into pieces that one face draws."""
        current: Face | None = None
        piece = ""
        for char in text:
            face = self.face_for(char)
            if face is not current and piece:
                yield current, piece  # type: ignore[misc]
                piece = ""
            current = face
            piece += char
        if piece and current is not None:
            yield current, piece

    def width(self, text: str) -> float:
        return sum(face.font.getlength(piece) * face.scale for face, piece in self.runs(text))

    def draw(self, image: Image.Image, xy: tuple[float, float], text: str, fill: tuple[int, int, int]) -> None:
        """Draw one line with its top-left at `xy`."""
        draw = ImageDraw.Draw(image)
        x, y = xy
        for face, piece in self.runs(text):
            if face.scale == 1.0:
                draw.text((x, y), piece, fill=fill, font=face.font)
            else:  # a bitmap strike: draw large, scale to the line, paste with its alpha
                big = Image.new("RGBA", (max(1, round(face.font.getlength(piece))), BITMAP_STRIKE + 20), (0, 0, 0, 0))
                ImageDraw.Draw(big).text((0, 0), piece, font=face.font, embedded_color=face.colour,
                                         fill=(*fill, 255))
                small = big.resize((max(1, round(big.width * face.scale)), max(1, round(big.height * face.scale))),
                                   Image.Resampling.LANCZOS)
                image.paste(small, (round(x), round(y)), small)
            x += face.font.getlength(piece) * face.scale

    def wrap(self, text: str, width: float) -> list[str]:
        """Lines of at most `width` px: breaks at spaces, inside a word only where it is wider than a line
        (so CJK text, which has no spaces, wraps by character)."""
        lines: list[str] = []
        line = ""
        for word in _words(text):
            if self.width((line + word).rstrip()) <= width:
                line += word
                continue
            if line.strip():
                lines.append(line.rstrip())
                line = ""
            if self.width(word.rstrip()) <= width:
                line = word
                continue
            for char in word:  # wider than a line on its own: break it by characters
                if line and self.width((line + char).rstrip()) > width:
                    lines.append(line.rstrip())
                    line = ""
                line += char
        if line.strip() or not lines:
            lines.append(line.rstrip())
        return lines


def _words(text: str) -> Iterator[str]:
    """Words with their trailing spaces; each CJK character is a word of its own."""
    word = ""
    for char in " ".join(text.split()):
        if _is_wide(char):
            if word:
                yield word
            yield char
            word = ""
        elif char == " ":
            yield word + char
            word = ""
        else:
            word += char
    if word:
        yield word


def _is_wide(char: str) -> bool:
    code = ord(char)
    return 0x2E80 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF
