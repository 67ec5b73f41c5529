"""OCR benchmark: the plain ``easyocr.Reader(['en'])`` against memvisor's ``ocr`` kind.

    python bench/ocr_bench.py --out bench/results/ocr.json [--repeat 2] [--engines plain,ours]

Each (engine, image) runs in a fresh subprocess that reads the same image twice: ``cold`` is from the
top of the child script (imports and model loading included) to the end of the first read, ``warm``
the second read in the same process. ``peak_mb`` is the child's VmHWM at exit (whole process), ``cpu_s``
its user+system CPU time. Runs alternate between engines so that both see the same machine load; with
--repeat N the fastest run of each pair is reported and every run is kept in the JSON.

Images are generated here (known text): a small 800x200 image of one line, and A4 pages at 150 dpi
(1240x1754) of small (18 px, ~8.6 pt) and large (48 px, ~23 pt) print. The plain Reader needs the
export-time environment (torch, torchvision, easyocr); ours needs the exported models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_STARTED = time.perf_counter()  # first thing: a child's cold time counts its imports

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IMAGES = {
    "small": {"font_px": 40, "size": (800, 200), "margin_px": 20},
    "a4_small_print": {"font_px": 18},
    "a4_large_print": {"font_px": 48},
}
CHILD_DEADLINE_S = 1800


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON results")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--engines", default="plain,ours")
    parser.add_argument("--images", default=",".join(IMAGES))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both (default: all)")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "IMAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--cold-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, image = args.child
        print(json.dumps(_child(engine, image, warm=not args.cold_only)))
        return 0
    if args.threads:
        # Read by our engine (OCR_THREADS) and by torch's OpenMP pool (OMP_NUM_THREADS) in the children.
        os.environ["OCR_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
    results = _bench(args.engines.split(","), args.images.split(","), args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    _print_table(results)
    return 0


def _bench(engines: list[str], images: list[str], repeat: int) -> dict[str, Any]:
    from workers.ocr import samples, settings

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ocr-bench-") as tmp:
        for name in images:
            page = samples.text_page(**IMAGES[name])  # type: ignore[arg-type]
            path = Path(tmp) / f"{name}.png"
            page.image.save(path)
            for attempt in range(repeat):
                for engine in engines:
                    run = _run_child(engine, path)
                    run.update(image=name, engine=engine, attempt=attempt)
                    run["cer"] = samples.cer(run.pop("text"), page.text)
                    runs.append(run)
                    print(_row(run), file=sys.stderr, flush=True)
    return {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "threads": settings.thread_count(),
        "best": _best(runs),
        "runs": runs,
    }


def _run_child(engine: str, image: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--out", "-", "--child", engine, str(image)],
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE_S,
        check=False,
    )
    wall_s = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{engine} on {image.name} failed:\n{out.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    report["process_wall_s"] = round(wall_s, 2)
    report["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
    return report


def _child(engine: str, image: str, warm: bool = True) -> dict[str, Any]:
    read = _plain_reader() if engine == "plain" else _our_reader()
    text = read(image)
    cold_s = time.perf_counter() - _STARTED
    warm_started = time.perf_counter()
    if warm:
        read(image)
    warm_s = time.perf_counter() - warm_started
    return {"cold_s": round(cold_s, 2), "warm_s": round(warm_s, 2), "peak_mb": _peak_mb(), "text": text}


def _plain_reader() -> Any:
    """EasyOCR as its README shows it, with the offline weights and no download."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    for op in ("nms", "qnms"):  # see workers.ocr.export._import_torch: CUDA torchvision on CPU torch
        torch.library.define(
            f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )
    import easyocr  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import easyocr_en_models  # type: ignore[import-untyped, import-not-found, unused-ignore]

    reader = easyocr.Reader(
        ["en"], gpu=False, model_storage_directory=easyocr_en_models.model_dir(), download_enabled=False,
        verbose=False,
    )  # fmt: skip

    def read(path: str) -> str:
        return "\n".join(str(item[1]) for item in reader.readtext(path))

    return read


def _our_reader() -> Any:
    from workers.ocr import engine, settings

    model_dir = settings.model_dir()

    def read(path: str) -> str:
        result = engine.read_text(Path(path), model_dir, lambda *_, **__: None)
        return str(result["text"])

    return read


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _best(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        key = (run["image"], run["engine"])
        if key not in best or run["cold_s"] < best[key]["cold_s"]:
            best[key] = run
    return list(best.values())


_COLUMNS = ("image", "engine", "peak_mb", "cold_s", "warm_s", "cpu_s", "cer")


def _row(run: dict[str, Any]) -> str:
    cells = [f"{run[c]:.4f}" if c == "cer" else str(run[c]) for c in _COLUMNS]
    return " | ".join(f"{cell:>14}" for cell in cells)


def _print_table(results: dict[str, Any]) -> None:
    print(" | ".join(f"{c:>14}" for c in _COLUMNS))
    for run in sorted(results["best"], key=lambda r: (list(IMAGES).index(r["image"]), r["engine"])):
        print(_row(run))


if __name__ == "__main__":
    sys.exit(main())
