"""Units every layer counts in: defined here, at the bottom of the dependency graph, once."""

from __future__ import annotations

MB = 1024 * 1024  # bytes in a mebibyte: every ``*_mb`` figure of the project
