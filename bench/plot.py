"""The figures of a run, as PNG files (matplotlib, Agg backend): every point comes from latest.json.

Two shapes serve every scenario: grouped bars of medians (dispatch, footprint, enforcement) and the
container's memory over time (survival: memvisor and the seed's ways, one panel each).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

DPI = 110
Panel = tuple[str, list[str], dict[str, list[float | None]], bool]  # y label, groups, series, log scale


def write_all(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw every figure whose scenario ran; the file names written."""
    drawers: dict[str, Callable[[dict[str, Any]], Figure]] = {
        "survival": _survival,
        "dispatch": _dispatch,
        "footprint": _footprint,
        "enforcement": _enforcement,
    }
    written = []
    for scenario, draw in drawers.items():
        data = results.get(scenario) or {}
        if not data or "error" in data or "skipped" in data:
            continue
        figure = draw(data)
        figure.savefig(out_dir / f"{scenario}.png", dpi=DPI, bbox_inches="tight")
        plt.close(figure)
        written.append(f"{scenario}.png")
    return written


def _bars(title: str, panels: list[Panel]) -> Figure:
    """One axis per panel: for each group, a bar per series, labelled with its value."""
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (label, groups, series, log) in zip(axes[0], panels, strict=True):
        width = 0.8 / len(series)
        for n, (name, values) in enumerate(series.items()):
            xs = [i + (n - (len(series) - 1) / 2) * width for i in range(len(groups))]
            bars = ax.bar(xs, [v or 0 for v in values], width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=9)
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _by(
    rows: list[dict[str, Any]], group: str, series: str, key: str
) -> tuple[list[str], dict[str, list[Any]]]:
    """Medians of ``key`` laid out as groups x series."""
    groups = list(dict.fromkeys(str(r[group]) for r in rows))
    values: dict[str, list[Any]] = {}
    for row in rows:
        values.setdefault(f"{series} {row[series]}", [None] * len(groups))[groups.index(str(row[group]))] = (
            row[key]["median"]
        )
    return groups, values


def _dispatch(data: dict[str, Any]) -> Figure:
    rows = data["summary"]["rows"]
    panels: list[Panel] = []
    for key, label in (("p50_ms", "p50 latency, ms (log)"), ("tasks_per_s", "tasks per second (log)")):
        groups, series = _by(rows, "engine", "clients", key)
        panels.append((label, groups, series, True))
    return _bars("no-op task, submit to result: medians over repeats, by number of clients", panels)


def _footprint(data: dict[str, Any]) -> Figure:
    s = data["summary"]
    groups = ["API process", "zygote", "spare", "API + zygote + spare", "seed process"]
    series = {
        kind.upper(): [s["idle"][f"{part}_{kind}_mb"]["median"] for part in ("api", "zygote", "spare", "sum")]
        + [s["seed"][f"{kind}_mb"]["median"]]
        for kind in ("rss", "pss")
    }
    return _bars(
        "idle footprint, MB: memvisor against the seed's one process", [("MB", groups, series, False)]
    )


def _enforcement(data: dict[str, Any]) -> Figure:
    rows = data["summary"]["rows"]
    panels: list[Panel] = []
    for key, label in (
        ("overshoot_mb", "peak RSS - ceiling, MB"),
        ("cross_to_death_ms", "crossing -> gone, ms"),
    ):
        groups, series = _by(rows, "rate", "mode", key)
        panels.append((label, groups, series, False))
    return _bars("a worker allocating past its 200 MB ceiling: overshoot and time to death (medians)", panels)


def _survival(data: dict[str, Any]) -> Figure:
    """Container usage over time for memvisor and each baseline; red: a kill by the supervisor (memvisor)
    or the death of the whole process (the seed's ways); purple: the process pool broke."""
    runs = {"memvisor": data["memvisor"], **data["baselines"]}
    figure, axes = plt.subplots(len(runs), 1, figsize=(12, 2.6 * len(runs)), sharex=True, sharey=True)
    for ax, (name, run) in zip(axes, runs.items(), strict=True):
        t0 = run["started"]
        trace = [s for s in run["trace"] if "usage_mb" in s]
        ax.plot([s["t"] - t0 for s in trace], [s["usage_mb"] for s in trace], color="tab:blue")
        ax.axhline(run.get("limit_mb") or 512, color="black", linestyle="--", linewidth=1.2)
        marks = [_at(k["finished_at"]) - t0 for k in run.get("kills", [])] + [
            d["at_s"] for d in run.get("deaths", [])
        ]
        for at_s in marks:
            ax.axvline(at_s, color="tab:red", alpha=0.5)
        if run.get("pool_broken_at_s") is not None:
            ax.axvline(run["pool_broken_at_s"], color="tab:purple", linewidth=2)
        memory = (
            f"OOM kills {run.get('container_oom_kills')}, max usage {run.get('container_max_usage_mb')} MB"
        )
        ax.set_title(f"{name}: {memory}, {len(marks)} kills or deaths", fontsize=10)
        ax.set_ylabel("container MB")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the load started")
    figure.suptitle("the same job sequence in a 512 MB container (limit dashed)")
    figure.tight_layout()
    return figure


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
