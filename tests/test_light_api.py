"""The API process stays small: importing the app pulls in no heavy library."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness.server import ROOT

HEAVY = ["torch", "torchvision", "easyocr", "chromadb", "langgraph", "supabase", "onnxruntime", "numpy"]


def test_importing_the_app_loads_no_heavy_library() -> None:
    code = f"import json, sys; import api.main; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = {**os.environ, "ENABLE_DIAGNOSTIC_TASKS": "true", "DATA_DIR": "/nonexistent-is-fine"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
