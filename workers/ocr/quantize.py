"""int8 versions of the two exported networks, made once at export time (see export.py).

- The detector (CRAFT, VGG16-BN: nearly all of an OCR task's time) and the recognizer's convolutions
  are quantized statically: int8 weights per output channel, uint8 activations whose ranges come from
  calibration on pages drawn by workers.ocr.samples (deterministic, offline). ONNX Runtime's
  ORT_ENABLE_EXTENDED level fuses each QuantizeLinear/Conv/DequantizeLinear group into one integer
  convolution (the BASIC level does not, and runs slower than fp32).
- The recognizer's two LSTMs are quantized dynamically (their weights only).

Measured on real pages (bench/ocr_corpus.py): the word match of the int8 networks stays within the
fp32 ones' noise, for about a third of the detector's CPU time and two thirds of the recognizer's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from workers.ocr import samples
from workers.ocr.detect import network_input as detector_input
from workers.ocr.detect import tiles
from workers.ocr.recognize import HEIGHT_PX, network_input, to_model_height

# Calibration pages: (font px, seed) of samples.text_page, A4 at 150 dpi for the detector (every
# third 512 px tile) and one-line strips for the recognizer.
_DETECTOR_PAGES = ((14, 1), (18, 2), (24, 3), (36, 4))
_RECOGNIZER_LINES = ((14, 1), (18, 2), (24, 3), (32, 4), (48, 5))
_TILE_PX, _MARGIN_PX, _GRID_PX = 512, 32, 32


# CRAFT's head (conv_cls: five small convolutions at half resolution, ~2% of its work) stays fp32: its
# last layers produce the region and affinity scores that the thresholds cut, and in int8 they cost
# up to 0.03 of word match on a page (measured on a page of libtasn1.pdf: fp32 0.763, all int8 0.728,
# int8 but the head 0.750, plain EasyOCR 0.748).
_DETECTOR_FP32_PREFIX = "/net/conv_cls/"


def quantize_detector(fp32: Path, out: Path) -> None:
    import onnx

    head = [n.name for n in onnx.load(str(fp32)).graph.node if n.name.startswith(_DETECTOR_FP32_PREFIX)]
    _quantize_static(fp32, out, _detector_batches(), ["Conv"], exclude=head)


def quantize_recognizer(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped, import-not-found, unused-ignore]

    convs = out.with_suffix(".conv.tmp")
    _quantize_static(fp32, convs, _recognizer_batches(), ["Conv"])
    try:
        quantize_dynamic(convs, out, op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
    finally:
        convs.unlink(missing_ok=True)


def _quantize_static(
    fp32: Path,
    out: Path,
    batches: Iterator[np.ndarray[Any, Any]],
    ops: list[str],
    exclude: list[str] | None = None,
) -> None:
    from onnxruntime.quantization import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # type: ignore[import-untyped, import-not-found, unused-ignore]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, Any] | None:
            batch = next(batches, None)
            return None if batch is None else {"image": batch}

    prepared = out.with_suffix(".pre.tmp")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=ops,
            nodes_to_exclude=exclude or [],
        )
    finally:
        prepared.unlink(missing_ok=True)


def _detector_batches() -> Iterator[np.ndarray[Any, Any]]:
    for font_px, seed in _DETECTOR_PAGES:
        rgb = np.asarray(samples.text_page(font_px, seed=seed).image.convert("RGB"))
        height, width = rgb.shape[:2]
        canvas = (-(-height // _GRID_PX) * _GRID_PX, -(-width // _GRID_PX) * _GRID_PX)
        for index, (_, outer) in enumerate(tiles(canvas, _TILE_PX, _MARGIN_PX)):
            if index % 3 == 0:
                yield detector_input(rgb, outer)


def _recognizer_batches() -> Iterator[np.ndarray[Any, Any]]:
    for font_px, seed in _RECOGNIZER_LINES:
        strip = samples.text_page(font_px, size=(1000, int(font_px * 1.6) + 8), seed=seed, margin_px=4)
        scaled, ratio = to_model_height(np.asarray(strip.image.convert("L")))
        yield network_input(scaled, math.ceil(max(ratio, 1.0)) * HEIGHT_PX, 0.0)
