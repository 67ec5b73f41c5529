// memvisor admin dashboard: polls the admin JSON endpoints and draws its own charts on <canvas>.
// No framework and nothing from outside this server, so it works offline and under a strict CSP.
"use strict";

(() => {
  const POLL_MS = 1000;
  const KILLS_EVERY_MS = 5000;
  const WINDOW_S = 180;
  // A longer silence than this (hidden tab, server restart) is drawn as a gap, not a straight line.
  const GAP_S = 5;
  const TOKEN_KEY = "memvisor.adminToken";

  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}

  const state = {
    token: null,
    // Bumped on every connect and sign-out, so a poll still in flight from an older token stops.
    session: 0,
    timer: null,
    memory: [], // {t, usage, limit, budget, highWater, committed}
    workers: new Map(), // pid -> {pid, kind, taskId, color, live, points: [[t, rss, ceiling]]}
    nextColor: 0,
    livePids: "",
    killsFetchedAt: 0,
    estimates: "",
  };

  // ---- HTTP ------------------------------------------------------------------------------------

  function describe(detail) {
    if (typeof detail === "string") return detail;
    return detail === undefined || detail === null ? "" : JSON.stringify(detail);
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      ...options,
      cache: "no-store",
      headers: { Authorization: `Bearer ${state.token}` },
    });
    if (response.status === 401) {
      throw new AuthError("The server rejected this admin token (HTTP 401). Check ADMIN_TOKEN and try again.");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = describe(body && body.detail);
      throw new Error(`${path}: HTTP ${response.status}${detail ? ` (${detail})` : ""}`);
    }
    return body;
  }

  // ---- token and polling lifecycle -------------------------------------------------------------

  function showLogin(message) {
    $("dashboard").hidden = true;
    $("sign-out").hidden = true;
    $("login").hidden = false;
    $("auth-error").hidden = !message;
    $("auth-error").textContent = message || "";
    setStatus("idle", "not connected");
    $("token").focus();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("auth-error").hidden = true;
    $("dashboard").hidden = false;
    $("sign-out").hidden = false;
  }

  function stopPolling() {
    state.session += 1;
    clearTimeout(state.timer);
    state.timer = null;
  }

  function signOut(message) {
    stopPolling();
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }

  async function connect(token) {
    stopPolling();
    const session = state.session;
    state.token = token;
    $("connect").disabled = true;
    try {
      await api("/admin/memory"); // checks the token before anything is shown
    } catch (err) {
      if (session !== state.session) return;
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(err instanceof AuthError ? err.message : `Could not reach the server: ${err.message}`);
      return;
    } finally {
      $("connect").disabled = false;
    }
    if (session !== state.session) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    showDashboard();
    tick(session);
  }

  async function tick(session) {
    if (session !== state.session) return;
    // A hidden tab keeps its history but stops asking: each poll makes the server read process memory.
    if (document.visibilityState !== "hidden") {
      try {
        await poll();
        if (session !== state.session) return;
        setStatus("live", "live");
        showError("");
      } catch (err) {
        if (session !== state.session) return;
        if (err instanceof AuthError) {
          signOut(err.message);
          return;
        }
        setStatus("error", "retrying");
        showError(`Cannot read the admin endpoints: ${err.message}`);
      }
    }
    state.timer = setTimeout(() => tick(session), POLL_MS);
  }

  async function poll() {
    const [memory, workers] = await Promise.all([api("/admin/memory"), api("/admin/workers")]);
    const now = Date.now() / 1000;
    recordMemory(now, memory);
    recordWorkers(now, workers);
    renderStats(memory, workers);
    renderWorkers(workers);
    renderEstimates(memory.estimates_mb || {});
    drawCharts(now);
    // A worker that left may have been killed: fetch kills at once, else only now and then.
    const pids = workers.map((w) => w.pid).sort().join(" ");
    if (pids !== state.livePids || Date.now() - state.killsFetchedAt > KILLS_EVERY_MS) {
      state.livePids = pids;
      await refreshKills();
    }
  }

  async function refreshKills() {
    const kills = await api("/admin/kills?limit=20");
    state.killsFetchedAt = Date.now();
    renderKills(kills);
  }

  function setStatus(kind, text) {
    const el = $("status");
    el.className = `status status-${kind}`;
    el.textContent = text;
  }

  function showError(message) {
    $("error").hidden = !message;
    $("error").textContent = message;
  }

  function notice(message) {
    $("kill-message").hidden = !message;
    $("kill-message").textContent = message;
  }

  // ---- history ---------------------------------------------------------------------------------

  function recordMemory(t, m) {
    state.memory.push({
      t,
      usage: m.usage_mb,
      limit: m.limit_mb,
      budget: m.budget_mb,
      highWater: m.high_water_mb,
      committed: m.committed_mb,
    });
    while (state.memory.length && state.memory[0].t < t - WINDOW_S) state.memory.shift();
  }

  function recordWorkers(t, workers) {
    for (const series of state.workers.values()) series.live = false;
    for (const w of workers) {
      let series = state.workers.get(w.pid);
      if (!series) {
        series = { pid: w.pid, kind: w.kind, taskId: w.task_id, color: state.nextColor++, points: [] };
        state.workers.set(w.pid, series);
      }
      series.live = true;
      series.points.push([t, w.rss_mb, w.ceiling_mb]);
    }
    // An ended worker's line stays until it scrolls out, so a kill is still visible on the chart.
    for (const [pid, series] of state.workers) {
      while (series.points.length && series.points[0][0] < t - WINDOW_S) series.points.shift();
      if (!series.points.length && !series.live) state.workers.delete(pid);
    }
  }

  // ---- tables and numbers ----------------------------------------------------------------------

  function mb(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return `${value < 10 && !Number.isInteger(value) ? value.toFixed(1) : Math.round(value)} MB`;
  }

  function duration(seconds) {
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const m = Math.floor(seconds / 60);
    const s = Math.floor(seconds % 60);
    return m < 60 ? `${m} m ${String(s).padStart(2, "0")} s` : `${Math.floor(m / 60)} h ${m % 60} m`;
  }

  function setText(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  function renderStats(m, workers) {
    const pct = m.limit_mb ? Math.round((100 * m.usage_mb) / m.limit_mb) : 0;
    setText("stat-usage", mb(m.usage_mb));
    setText("stat-usage-source", `${pct}% of limit · ${m.usage_source}`);
    setText("stat-limit", mb(m.limit_mb));
    setText("stat-limit-source", `from ${m.limit_source}`);
    setText("stat-high-water", mb(m.high_water_mb));
    setText("stat-budget", mb(m.budget_mb));
    setText("stat-budget-detail", `base ${mb(m.api_and_zygote_mb)}, margin ${mb(m.safety_margin_mb)}`);
    setText("stat-committed", mb(m.committed_mb));
    setText("stat-workers", String(workers.length));
    setText("stat-backstop", m.worker_cgroups ? "kernel backstop on" : "watchdog only");
    setText("enforcement", m.enforcement ? m.enforcement.summary : "–");
    const oom = m.container_oom_kills;
    setText("stat-oom", oom === null || oom === undefined ? "–" : String(oom));
  }

  function cell(row, className) {
    const td = row.insertCell();
    if (className) td.className = className;
    return td;
  }

  function createWorkerRow(w) {
    const row = document.createElement("tr");
    row.dataset.pid = String(w.pid);
    row.dataset.taskId = w.task_id;
    cell(row, "id pid").textContent = String(w.pid);
    const kind = cell(row, "kind");
    kind.append(document.createElement("span"), document.createTextNode(w.kind));
    kind.firstChild.className = "swatch";
    cell(row, "id task").textContent = w.task_id;
    const rss = cell(row, "num rss");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.append(document.createElement("span"));
    rss.append(bar, document.createElement("span"));
    for (const name of ["peak", "ceiling", "reserved", "age"]) cell(row, `num ${name}`);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "kill";
    button.dataset.pid = String(w.pid);
    button.dataset.taskId = w.task_id;
    button.textContent = "Kill";
    button.setAttribute("aria-label", `Kill worker ${w.pid} (task ${w.task_id}, ${w.kind})`);
    cell(row, "action").append(button);
    return row;
  }

  // Rows are updated in place, not rebuilt, so a Kill button never vanishes under the pointer.
  function updateWorkerRow(row, w) {
    const series = state.workers.get(w.pid);
    const swatch = row.querySelector(".kind .swatch");
    if (series) swatch.style.borderColor = seriesColor(series);
    const ratio = w.ceiling_mb ? w.rss_mb / w.ceiling_mb : 0;
    const rss = row.querySelector(".rss");
    rss.lastChild.textContent = mb(w.rss_mb);
    const bar = rss.querySelector(".bar");
    bar.className = `bar${ratio > 0.9 ? " danger" : ratio > 0.75 ? " warn" : ""}`;
    bar.firstChild.style.width = `${Math.min(100, Math.round(ratio * 100))}%`;
    bar.title = `${Math.round(ratio * 100)}% of its ceiling`;
    row.querySelector(".peak").textContent = mb(w.peak_rss_mb);
    const ceiling = row.querySelector(".ceiling");
    ceiling.textContent = mb(w.ceiling_mb);
    ceiling.title = w.kernel_backstop ? "enforced by the watchdog and a per-worker cgroup" : "enforced by the watchdog";
    row.querySelector(".reserved").textContent = mb(w.reserved_mb);
    row.querySelector(".age").textContent = duration(w.age_s);
  }

  function renderWorkers(workers) {
    const tbody = $("workers-table").tBodies[0];
    const live = new Set();
    for (const w of workers) {
      live.add(String(w.pid));
      let row = tbody.querySelector(`tr[data-pid="${w.pid}"]`);
      if (!row) {
        row = createWorkerRow(w);
        tbody.append(row);
      }
      updateWorkerRow(row, w);
    }
    for (const row of [...tbody.rows]) if (!live.has(row.dataset.pid)) row.remove();
    $("workers-empty").hidden = workers.length > 0;
  }

  function when(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "–";
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function renderKills(kills) {
    const tbody = $("kills-table").tBodies[0];
    const rows = kills.map((k) => {
      const row = document.createElement("tr");
      row.dataset.taskId = k.task_id;
      const finished = cell(row, "finished");
      finished.textContent = when(k.finished_at);
      finished.title = k.finished_at || "";
      cell(row, "id task").textContent = k.task_id;
      cell(row, "kind").textContent = k.kind;
      cell(row, "state").textContent = k.state;
      const reason = document.createElement("span");
      reason.className = `reason reason-${k.reason || "none"}`;
      reason.textContent = k.reason || "–";
      cell(row, "reason").append(reason);
      cell(row, "num peak").textContent = mb(k.peak_rss_mb);
      cell(row, "num ceiling").textContent = mb(k.ceiling_mb);
      return row;
    });
    tbody.replaceChildren(...rows);
    $("kills-empty").hidden = kills.length > 0;
  }

  function renderEstimates(estimates) {
    const key = JSON.stringify(estimates);
    if (key === state.estimates) return;
    state.estimates = key;
    const rows = Object.keys(estimates)
      .sort()
      .map((kind) => {
        const row = document.createElement("tr");
        cell(row, "kind").textContent = kind;
        cell(row, "num").textContent = mb(estimates[kind]);
        return row;
      });
    $("estimates-table").tBodies[0].replaceChildren(...rows);
  }

  async function kill(button) {
    const pid = Number(button.dataset.pid);
    button.disabled = true;
    button.textContent = "Killing…";
    try {
      const body = await api(`/admin/workers/${pid}/kill`, { method: "POST" });
      notice(`Killed worker ${pid} (task ${body.task_id}).`);
    } catch (err) {
      if (err instanceof AuthError) {
        signOut(err.message);
        return;
      }
      notice(`Could not kill worker ${pid}: ${err.message}`);
      button.disabled = false;
      button.textContent = "Kill";
    }
    state.killsFetchedAt = 0; // show the kill on the next poll
  }

  // ---- charts ----------------------------------------------------------------------------------

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function seriesColor(series) {
    const palette = cssVar("--series").split(/\s+/);
    return palette[series.color % palette.length];
  }

  // Sizes the backing store to the element's CSS size times the pixel ratio, so lines stay sharp.
  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return { ctx, width, height };
  }

  function niceStep(raw) {
    const power = 10 ** Math.floor(Math.log10(raw));
    const fraction = raw / power;
    return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
  }

  function ago(seconds) {
    if (seconds < 60) return `−${seconds} s`;
    const s = seconds % 60;
    return s ? `−${Math.floor(seconds / 60)}:${String(s).padStart(2, "0")}` : `−${seconds / 60} min`;
  }

  function drawAxes(ctx, plot, yMax) {
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.setLineDash([]);
    ctx.strokeStyle = cssVar("--grid");
    ctx.fillStyle = cssVar("--muted");
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const step = niceStep(yMax / 5);
    for (let v = 0; v <= yMax; v += step) {
      const y = Math.round(plot.y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(plot.left, y);
      ctx.lineTo(plot.right, y);
      ctx.stroke();
      ctx.fillText(`${v} MB`, plot.left - 6, y);
    }
    ctx.textBaseline = "top";
    const tick = [5, 10, 20, 30].find((s) => plot.span / s <= 6) || 30;
    // Label every tick where there is room, else every other one.
    const every = (tick / plot.span) * (plot.right - plot.left) >= 70 ? 1 : 2;
    for (let s = 0, i = 0; s <= plot.span; s += tick, i += 1) {
      const x = Math.round(plot.x(plot.now - s)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, plot.top);
      ctx.lineTo(x, plot.bottom);
      ctx.stroke();
      if (i % every === 0) {
        ctx.textAlign = s === 0 ? "right" : "center";
        ctx.fillText(s === 0 ? "now" : ago(s), x, plot.bottom + 6);
      }
    }
  }

  function tracePath(ctx, plot, points) {
    let previous = null;
    ctx.beginPath();
    for (const [t, v] of points) {
      const x = plot.x(t);
      const y = plot.y(v);
      if (previous === null || t - previous > GAP_S) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
      previous = t;
    }
  }

  // A line of [t, value] points; `fill` shades the area below it, runs split at gaps.
  function drawLine(ctx, plot, { points, color, width = 1.5, dash = [], fill = false }) {
    if (!points.length) return;
    ctx.save();
    ctx.beginPath();
    ctx.rect(plot.left, plot.top - 1, plot.right - plot.left + 1, plot.bottom - plot.top + 2);
    ctx.clip();
    if (fill) {
      ctx.fillStyle = color;
      ctx.globalAlpha = 0.12;
      for (const run of splitRuns(points)) {
        tracePath(ctx, plot, run);
        ctx.lineTo(plot.x(run[run.length - 1][0]), plot.bottom);
        ctx.lineTo(plot.x(run[0][0]), plot.bottom);
        ctx.closePath();
        ctx.fill();
      }
      ctx.globalAlpha = 1;
    }
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.lineJoin = "round";
    ctx.setLineDash(dash);
    tracePath(ctx, plot, points);
    ctx.stroke();
    ctx.restore();
    if (points.length === 1) dot(ctx, plot, points[0], color);
  }

  function splitRuns(points) {
    const runs = [[]];
    for (const point of points) {
      const run = runs[runs.length - 1];
      if (run.length && point[0] - run[run.length - 1][0] > GAP_S) runs.push([point]);
      else run.push(point);
    }
    return runs.filter((run) => run.length);
  }

  function dot(ctx, plot, [t, v], color) {
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(plot.x(t), plot.y(v), 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }

  // Names a horizontal reference line at the right edge, above or below it so neighbours don't collide.
  function label(ctx, plot, text, value, color, below) {
    ctx.font = "600 11px system-ui, sans-serif";
    ctx.fillStyle = color;
    ctx.textAlign = "right";
    ctx.textBaseline = below ? "top" : "bottom";
    ctx.fillText(text, plot.right - 4, plot.y(value) + (below ? 3 : -3));
  }

  function chartFrame(canvas, yMax, now) {
    const { ctx, width, height } = prepare(canvas);
    // The time axis spans the history there is (at least 30 s), up to the window: a freshly opened
    // page fills its charts at once instead of drawing a sliver at the right edge.
    const oldest = state.memory.length ? state.memory[0].t : now;
    const span = Math.min(WINDOW_S, Math.max(30, Math.ceil(now - oldest)));
    const plot = { left: 56, right: width - 10, top: 10, bottom: height - 24, span, now };
    plot.x = (t) => plot.right - ((now - t) / span) * (plot.right - plot.left);
    plot.y = (v) => plot.bottom - (v / yMax) * (plot.bottom - plot.top);
    drawAxes(ctx, plot, yMax);
    return { ctx, plot, width, height };
  }

  function emptyText(ctx, width, height, text) {
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillStyle = cssVar("--muted");
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(text, width / 2, height / 2);
  }

  function memorySeries() {
    const pick = (key) => state.memory.map((s) => [s.t, s[key]]);
    return [
      { key: "usage", name: "usage", points: pick("usage"), color: cssVar("--usage"), width: 2, fill: true },
      { key: "committed", name: "committed", points: pick("committed"), color: cssVar("--committed"), dash: [2, 3] },
      { key: "budget", name: "budget", points: pick("budget"), color: cssVar("--budget"), dash: [6, 4] },
      { key: "highWater", name: "high water", points: pick("highWater"), color: cssVar("--high-water"), dash: [6, 4] },
      { key: "limit", name: "limit", points: pick("limit"), color: cssVar("--limit"), width: 1.5 },
    ];
  }

  function drawMemoryChart(now) {
    const canvas = $("memory-chart");
    const latest = state.memory[state.memory.length - 1];
    const peak = Math.max(0, ...state.memory.map((s) => Math.max(s.usage, s.limit)));
    const { ctx, plot, width, height } = chartFrame(canvas, Math.max(64, peak * 1.08), now);
    const series = memorySeries();
    for (const s of series) drawLine(ctx, plot, s);
    if (latest) {
      label(ctx, plot, `limit ${mb(latest.limit)}`, latest.limit, cssVar("--limit"), false);
      label(ctx, plot, `high water ${mb(latest.highWater)}`, latest.highWater, cssVar("--high-water"), true);
      label(ctx, plot, `budget ${mb(latest.budget)}`, latest.budget, cssVar("--budget"), false);
    } else {
      emptyText(ctx, width, height, "Waiting for data…");
    }
    canvas.dataset.points = String(state.memory.length);
    renderLegend($("memory-legend"), series.map((s) => ({
      color: s.color,
      dashed: Boolean(s.dash),
      text: `${s.name}${latest ? ` ${mb(latest[s.key])}` : ""}`,
    })));
  }

  function drawWorkersChart(now) {
    const canvas = $("workers-chart");
    const all = [...state.workers.values()];
    const peak = Math.max(0, ...all.flatMap((s) => s.points.map(([, rss, ceiling]) => Math.max(rss, ceiling))));
    const { ctx, plot, width, height } = chartFrame(canvas, Math.max(64, peak * 1.1), now);
    for (const s of all) {
      const color = seriesColor(s);
      drawLine(ctx, plot, { points: s.points.map(([t, , ceiling]) => [t, ceiling]), color, width: 1, dash: [5, 4] });
      drawLine(ctx, plot, { points: s.points.map(([t, rss]) => [t, rss]), color, width: 2 });
    }
    if (!all.length) emptyText(ctx, width, height, "No workers in this window");
    canvas.dataset.series = String(all.length);
    canvas.dataset.pids = all.map((s) => s.pid).join(" ");
    renderLegend($("workers-legend"), all.map((s) => {
      const [, rss, ceiling] = s.points[s.points.length - 1];
      const status = s.live ? `${mb(rss)} of ${mb(ceiling)}` : "ended";
      return { color: seriesColor(s), dashed: false, text: `pid ${s.pid} ${s.kind} · ${status}`, pid: s.pid };
    }));
  }

  function renderLegend(list, items) {
    const nodes = items.map((item) => {
      const li = document.createElement("li");
      if (item.pid !== undefined) li.dataset.pid = String(item.pid);
      const swatch = document.createElement("span");
      swatch.className = `swatch${item.dashed ? " dashed" : ""}`;
      swatch.style.borderColor = item.color;
      li.append(swatch, document.createTextNode(item.text));
      return li;
    });
    list.replaceChildren(...nodes);
  }

  function drawCharts(now = Date.now() / 1000) {
    if ($("dashboard").hidden) return;
    drawMemoryChart(now);
    drawWorkersChart(now);
  }

  // ---- wiring ----------------------------------------------------------------------------------

  function init() {
    document.querySelector(".window-label").textContent = `last ${WINDOW_S / 60} min`;
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) connect(token);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("workers-table").addEventListener("click", (event) => {
      const button = event.target.closest("button.kill");
      if (button && !button.disabled) kill(button);
    });
    window.addEventListener("resize", () => drawCharts());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && state.token) {
        stopPolling();
        tick(state.session);
      }
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) connect(saved);
    else showLogin("");
  }

  init();
})();
