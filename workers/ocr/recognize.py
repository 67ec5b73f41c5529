"""Text recognition: EasyOCR's english_g2 (ONNX) on each detected box, greedy CTC decoding.

Crops, resizing, padding, the low-contrast second pass and the confidence score follow EasyOCR 1.7.2
(utils.get_image_list, recognition.AlignCollate / NormalizePAD / recognizer_predict / get_text) with
readtext's defaults on CPU (one box per forward pass), so each line gets the same network input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2  # type: ignore[import-not-found, unused-ignore]
import numpy as np
from PIL import Image

from workers.ocr.detect import FreeBox, HBox

Array = np.ndarray[Any, Any]
RunFn = Callable[[Array], Array]
Quad = list[list[float]]

HEIGHT_PX = 64
CONTRAST_THS = 0.1
ADJUST_CONTRAST = 0.5
# A wider network input is cut into pieces: the recognizer's activations grow with width, and a
# 4096 px wide line (aspect 64:1) is already longer than any line of an A4 page.
MAX_INPUT_WIDTH_PX = 4096
# Columns of input per batch (all crops of a batch share one width): 8 full-width lines of an A4 page.
BATCH_INPUT_PX = 8192


@dataclass(frozen=True)
class Line:
    box: Quad
    text: str
    confidence: float


def recognize(
    run: RunFn, grey: Array, horizontal: list[HBox], free: list[FreeBox], characters: str
) -> Iterator[Line]:
    """One Line per box, horizontal boxes first (as EasyOCR orders them).

    Crops whose network input has the same width run as one batch: each is padded to that width
    exactly as when run alone, so the batch changes how often the network runs, not what it reads.
    Batches hold at most BATCH_INPUT_PX columns in all, which bounds their activations.
    """
    labels = np.array(["", *characters])  # index 0 is the CTC blank
    crops = list(_crops(grey, horizontal, free))
    lines: dict[int, Line] = {}
    for batch in _batches(crops):
        for index, (text, confidence) in zip(
            batch, _read_batch(run, [crops[i] for i in batch], labels), strict=True
        ):
            lines[index] = _second_chance(run, crops[index], text, confidence, labels)
    for index in sorted(lines):
        yield lines[index]


@dataclass(frozen=True)
class _Crop:
    box: Quad
    scaled: Array  # the crop at the model's height
    width_px: int  # the network input's width when run alone (EasyOCR, batch_size=1)


def _crops(grey: Array, horizontal: list[HBox], free: list[FreeBox]) -> Iterator[_Crop]:
    for box in horizontal:
        crop, quad = _horizontal_crop(grey, box)
        if crop is not None:
            yield _crop(crop, quad)
    for free_box in free:
        warped = _four_point_transform(grey, np.array(free_box, dtype=np.float32))
        if min(warped.shape[:2]) > 0:
            yield _crop(warped, free_box)


def _crop(image: Array, box: Quad) -> _Crop:
    scaled, ratio = to_model_height(image)
    return _Crop(box=box, scaled=scaled, width_px=math.ceil(max(ratio, 1.0)) * HEIGHT_PX)


def _batches(crops: list[_Crop]) -> Iterator[list[int]]:
    """Indices of crops grouped by input width, at most BATCH_INPUT_PX columns a batch; a crop too
    wide for one input is a batch of its own (it is read in pieces)."""
    by_width: dict[int, list[int]] = {}
    for index, crop in enumerate(crops):
        by_width.setdefault(crop.width_px, []).append(index)
    for width_px, indices in sorted(by_width.items()):
        size = max(1, BATCH_INPUT_PX // width_px) if width_px <= MAX_INPUT_WIDTH_PX else 1
        for start in range(0, len(indices), size):
            yield indices[start : start + size]


def _read_batch(run: RunFn, crops: list[_Crop], labels: Array) -> list[tuple[str, float]]:
    if len(crops) == 1:
        return [_read_pieces(run, crops[0].scaled, crops[0].width_px, labels, adjust_contrast=0.0)]
    batch = np.concatenate([network_input(c.scaled, c.width_px, 0.0) for c in crops])
    return [_decode(logits, labels) for logits in run(batch)]


def _second_chance(run: RunFn, crop: _Crop, text: str, confidence: float, labels: Array) -> Line:
    if confidence < CONTRAST_THS:
        # EasyOCR's second chance for faint text: stretch the contrast, keep the better reading.
        text2, confidence2 = _read_pieces(run, crop.scaled, crop.width_px, labels, ADJUST_CONTRAST)
        if confidence2 >= confidence:
            text, confidence = text2, confidence2
    return Line(box=crop.box, text=text, confidence=confidence)


def _horizontal_crop(grey: Array, box: HBox) -> tuple[Array | None, Quad]:
    max_y, max_x = grey.shape
    x_min, x_max = max(0, box[0]), min(box[1], max_x)
    y_min, y_max = max(0, box[2]), min(box[3], max_y)
    quad = [[x_min, y_min], [x_max, y_min], [x_max, y_max], [x_min, y_max]]
    if x_max <= x_min or y_max <= y_min:
        return None, [[float(x), float(y)] for x, y in quad]
    return grey[y_min:y_max, x_min:x_max], [[float(x), float(y)] for x, y in quad]


def _four_point_transform(image: Array, rect: Array) -> Array:
    tl, tr, br, bl = rect
    width = max(int(np.linalg.norm(br - bl)), int(np.linalg.norm(tr - tl)))
    height = max(int(np.linalg.norm(tr - br)), int(np.linalg.norm(tl - bl)))
    if width == 0 or height == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    target = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(rect, target)
    warped: Array = cv2.warpPerspective(image, matrix, (width, height))
    return warped


def to_model_height(crop: Array) -> tuple[Array, float]:
    """compute_ratio_and_resize: height 64 (width 64 for vertical crops), bilinear."""
    height, width = crop.shape[:2]
    ratio = width / height
    if ratio < 1.0:
        ratio = 1.0 / ratio
        size = (HEIGHT_PX, int(HEIGHT_PX * ratio))
    else:
        size = (int(HEIGHT_PX * ratio), HEIGHT_PX)
    return cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR), ratio


def _read_pieces(
    run: RunFn, image: Array, width_px: int, labels: Array, adjust_contrast: float
) -> tuple[str, float]:
    if width_px <= MAX_INPUT_WIDTH_PX:
        return _read_one(run, image, width_px, labels, adjust_contrast)
    texts, confidences = [], []
    for piece in _split_wide(image):
        piece_width = math.ceil(max(piece.shape[1] / piece.shape[0], 1.0)) * HEIGHT_PX
        text, confidence = _read_one(run, piece, piece_width, labels, adjust_contrast)
        texts.append(text)
        confidences.append(confidence)
    return " ".join(t.strip() for t in texts if t.strip()), min(confidences)


def _split_wide(image: Array) -> Iterator[Array]:
    """Pieces at most MAX_INPUT_WIDTH_PX wide, cut at the lightest column of each piece's last
    quarter (on a line of text, a gap between words)."""
    start, total = 0, image.shape[1]
    limit = MAX_INPUT_WIDTH_PX - HEIGHT_PX
    while total - start > limit:
        window = image[:, start + limit * 3 // 4 : start + limit]
        cut = start + limit * 3 // 4 + int(np.argmax(window.mean(axis=0)))
        yield image[:, start:cut]
        start = cut
    yield image[:, start:]


def _read_one(
    run: RunFn, image: Array, width_px: int, labels: Array, adjust_contrast: float
) -> tuple[str, float]:
    tensor = network_input(image, width_px, adjust_contrast)
    logits = run(tensor)[0]
    return _decode(logits, labels)


def network_input(image: Array, width_px: int, adjust_contrast: float) -> Array:
    """AlignCollate + NormalizePAD: bicubic to height 64, [-1, 1], right-padded with the last column."""
    if adjust_contrast > 0:
        image = _adjust_contrast_grey(image, adjust_contrast)
    height, width = image.shape[:2]
    resized_w = min(math.ceil(HEIGHT_PX * width / height), width_px)
    resized = np.asarray(Image.fromarray(image, "L").resize((resized_w, HEIGHT_PX), Image.Resampling.BICUBIC))
    values = resized.astype(np.float32) / np.float32(255.0)
    values = (values - np.float32(0.5)) / np.float32(0.5)
    padded = np.empty((1, 1, HEIGHT_PX, width_px), dtype=np.float32)
    padded[0, 0, :, :resized_w] = values
    padded[0, 0, :, resized_w:] = values[:, -1:]
    return padded


def _adjust_contrast_grey(image: Array, target: float) -> Array:
    high, low = float(np.percentile(image, 90)), float(np.percentile(image, 10))
    contrast = (high - low) / max(10.0, high + low)
    if contrast >= target:
        return image
    ratio = 200.0 / max(10.0, high - low)
    stretched = (image.astype(int) - low + 25) * ratio
    return np.clip(stretched, 0, 255).astype(np.uint8)


def _decode(logits: Array, labels: Array) -> tuple[str, float]:
    """Greedy CTC decoding; confidence is EasyOCR's custom_mean of the non-blank maxima."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    keep = np.insert(best[1:] != best[:-1], 0, True) & (best != 0)
    text = "".join(labels[best[keep]])
    maxima = probs.max(axis=1)[best != 0]
    if maxima.size == 0:
        return text, 0.0
    return text, float(maxima.prod() ** (2.0 / math.sqrt(maxima.size)))
