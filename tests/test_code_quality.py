"""ruff and mypy stay clean: part of the suite so that CI holds the line, not only a reviewer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from harness.server import ROOT

PACKAGES = ["api", "memvisor", "supervisor", "workers"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", *PACKAGES, "harness", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    result = _run("ruff", "format", "--check", *PACKAGES, "harness", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = _run("mypy", *PACKAGES, "harness", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


MAX_MODULE_LINES = 400


def test_no_module_exceeds_the_line_limit() -> None:
    """A module past this size holds more than one concern: split it by concern, not by squeezing."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert sizes, "no module found: the packages moved?"
    too_long = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


# Which of our top-level packages each may import. The product's layers point one way
# (memvisor → api → supervisor → workers); the harness serves both tests and bench and imports neither.
MAY_IMPORT = {
    "workers": {"workers"},
    "supervisor": {"supervisor", "workers"},
    "api": {"api", "supervisor", "workers"},
    "memvisor": {"memvisor", "api", "supervisor", "workers"},
    "harness": {"harness", "api", "supervisor", "workers", "memvisor"},
    "bench": {"bench", "harness", "api", "supervisor", "workers", "memvisor"},
    "tests": {"tests", "harness", "api", "supervisor", "workers", "memvisor"},
}
# The service's entry assembles itself from the library's Memvisor, as a user's own app does.
ENTRY_MAY_ALSO_IMPORT = {"api/app.py": {"memvisor"}, "api/main.py": {"memvisor"}}


def _our_imports(path: Path) -> set[str]:
    """The top-level packages of this repository that a module imports, wherever in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(MAY_IMPORT)


def test_layers_point_one_way() -> None:
    wrong = {}
    for package, allowed in MAY_IMPORT.items():
        for path in (ROOT / package).rglob("*.py"):
            name = str(path.relative_to(ROOT))
            against = _our_imports(path) - allowed - ENTRY_MAY_ALSO_IMPORT.get(name, set())
            if against and "results" not in path.parts:
                wrong[name] = sorted(against)
    assert not wrong, f"imports against the layers: {wrong}"


def _reach_ins(path: Path) -> list[str]:
    """``supervisor.part.member`` chains: the API reaching past the supervisor into its parts."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        inner = node.value if isinstance(node, ast.Attribute) else None
        if (
            isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Name)
            and inner.value.id in {"supervisor", "sup"}
        ):
            found.append(f"{path.name}:{node.lineno} supervisor.{inner.attr}.{node.attr}")
    return found


def test_the_api_uses_the_supervisor_through_its_methods_only() -> None:
    """The API and the library talk to one narrow interface (supervisor/core.py), not to its parts."""
    found = [
        hit
        for package in ("api", "memvisor")
        for p in (ROOT / package).rglob("*.py")
        for hit in _reach_ins(p)
    ]
    assert not found, found
