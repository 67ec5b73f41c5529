"""Text detection: CRAFT (ONNX) run in overlapping tiles, then EasyOCR's box extraction and grouping.

Run whole, CRAFT's activations on an A4 page at 150 dpi reach ~1.5 GB (its first layers hold 64-128
channels of float32 at full resolution). Run in tiles, the peak is bounded by the tile size whatever
the page size; each tile carries a margin of real neighbouring pixels whose output is discarded, so
the stitched score map matches the whole-image one closely (see tests for the end-to-end check).
Box extraction and grouping follow EasyOCR 1.7.2 (craft_utils.getDetBoxes_core, utils.group_text_box)
with its readtext defaults, so the recognizer gets the same crops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2  # type: ignore[import-not-found, unused-ignore]
import numpy as np

Array = np.ndarray[Any, Any]
HBox = list[int]  # [x_min, x_max, y_min, y_max]
FreeBox = list[list[float]]  # four [x, y] corners, clockwise from top-left
RunFn = Callable[[Array], Array]

_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0
# Tile origins and sizes stay on this grid so that every pooling window falls where it would on the
# whole image (CRAFT downsamples by 16 and EasyOCR pads the canvas to a multiple of 32).
_GRID_PX = 32


@dataclass(frozen=True)
class DetectParams:
    """EasyOCR readtext's defaults."""

    canvas_px: int = 2560
    mag_ratio: float = 1.0  # the image's scale before the canvas limit, as EasyOCR's mag_ratio
    text_threshold: float = 0.7
    link_threshold: float = 0.4
    low_text: float = 0.4
    slope_ths: float = 0.1
    ycenter_ths: float = 0.5
    height_ths: float = 0.5
    width_ths: float = 0.5
    add_margin: float = 0.1
    min_size_px: int = 20
    # Measured on A4 pages at 150 dpi (bench/ocr_bench.py): 512 px tiles with a 32 px margin keep the
    # detector's activations near 160 MB and compute ~1.2x the whole image's pixels; the stitched
    # scores differ from the whole-image ones only far from the text's centre lines, and the text read
    # was as close to the truth as the untiled detector's (wider margins measured no better).
    tile_px: int = 512
    tile_margin_px: int = 32


def detect(run: RunFn, canvas: Array, ratio: float, params: DetectParams) -> tuple[list[HBox], list[FreeBox]]:
    """Boxes of text, in the original image's pixels: axis-aligned line boxes and rotated word boxes.

    ``canvas`` and ``ratio`` come from fit_canvas() of the image.
    """
    maps = score_maps(run, canvas, params.tile_px, params.tile_margin_px)
    boxes = boxes_from_maps(maps[..., 0], maps[..., 1], params)
    polys = [_to_image_coords(box, ratio) for box in boxes]
    horizontal, free = group_text_boxes(polys, params)
    horizontal = [b for b in horizontal if max(b[1] - b[0], b[3] - b[2]) > params.min_size_px]
    free = [b for b in free if max(_spread(p[0] for p in b), _spread(p[1] for p in b)) > params.min_size_px]
    return horizontal, free


def _to_image_coords(box: Array, ratio: float) -> Array:
    # Score maps are at half the network input's resolution. Computed as EasyOCR does (float64 factors
    # applied in place to float32, then truncated) so that the integer boxes come out identical.
    scaled = box.copy()
    scaled *= ((1 / ratio) * 2, (1 / ratio) * 2)
    return scaled.astype(np.int32).reshape(-1)


def fit_canvas(rgb: Array, canvas_px: int, mag_ratio: float = 1.0) -> tuple[Array, float]:
    """The detector's view of ``rgb`` (uint8 HxWx3): scaled by mag_ratio, long side at most
    canvas_px (EasyOCR's resize_aspect_ratio); and the ratio."""
    height, width = rgb.shape[:2]
    target = min(mag_ratio * max(height, width), float(canvas_px))
    ratio = target / max(height, width)
    if ratio == 1.0:
        return rgb, ratio
    size = (int(width * ratio), int(height * ratio))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR), ratio


def score_maps(run: RunFn, rgb: Array, tile_px: int, margin_px: int) -> Array:
    """CRAFT's (region, affinity) scores for ``rgb``, at half resolution, computed tile by tile.

    Each tile's core is first shrunk to the grid cells that hold ink, grown by INK_PAD_PX (a blank
    tile is skipped): on blank paper CRAFT scores far below every threshold, so the page margins and
    the gaps between blocks of text cost nothing and read as they would have.
    """
    height, width = rgb.shape[:2]
    canvas_h, canvas_w = _round_up(height, _GRID_PX), _round_up(width, _GRID_PX)
    maps = np.zeros((canvas_h // 2, canvas_w // 2, 2), dtype=np.float32)
    ink = ink_cells(rgb)
    for tile_core, _ in tiles((canvas_h, canvas_w), tile_px, margin_px):
        core = _inked(tile_core, ink)
        if core is None:
            continue
        outer = _grow_window(core, _round_down(margin_px, _GRID_PX), (canvas_h, canvas_w))
        scores = run(network_input(rgb, outer))
        cy, cx = (core[0] - outer[0]) // 2, (core[1] - outer[1]) // 2
        ch, cw = (core[2] - core[0]) // 2, (core[3] - core[1]) // 2
        maps[core[0] // 2 : core[2] // 2, core[1] // 2 : core[3] // 2] = scores[0, cy : cy + ch, cx : cx + cw]
    return maps


# A grid cell holds ink when its pixel values span more than this (0-255, any channel): text on paper
# spans ~200, scanner noise and flat tints a few units.
INK_RANGE = 32
# Around the inked cells, this much of the core is computed too: CRAFT's region and affinity scores
# reach a few pixels beyond the strokes.
INK_PAD_PX = 32


def ink_cells(rgb: Array) -> Array:
    """Boolean grid, one cell per _GRID_PX square of the canvas: does the cell hold ink?"""
    height, width = rgb.shape[:2]
    rows, cols = -(-height // _GRID_PX), -(-width // _GRID_PX)
    padded = np.pad(rgb, ((0, rows * _GRID_PX - height), (0, cols * _GRID_PX - width), (0, 0)), mode="edge")
    cells = padded.reshape(rows, _GRID_PX, cols, _GRID_PX, 3)
    spread = cells.max(axis=(1, 3)).astype(np.int16) - cells.min(axis=(1, 3))
    inked: Array = spread.max(axis=-1) > INK_RANGE
    return inked


def _inked(core: Window, ink: Array) -> Window | None:
    """The part of ``core`` around its inked cells (grown by INK_PAD_PX), or None if it has none."""
    y0, x0, y1, x1 = (v // _GRID_PX for v in core)
    ys, xs = np.nonzero(ink[y0:y1, x0:x1])
    if ys.size == 0:
        return None
    pad = INK_PAD_PX // _GRID_PX
    top, left = max(y0, y0 + int(ys.min()) - pad), max(x0, x0 + int(xs.min()) - pad)
    bottom, right = min(y1, y0 + int(ys.max()) + 1 + pad), min(x1, x0 + int(xs.max()) + 1 + pad)
    return top * _GRID_PX, left * _GRID_PX, bottom * _GRID_PX, right * _GRID_PX


def _grow_window(core: Window, margin_px: int, canvas: tuple[int, int]) -> Window:
    return (max(0, core[0] - margin_px), max(0, core[1] - margin_px),
            min(canvas[0], core[2] + margin_px), min(canvas[1], core[3] + margin_px))  # fmt: skip


Window = tuple[int, int, int, int]  # y0, x0, y1, x1


def tiles(canvas: tuple[int, int], tile_px: int, margin_px: int) -> Iterator[tuple[Window, Window]]:
    """(core, outer) windows covering the canvas: cores tile it exactly; outer = core + margin.

    Cores are spread evenly (no thin last tile); outer windows are at most ``tile_px`` a side.
    """
    margin_px = _round_down(margin_px, _GRID_PX)
    core_max = max(_GRID_PX, _round_down(tile_px - 2 * margin_px, _GRID_PX))
    canvas_h, canvas_w = canvas
    for y0, y1 in _spans(canvas_h, core_max):
        for x0, x1 in _spans(canvas_w, core_max):
            core = (y0, x0, y1, x1)
            yield core, _grow_window(core, margin_px, canvas)


def _spans(length: int, core_max: int) -> Iterator[tuple[int, int]]:
    count = -(-length // core_max)
    core = min(core_max, _round_up(-(-length // count), _GRID_PX))
    for start in range(0, length, core):
        yield start, min(start + core, length)


def network_input(rgb: Array, window: Window) -> Array:
    """NCHW float32 of one window; beyond the image, zeros as on EasyOCR's padded canvas."""
    y0, x0, y1, x1 = window
    tile = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.float32)
    part = rgb[y0:y1, x0:x1]
    tile[: part.shape[0], : part.shape[1]] = part
    tile -= _MEAN_RGB
    tile /= _STD_RGB
    return np.ascontiguousarray(tile.transpose(2, 0, 1)[np.newaxis])


@dataclass(frozen=True)
class _Regions:
    text_map: Array
    text_score: Array  # text_map > low_text
    link_score: Array  # link_map > link_threshold
    labels: Array  # connected components of text_score | link_score


def boxes_from_maps(text_map: Array, link_map: Array, params: DetectParams) -> list[Array]:
    """Quadrilaterals (4x2 float32, in score-map pixels) around each connected text region."""
    text_score = text_map > params.low_text
    link_score = link_map > params.link_threshold
    combined = (text_score | link_score).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(combined, connectivity=4)
    regions = _Regions(text_map, text_score, link_score, labels)
    boxes = []
    for k in range(1, count):
        box = _component_box(k, stats[k], regions, params.text_threshold)
        if box is not None:
            boxes.append(box)
    return boxes


def _component_box(k: int, stat: Array, regions: _Regions, text_threshold: float) -> Array | None:
    x, y, w, h, size = (int(v) for v in stat[:5])
    if size < 10:
        return None
    # EasyOCR works on whole-map masks per component; everything it touches lies inside the component's
    # bounding box grown by the dilation radius, so working in that window gives the same box, faster.
    niter = int(math.sqrt(size * min(w, h) / (w * h)) * 2)
    img_h, img_w = regions.labels.shape
    sx, sy = max(0, x - niter), max(0, y - niter)
    ex, ey = min(img_w, x + w + niter + 1), min(img_h, y + h + niter + 1)
    mine = regions.labels[sy:ey, sx:ex] == k
    if regions.text_map[sy:ey, sx:ex][mine].max() < text_threshold:
        return None
    segmap = np.where(mine, np.uint8(255), np.uint8(0))
    link_only = regions.link_score[sy:ey, sx:ex] & ~regions.text_score[sy:ey, sx:ex]
    segmap[link_only] = 0
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (1 + niter, 1 + niter))
    segmap = cv2.dilate(segmap, kernel)
    ys, xs = np.nonzero(segmap)
    points = np.stack([xs + sx, ys + sy], axis=1)
    return _min_area_box(points)


def _min_area_box(points: Array) -> Array:
    box = cv2.boxPoints(cv2.minAreaRect(points))
    w, h = np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[1] - box[2])
    if abs(1 - max(w, h) / (min(w, h) + 1e-5)) <= 0.1:
        # A near-square rotated rectangle is a diamond artefact: use the axis-aligned box.
        left, top = points.min(axis=0)
        right, bottom = points.max(axis=0)
        box = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.float32)
    start = int(box.sum(axis=1).argmin())
    return np.roll(box, 4 - start, 0)


def group_text_boxes(polys: list[Array], params: DetectParams) -> tuple[list[HBox], list[FreeBox]]:
    """Merge near-horizontal word boxes into line boxes; keep slanted ones as free quadrilaterals."""
    horizontal: list[list[float]] = []
    free: list[FreeBox] = []
    for poly in polys:
        slope_up = (poly[3] - poly[1]) / max(10, poly[2] - poly[0])
        slope_down = (poly[5] - poly[7]) / max(10, poly[4] - poly[6])
        if max(abs(slope_up), abs(slope_down)) < params.slope_ths:
            xs, ys = poly[0::2], poly[1::2]
            x_min, x_max, y_min, y_max = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
            horizontal.append([x_min, x_max, y_min, y_max, 0.5 * (y_min + y_max), y_max - y_min])
        else:
            free.append(_free_box(poly, params.add_margin))
    horizontal.sort(key=lambda item: item[4])
    merged: list[HBox] = []
    for line in _rows(horizontal, params.ycenter_ths):
        merged.extend(_merge_row(line, params))
    return merged, free


def _free_box(poly: Array, add_margin: float) -> FreeBox:
    height = float(np.linalg.norm([poly[6] - poly[0], poly[7] - poly[1]]))
    width = float(np.linalg.norm([poly[2] - poly[0], poly[3] - poly[1]]))
    margin = int(1.44 * add_margin * min(width, height))
    theta13 = abs(np.arctan((poly[1] - poly[5]) / max(10, poly[0] - poly[4])))
    theta24 = abs(np.arctan((poly[3] - poly[7]) / max(10, poly[2] - poly[6])))
    c13, s13 = np.cos(theta13) * margin, np.sin(theta13) * margin
    c24, s24 = np.cos(theta24) * margin, np.sin(theta24) * margin
    return [
        [float(poly[0] - c13), float(poly[1] - s13)],
        [float(poly[2] + c24), float(poly[3] - s24)],
        [float(poly[4] + c13), float(poly[5] + s13)],
        [float(poly[6] - c24), float(poly[7] + s24)],
    ]


def _rows(boxes: list[list[float]], ycenter_ths: float) -> Iterator[list[list[float]]]:
    """Runs of boxes (sorted by y centre) whose centres stay within ycenter_ths x mean height."""
    row: list[list[float]] = []
    for box in boxes:
        if row and abs(np.mean([b[4] for b in row]) - box[4]) >= ycenter_ths * np.mean([b[5] for b in row]):
            yield row
            row = []
        row.append(box)
    yield row


def _merge_row(row: list[list[float]], params: DetectParams) -> list[HBox]:
    if not row:
        return []
    if len(row) == 1:
        box = row[0]
        margin = int(params.add_margin * min(box[1] - box[0], box[5]))
        return [_grow(box, margin)]
    groups: list[list[list[float]]] = []
    for box in sorted(row, key=lambda item: item[0]):
        if groups:
            group = groups[-1]
            mean_h = np.mean([b[5] for b in group])
            near = box[0] - group[-1][1] < params.width_ths * (box[3] - box[2])
            if abs(mean_h - box[5]) < params.height_ths * mean_h and near:
                group.append(box)
                continue
        groups.append([box])
    merged = []
    for group in groups:
        x_min, x_max = min(b[0] for b in group), max(b[1] for b in group)
        y_min, y_max = min(b[2] for b in group), max(b[3] for b in group)
        margin = int(params.add_margin * min(x_max - x_min, y_max - y_min))
        merged.append(_grow([x_min, x_max, y_min, y_max], margin))
    return merged


def _grow(box: list[float], margin: int) -> HBox:
    return [int(box[0] - margin), int(box[1] + margin), int(box[2] - margin), int(box[3] + margin)]


def _spread(values: Iterator[float]) -> float:
    items = list(values)
    return max(items) - min(items)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _round_down(value: int, step: int) -> int:
    return value // step * step
