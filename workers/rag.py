"""The ``rag.ingest``, ``rag.query`` and ``rag.delete`` task kinds.

Inputs and chunking live in :mod:`workers.rag_models`, the store (a Chroma server at ``CHROMA_URL``
shared by every instance, or a local store per data dir) in :mod:`workers.rag_store`.

Re-ingesting an id replaces the document: its old chunks are deleted, then the new ones upserted, in
one store session (under the local store's lock; on a server, two writers re-ingesting the *same* id at
once may interleave, since Chroma has no transactions).

Query results are de-duplicated by document: ``matches`` lists up to ``k`` distinct documents, each
with its best chunk: ``{id: <document id>, text: <best chunk's text>, score: <cosine similarity of
that chunk>, metadata: <the document's metadata>}``, best first. Callers (the agent, clients) thus cite
and delete the ids they ingested.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from workers.embedding import MiniLMEmbedder
from workers.errors import TaskInputError
from workers.rag_models import (
    RESERVED_KEY_PREFIXES,
    Chunk,
    CollectionName,
    RagDelete,
    RagIngest,
    RagQuery,
    chunk_documents,
)
from workers.rag_store import (
    STORES,
    create_collection,
    embedder_for,
    get_collection,
    needs_network,
    open_store,
)
from workers.registry import TaskContext, task_kind

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = ["CollectionName", "RagDelete", "RagIngest", "RagQuery", "query_collection"]

logger = logging.getLogger(__name__)

# Candidates fetched per wanted document: several chunks of one document may outrank the next one.
QUERY_OVERSAMPLE = 4
EMBED_PROGRESS_CHUNKS = 32

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
        collection.upsert(
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
    network=needs_network,  # a Chroma server (CHROMA_URL) is reached over the network
)
def rag_ingest(payload: RagIngest, ctx: TaskContext) -> dict[str, Any]:
    """Embed documents (chunked) and add them to a collection, replacing documents with the same ids."""
    chunks = chunk_documents(payload.documents)
    ctx.progress("chunked", documents=len(payload.documents), chunks=len(chunks))
    embedder = embedder_for(ctx.data_dir)
    vectors = _embed_chunks(chunks, embedder, ctx)
    embedder.release()
    with open_store(ctx.data_dir) as client:
        collection = create_collection(client, payload.collection)
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
        collection = get_collection(client, payload.collection)
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
    network=needs_network,  # a Chroma server (CHROMA_URL) is reached over the network
)
def rag_query(payload: RagQuery, ctx: TaskContext) -> dict[str, Any]:
    """Return the k documents most similar to a query (cosine), each with its best-matching chunk."""
    matches = query_collection(payload, ctx)
    ctx.progress("searched", matches=len(matches))
    return {"matches": matches}


# ---------------------------------------------------------------------------------------------------
# Delete.


def _delete_documents(client: ClientAPI, name: str, ids: list[str]) -> dict[str, Any]:
    collection = get_collection(client, name)
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
    existed = get_collection(client, name) is not None
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
    network=needs_network,  # a Chroma server (CHROMA_URL) is reached over the network
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
