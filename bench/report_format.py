"""Formatting of figures for report.md: medians with their spread, ratios, markdown tables."""

from __future__ import annotations

from typing import Any

NOTATION = (
    "Figures are medians over the run's repeats, with [min-max] when there was more than one; "
    "ratios (x) divide medians measured in this same run."
)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def cell(spread: dict[str, Any] | None, digits: int = 1) -> str:
    """``median [min-max]`` of a spread, or the median alone if it rests on one value."""
    if not spread or spread.get("median") is None:
        return "-"
    text = fmt(float(spread["median"]), digits)
    if spread["n"] > 1:
        text += f" [{fmt(float(spread['min']), digits)}-{fmt(float(spread['max']), digits)}]"
    return text


def times(value: float | None) -> str:
    if value is None:
        return "-"
    return f"x{value:.2f}" if value < 10 else f"x{value:.0f}"


def divide(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else "**met**" if met else "**not met**"


def counts(mapping: dict[str, int]) -> str:
    return ", ".join(f"{key} x{value}" for key, value in sorted(mapping.items()))
