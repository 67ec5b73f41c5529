"""Inputs with known answers for the built-in kinds: documents, questions, and images of text."""

from __future__ import annotations

import io

DOCUMENTS = [
    {
        "id": "volcano",
        "text": "Lava from the erupting volcano flowed down the mountain and buried the village.",
    },
    {"id": "bread", "text": "Knead the dough for ten minutes, let it rise, then bake the loaf until golden."},
    {"id": "orbit", "text": "The satellite circles the planet every ninety minutes in a low orbit."},
    {
        "id": "tax",
        "text": "Income tax returns must be filed with the revenue office before the April deadline.",
    },
    {
        "id": "violin",
        "text": "She practised scales on her violin every evening before the orchestra concert.",
    },
]
# Paraphrases that share almost no words with the document they should find.
QUESTIONS = {
    "volcano": "What happened when molten rock poured from the peak onto the town?",
    "bread": "How do I make a homemade loaf in the oven?",
    "orbit": "How long does a spacecraft take to go around the earth?",
    "tax": "When is the deadline to submit my yearly earnings declaration?",
    "violin": "What did the musician rehearse on her string instrument?",
}
OCR_LINES = ["memvisor reads this line", "seven apples on a table"]


def text_png(lines: list[str], font_px: int = 32) -> bytes:
    """A small PNG of the given lines, black on white."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_px)
    image = Image.new("RGB", (760, 60 + int(font_px * 1.8) * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((30, 30 + int(font_px * 1.8) * index), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
