"""The sections of report.md, one function per scenario (bench/report.py assembles them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import instances
from bench.report_format import NOTATION, cell, counts, divide, fmt, table, times, verdict

METHOD = """\
- Every figure above was measured in this run; nothing is typed in. `latest.json` holds every raw
  sample (latencies, traces, trials) the tables summarise.
- The service is the real one (`python -m api`, started by `harness.server.Server`) driven over HTTP,
  inside a fresh 512 MB memory cgroup (`harness.cgroup`) per scenario where one can be made. Memory
  comes from the cgroup files and /proc (smaps_rollup, statm), never from psutil's host figures.
- Dispatch: a closed loop of N clients (each submits its next task when the last one ended) on the same
  no-op task for every engine; engines alternate within each repeat. A run stops starting tasks after
  its time cap, so the slow peers time fewer tasks (the `n` column).
- Enforcement: the bench samples the worker's RSS from /proc/<pid>/statm every ~0.25 ms (a short sleep,
  not a spin, so as not to starve the watchdog on 2 cores), finding the pid among the zygote's children
  and matching it to the task's `worker_pid` (a burst can cross the ceiling before an HTTP poll of
  /admin/workers answers). "Charged" is the worker cgroup's memory.max_usage_in_bytes: what the kernel
  backstop limits. RSS also counts pages shared with the zygote, which are charged to the zygote.
- Survival: one seeded job sequence (bench/workload.py), played by 6 clients for the stated time against
  memvisor, then against the seed-style baselines (bench/seedload.py), each in its own fresh 512 MB
  cgroup. The baselines import only the task modules (not the seed's 448 MB of libraries) and are
  restarted at once when they die, which flatters them.
- Instances: 1, 2 and 3 instances (`ROLE=all`) on one fresh PostgreSQL database each, and one on SQLite,
  one after the other; 8 clients submit no-op tasks round-robin across the instances with `?wait_s`.
  Submit-to-start is the server's `queue_wait_s`; "started by another instance" submits one task at a
  time to an extra `ROLE=api` instance, which claims nothing. All instances share the machine's 2 cores,
  so more instances here measure contention, not scale-out.
- This machine is shared and was busy (see the load averages): compare ratios within the run, not
  absolute times across runs.
"""


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


def guarded(data: dict[str, Any] | None, render: Callable[[dict[str, Any]], str]) -> str:
    if not data:
        return "Not run."
    if "error" in data:
        return f"Failed: `{data['error'][-600:]}`"
    if "skipped" in data:
        return f"Skipped: {data['skipped']}"
    return render(data)


# ----- headline --------------------------------------------------------------------------------------

AIM_ROW = ["scenario", "figure (this run)", "aim", "verdict"]


def headline(results: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    for collect in (_footprint_aims, _dispatch_aims, _enforcement_aims, _survival_aims, _ocr_aims):
        rows += collect(results)
    return table(AIM_ROW, rows)


def _summary(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    data = results.get(key) or {}
    summary: dict[str, Any] | None = data.get("summary")
    return summary


def _footprint_aims(results: dict[str, Any]) -> list[list[str]]:
    s = _summary(results, "footprint")
    if not s:
        return [["1 footprint", "not measured", "API + zygote + spare <= 80 MB", "n/a"]]
    rss, pss = cell(s["idle"]["sum_rss_mb"]), cell(s["idle"]["sum_pss_mb"])
    seed = f"seed process {cell(s['seed']['rss_mb'])} MB RSS"
    return [
        ["1 footprint", f"API + zygote + spare idle RSS {rss} MB", "<= 80 MB", verdict(s["aim_met_rss"])],
        ["1 footprint", f"API + zygote + spare idle PSS {pss} MB", "<= 80 MB", verdict(s["aim_met_pss"])],
        ["1 footprint", seed, "(baseline)", f"{times(s['ratio_seed_to_service_rss'])} ours"],
    ]


def _dispatch_aims(results: dict[str, Any]) -> list[list[str]]:
    s = _summary(results, "dispatch")
    if not s:
        return [["2 dispatch", "not measured", "p50 <= 15 ms, 100+ tasks/s", "n/a"]]
    rows = []
    for prefix, how in (("http", "POST + GET ?wait_s"), ("post_wait", "POST ?wait_s")):
        p50 = f"HTTP ({how}) p50 at 1 client: {fmt(s[f'{prefix}_p50_ms_c1'])} ms"
        tps = f"HTTP ({how}) best throughput: {fmt(s[f'{prefix}_best_tasks_per_s'])} tasks/s"
        rows.append(["2 dispatch", p50, "<= 15 ms", verdict(s[f"{prefix}_p50_met"])])
        rows.append(["2 dispatch", tps, ">= 100 tasks/s", verdict(s[f"{prefix}_tasks_per_s_met"])])
    return rows


def _enforcement_aims(results: dict[str, Any]) -> list[list[str]]:
    s = _summary(results, "enforcement")
    if not s:
        return [["3 enforcement", "not measured", "", "n/a"]]
    charged, rss = fmt(s["backstop_worst_charged_overshoot_mb"]), fmt(s["backstop_worst_rss_overshoot_mb"])
    backstop = f"kernel backstop: worst charged - ceiling {charged} MB (RSS - ceiling {rss} MB)"
    watchdog = f"watchdog alone: worst overshoot {fmt(s['watchdog_worst_overshoot_pct'], 2)} % of the ceiling"
    render = f"Render mode: {fmt(s.get('render_container_oom_kills'))} container OOM kills; with RLIMIT_DATA "
    render += f"worst peak - ceiling {fmt(s.get('render_worst_overshoot_mb'))} MB"
    return [
        ["3 enforcement", backstop, "nothing charged past the ceiling", verdict(s["aim_backstop_met"])],
        ["3 enforcement", watchdog, "< 5 % of the ceiling", verdict(s["aim_watchdog_met"])],
        ["3 enforcement", render, "0 container OOM kills", verdict(s.get("aim_render_met"))],
    ]


def _survival_aims(results: dict[str, Any]) -> list[list[str]]:
    s = _summary(results, "survival")
    if not s:
        return [["4 survival", "not measured", "0 container OOM kills", "n/a"]]
    ours = s["table"]["memvisor"]
    figure = f"container OOM kills {fmt(ours['container_oom_kills'])}, max usage "
    figure += f"{fmt(ours['container_max_usage_mb'])} MB"
    met = s["aim_no_container_oom_met"] and s["aim_max_usage_under_limit_met"]
    rows = [["4 survival", figure, "0 OOM kills, usage < 512 MB", verdict(met)]]
    h = (results.get("survival") or {}).get("hostile", {}).get("summary")
    if h:
        figure = f"hostile minute, {h['runs']} runs (Render and lab mode): container OOM kills "
        figure += f"{h['container_oom_kills']}, max usage {fmt(h['max_usage_mb'])} MB"
        aim = "0 OOM kills, usage < 512 MB, API alive, every task final with a reason and as expected"
        rows.append(["4 survival", figure, aim, verdict(h["aim_met"])])
    return rows


# ----- footprint -------------------------------------------------------------------------------------


def footprint(data: dict[str, Any]) -> str:
    s = data["summary"]
    idle, loaded, seed = s["idle"], s["after_load"], s["seed"]
    n = data["service"][0]["load_tasks"] if data["service"] else 0
    ratios = f"{times(s['ratio_seed_to_service_rss'])} RSS, {times(s['ratio_seed_to_service_pss'])} PSS"
    rows = [
        ["API process, idle", cell(idle["api_rss_mb"]), cell(idle["api_pss_mb"]), ""],
        ["zygote, idle", cell(idle["zygote_rss_mb"]), cell(idle["zygote_pss_mb"]), ""],
        ["spare worker(s), idle", cell(idle["spare_rss_mb"]), cell(idle["spare_pss_mb"]), ""],
        ["**API + zygote + spare, idle**", cell(idle["sum_rss_mb"]), cell(idle["sum_pss_mb"]), "x1.00"],
        [f"the same, idle after {n} tasks", cell(loaded["sum_rss_mb"]), cell(loaded["sum_pss_mb"]), ""],
        ["container working set, idle (cgroup)", cell(idle["container_working_set_mb"]), "", ""],
        ["**seed: one process importing the stack**", cell(seed["rss_mb"]), cell(seed["pss_mb"]), ratios],
    ]
    head = table(["process", "RSS MB", "PSS MB", "seed / ours"], rows)
    return "\n\n".join([head, SPARE_NOTE, _seed_note(s), _seed_steps(s)])


SPARE_NOTE = (
    "The spare is a worker forked ahead of need (`SPARE_WORKERS`, default 1); RSS counts the pages it "
    "shares with the zygote twice, PSS splits them."
)


def _seed_note(s: dict[str, Any]) -> str:
    missing = s["seed_missing"]
    where = f"Seed interpreter: `{s['seed_python']}`; "
    if not missing:
        return where + "every seed module imported (torchvision after the torch.library schema workaround)."
    return (
        where
        + "not importable there, so not counted: "
        + "; ".join(f"`{m}` ({e})" for m, e in missing.items())
    )


def _seed_steps(s: dict[str, Any]) -> str:
    rows = [
        [f"`{r['module']}`", fmt(r["rss_mb"]), f"+{fmt(r['added_rss_mb'])}", fmt(r["import_s"], 2)]
        for r in s["seed_steps"]
    ]
    header = ["import", "RSS after, MB", "added, MB", "import s"]
    return "Where the seed's memory goes (first repeat, in import order):\n\n" + table(header, rows)


# ----- dispatch --------------------------------------------------------------------------------------

DISPATCH_HEADER = [
    "engine", "clients", "p50 ms", "p95 ms", "p99 ms", "tasks/s", "p50 / ours", "tasks/s / ours", "n",
    "errors",
]  # fmt: skip


def dispatch(data: dict[str, Any]) -> str:
    rows = []
    for engine, cells in data["summary"]["table"].items():
        for concurrency, c in cells.items():
            figures = [cell(c[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "tasks_per_s")]
            ratios = [times(c["p50_vs_memvisor_http"]), times(c["tps_vs_memvisor_http"])]
            rows.append([engine, concurrency, *figures, *ratios, cell(c["tasks"], 0), str(c["errors"])])
    where = ", ".join(f"{k}: {v}" for k, v in data["containers"].items())
    note = (
        f"Containers: {where}. `ours` = memvisor-http at the same number of clients. memvisor-http is "
        "the Contract's two requests (POST /v1/tasks, then GET /v1/tasks/{id}?wait_s); memvisor-post-wait "
        "asks POST /v1/tasks?wait_s for the result in its own answer."
    )
    return "\n\n".join([table(DISPATCH_HEADER, rows), note, _breakdown(data["summary"]["table"])])


def _breakdown(cells: dict[str, Any]) -> str:
    """Where memvisor's HTTP latency goes, by the server's own record of each task."""
    rows = [
        [c, cell(v["p50_ms"]), cell(v.get("server_queue_wait_p50_ms")), cell(v.get("server_run_p50_ms"))]
        for c, v in cells.get("memvisor-http", {}).items()
    ]
    header = ["clients", "client p50 ms", "server: queue wait p50 ms", "server: run p50 ms (fork to exit)"]
    rest = "The rest of a client's latency is HTTP, persistence and notification."
    return (
        "Where memvisor's HTTP latency goes (the tasks' own `queue_wait_s` and `run_s`):\n\n"
        + table(header, rows)
        + "\n\n"
        + rest
    )


# ----- enforcement -----------------------------------------------------------------------------------

ENFORCEMENT_HEADER = [
    "mode", "allocation rate", "outcome", "peak - ceiling MB", "% of ceiling", "sampled RSS - ceiling MB",
    "charged - ceiling MB", "killed by the kernel", "crossed", "crossing -> gone ms", "container OOM kills",
    "container peak MB",
]  # fmt: skip
ENFORCEMENT_NOTE = (
    "Ceiling 200 MB, allocation 600 MB. `peak` is the task's peak_rss_mb (the watchdog's samples and "
    "the kernel's ru_maxrss); `sampled` the bench's own statm samples; `charged` what the worker's "
    "cgroup was charged; `killed by the kernel` how many trials the worker cgroup's own OOM-kill "
    "counter shows (the backstop acted before the watchdog); `crossed` how many trials the bench saw "
    "at or above the ceiling (the time to death is measured on those). `render` rows: uid 10001, no "
    "writable cgroup, 0.5 CPU, with RLIMIT_DATA in the worker (it ends `killed/memory_ceiling` on a "
    "MemoryError) and without it (WORKER_DATA_LIMIT=false: the watchdog alone, on half a CPU)."
)


def enforcement(data: dict[str, Any]) -> str:
    rows = []
    for mode, rates in data["summary"]["table"].items():
        for rate, c in rates.items():
            overshoot = [
                cell(c["overshoot_mb"]),
                cell(c["overshoot_pct"], 2),
                cell(c["sampled_overshoot_mb"]),
            ]
            crossing = [f"{c['crossed']}/{c['trials']}", cell(c["cross_to_death_ms"])]
            container = [str(c["container_oom_kills"]), cell(c["container_peak_mb"])]
            outcome = counts(c["outcomes"])
            kernel = "-" if c["killed_by_kernel"] is None else f"{c['killed_by_kernel']}/{c['trials']}"
            charged = [cell(c["charged_overshoot_mb"]), kernel]
            rows.append([mode, rate, outcome, *overshoot, *charged, *crossing, *container])
    return table(ENFORCEMENT_HEADER, rows) + "\n\n" + ENFORCEMENT_NOTE


# ----- survival --------------------------------------------------------------------------------------

SURVIVAL_HEADER = [
    "system", "tasks", "answered", "succeeded", "killed", "failed", "lost", "refused", "goodput /s",
    "goodput / ours",
    "container OOM kills", "max usage MB", "process deaths", "pool",
]  # fmt: skip


def survival(data: dict[str, Any]) -> str:
    rows_by_name = data["summary"]["table"]
    ours = rows_by_name["memvisor"]["goodput_per_s"]
    rows = [_survival_row(name, r, ours) for name, r in rows_by_name.items()]
    reasons = [[name, counts(r["by_reason"])] for name, r in rows_by_name.items()]
    m = data["memvisor"]
    probe = f"{m['probe_failures']} failed admin polls, slowest answer {m['probe_slowest_s']} s"
    health = "200" if m["healthy_after"] else "failed"
    mix = f"Kinds in the mix: {', '.join(_played_kinds(m))} (weights in bench/workload.py). "
    mix += f"memvisor answered throughout: {probe}; /healthz after the run: {health}."
    return "\n\n".join(
        [
            table(SURVIVAL_HEADER, rows),
            mix,
            "Outcomes (state/reason):\n\n" + table(["system", "outcomes"], reasons),
            *([_hostile(data["hostile"]["runs"])] if "hostile" in data else []),
        ]
    )


HOSTILE_HEADER = [
    "mode", "seed", "took s", "tasks", "succeeded", "as expected", "final with a reason", "API alive",
    "container OOM kills", "max usage MB", "slowest admin answer s", "watchdog CPU s (rounds)",
    "outcomes by job",
]  # fmt: skip


def _hostile(runs: list[dict[str, Any]]) -> str:
    """The hostile minute (harness/hostile_mix.py) in Render mode (uid 10001, no writable cgroup, 0.5 CPU)
    and lab mode (root, a cgroup per worker)."""
    rows = []
    for r in runs:
        if "skipped" in r:
            rows.append([r["mode"], str(r["seed"]), f"skipped: {r['skipped']}", *[""] * 10])
            continue
        outcomes = "; ".join(f"{label}: {counts(c)}" for label, c in r["by_label"].items())
        tallies = [str(r[k]) for k in ("tasks", "succeeded", "as_expected", "with_reason")]
        memory = [fmt(r["container_oom_kills"]), fmt(r["container_max_usage_mb"])]
        memory += [fmt(r["probe_slowest_s"], 2), f"{fmt(r['watchdog_cpu_s'], 2)} ({r['watchdog_rounds']})"]
        alive = "yes" if r["api_alive"] else "**no**"
        rows.append([r["mode"], str(r["seed"]), fmt(r["took_s"]), *tallies, alive, *memory, outcomes])
    note = "The hostile minute (harness/hostile_mix.py, all submitted at once), each run in a fresh 512 MB "
    note += "cgroup: Render mode (uid 10001, no writable cgroup, 0.5 CPU) and lab mode (root, a cgroup "
    note += "per worker)."
    return note + "\n\n" + table(HOSTILE_HEADER, rows)


def _survival_row(name: str, r: dict[str, Any], ours_goodput: float | None) -> list[str]:
    broken = "-" if r["pool_broken_at_s"] is None else f"broken at {r['pool_broken_at_s']} s"
    label = f"**{name}**" if name == "memvisor" else f"seed way: {name}"
    tallies = [str(r[k]) for k in ("tasks", "answered", "succeeded", "killed", "failed", "lost", "refused")]
    goodput = [fmt(r["goodput_per_s"], 2), times(divide(r["goodput_per_s"], ours_goodput))]
    memory = [fmt(r["container_oom_kills"]), fmt(r["container_max_usage_mb"]), str(r["process_deaths"])]
    return [label, *tallies, *goodput, *memory, broken]


def _played_kinds(memvisor: dict[str, Any]) -> list[str]:
    return sorted({job["kind"] for job in memvisor["jobs"]})


# ----- ocr -------------------------------------------------------------------------------------------

OCR_NOTE = (
    "Pages of PDFs from Debian -doc packages (bench/ocr_corpus.py) at 150 dpi, truth from pdftotext. "
    "memvisor: POST /v1/ocr?wait_s to the final task (a fresh worker per task), its peak the task's "
    "peak_rss_mb. Plain: a fresh `easyocr.Reader(['en'])` process from its start to its exit after the "
    "first readtext (bench/ocr_bench.py's child), VmHWM of the process. Ratio: memvisor / plain latency "
    "of the same page, measured one right after the other. Word match: F1 of the multisets of words "
    "(ocr_corpus.word_match). Aim: ratio <= 0.4, match no more than 0.01 below plain's, peak <= 320 MB."
)


def ocr(data: dict[str, Any]) -> str:
    parts = []
    for key, title in (("pages", "All pages, all cores"), ("quota", "Under a 0.5-CPU quota")):
        rows = data.get(key) or {}
        if "skipped" in rows:
            parts.append(f"{title}: skipped ({rows['skipped']})")
            continue
        body = [_ocr_row(page, r) for page, r in rows.items()]
        body.append(_ocr_summary_row(data["summary"][key]))
        header = [
            "page",
            "memvisor s",
            "plain s",
            "ratio",
            "peak MB (memvisor / plain)",
            "match (memvisor / plain)",
            "load",
        ]
        parts.append(f"{title}:\n\n" + table(header, body))
    return "\n\n".join(parts) + "\n\n" + OCR_NOTE


def _ocr_row(page: str, r: dict[str, Any]) -> list[str]:
    ours, plain = r["memvisor"], r["plain"]
    if "skipped" in plain:
        skipped = f"skipped: {plain['skipped'][:80]}"
        return [page, fmt(ours["latency_s"]), skipped, "", fmt(ours["peak_rss_mb"]),
                fmt(ours["word_match"], 3), fmt(r["load_1min"])]  # fmt: skip
    return [
        page, fmt(ours["latency_s"]), fmt(plain["latency_s"]), fmt(r.get("ratio"), 2),
        f"{fmt(ours['peak_rss_mb'], 0)} / {fmt(plain['peak_rss_mb'], 0)}",
        f"{fmt(ours['word_match'], 3)} / {fmt(plain['word_match'], 3)}", fmt(r["load_1min"]),
    ]  # fmt: skip


RAG_NOTE = (
    "Each figure is a task's peak_rss_mb (the watchdog's reading of its worker's process tree), a fresh "
    "worker per task: an ingest of 50 short documents, then a query. Local: PersistentClient under "
    "DATA_DIR/chroma behind a file lock; HTTP: chromadb.HttpClient against `chroma run` (CHROMA_URL). "
    "Server: VmRSS of the `chroma run` process."
)


def rag(data: dict[str, Any]) -> str:
    s = data["summary"]
    rows = [[store, cell(r["ingest_peak_mb"]), cell(r["query_peak_mb"])] for store, r in s["table"].items()]
    rows.append(
        ["HTTP / local", times(s["ingest_ratio_http_to_local"]), times(s["query_ratio_http_to_local"])]
    )
    server = s["server"]
    growth = ", ".join(f"{fmt(mb)} MB at {int(n):,}" for n, mb in server["server_growth_rss_mb"].items())
    serving = (
        f"`chroma run`: {fmt(server['server_idle_rss_mb'])} MB RSS idle, "
        f"{fmt(server['server_loaded_rss_mb'])} MB after this scenario's "
        f"{server['server_documents']:,} documents; one collection of stored chunks: {growth} "
        f"(peak {fmt(server['server_peak_rss_mb'])} MB)."
    )
    return table(["store", "rag.ingest peak MB", "rag.query peak MB"], rows) + f"\n\n{serving}\n\n{RAG_NOTE}"


def _ocr_summary_row(s: dict[str, Any]) -> list[str]:
    match = s["mean_word_match"]
    return [
        f"**median [min-max] of {s['compared']} pages**", cell(s["memvisor_latency_s"]),
        cell(s["plain_latency_s"]), cell(s["ratio"], 2),
        f"{cell(s['memvisor_peak_mb'], 0)} / {cell(s['plain_peak_mb'], 0)}",
        f"mean {fmt(match['memvisor'], 3)} / {fmt(match['plain'], 3)}", cell(s["load_1min"]),
    ]  # fmt: skip


def _ocr_aims(results: dict[str, Any]) -> list[list[str]]:
    s = (_summary(results, "ocr") or {}).get("pages")
    if not s or "skipped" in s:
        return [["5 OCR", "not measured", "<= 0.4 x plain EasyOCR's time", "n/a"]]
    ratio, match, peak = s["ratio"]["median"], s["mean_word_match"], s["memvisor_peak_mb"]["max"]
    fast = ratio is not None and ratio <= 0.4
    accurate = match["memvisor"] >= match["plain"] - 0.01
    small = peak is not None and peak <= 320
    both = f"{fmt(match['memvisor'], 3)} vs {fmt(match['plain'], 3)}"
    return [
        ["5 OCR time / plain EasyOCR", cell(s["ratio"], 2), "<= 0.4", verdict(fast)],
        ["5 OCR word match", both, ">= plain - 0.01", verdict(accurate)],
        ["5 OCR worker peak", f"{fmt(peak, 0)} MB (max)", "<= 320 MB", verdict(small)],
    ]


SCENARIOS: tuple[tuple[str, Callable[[dict[str, Any]], str], str], ...] = (
    ("1. Footprint", footprint, "footprint"),
    ("2. Dispatch", dispatch, "dispatch"),
    ("3. Enforcement", enforcement, "enforcement"),
    ("4. Survival", survival, "survival"),
    ("5. OCR", ocr, "ocr"),
    ("6. RAG store: local against a shared Chroma server", rag, "rag"),
    ("7. Instances on one PostgreSQL", instances.render, "instances"),
)
