"""The ``rag.ingest``, ``rag.query`` and ``rag.delete`` task kinds: a persistent Chroma store per data dir.

Store: ``<data_dir>/chroma``, a Chroma ``PersistentClient`` (telemetry off), collections in cosine
space. Chroma never embeds anything here: collections are created and opened with
``embedding_function=None`` and every add and query passes vectors computed by
:class:`workers.embedding.MiniLMEmbedder`, so Chroma's default embedding function (which downloads a
model) is never invoked.

Chunking: a document longer than ``CHUNK_WORDS`` words is split into windows of ``CHUNK_WORDS`` words
overlapping by ``CHUNK_OVERLAP_WORDS`` (about 200 tokens, inside MiniLM's 256-token window, so nothing
is truncated for ordinary prose). Chunk ids are ``<id>#<n>``; each chunk's metadata carries the user's
metadata plus ``_parent`` (the document id), ``_chunk`` and ``_chunks``. Re-ingesting an id replaces
the document (its old chunks are deleted in the same locked session).

Query results are de-duplicated by document: ``matches`` lists up to ``k`` distinct documents, each
with its best chunk: ``{id: <document id>, text: <best chunk's text>, score: <cosine similarity of
that chunk>, metadata: <the document's metadata>}``, best first. Callers (the agent, clients) thus cite
and delete the ids they ingested.

Concurrency: Chroma's local mode assumes one process per directory, and each task is a process. Every
store session (open client, operate, close) holds an exclusive ``flock`` on ``<chroma>/memvisor.lock``;
queries too, because opening a client may migrate the schema or replay the log, i.e. write. Sessions
are short: embeddings are computed before the lock is taken. Closing the client at the end of a
session drops Chroma's per-process cache, so the next session reads what other processes wrote.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from workers.embedding import MiniLMEmbedder, cached_lowmem_model
from workers.errors import TaskInputError
from workers.registry import TaskContext, task_kind

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.client import Client
    from chromadb.api.models.Collection import Collection

logger = logging.getLogger(__name__)

MAX_DOCUMENTS_PER_REQUEST = 200
MAX_DOCUMENT_CHARS = 20_000
MAX_REQUEST_CHARS = 500_000
MAX_ID_CHARS = 128
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE_CHARS = 1_000
MAX_QUERY_CHARS = 2_000
MAX_K = 50
MAX_DELETE_IDS = 1_000
CHUNK_WORDS = 150
CHUNK_OVERLAP_WORDS = 30
# Candidates fetched per wanted document: several chunks of one document may outrank the next one.
QUERY_OVERSAMPLE = 4
STORE_LOCK_TIMEOUT_S = 120.0
STORE_LOCK_POLL_S = 0.02
EMBED_PROGRESS_CHUNKS = 32
RESERVED_KEY_PREFIXES = ("_", "chroma:")
# What the rag.* workers write under DATA_DIR (and nothing else): the store and the low-memory model.
STORE_DIR = "chroma"
MODEL_CACHE = "models/minilm"
STORES = (STORE_DIR, MODEL_CACHE)

_COLLECTION_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
_WORD = re.compile(r"\S+")

# ---------------------------------------------------------------------------------------------------
# Input models.


def _check_collection_name(name: str) -> str:
    """Chroma's rules, checked here so that a bad name is a 4xx in the API, not a failed task."""
    if not 3 <= len(name) <= 63:
        raise ValueError(f"collection name must be 3-63 characters long, got {len(name)}")
    if not _COLLECTION_CHARS.match(name):
        raise ValueError("collection name may contain only letters, digits, '.', '_' and '-'")
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise ValueError("collection name must start and end with a letter or digit")
    if ".." in name:
        raise ValueError("collection name must not contain '..'")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise ValueError("collection name must not be an IPv4 address")


CollectionName = Annotated[str, AfterValidator(_check_collection_name)]
MetadataValue = str | int | float | bool


def _check_id(value: str) -> str:
    if not value.strip():
        raise ValueError("id must not be empty or whitespace")
    return value


DocumentId = Annotated[str, Field(max_length=MAX_ID_CHARS), AfterValidator(_check_id)]


def _duplicates(values: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]


class RagDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: DocumentId
    text: str = Field(max_length=MAX_DOCUMENT_CHARS)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text must not be empty or whitespace")
        return text

    @field_validator("metadata")
    @classmethod
    def _metadata_shape(cls, metadata: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        if len(metadata) > MAX_METADATA_KEYS:
            raise ValueError(f"metadata may have at most {MAX_METADATA_KEYS} keys, got {len(metadata)}")
        for key, value in metadata.items():
            if not key or len(key) > 64 or key.startswith(RESERVED_KEY_PREFIXES):
                raise ValueError(
                    f"metadata key {key!r} must be 1-64 characters and not start with '_' or 'chroma:'"
                )
            if isinstance(value, str) and len(value) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(
                    f"metadata value of {key!r} is longer than {MAX_METADATA_VALUE_CHARS} characters"
                )
        return metadata


class RagIngest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName
    documents: list[RagDocument] = Field(min_length=1, max_length=MAX_DOCUMENTS_PER_REQUEST)

    @model_validator(mode="after")
    def _unique_and_bounded(self) -> RagIngest:
        duplicates = _duplicates([doc.id for doc in self.documents])
        if duplicates:
            raise ValueError(f"document ids must be unique; repeated: {', '.join(duplicates[:10])}")
        total_chars = sum(len(doc.text) for doc in self.documents)
        if total_chars > MAX_REQUEST_CHARS:
            raise ValueError(
                f"documents total {total_chars} characters; at most {MAX_REQUEST_CHARS} per request, split it"
            )
        return self


class RagQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: CollectionName
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=5, ge=1, le=MAX_K)

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("query must not be empty or whitespace")
        return query


class RagDelete(BaseModel):
    """``ids`` omitted (or null) drops the whole collection; otherwise those documents are deleted."""

    model_config = ConfigDict(extra="forbid")

    collection: CollectionName
    ids: list[DocumentId] | None = Field(default=None, max_length=MAX_DELETE_IDS)

    @field_validator("ids")
    @classmethod
    def _ids_given(cls, ids: list[str] | None) -> list[str] | None:
        if ids is not None and not ids:
            raise ValueError("ids must not be empty; omit ids to drop the whole collection")
        if ids and _duplicates(ids):
            raise ValueError(f"ids must be unique; repeated: {', '.join(_duplicates(ids)[:10])}")
        return ids


# ---------------------------------------------------------------------------------------------------
# Chunking.


@dataclass(frozen=True)
class Chunk:
    id: str
    parent: str
    index: int
    count: int
    text: str
    metadata: dict[str, MetadataValue]

    def store_metadata(self) -> dict[str, MetadataValue]:
        return {**self.metadata, "_parent": self.parent, "_chunk": self.index, "_chunks": self.count}


def split_text(text: str, words: int = CHUNK_WORDS, overlap: int = CHUNK_OVERLAP_WORDS) -> list[str]:
    """Windows of ``words`` words overlapping by ``overlap``, cut from the original text (layout kept)."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if len(spans) <= words:
        return [text.strip()]
    pieces = []
    start = 0
    while True:
        window = spans[start : start + words]
        pieces.append(text[window[0][0] : window[-1][1]])
        if start + words >= len(spans):
            return pieces
        start += words - overlap


def chunk_documents(documents: list[RagDocument]) -> list[Chunk]:
    chunks: list[Chunk] = []
    for doc in documents:
        pieces = split_text(doc.text)
        for index, piece in enumerate(pieces):
            chunks.append(Chunk(f"{doc.id}#{index}", doc.id, index, len(pieces), piece, doc.metadata))
    return chunks


# ---------------------------------------------------------------------------------------------------
# Store access.


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
    """A Chroma client for the data dir, used under the store lock and closed before it is released."""
    directory = chroma_dir(data_dir)
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


def _get_collection(client: ClientAPI, name: str) -> Collection | None:
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except (NotFoundError, ValueError):
        return None


def _create_collection(client: ClientAPI, name: str) -> Collection:
    return client.get_or_create_collection(
        name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
    )


@lru_cache(maxsize=4)
def chroma_server_configured() -> bool:
    """Whether the store is a Chroma server (``CHROMA_URL``), which the workers then reach by network."""
    return bool(os.environ.get("CHROMA_URL", "").strip())


def embedder_for(data_dir: Path) -> MiniLMEmbedder:
    """One embedder per process and data dir (a worker runs one task, the agent several queries)."""
    return MiniLMEmbedder(model_file=cached_lowmem_model(data_dir / MODEL_CACHE))


# ---------------------------------------------------------------------------------------------------
# Ingest.


def _embed_chunks(chunks: list[Chunk], embedder: MiniLMEmbedder, ctx: TaskContext) -> list[list[float]]:
    vectors: list[list[float]] = []
    for start in range(0, len(chunks), EMBED_PROGRESS_CHUNKS):
        batch = chunks[start : start + EMBED_PROGRESS_CHUNKS]
        vectors.extend(embedder.embed([chunk.text for chunk in batch]))
        ctx.progress("embedded", chunks=len(vectors), total=len(chunks))
    return vectors


def _write_chunks(
    collection: Collection, chunks: list[Chunk], vectors: list[list[float]], batch: int
) -> None:
    # Replace semantics: the document's previous chunks go first (it may now have fewer of them).
    parents = sorted({chunk.parent for chunk in chunks})
    collection.delete(where={"_parent": {"$in": parents}})  # type: ignore[dict-item]
    for start in range(0, len(chunks), batch):
        part = chunks[start : start + batch]
        collection.add(
            ids=[chunk.id for chunk in part],
            embeddings=vectors[start : start + batch],  # type: ignore[arg-type]
            documents=[chunk.text for chunk in part],
            metadatas=[chunk.store_metadata() for chunk in part],
        )


@task_kind(
    "rag.ingest",
    input_model=RagIngest,
    estimate_mb=200,
    ceiling_mb=320,
    timeout_s=600,
    retriable=True,
    switch="DISABLE_RAG",
    stores=STORES,
    network=chroma_server_configured,
)
def rag_ingest(payload: RagIngest, ctx: TaskContext) -> dict[str, Any]:
    """Embed documents (chunked) and add them to a collection, replacing documents with the same ids."""
    chunks = chunk_documents(payload.documents)
    ctx.progress("chunked", documents=len(payload.documents), chunks=len(chunks))
    embedder = embedder_for(ctx.data_dir)
    vectors = _embed_chunks(chunks, embedder, ctx)
    embedder.release()
    with open_store(ctx.data_dir) as client:
        collection = _create_collection(client, payload.collection)
        _write_chunks(collection, chunks, vectors, client.get_max_batch_size())
        total = collection.count()
    ctx.progress("stored", chunks=len(chunks))
    logger.info("task %s: ingested %d chunks into %s", ctx.task_id, len(chunks), payload.collection)
    return {
        "collection": payload.collection,
        "documents": len(payload.documents),
        "chunks": len(chunks),
        "collection_chunks": total,
    }


# ---------------------------------------------------------------------------------------------------
# Query.


def _user_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metadata or {}).items() if not k.startswith(RESERVED_KEY_PREFIXES)}


def _best_per_document(result: Any, k: int) -> list[dict[str, Any]]:
    """Collapse chunk hits (best first) to the best chunk of each document, at most ``k`` of them."""
    matches: dict[str, dict[str, Any]] = {}
    rows = zip(
        result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
    )
    for chunk_id, text, metadata, distance in rows:
        parent = str((metadata or {}).get("_parent", chunk_id))
        if parent not in matches:
            matches[parent] = {
                "id": parent,
                "text": text,
                "score": round(1.0 - float(distance), 6),
                "metadata": _user_metadata(metadata),
            }
        if len(matches) == k:
            break
    return list(matches.values())


def _search(collection: Collection, vector: list[float], k: int) -> list[dict[str, Any]]:
    available = collection.count()
    wanted = min(available, k * QUERY_OVERSAMPLE)
    while True:
        result = collection.query(
            query_embeddings=[vector],  # type: ignore[arg-type]
            n_results=wanted,
            include=["documents", "metadatas", "distances"],
        )
        matches = _best_per_document(result, k)
        # Fewer documents than asked while chunks remain unseen: one document's chunks crowded them out.
        if len(matches) == k or wanted >= available:
            return matches
        wanted = min(available, wanted * 4)


def query_collection(payload: RagQuery, ctx: TaskContext) -> list[dict[str, Any]]:
    """The matches for a query (the function the agent calls in-process)."""
    embedder = embedder_for(ctx.data_dir)
    vector = embedder.embed_one(payload.query)
    embedder.release()
    with open_store(ctx.data_dir) as client:
        collection = _get_collection(client, payload.collection)
        if collection is None:
            raise TaskInputError(f"collection {payload.collection!r} does not exist; ingest documents first")
        if collection.count() == 0:
            return []
        return _search(collection, vector, payload.k)


@task_kind(
    "rag.query",
    input_model=RagQuery,
    estimate_mb=170,
    ceiling_mb=260,
    timeout_s=60,
    retriable=True,
    switch="DISABLE_RAG",
    stores=STORES,
    network=chroma_server_configured,
)
def rag_query(payload: RagQuery, ctx: TaskContext) -> dict[str, Any]:
    """Return the k documents most similar to a query (cosine), each with its best-matching chunk."""
    matches = query_collection(payload, ctx)
    ctx.progress("searched", matches=len(matches))
    return {"matches": matches}


# ---------------------------------------------------------------------------------------------------
# Delete.


def _delete_documents(client: ClientAPI, name: str, ids: list[str]) -> dict[str, Any]:
    collection = _get_collection(client, name)
    if collection is None:
        return {"collection": name, "dropped": False, "deleted": [], "missing": ids}
    found = collection.get(where={"_parent": {"$in": ids}}, include=["metadatas"])  # type: ignore[dict-item]
    present = {str(meta["_parent"]) for meta in found["metadatas"] or [] if meta}
    if found["ids"]:
        collection.delete(ids=found["ids"])
    return {
        "collection": name,
        "dropped": False,
        "deleted": [i for i in ids if i in present],
        "missing": [i for i in ids if i not in present],
    }


def _drop_collection(client: ClientAPI, name: str) -> dict[str, Any]:
    existed = _get_collection(client, name) is not None
    if existed:
        client.delete_collection(name)
    return {"collection": name, "dropped": existed, "deleted": [], "missing": []}


@task_kind(
    "rag.delete",
    input_model=RagDelete,
    estimate_mb=130,
    ceiling_mb=200,
    timeout_s=60,
    retriable=True,
    switch="DISABLE_RAG",
    stores=STORES,
    network=chroma_server_configured,
)
def rag_delete(payload: RagDelete, ctx: TaskContext) -> dict[str, Any]:
    """Delete documents by id from a collection, or drop the collection when no ids are given."""
    with open_store(ctx.data_dir) as client:
        if payload.ids is None:
            result = _drop_collection(client, payload.collection)
        else:
            result = _delete_documents(client, payload.collection, payload.ids)
    ctx.progress("deleted", dropped=result["dropped"], documents=len(result["deleted"]))
    return result
