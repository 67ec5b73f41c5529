"""Where the RAG kinds keep their vectors: a Chroma server shared by every instance, or a local store.

- ``CHROMA_URL`` set (see :mod:`workers.config`): ``chromadb.HttpClient`` against that server, one
  store for every instance. The server serialises writes itself, so no lock is taken here: several
  workers on several machines may write one collection at once.
- Unset: a ``PersistentClient`` under ``<data_dir>/chroma``, for a single instance. Chroma's local
  mode assumes one process per directory, and each task is a process: every store session (open
  client, operate, close) holds an exclusive ``flock`` on ``<chroma>/memvisor.lock``; queries too,
  because opening a client may migrate the schema or replay the log, i.e. write. Closing the client at
  the end of a session drops Chroma's per-process cache, so the next session reads what other
  processes wrote. The lock covers one machine only.

Either way Chroma never embeds anything: collections are created and opened with
``embedding_function=None`` and every write and query passes vectors computed in the worker by
:class:`workers.embedding.MiniLMEmbedder` (Chroma's default function would download a model). Sessions
are short: embeddings are computed before a session opens.

A server that cannot be reached (refused, reset, timed out, or down when the client is made) is a
:class:`~workers.errors.VectorStoreUnavailableError` naming ``CHROMA_URL``: the task fails with that
type and message. Only workers talk to the store; the API process never does.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from workers.config import KindSettings
from workers.embedding import MiniLMEmbedder, cached_lowmem_model
from workers.errors import VectorStoreUnavailableError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.client import Client
    from chromadb.api.models.Collection import Collection

STORE_LOCK_TIMEOUT_S = 120.0
STORE_LOCK_POLL_S = 0.02


# What the rag.* workers write under DATA_DIR (and nothing else): the store and the low-memory model.
STORE_DIR = "chroma"
MODEL_CACHE = "models/minilm"
STORES = (STORE_DIR, MODEL_CACHE)


def store_settings() -> KindSettings:
    """Read in the worker, from the environment it inherits from the service (already validated there)."""
    return KindSettings()


def needs_network() -> bool:
    """Whether the RAG kinds' workers must reach the network (the Chroma server): for a worker sandbox
    that gives workers a network of their own unless their kind needs one."""
    return store_settings().chroma_url is not None


def chroma_dir(data_dir: Path) -> Path:
    return data_dir / STORE_DIR


@contextmanager
def store_lock(directory: Path, timeout_s: float = STORE_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive flock on ``directory/memvisor.lock``; released on exit, and by the kernel on death."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "memvisor.lock").open("a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the vector store stayed locked for {timeout_s:.0f} s") from None
                time.sleep(STORE_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def open_store(data_dir: Path) -> Iterator[ClientAPI]:
    """A Chroma client for one short session: the shared server if CHROMA_URL is set, else the data
    dir's local store under its lock. Closed when the session ends."""
    settings = store_settings()
    if settings.chroma_url:
        with _server_session(settings.chroma_url) as client:
            yield client
        return
    if settings.role == "worker":
        # The catalog refuses these kinds on such an instance; this stops any other path (the agent).
        raise VectorStoreUnavailableError(
            "ROLE=worker needs CHROMA_URL: a local vector store would not be shared with other instances"
        )
    with _local_session(chroma_dir(data_dir)) as client:
        yield client


@contextmanager
def _local_session(directory: Path) -> Iterator[ClientAPI]:
    with store_lock(directory):
        import chromadb
        from chromadb.config import Settings

        client = chromadb.PersistentClient(
            path=str(directory), settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        try:
            yield client
        finally:
            # PersistentClient is typed as ClientAPI, but it is a Client, which has close().
            cast("Client", client).close()


@contextmanager
def _server_session(url: str) -> Iterator[ClientAPI]:
    import chromadb
    import httpx
    from chromadb.config import Settings

    parts = urlsplit(url)
    try:
        client = chromadb.HttpClient(
            host=parts.hostname or "",
            port=parts.port or 0,
            ssl=parts.scheme == "https",
            settings=Settings(anonymized_telemetry=False),
        )
    except ValueError as exc:  # how chromadb says the server did not answer its first request
        raise _unavailable(url, exc) from exc
    try:
        yield client
    except httpx.HTTPError as exc:
        raise _unavailable(url, exc) from exc
    finally:
        cast("Client", client).close()


def _unavailable(url: str, exc: Exception) -> VectorStoreUnavailableError:
    return VectorStoreUnavailableError(
        f"the Chroma server at CHROMA_URL={url} cannot be reached ({type(exc).__name__}: {exc})"
    )


def get_collection(client: ClientAPI, name: str) -> Collection | None:
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):
        return None


def create_collection(client: ClientAPI, name: str) -> Collection:
    return client.get_or_create_collection(
        name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
    )


@lru_cache(maxsize=4)
def embedder_for(data_dir: Path) -> MiniLMEmbedder:
    """One embedder per process and data dir (a worker runs one task, the agent several queries)."""
    return MiniLMEmbedder(model_file=cached_lowmem_model(data_dir / MODEL_CACHE))
