"""The OCR page corpus: real pages of PDFs from Debian ``-doc`` packages, and the word-match metric.

    python -m bench.ocr_corpus [--engine ours|plain] [--pages KEY,...]

reads each page with one engine in this process and prints its word match against the truth.
``--plain-child IMAGE [--site DIR:DIR]`` is the OCR scenario's baseline: a fresh process that reads
one image with a plain ``easyocr.Reader(['en'])`` (``--site``: site-packages appended to sys.path for
torch and easyocr kept in another venv) and prints its cold time, VmHWM and text as one JSON line.
Pages are rendered at bench time (``pdftoppm -r 150``, poppler-utils); the truth is ``pdftotext`` of the
same page. The packages are installed by ``make bench`` (BENCH_DEBS in the Makefile).

Word match (``word_match``): both texts are NFKC-normalised (pdftotext keeps ligatures such as "ﬁ")
and split on whitespace into words, case and punctuation kept; with H and T the multisets of words of
the OCR text and of the truth, match = 2·|H ∩ T| / (|H| + |T|) (the F1 score of the words, counted
with multiplicity). It ignores reading order, so a two-column page read row by row loses nothing:
it measures what was read, not the order the OCR engine and pdftotext chose for the columns.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # first thing: the plain child's cold time counts its imports

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import unicodedata  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

DPI = 150
_R = "/usr/share/R/doc/manual"
_ASY = "/usr/share/doc/asymptote"
_DEVREF = "/usr/share/developers-reference/developers-reference.pdf"


@dataclass(frozen=True)
class CorpusPage:
    key: str
    package: str  # the Debian package shipping the PDF
    pdf: str
    page: int  # 1-based
    layout: str


PAGES = (
    CorpusPage("r-intro-title", "r-doc-pdf", f"{_R}/R-intro.pdf", 1, "title page"),
    CorpusPage("r-intro-prose", "r-doc-pdf", f"{_R}/R-intro.pdf", 12, "prose with code"),
    CorpusPage("r-faq", "r-doc-pdf", f"{_R}/R-FAQ.pdf", 6, "prose"),
    CorpusPage("r-admin-code", "r-doc-pdf", f"{_R}/R-admin.pdf", 20, "code and prose"),
    CorpusPage("gnuplot-title", "gnuplot-doc", "/usr/share/doc/gnuplot/gnuplot.pdf", 1, "title page, names"),
    CorpusPage("gnuplot-table", "gnuplot-doc", "/usr/share/doc/gnuplot/gnuplot.pdf", 151, "table"),
    CorpusPage("asy-refcard", "asymptote-doc", f"{_ASY}/asyRefCard.pdf", 1, "two-column reference card"),
    CorpusPage("asy-cad", "asymptote-doc", f"{_ASY}/CAD.pdf", 1, "title, contents, prose"),
    CorpusPage("asy-latex", "asymptote-doc", f"{_ASY}/asy-latex.pdf", 1, "title, abstract, contents"),
    CorpusPage("asy-manual-code", "asymptote-doc", f"{_ASY}/asymptote.pdf", 40, "function listing"),
    CorpusPage("devref-title", "developers-reference", _DEVREF, 1, "title page, large type"),
    CorpusPage("devref-prose", "developers-reference", _DEVREF, 30, "prose with lists"),
)
BY_KEY = {page.key: page for page in PAGES}


def missing(pages: tuple[CorpusPage, ...] = PAGES) -> str | None:
    """Why the corpus cannot be rendered here, or None."""
    absent = sorted({p.package for p in pages if not Path(p.pdf).is_file()})
    if absent:
        return f"corpus PDFs missing: apt-get install {' '.join(absent)}"
    for tool in ("pdftoppm", "pdftotext"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode != 0:
            return f"{tool} not found: apt-get install poppler-utils"
    return None


def render(page: CorpusPage, out_dir: Path) -> tuple[Path, str]:
    """The page as a 150 dpi PNG in ``out_dir``, and its truth text."""
    stem = out_dir / page.key
    first_last = ["-f", str(page.page), "-l", str(page.page)]
    subprocess.run(
        ["pdftoppm", "-r", str(DPI), *first_last, "-png", "-singlefile", page.pdf, str(stem)], check=True
    )
    truth = subprocess.run(
        ["pdftotext", *first_last, page.pdf, "-"], capture_output=True, text=True, check=True
    ).stdout
    return stem.with_suffix(".png"), truth


def words(text: str) -> Counter[str]:
    return Counter(unicodedata.normalize("NFKC", text).split())


def word_match(hypothesis: str, truth: str) -> float:
    """2·|H ∩ T| / (|H| + |T|) over the multisets of words (see the module's docstring)."""
    hyp, ref = words(hypothesis), words(truth)
    total = sum(hyp.values()) + sum(ref.values())
    if total == 0:
        return 1.0
    return 2 * sum((hyp & ref).values()) / total


def _plain_reader() -> Callable[[str], str]:
    """EasyOCR as its README shows it, with the offline weights and no download."""
    import torch  # type: ignore[import-not-found, unused-ignore]

    for op in ("nms", "qnms"):  # see workers.ocr.export._import_torch: CUDA torchvision on CPU torch
        torch.library.define(
            f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )
    import easyocr  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import easyocr_en_models  # type: ignore[import-untyped, import-not-found, unused-ignore]

    models = easyocr_en_models.model_dir()
    reader = easyocr.Reader(
        ["en"], gpu=False, model_storage_directory=models, download_enabled=False, verbose=False
    )
    return lambda path: "\n".join(str(item[1]) for item in reader.readtext(path))


def _our_reader() -> Callable[[str], str]:
    from workers.ocr import engine, settings

    model_dir = settings.model_dir()
    return lambda path: str(engine.read_text(Path(path), model_dir, lambda *_, **__: None)["text"])


def _plain_child(image: str, site: str) -> dict[str, Any]:
    sys.path.extend(d for d in site.split(":") if d and d not in sys.path)
    text = _plain_reader()(image)
    cold_s = time.perf_counter() - _STARTED
    hwm = [
        line.split()[1]
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    ]
    return {"cold_s": round(cold_s, 2), "peak_mb": round(int(hwm[0]) / 1024, 1), "text": text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ocr_corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("ours", "plain"), default="ours")
    parser.add_argument("--pages", default=",".join(BY_KEY), help="comma-separated keys")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/ocr-corpus"))
    parser.add_argument("--plain-child", metavar="IMAGE", help=argparse.SUPPRESS)
    parser.add_argument("--site", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_child:
        print(json.dumps(_plain_child(args.plain_child, args.site)))
        return 0
    pages = tuple(BY_KEY[key] for key in args.pages.split(","))
    reason = missing(pages)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    args.work_dir.mkdir(parents=True, exist_ok=True)
    read = _plain_reader() if args.engine == "plain" else _our_reader()
    scores = []
    for page in pages:
        image, truth = render(page, args.work_dir)
        started = time.perf_counter()
        text = read(str(image))
        took_s = time.perf_counter() - started
        scores.append(word_match(text, truth))
        print(
            f"{page.key:>18} {sum(words(truth).values()):>5} words  match {scores[-1]:.3f}  {took_s:5.1f} s"
        )
    print(f"{'mean':>18}              match {sum(scores) / len(scores):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
