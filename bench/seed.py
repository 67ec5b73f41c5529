"""The seed design's process: one interpreter importing the whole stack. Run as a child:

    python -m bench.seed [--site DIR:DIR]   ->  one JSON line on stdout

Each module's import is timed and followed by an RSS/PSS reading, so that the report can say where
the memory goes. A module that cannot be imported is recorded as missing and the rest still measured.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from typing import Any

SEED_MODULES = (
    "fastapi",
    "uvicorn",
    "sqlmodel",
    "supabase",
    "chromadb",
    "langgraph.graph",
    "torch",
    "torchvision",
    "easyocr",
)
# PyPI's torchvision is a CUDA build; against CPU-only torch its C ops do not load and its import dies
# in _meta_registrations. Defining these schemas first lets the pure-Python parts load
# (docs/architecture.md).
TORCHVISION_SCHEMAS = ("nms", "qnms")


def _rollup_mb() -> dict[str, float]:
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                fields[f"{name.lower()}_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return fields


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _prepare_torchvision() -> None:
    torch: Any = sys.modules["torch"]
    for op in TORCHVISION_SCHEMAS:
        torch.library.define(
            f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )


def _import(module: str) -> str | None:
    """Import one module; the error text if it cannot be."""
    if module == "torchvision" and "torch" in sys.modules:
        _prepare_torchvision()
    try:
        importlib.import_module(module)
    except Exception as exc:  # any failure is a finding, not a crash of the benchmark
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


def measure(modules: tuple[str, ...]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"module": "(interpreter)", "import_s": 0.0, **_rollup_mb()}]
    missing: dict[str, str] = {}
    for module in modules:
        started = time.perf_counter()
        error = _import(module)
        if error:
            missing[module] = error
            continue
        steps.append({"module": module, "import_s": round(time.perf_counter() - started, 2), **_rollup_mb()})
    return {
        "modules": list(modules),
        "missing": missing,
        "steps": steps,
        **_rollup_mb(),
        "hwm_mb": _hwm_mb(),
        "python": sys.executable,
    }


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--site":
        sys.path.extend(d for d in sys.argv[2].split(":") if d)
    print(json.dumps(measure(SEED_MODULES)))
