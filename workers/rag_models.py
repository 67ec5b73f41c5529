"""The RAG kinds' inputs and chunking: pure, light (pydantic only), imported by the API process too.

Chunking: a document longer than ``CHUNK_WORDS`` words is split into windows of ``CHUNK_WORDS`` words
overlapping by ``CHUNK_OVERLAP_WORDS`` (about 200 tokens, inside MiniLM's 256-token window, so nothing
is truncated for ordinary prose). Chunk ids are ``<id>#<n>``; each chunk's metadata carries the user's
metadata plus ``_parent`` (the document id), ``_chunk`` and ``_chunks``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

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
RESERVED_KEY_PREFIXES = ("_", "chroma:")

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
