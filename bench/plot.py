"""The figures of a run, as PNG files (matplotlib, Agg backend): every point comes from latest.json."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

KILL_COLOURS = {"memory_ceiling": "tab:red", "container_pressure": "tab:purple"}
DPI = 110


def write_all(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw every figure whose scenario ran; the file names written."""
    drawers = {
        "survival_memory.png": (_survival_memory, "survival"),
        "survival_baselines.png": (_survival_baselines, "survival"),
        "dispatch_latency.png": (_dispatch, "dispatch"),
        "footprint.png": (_footprint, "footprint"),
        "enforcement.png": (_enforcement, "enforcement"),
    }
    written = []
    for name, (draw, scenario) in drawers.items():
        data = results.get(scenario) or {}
        if not data or "error" in data or "skipped" in data:
            continue
        figure = draw(data)
        figure.savefig(out_dir / name, dpi=DPI, bbox_inches="tight")
        plt.close(figure)
        written.append(name)
    return written


# ----- survival -------------------------------------------------------------------------------------


def _survival_memory(data: dict[str, Any]) -> Any:
    ours = data["memvisor"]
    t0 = ours["started"]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8), sharex=True, height_ratios=(1, 1.3))
    _container_panel(top, ours, t0)
    _workers_panel(bottom, ours, t0)
    figure.suptitle("memvisor under adversarial mixed load in a 512 MB memory cgroup", fontsize=13)
    figure.tight_layout()
    return figure


def _container_panel(ax: Axes, ours: dict[str, Any], t0: float) -> None:
    trace = [s for s in ours["trace"] if "usage_mb" in s]
    ax.plot(
        [s["t"] - t0 for s in trace],
        [s["usage_mb"] for s in trace],
        color="tab:blue",
        label="container usage",
    )
    limit_mb = ours.get("limit_mb") or 512
    ax.axhline(limit_mb, color="black", linestyle="--", linewidth=1.2, label=f"limit {limit_mb} MB")
    if ours.get("high_water_mb"):
        ax.axhline(ours["high_water_mb"], color="tab:orange", linestyle=":", label="high water (guard)")
    for kill in ours["kills"]:
        ax.axvline(_at(kill["finished_at"]) - t0, color=KILL_COLOURS.get(kill["reason"], "grey"), alpha=0.35)
    ax.set_ylabel("MB")
    ax.set_ylim(0, limit_mb * 1.1)
    ax.set_title(
        f"container: max usage {ours.get('container_max_usage_mb')} MB, "
        f"OOM kills {ours.get('container_oom_kills')} (vertical lines: kills by the supervisor)",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)


def _workers_panel(ax: Axes, ours: dict[str, Any], t0: float) -> None:
    series: dict[int, list[tuple[float, float, float]]] = {}
    for sample in ours["trace"]:
        for worker in sample.get("workers") or []:
            series.setdefault(worker["pid"], []).append(
                (sample["t"] - t0, worker["rss_mb"], worker["ceiling_mb"])
            )
    colours = plt.get_cmap("tab10")
    for n, points in enumerate(series.values()):
        times = [p[0] for p in points]
        ax.plot(times, [p[1] for p in points], color=colours(n % 10), linewidth=1.2)
        ax.plot(
            times, [p[2] for p in points], color=colours(n % 10), linewidth=0.8, linestyle="--", alpha=0.6
        )
    for reason, colour in KILL_COLOURS.items():
        kills = [k for k in ours["kills"] if k["reason"] == reason]
        ax.scatter(
            [_at(k["finished_at"]) - t0 for k in kills],
            [k["peak_rss_mb"] or 0 for k in kills],
            marker="x",
            s=60,
            color=colour,
            label=f"killed: {reason} ({len(kills)})",
            zorder=5,
        )
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("worker RSS, MB")
    ax.set_title(
        "each worker's RSS (solid) against its ceiling (dashed, same colour); x = kill at peak", fontsize=10
    )
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    ax.grid(alpha=0.3)


def _survival_baselines(data: dict[str, Any]) -> Any:
    runs = {"memvisor": data["memvisor"], **data["baselines"]}
    figure, axes = plt.subplots(len(runs), 1, figsize=(12, 2.6 * len(runs)), sharex=True, sharey=True)
    for ax, (name, run) in zip(axes, runs.items(), strict=True):
        t0 = run["started"]
        trace = [s for s in run["trace"] if "usage_mb" in s]
        ax.plot([s["t"] - t0 for s in trace], [s["usage_mb"] for s in trace], color="tab:blue")
        ax.axhline(run.get("limit_mb") or 512, color="black", linestyle="--", linewidth=1.2)
        for death in run.get("deaths", []):
            ax.axvline(death["at_s"], color="tab:red", linewidth=2, alpha=0.7)
        if run.get("pool_broken_at_s") is not None:
            ax.axvline(run["pool_broken_at_s"], color="tab:purple", linewidth=2, label="pool broken")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(_baseline_title(name, run), fontsize=10)
        ax.set_ylabel("container MB")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the load started")
    figure.suptitle("the same job sequence: container memory (512 MB limit dashed; red = process died)")
    figure.tight_layout()
    return figure


def _baseline_title(name: str, run: dict[str, Any]) -> str:
    succeeded = sum(o["state"] == "succeeded" for o in run["outcomes"])
    memory = f"OOM kills {run.get('container_oom_kills')}, max usage {run.get('container_max_usage_mb')} MB"
    return f"{name}: {memory}, {succeeded} tasks succeeded, process deaths {len(run.get('deaths', []))}"


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# ----- dispatch, footprint, enforcement ----------------------------------------------------------------


def _dispatch(data: dict[str, Any]) -> Any:
    table = data["summary"]["table"]
    engines = list(table)
    concurrencies = list(next(iter(table.values())))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / len(concurrencies)
    for n, concurrency in enumerate(concurrencies):
        xs = [i + (n - (len(concurrencies) - 1) / 2) * width for i in range(len(engines))]
        for ax, key in ((left, "p50_ms"), (right, "tasks_per_s")):
            cells = [table[e][concurrency][key] for e in engines]
            medians = [c["median"] or 0 for c in cells]
            errors = [[m - (c["min"] or m) for m, c in zip(medians, cells, strict=True)],
                      [(c["max"] or m) - m for m, c in zip(medians, cells, strict=True)]]  # fmt: skip
            ax.bar(xs, medians, width, yerr=errors, capsize=2, label=f"concurrency {concurrency}")
    for ax, label in ((left, "p50 latency, ms (log)"), (right, "tasks per second (log)")):
        ax.set_yscale("log")
        ax.set_xticks(range(len(engines)), engines, rotation=25, ha="right", fontsize=9)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    figure.suptitle("no-op task, submit to result: median over repeats (bars: min-max)")
    figure.tight_layout()
    return figure


def _footprint(data: dict[str, Any]) -> Any:
    summary = data["summary"]
    idle, seed = summary["idle"], summary["seed"]
    labels = ["API process", "zygote", "spare", "API + zygote\n+ spare", "seed process"]
    figure, ax = plt.subplots(figsize=(9, 5))
    for n, kind in enumerate(("rss", "pss")):
        values = [
            idle[f"api_{kind}_mb"]["median"],
            idle[f"zygote_{kind}_mb"]["median"],
            idle[f"spare_{kind}_mb"]["median"],
            idle[f"sum_{kind}_mb"]["median"],
            seed[f"{kind}_mb"]["median"],
        ]
        xs = [i + (n - 0.5) * 0.38 for i in range(len(labels))]
        bars = ax.bar(xs, [v or 0 for v in values], 0.38, label=kind.upper())
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.axhline(summary["aim_mb"], color="tab:green", linestyle="--", label=f"aim {summary['aim_mb']:.0f} MB")
    ax.axhline(512, color="black", linestyle=":", label="512 MB container")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("MB (median over repeats)")
    ax.set_title("idle footprint: memvisor against the seed's one process")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


def _enforcement(data: dict[str, Any]) -> Any:
    table = data["summary"]["table"]
    modes = list(table)
    rates = list(next(iter(table.values())))
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(modes)
    for n, mode in enumerate(modes):
        xs = [i + (n - (len(modes) - 1) / 2) * width for i in range(len(rates))]
        overshoot = [table[mode][r]["overshoot_mb"]["median"] or 0 for r in rates]
        death = [table[mode][r]["cross_to_death_ms"]["median"] or 0 for r in rates]
        left.bar_label(left.bar(xs, overshoot, width, label=mode), fmt="%.1f", fontsize=7)
        right.bar_label(right.bar(xs, death, width, label=mode), fmt="%.1f", fontsize=7)
    ceiling_mb = data["trials"][modes[0]][0]["ceiling_mb"] if data["trials"][modes[0]] else 200
    left.axhline(
        ceiling_mb * 0.05, color="tab:red", linestyle="--", linewidth=1, label="5 % of the ceiling (aim)"
    )
    left.set_ylabel(f"peak RSS - ceiling, MB (ceiling {ceiling_mb:.0f} MB)")
    right.set_ylabel("first sample >= ceiling -> process gone, ms")
    for ax in (left, right):
        ax.set_xticks(range(len(rates)), rates)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    figure.suptitle("a worker allocating past its ceiling: overshoot and time to death (medians)")
    figure.tight_layout()
    return figure
