"""report.md from a run's results: one table per scenario, each figure beside its same-run baseline.

The sections are data: each names the rows a scenario's summary holds and the columns to show; one
writer formats them (a spread as ``median [min-max]``, a ``*_ratio`` as ``x2.81``). A note is a
format string over that summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from bench import browser_bench, dispatch, enforcement, footprint, instances, ocr, rag, survival
from bench.stats import fmt, table, times

Column = tuple[str, str] | tuple[str, str, int]  # header, key (dotted, or "a / b" for two), digits


@dataclass(frozen=True)
class Table:
    rows: str  # key of the summary holding a list of row dicts
    columns: tuple[Column, ...]
    intro: str = ""


Part = Table | str  # a table, or a note


@dataclass(frozen=True)
class Section:
    title: str
    module: ModuleType  # the scenario's: its name keys the results, its docstring says how it measured
    parts: tuple[Part, ...]


NOTATION = (
    "Figures are medians over the run's repeats, with [min-max] when there was more than one; "
    "ratios (x) divide medians measured in this same run."
)
SEED_STEPS = (
    ("import", "module"),
    ("RSS after, MB", "rss_mb"),
    ("added, MB", "added_rss_mb"),
    ("import s", "import_s", 2),
)
BREAKDOWN = (
    ("clients", "clients"), ("client p50 ms", "p50_ms"),
    ("server: queue wait p50 ms", "server_queue_wait_p50_ms"),
    ("server: run p50 ms (fork to exit)", "server_run_p50_ms"),
)  # fmt: skip
FOOTPRINT = (("process", "process"), ("RSS MB", "rss_mb"), ("PSS MB", "pss_mb"), ("seed / ours", "ratio"))
RAG = (("store", "store"), ("rag.ingest peak MB", "ingest_peak_mb"), ("rag.query peak MB", "query_peak_mb"))
DISPATCH = (
    ("engine", "engine"), ("clients", "clients"), ("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"),
    ("p99 ms", "p99_ms"), ("tasks/s", "tasks_per_s"), ("p50 / ours", "p50_ratio"),
    ("tasks/s / ours", "tasks_per_s_ratio"), ("n", "tasks", 0), ("errors", "errors"),
)  # fmt: skip
ENFORCEMENT = (
    ("mode", "mode"), ("allocation rate", "rate"), ("outcome", "outcomes"),
    ("peak - ceiling MB", "overshoot_mb"),
    ("% of ceiling", "overshoot_pct", 2), ("sampled RSS - ceiling MB", "sampled_overshoot_mb"),
    ("charged - ceiling MB", "charged_overshoot_mb"), ("killed by the kernel", "killed_by_kernel"),
    ("crossed", "crossed"), ("crossing -> gone ms", "cross_to_death_ms"),
    ("container OOM kills", "container_oom_kills"), ("container peak MB", "container_max_usage_mb"),
)  # fmt: skip
SURVIVAL = (
    ("system", "system"), ("tasks", "tasks"), ("answered", "answered"), ("succeeded", "succeeded"),
    ("killed", "killed"), ("failed", "failed"), ("lost", "lost"), ("refused", "refused"),
    ("goodput /s", "goodput_per_s", 2), ("goodput / ours", "goodput_ratio"),
    ("container OOM kills", "container_oom_kills"), ("max usage MB", "container_max_usage_mb"),
    ("process deaths", "process_deaths"), ("pool", "pool"),
)  # fmt: skip
HOSTILE = (
    ("mode", "mode"), ("seed", "seed"), ("took s", "took_s"), ("tasks", "tasks"), ("succeeded", "succeeded"),
    ("as expected", "as_expected"), ("final with a reason", "with_reason"), ("API alive", "api_alive"),
    ("container OOM kills", "container_oom_kills"), ("max usage MB", "container_max_usage_mb"),
    ("slowest admin answer s", "probe_slowest_s", 2), ("watchdog CPU s (rounds)", "watchdog"),
    ("outcomes by job", "outcomes"),
)  # fmt: skip
OCR = (
    ("page", "page"), ("memvisor s", "memvisor.latency_s"), ("plain s", "plain.latency_s"),
    ("ratio", "ratio", 2), ("peak MB (memvisor / plain)", "memvisor.peak_rss_mb / plain.peak_rss_mb", 0),
    ("match (memvisor / plain)", "memvisor.word_match / plain.word_match", 3), ("load", "load_1min"),
)  # fmt: skip
BROWSER = (
    ("format", "format"), ("memvisor run s", "memvisor_run_s", 2), ("memvisor peak MB", "memvisor_peak_mb"),
    ("plain s", "plain_s", 2), ("plain summed RSS MB", "plain_rss_sum_mb"),
    ("plain private MB", "plain_private_mb"), ("plain private / memvisor", "private_ratio"),
    ("plain container peak MB", "plain_container_mb"),
    ("the same, --disable-dev-shm-usage", "plain_nodevshm_container_mb"),
)  # fmt: skip
INSTANCES = (
    ("setup", "setup"), ("tasks/s", "tasks_per_s"), ("x SQLite", "tasks_per_s_ratio"),
    ("round trip p50 ms", "p50_ms"),
    ("submit-to-start p50 / p95 ms", "queue_wait_p50_ms / queue_wait_p95_ms"),
    ("started by another instance p50 ms", "cross_wait_p50_ms"), ("n", "tasks"), ("errors", "errors"),
)  # fmt: skip

SECTIONS = (
    Section("1. Footprint", footprint, (
        Table("rows", FOOTPRINT),
        "Seed interpreter: `{seed_python}`; seed modules that could not be imported there, so not counted: "
        "{seed_missing}.",
        Table("seed_steps", SEED_STEPS, "Where the seed's memory goes (first repeat, in import order):"),
    )),
    Section("2. Dispatch", dispatch, (
        Table("rows", DISPATCH),
        "Containers: {containers}. `ours` = memvisor-http at the same number of clients. memvisor-http is "
        "the Contract's two requests (POST /v1/tasks, then GET /v1/tasks/{{id}}?wait_s); memvisor-post-wait "
        "asks POST /v1/tasks?wait_s for the result in its own answer.",
        Table("breakdown", BREAKDOWN, "Where memvisor's HTTP latency goes (the tasks' own `queue_wait_s` and "
              "`run_s`; the rest of a client's latency is HTTP, persistence and notification):"),
    )),
    Section("3. Enforcement", enforcement, (Table("rows", ENFORCEMENT),)),
    Section("4. Survival", survival, (
        Table("rows", SURVIVAL),
        "Kinds in the mix: {kinds} (weights in bench/workload.py). memvisor answered throughout: {probe}.",
        Table("rows", (("system", "system"), ("outcomes", "by_reason")), "Outcomes (state/reason):"),
        Table("hostile", HOSTILE, "The hostile minute, each run in a fresh 512 MB cgroup: Render mode (uid "
              "10001, no writable cgroup, 0.5 CPU) and lab mode (root, a cgroup per worker):"),
    )),
    Section("5. OCR", ocr, (
        Table("pages", OCR, "All pages, all cores:"),
        Table("quota", OCR, "Under a 0.5-CPU quota:"),
    )),
    Section("6. RAG store: local against a shared Chroma server", rag, (
        Table("rows", RAG),
        Table("ratios", (("", "store"), ("rag.ingest", "ingest_peak_mb"), ("rag.query", "query_peak_mb"))),
        "{server}",
    )),
    Section("7. Instances on one PostgreSQL", instances, (Table("rows", INSTANCES),)),
    Section("8. Browser: browser.render against a plain Playwright script", browser_bench, (
        Table("rows", BROWSER),
        "memvisor's container peaked at {container} MB.",
    )),
)  # fmt: skip
METHOD = """\
- Every figure above was measured in this run; nothing is typed in. `latest.json` holds every raw
  sample (latencies, traces, trials) the tables summarise; below each section's tables, how it was
  measured.
- The service is the real one (`python -m api`, started by `harness.server.Server`) driven over HTTP,
  inside a fresh 512 MB memory cgroup (`harness.cgroup`) per scenario where one can be made. Memory
  comes from the cgroup files and /proc (smaps_rollup, statm), never from psutil's host figures.
- This machine is shared and may have been busy (see the load averages): compare ratios within the run,
  not absolute times across runs.
"""
AIMED = ("footprint", "dispatch", "enforcement", "survival", "ocr")  # scenarios with a headline aim


def build(results: dict[str, Any], plots: list[str]) -> str:
    parts = [f"# memvisor benchmarks ({results['meta']['plan']} run)", environment(results["meta"])]
    parts += ["## Headline: the aims", headline(results)]
    for section in SECTIONS:
        parts += [f"## {section.title}", _section(section, results.get(_key(section.module)))]
    if plots:
        parts += ["## Plots", "\n\n".join(f"![{name}]({name})" for name in plots)]
    parts += ["## Method", METHOD]
    return "\n\n".join(parts) + "\n"


def environment(meta: dict[str, Any]) -> str:
    rows = [
        ["command", f"`{meta['command']}`"],
        ["started / took", f"{meta['started_at']} / {meta.get('took_s', 0) / 60:.1f} min"],
        ["machine", f"{meta['cpus']} CPUs, Python {meta['python']}, kernel {meta['kernel']}"],
        ["load average (1/5/15 min)", f"before {meta['load_before']}, after {meta.get('load_after')}"],
        ["code", meta["git"]],
        ["512 MB container", meta["container"]],
        ["baselines' extra libraries", meta["extra_site"] or "none (project venv only)"],
    ]
    return table(["", ""], rows) + "\n\n" + NOTATION


def headline(results: dict[str, Any]) -> str:
    rows = []
    for scenario in AIMED:
        aims = ((results.get(scenario) or {}).get("summary") or {}).get("aims")
        for a in aims or [{"scenario": scenario, "figure": "not measured", "aim": "", "met": None}]:
            verdict = a.get("verdict") or (
                "n/a" if a["met"] is None else "**met**" if a["met"] else "**not met**"
            )
            rows.append([a["scenario"], a["figure"], a["aim"], verdict])
    return table(["scenario", "figure (this run)", "aim", "verdict"], rows)


def _section(section: Section, data: dict[str, Any] | None) -> str:
    if not data:
        return "Not run."
    if "error" in data:
        return f"Failed: `{data['error'][-600:]}`"
    if "skipped" in data:
        return f"Skipped: {data['skipped']}"
    summary = data["summary"]
    how = (section.module.__doc__ or "").replace("``", "`")
    return "\n\n".join([*(_part(part, summary) for part in section.parts), how.strip()])


def _key(module: ModuleType) -> str:
    """The scenario's key in the results: its module's name (browser_bench's is ``browser``)."""
    return module.__name__.removeprefix("bench.").removesuffix("_bench")


def _part(part: Part, summary: dict[str, Any]) -> str:
    if isinstance(part, str):
        return part.format(**summary)
    rows = summary.get(part.rows)
    if isinstance(rows, dict) and "skipped" in rows:
        return f"{part.intro} skipped ({rows['skipped']})".strip()
    text = table([c[0] for c in part.columns], [_cells(row, part.columns) for row in rows or []])
    return f"{part.intro}\n\n{text}" if part.intro else text


def _cells(row: dict[str, Any], columns: tuple[Column, ...]) -> list[str]:
    if "skipped" in row:  # a run that could not be made: its label, and why
        why = f"skipped: {str(row['skipped'])[:120]}"
        return [fmt(_get(row, columns[0][1])), why, *[""] * (len(columns) - 2)]
    cells = []
    for column in columns:
        digits = column[2] if len(column) == 3 else 1
        cells.append(" / ".join(_cell(row, key, digits) for key in column[1].split(" / ")))
    return cells


def _cell(row: dict[str, Any], key: str, digits: int) -> str:
    value = _get(row, key)
    if key.endswith("_ratio") and not isinstance(value, str):
        return times(value)
    return fmt(value, digits)


def _get(row: dict[str, Any], key: str) -> Any:
    """A dotted key's value; "" where the row has no such figure (not measured is None, shown "-")."""
    value: Any = row
    for part in key.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return value
