"""The ``ocr`` task kind: text, boxes and confidences from one image, EasyOCR's networks on CPU.

Imported by the API process to validate payloads, so this module imports nothing heavy: the runtime
(onnxruntime, numpy, OpenCV, Pillow) is imported inside the task function, in the worker.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from workers.ocr import settings
from workers.registry import TaskContext, task_kind

# Measured (bench/ocr_bench.py, VmHWM of a fresh process) with the fp32 networks: ~230 MB on a small
# image, ~320 MB on an A4 page at 150 dpi, ~340 MB on a 40 MP image (the pixel limit; decoded, then
# reduced to 12 MP); the int8 networks peak ~80 MB lower on a letter page (230 against 309 MB). Tiling
# bounds the detector's share whatever the image, so the estimate is the A4 figure plus room for the
# pages a zygote-forked worker inherits, and the ceiling is the 400 MB goal. VmData runs ~220 MB above
# RSS (numpy, OpenCV and onnxruntime reserve ~200 MB of it at import): 450 MB at a page's peak.
ESTIMATE_MB = 340
CEILING_MB = 400
DATA_SLACK_MB = 256  # see the declaration below
# A letter page takes ~3-15 s of CPU (int8 networks); a 40 MP image a few times that; a starter
# instance has < 1 CPU.
TIMEOUT_S = 300


class OcrInput(BaseModel):
    """``file`` is a plain file name inside the task's spool directory."""

    file: str = Field(min_length=1, max_length=255)
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1, max_length=4)
    detail: bool = True

    @field_validator("file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in (".", "..") or "\0" in value:
            raise ValueError("file must be a plain file name (no path separators, not '.' or '..')")
        return value

    @field_validator("languages")
    @classmethod
    def _offline_languages(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - settings.SUPPORTED_LANGUAGES)
        if unknown:
            supported = ", ".join(sorted(settings.SUPPORTED_LANGUAGES))
            raise ValueError(f"no offline OCR weights for {unknown}; supported languages: {supported}")
        return value


@task_kind(
    "ocr",
    input_model=OcrInput,
    estimate_mb=ESTIMATE_MB,
    ceiling_mb=CEILING_MB,
    timeout_s=TIMEOUT_S,
    retriable=True,
    switch="DISABLE_OCR",
    reads=lambda data_dir: [settings.model_dir(data_dir)],
    # Measured on a text image at 2 threads: VmData peaked at 425 MB against 217 MB resident (buffers
    # ONNX Runtime and the threads map but never touch): RLIMIT_DATA leaves room for that gap.
    data_slack_mb=DATA_SLACK_MB,
)
def run_ocr(payload: OcrInput, ctx: TaskContext) -> dict[str, Any]:
    """Read the text of an image: text, and per line its box and confidence."""
    from workers.ocr import engine

    ctx.progress("started", file=payload.file)
    result = engine.read_text(ctx.spool_dir / payload.file, settings.model_dir(ctx.data_dir), ctx.progress)
    if not payload.detail:
        result["lines"] = [{"text": line["text"]} for line in result["lines"]]
    return result
