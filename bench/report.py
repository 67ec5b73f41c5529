"""report.md from a run's results: one table per scenario, each figure beside its same-run baseline."""

from __future__ import annotations

from typing import Any

from bench import report_sections as sections


def build(results: dict[str, Any], plots: list[str]) -> str:
    parts = [
        f"# memvisor benchmarks ({results['meta']['plan']} run)",
        sections.environment(results["meta"]),
        "## Headline: the aims",
        sections.headline(results),
    ]
    for title, render, key in sections.SCENARIOS:
        parts += [f"## {title}", sections.guarded(results.get(key), render)]
    if plots:
        parts += ["## Plots", "\n\n".join(f"![{name}]({name})" for name in plots)]
    parts += ["## Method", sections.METHOD]
    return "\n\n".join(parts) + "\n"
