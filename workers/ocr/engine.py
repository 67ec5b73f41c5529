"""The OCR runtime: ONNX Runtime + numpy + OpenCV + Pillow, no torch.

Memory plan for one image (figures for an A4 page at 150 dpi, see bench/ocr_bench.py):
- the image is decoded (and reduced) before any model is loaded;
- the detector session lives only while the detector runs and is freed before the recognizer's is
  created, so the two networks' weights (21 MB + 5 MB in int8) never coexist;
- sessions use ORT_ENABLE_EXTENDED (fuses each int8 QuantizeLinear/Conv/DequantizeLinear group into
  one integer convolution, which BASIC does not; ALL measured no faster on the int8 detector, and its
  NCHWc layout adds a second copy of the weights), no CPU arena and no memory patterns (each
  activation is freed when its last reader is done instead of being pooled for the next run);
- glibc returns large freed buffers to the OS (see _return_freed_memory), so tile after tile reuses
  the same pages instead of growing the heap.
"""

from __future__ import annotations

import ctypes
import gc
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped, import-not-found, unused-ignore]

from workers.errors import WorkerError
from workers.ocr import settings
from workers.ocr.detect import DetectParams, detect, fit_canvas
from workers.ocr.imageio import load_image
from workers.ocr.recognize import Line, recognize

Array = np.ndarray[Any, Any]
Progress = Callable[..., None]

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 256 * 1024


class ModelsMissingError(WorkerError, FileNotFoundError):
    """The exported ONNX models are not where the worker looks for them."""


@dataclass(frozen=True)
class Models:
    detector: Path
    recognizer: Path
    characters: str


def find_models(model_dir: Path) -> Models:
    """The exported models in ``model_dir``, or ModelsMissingError naming the export command."""
    manifest_path = model_dir / settings.MANIFEST_FILE
    hint = settings.EXPORT_COMMAND.format(dir=model_dir)
    if not manifest_path.is_file():
        raise ModelsMissingError(f"OCR models are not exported in {model_dir}: run `{hint}` once")
    try:
        manifest = json.loads(manifest_path.read_text())
        version = manifest.get("export_version", 1)
        if version != settings.EXPORT_VERSION:
            raise ModelsMissingError(
                f"OCR models in {model_dir} come from export version {version}; this worker needs "
                f"version {settings.EXPORT_VERSION}: run `{hint}` again"
            )
        models = Models(
            detector=model_dir / manifest["detector"]["file"],
            recognizer=model_dir / manifest["recognizer"]["file"],
            characters=str(manifest["characters"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelsMissingError(
            f"OCR manifest {manifest_path} is unreadable ({exc}): run `{hint}` again"
        ) from None
    for path in (models.detector, models.recognizer):
        if not path.is_file():
            raise ModelsMissingError(f"OCR model {path} is missing: run `{hint}` again")
    return models


def read_text(
    image_path: Path, model_dir: Path, progress: Progress, params: DetectParams | None = None
) -> dict[str, Any]:
    """OCR one image file: ``{"text", "lines": [{"text", "box", "confidence"}]}``.

    The image is checked first: a bad file is the caller's error whatever the state of the models.
    """
    _return_freed_memory()
    started = time.perf_counter()
    image = load_image(image_path, settings.max_pixels(), settings.WORK_PIXELS)
    progress("decoded", width=image.source_size[0], height=image.source_size[1], scale=image.scale)
    models = find_models(model_dir)
    params = params or DetectParams()
    canvas, ratio = fit_canvas(image.rgb, params.canvas_px, params.mag_ratio)
    grey, scale = image.grey, image.scale
    del image  # the full-size RGB copy is not needed past this point
    with _network(models.detector) as detector:
        horizontal, free = detect(detector, canvas, ratio, params)
    del canvas
    progress("detected", boxes=len(horizontal) + len(free), elapsed_s=round(time.perf_counter() - started, 2))
    with _network(models.recognizer) as recognizer:
        lines = list(recognize(recognizer, grey, horizontal, free, models.characters))
    progress("recognized", lines=len(lines), elapsed_s=round(time.perf_counter() - started, 2))
    return _result(lines, scale)


class _Network:
    """One ONNX Runtime session; close() frees it even while callers still hold this object."""

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        options.intra_op_num_threads = settings.thread_count()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle pool threads sleep instead of spinning: on a shared or CPU-quota'd container spinning
        # burns the quota without doing work (measured: ~2x the CPU time for the same tile under load).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session: ort.InferenceSession | None = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self._input_name = self._session.get_inputs()[0].name

    def __call__(self, batch: Array) -> Array:
        if self._session is None:
            raise RuntimeError("network used after close()")
        outputs: list[Array] = self._session.run(None, {self._input_name: batch})
        return outputs[0]

    def close(self) -> None:
        self._session = None
        gc.collect()


@contextmanager
def _network(path: Path) -> Iterator[_Network]:
    network = _Network(path)
    try:
        yield network
    finally:
        network.close()


def _result(lines: list[Line], scale: float) -> dict[str, Any]:
    items = [
        {
            "text": line.text,
            "box": [[round(x * scale, 1), round(y * scale, 1)] for x, y in line.box],
            "confidence": round(line.confidence, 4),
        }
        for line in lines
    ]
    return {"text": join_lines(lines), "lines": items}


def join_lines(lines: list[Line]) -> str:
    """Boxes on one visual row joined by spaces, rows by newlines."""
    parts: list[str] = []
    previous: Line | None = None
    for line in lines:
        if previous is not None:
            parts.append(" " if _same_row(previous, line) else "\n")
        parts.append(line.text)
        previous = line
    return "".join(parts)


def _same_row(a: Line, b: Line) -> bool:
    a_top, a_bottom = a.box[0][1], a.box[2][1]
    b_centre = (b.box[0][1] + b.box[2][1]) / 2
    return a_top <= b_centre <= a_bottom


def _return_freed_memory() -> None:
    """Make glibc serve big buffers with mmap (returned to the OS on free) and trim eagerly.

    By default glibc raises its mmap threshold after the first large free, so tiles' 20-60 MB
    activations land on the heap and the process keeps the high-water mark of the fragmented heap.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    libc.mallopt(_M_TRIM_THRESHOLD, _MMAP_THRESHOLD_BYTES)
