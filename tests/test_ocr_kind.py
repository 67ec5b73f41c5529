"""The ``ocr`` kind, for real: generated pages of known text, bad files, import weight, peak memory.

Needs the OCR runtime (onnxruntime, numpy, opencv-python-headless, pillow) and, for the tests that
read text, the models exported once with ``python -m workers.ocr.export --out DIR`` (found through
OCR_MODEL_DIR, else DATA_DIR/models/ocr, else ./data/models/ocr). Without them those tests skip and say why.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from workers.cpu import whole_cpus
from workers.errors import TaskInputError
from workers.ocr import OcrInput, run_ocr, settings
from workers.registry import TaskContext, get_kind

REPO = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MB = 400
CHILD_DEADLINE_S = 900  # an A4 page takes ~20 s on 2 idle cores; CI machines may be far busier
MAX_CER = 0.05

for _module, _why in (
    ("numpy", "numpy"),
    ("PIL", "pillow"),
    ("cv2", "opencv-python-headless"),
    ("onnxruntime", "onnxruntime"),
):
    pytest.importorskip(_module, reason=f"the OCR runtime needs {_why}, which is not installed")

import numpy as np  # noqa: E402  (checked above)
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from workers.ocr import samples  # noqa: E402  (needs pillow, checked above)


def _models_dir() -> Path:
    return settings.model_dir()


def _require_models() -> Path:
    model_dir = _models_dir()
    if not (model_dir / settings.MANIFEST_FILE).is_file():
        pytest.skip(
            f"OCR models are not exported in {model_dir}: run "
            f"`python -m workers.ocr.export --out {model_dir}` (needs torch, easyocr, onnx), "
            "or set OCR_MODEL_DIR"
        )
    return model_dir


class Progress:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def _context(tmp_path: Path, model_dir: Path | None = None) -> tuple[TaskContext, Progress]:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    progress = Progress()
    data_dir = tmp_path / "data"
    if model_dir is not None:
        # data_dir/models/ocr is where the kind looks when OCR_MODEL_DIR is unset.
        (data_dir / "models").mkdir(parents=True, exist_ok=True)
        link = data_dir / "models" / "ocr"
        if not link.exists():
            link.symlink_to(model_dir.resolve(), target_is_directory=True)
    ctx = TaskContext(task_id="t-ocr", data_dir=data_dir, spool_dir=spool, send_progress=progress)
    return ctx, progress


def _run(ctx: TaskContext, name: str, **payload: Any) -> dict[str, Any]:
    return run_ocr(OcrInput(file=name, **payload), ctx)


# --- declaration and input model -------------------------------------------------------------------


def test_kind_is_registered_with_its_limits() -> None:
    spec = get_kind("ocr")
    assert spec.input_model is OcrInput
    assert spec.switch == "DISABLE_OCR"
    assert spec.retriable
    assert 0 < spec.estimate_mb <= spec.ceiling_mb <= 512


def test_import_pulls_in_nothing_heavy() -> None:
    code = (
        "import json, sys; import workers.ocr; "
        "print(json.dumps(sorted(m for m in ('torch', 'torchvision', 'easyocr', 'onnxruntime', 'numpy', "
        "'PIL', 'cv2') if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_child_env(), capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("name", ["../x.png", "a/b.png", "a\\b.png", "..", ".", ""])
def test_file_must_be_a_plain_name(name: str) -> None:
    with pytest.raises(ValidationError):
        OcrInput(file=name)


def test_languages_default_to_english_and_only_offline_ones_pass() -> None:
    assert OcrInput(file="p.png").languages == ["en"]
    with pytest.raises(ValidationError, match="no offline OCR weights"):
        OcrInput(file="p.png", languages=["en", "fr"])
    with pytest.raises(ValidationError):
        OcrInput(file="p.png", languages=[])


# --- bad files: each one a TaskInputError, before any model is touched ----------------------------------


def _png_bytes(width: int = 400, height: int = 120) -> bytes:
    import io

    page = samples.text_page(32, size=(width, height), margin_px=10)
    buffer = io.BytesIO()
    page.image.save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes that declares width x height grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _corrupt_png() -> bytes:
    data = bytearray(_png_bytes())
    start = data.index(b"IDAT") + 4
    for i in range(start + 2, min(start + 400, len(data) - 16)):
        data[i] ^= 0x5A
    return bytes(data)


BAD_FILES: dict[str, Any] = {
    "empty": lambda: b"",
    "not-an-image": lambda: b"%PDF-1.4 this is not an image at all\n" * 20,
    "png-signature-then-garbage": lambda: b"\x89PNG\r\n\x1a\n" + os.urandom(2000),
    "corrupt-png-data": _corrupt_png,
    "truncated-png": lambda: _png_bytes()[: len(_png_bytes()) // 2],
    "bomb-100k-by-100k": lambda: _png_bomb(100_000, 100_000),
    "bomb-just-over-the-limit": lambda: _png_bomb(8_000, 5_001),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_a_clear_input_error(tmp_path: Path, case: str) -> None:
    ctx, _ = _context(tmp_path)
    (ctx.spool_dir / "upload").write_bytes(BAD_FILES[case]())
    with pytest.raises(TaskInputError) as info:
        _run(ctx, "upload")
    assert str(info.value)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    ctx, _ = _context(tmp_path)
    with pytest.raises(TaskInputError, match="does not exist"):
        _run(ctx, "nothing.png")


def test_bomb_is_refused_from_the_header_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bomb(100_000, 100_000))
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from workers.errors import TaskInputError
        from workers.ocr.imageio import load_image
        try:
            load_image(Path({str(path)!r}), 40_000_000, 12_000_000)
        except TaskInputError as exc:
            # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
            status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
            print(int(status.split()[0]) // 1024, exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_child_env(), capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    peak_mb, message = out.stdout.split(" ", 1)
    assert "the limit is 40,000,000 pixels" in message
    assert int(peak_mb) < 200  # interpreter + numpy + PIL + cv2; decoding 10 GP would take 30 GB


def test_large_image_is_reduced_to_the_working_size(tmp_path: Path) -> None:
    from PIL import Image

    from workers.ocr.imageio import load_image

    path = tmp_path / "big.png"
    Image.new("L", (6000, 4000), 255).save(path)
    loaded = load_image(path, max_pixels=40_000_000, work_pixels=6_000_000)
    assert loaded.source_size == (6000, 4000)
    assert loaded.grey.shape == (2000, 3000) and loaded.rgb.shape == (2000, 3000, 3)
    assert loaded.scale == 2.0


def test_missing_models_name_the_export_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCR_MODEL_DIR", str(tmp_path / "no-models"))
    ctx, _ = _context(tmp_path)
    (ctx.spool_dir / "p.png").write_bytes(_png_bytes())
    with pytest.raises(FileNotFoundError, match=r"python -m workers\.ocr\.export --out"):
        _run(ctx, "p.png")


def test_models_of_an_older_export_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "old-models"
    old.mkdir()
    manifest = {"detector": {"file": "d.onnx"}, "recognizer": {"file": "r.onnx"}, "characters": "abc"}
    (old / settings.MANIFEST_FILE).write_text(json.dumps(manifest))  # an fp32 export: no version field
    for name in ("d.onnx", "r.onnx"):
        (old / name).write_bytes(b"onnx")
    monkeypatch.setenv("OCR_MODEL_DIR", str(old))
    ctx, progress = _context(tmp_path)
    (ctx.spool_dir / "p.png").write_bytes(_png_bytes())
    with pytest.raises(
        FileNotFoundError, match=r"export version 1; this worker needs version \d+: run `python"
    ):
        _run(ctx, "p.png")
    assert [e["message"] for e in progress.events] == ["started", "decoded"]


def test_cpu_quota_of_the_own_cgroup_bounds_the_threads(tmp_path: Path) -> None:
    """The quota of the worker's own cgroup (or a parent's), in whole CPUs, caps the thread pools."""
    proc = tmp_path / "cgroup"
    proc.write_text("0::/svc\n")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "cpu.max").write_text("50000 100000\n")
    assert whole_cpus(proc, tmp_path) == 1  # half a CPU: one thread, never none
    (tmp_path / "svc" / "cpu.max").write_text("150000 100000\n")
    assert whole_cpus(proc, tmp_path) == 1
    (tmp_path / "svc" / "cpu.max").write_text("max 100000\n")
    assert whole_cpus(proc, tmp_path) is None
    assert 1 <= settings.thread_count() <= len(os.sched_getaffinity(0))


# --- reading text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("font_px", "size"), [(18, (1240, 420)), (48, (1240, 520))], ids=["small", "large"])
def test_reads_known_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, font_px: int, size: Any) -> None:
    model_dir = _require_models()
    monkeypatch.delenv("OCR_MODEL_DIR", raising=False)
    ctx, progress = _context(tmp_path, model_dir)
    page = samples.text_page(font_px, size=size, seed=font_px)
    page.image.save(ctx.spool_dir / "page.png")

    result = _run(ctx, "page.png")

    error_rate = samples.cer(result["text"], page.text)
    assert error_rate < MAX_CER, f"CER {error_rate:.3f}:\n{result['text']}\n---\n{page.text}"
    assert len(result["lines"]) >= len(page.lines)
    for line in result["lines"]:
        assert line["text"]
        assert len(line["box"]) == 4 and all(len(point) == 2 for point in line["box"])
        assert 0.0 <= line["confidence"] <= 1.0
    assert [e["message"] for e in progress.events] == ["started", "decoded", "detected", "recognized"]
    json.dumps(result)  # the result travels as JSON


def test_batched_recognition_reads_what_one_crop_at_a_time_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.ocr import engine, recognize
    from workers.ocr.detect import DetectParams, detect, fit_canvas

    models = engine.find_models(_require_models())
    page = samples.text_page(18, size=(1240, 700), seed=7)
    rgb = np.asarray(page.image.convert("RGB"))
    grey = np.asarray(page.image.convert("L"))
    with engine._network(models.detector) as detector:
        horizontal, free = detect(detector, *fit_canvas(rgb, 2560), DetectParams())
    calls: list[int] = []

    def read(run: Any) -> list[str]:
        def counted(batch: Any) -> Any:
            calls.append(batch.shape[0])
            return run(batch)

        return [line.text for line in recognize.recognize(counted, grey, horizontal, free, models.characters)]

    with engine._network(models.recognizer) as recognizer:
        batched = read(recognizer)
        batches = len(calls)
        monkeypatch.setattr(recognize, "BATCH_INPUT_PX", 0)  # one crop per run
        calls.clear()
        alone = read(recognizer)
    assert batched == alone
    assert len(alone) >= len(page.lines)
    assert batches < len(alone) <= len(calls)  # fewer runs; each crop alone (some twice: faint text)


@given(
    ink=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24)),
    corner=st.tuples(st.integers(0, 23), st.integers(0, 23)),
    size=st.tuples(st.integers(1, 24), st.integers(1, 24)),
)
def test_inked_window_covers_every_inked_cell_of_the_core(ink: Any, corner: Any, size: Any) -> None:
    from workers.ocr import detect

    grid = 32
    rows, cols = ink.shape
    y0, x0 = min(corner[0], rows - 1), min(corner[1], cols - 1)
    y1, x1 = min(rows, y0 + size[0]), min(cols, x0 + size[1])
    core = (y0 * grid, x0 * grid, y1 * grid, x1 * grid)
    window = detect._inked(core, ink)
    inside = ink[y0:y1, x0:x1]
    if not inside.any():
        assert window is None
        return
    assert window is not None
    top, left, bottom, right = window
    assert all(v % grid == 0 for v in window)
    assert core[0] <= top < bottom <= core[2] and core[1] <= left < right <= core[3]
    ys, xs = np.nonzero(inside)
    assert top <= (y0 + ys.min()) * grid and bottom >= (y0 + ys.max() + 1) * grid
    assert left <= (x0 + xs.min()) * grid and right >= (x0 + xs.max() + 1) * grid


def test_blank_paper_is_not_run_through_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.ocr import engine
    from workers.ocr.detect import DetectParams, detect, fit_canvas

    models = engine.find_models(_require_models())
    page = samples.text_page(18, size=(1240, 1000), seed=3, margin_px=300)  # wide blank margins
    rgb = np.asarray(page.image.convert("RGB"))
    pixels: list[int] = []

    def boxes(detector: Any) -> list[list[float]]:
        def counted(batch: Any) -> Any:
            pixels.append(batch.shape[2] * batch.shape[3])
            return detector(batch)

        horizontal, free = detect(counted, *fit_canvas(rgb, 2560), DetectParams())
        corners = [
            [min(x for x, _ in q), max(x for x, _ in q), min(y for _, y in q), max(y for _, y in q)]
            for q in free
        ]
        return [*horizontal, *corners]  # [x_min, x_max, y_min, y_max]

    with engine._network(models.detector) as detector:
        cropped = boxes(detector)
        cropped_px = sum(pixels)
        pixels.clear()
        monkeypatch.setattr("workers.ocr.detect.INK_RANGE", -1)  # every cell inked: whole tiles
        whole = boxes(detector)
    assert cropped_px < 0.7 * sum(pixels)
    # The same text is found: where words split into boxes may differ, not what the boxes cover.
    assert len(cropped) >= len(page.lines) and len(whole) >= len(page.lines)
    assert _centres_covered(cropped, whole) and _centres_covered(whole, cropped)


def _centres_covered(boxes: list[list[float]], others: list[list[float]]) -> bool:
    def inside(box: list[float], other: list[float]) -> bool:
        x, y = (box[0] + box[1]) / 2, (box[2] + box[3]) / 2
        return other[0] <= x <= other[1] and other[2] <= y <= other[3]

    return all(any(inside(box, other) for other in others) for box in boxes)


def test_detail_false_keeps_only_text(tmp_path: Path) -> None:
    model_dir = _require_models()
    ctx, _ = _context(tmp_path, model_dir)
    samples.text_page(40, size=(800, 200), margin_px=20).image.save(ctx.spool_dir / "p.png")
    result = _run(ctx, "p.png", detail=False)
    assert result["lines"] and all(set(line) == {"text"} for line in result["lines"])


def test_blank_image_has_no_text(tmp_path: Path) -> None:
    from PIL import Image

    model_dir = _require_models()
    ctx, _ = _context(tmp_path, model_dir)
    Image.new("RGB", (640, 480), "white").save(ctx.spool_dir / "blank.jpg")
    assert _run(ctx, "blank.jpg") == {"text": "", "lines": []}


# --- memory: the whole worker process on an A4 page ------------------------------------------------------


_PEAK_CHILD = """
import json, sys
from pathlib import Path
from workers.ocr import OcrInput, run_ocr, samples
from workers.registry import TaskContext
spool = Path(sys.argv[1])
page = samples.text_page(18)
page.image.save(spool / "a4.png")
del page
ctx = TaskContext(task_id="peak", data_dir=spool, spool_dir=spool, send_progress=lambda event: None)
result = run_ocr(OcrInput(file="a4.png"), ctx)
status = Path("/proc/self/status").read_text()
peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
print(json.dumps({"peak_mb": peak_kb / 1024, "text": result["text"]}))
"""


@pytest.mark.timeout(CHILD_DEADLINE_S + 60)
def test_a4_page_peak_rss_stays_under_400_mb(tmp_path: Path) -> None:
    model_dir = _require_models()
    env = _child_env()
    env["OCR_MODEL_DIR"] = str(model_dir.resolve())
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=CHILD_DEADLINE_S, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["peak_mb"] <= PEAK_LIMIT_MB, f"peak {report['peak_mb']:.0f} MB"
    assert samples.cer(report["text"], samples.text_page(18).text) < MAX_CER


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env
