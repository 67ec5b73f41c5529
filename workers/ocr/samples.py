"""Pages of known text and the character error rate, for the OCR tests and benchmark.

Pages are drawn with Pillow's bundled font (``ImageFont.load_default(size=...)``, Aileron), so they
look the same on every machine with Pillow >= 10.1 and FreeType.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

A4_150DPI_PX = (1240, 1754)

_WORD_TEXT = (
    "the of and to in is was for on that with as by at from his her an are were which this be have had "
    "one not but all they their there been has more when will would who so no river market garden winter "
    "paper table window letter number station morning evening history science water silver engine doctor "
    "village figure report quarter measure balance service account Monday London Paris 2024 1987 42 365 "
    "12.50 7:30 A4 OCR page line"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class Page:
    image: Image.Image
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def text_page(font_px: int, size: tuple[int, int] = A4_150DPI_PX, seed: int = 1, margin_px: int = 90) -> Page:
    """Black lines of pseudo-random words on white, filling the page, line spacing 1.6 x font size."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_px)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    rng = random.Random(seed)
    lines: list[str] = []
    y = margin_px
    while y + font_px * 1.2 < size[1] - margin_px:
        line = _fill_line(rng, lambda s: draw.textlength(s, font=font) <= size[0] - 2 * margin_px)
        draw.text((margin_px, y), line, fill="black", font=font)
        lines.append(line)
        y += int(font_px * 1.6)
    return Page(image=image, lines=lines)


def _fill_line(rng: random.Random, fits: Callable[[str], bool]) -> str:
    words: list[str] = []
    while True:
        word = rng.choice(_WORDS)
        if not fits(" ".join([*words, word])):
            return " ".join(words)
        words.append(word)


def normalise(text: str) -> str:
    """Whitespace-insensitive form used for scoring: runs of whitespace become one space."""
    return " ".join(text.split())


def cer(hypothesis: str, truth: str) -> float:
    """Character error rate: edit distance / length of the truth, after normalise()."""
    hyp, ref = normalise(hypothesis), normalise(truth)
    if not ref:
        return float(len(hyp) > 0)
    return levenshtein(hyp, ref) / len(ref)


def levenshtein(a: str, b: str) -> int:
    """Edit distance by Myers' bit-parallel algorithm (Hyyrö's form): whole pages in milliseconds."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    full = (1 << len(a)) - 1
    top = 1 << (len(a) - 1)
    masks: dict[str, int] = {}
    for i, char in enumerate(a):
        masks[char] = masks.get(char, 0) | (1 << i)
    plus, minus, score = full, 0, len(a)
    for char in b:
        eq = masks.get(char, 0)
        xv = eq | minus
        xh = (((eq & plus) + plus) ^ plus) | eq
        ph = (minus | ~(xh | plus)) & full
        mh = plus & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        plus = (mh | ~(xv | ph)) & full
        minus = ph & xv
    return score
