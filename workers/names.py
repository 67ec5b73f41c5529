"""The one rule for the names of files in a task's directories: uploaded inputs (spool), task outputs,
and the file names kinds take in their payloads.

A plain name is letters, digits, ``.``, ``_`` and ``-``, starts with a letter or a digit, holds no
``..`` and has at most 128 characters: no separator, no NUL, no hidden file, nothing a path could be
built from. Here, at the bottom of the dependency graph, because the API, the supervisor and the kinds
all apply it.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

MAX_NAME_CHARS = 128
UPLOAD_NAME_CHARS = 100  # an uploaded name is cut shorter: a prefix may tell two uploads apart
_PLAIN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}")
_OTHER = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS = re.compile(r"\.{2,}")


def is_plain_name(name: str) -> bool:
    return bool(_PLAIN.fullmatch(name)) and ".." not in name


def plain_name(filename: str | None, fallback: str) -> str:
    """An uploaded file's name made plain: its base name only, every other character ``_``, runs of
    dots one dot, no leading dot or dash; ``fallback`` where nothing plain is left."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    cleaned = _DOTS.sub(".", _OTHER.sub("_", base)).lstrip("._-")[:UPLOAD_NAME_CHARS]
    return cleaned if is_plain_name(cleaned) else fallback
