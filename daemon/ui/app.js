/* app.js: optd's page (API.md 1.1 "The page").
 *
 * Reads everything through the /v1 API with the browser's fetch and
 * changes nothing: GET /v1/sessions for the list, GET .../history (then
 * ?after_step=N to follow new steps) for the curves, GET /v1/sessions/{name}
 * for a descriptor.  Every value that came from a client (names, labels,
 * anything in a descriptor) reaches the document through textContent only,
 * never as HTML.  With auth on, the token lives in sessionStorage (this tab)
 * and goes out as a bearer header, never in a URL or a cookie. */
"use strict";

(function () {
  const POLL_MS = 2000;
  const MAX_POINTS = 20000; /* per curve; older points are dropped */
  const TOKEN_KEY = "optd-token";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed",
                  "#0891b2", "#db2777", "#4b5563", "#65a30d", "#9333ea"];
  const METRICS = {
    loss: { label: "loss", axis: "y", dash: [] },
    grad_norm: { label: "grad norm", axis: "y", dash: [6, 3] },
    lr: { label: "lr", axis: "y1", dash: [2, 3] },
  };

  const $ = (id) => document.getElementById(id);
  const api = new URL("../v1/", location.href);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    sortByLoss: true,         /* false once the daemon refused sort=best_loss */
    page: [],                 /* the cursors (after / offset) of the pages before this one */
    cursor: null,
    next: null,
    picked: new Map(),        /* name -> {color, points: {loss, lr, grad_norm}, last, gone} */
    detail: null,             /* the name whose descriptor is shown */
    chart: null,
    timer: null,
    firstChart: true,
  };

  /* ---- requests ---------------------------------------------------------- */

  class Unauthorized extends Error {}

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function get(path) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const r = await fetch(new URL(path, api), { headers, cache: "no-store", credentials: "omit" });
    if (r.status === 401) throw new Unauthorized("unauthorized");
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      const err = body && body.error ? body.error : { code: "http_" + r.status, message: r.statusText };
      throw new ApiError(r.status, err.code, err.message);
    }
    return body;
  }

  function status(text, isError) {
    const s = $("status");
    s.textContent = text || "";
    s.classList.toggle("error", !!isError);
  }

  function failed(e) {
    if (e instanceof Unauthorized) { showLogin(state.token ? "The token was not accepted." : ""); return; }
    status(e.message || String(e), true);
  }

  /* ---- elements (text only) ---------------------------------------------- */

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function fmt(x) {
    if (x === null || x === undefined) return "—";
    if (typeof x !== "number") return String(x);
    if (Number.isInteger(x) && Math.abs(x) < 1e15) return String(x);
    return String(Number(x.toPrecision(6)));
  }

  /* ---- login ------------------------------------------------------------- */

  function showLogin(message) {
    stopPolling();
    $("app").hidden = true;
    $("login").hidden = false;
    $("forget-token").hidden = true;
    const e = $("token-error");
    e.textContent = message || "";
    e.hidden = !message;
    status("");
    $("token").focus();
  }

  async function submitToken(ev) {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    state.token = t;
    try {
      await get("sessions?limit=1");
    } catch (e) {
      if (e instanceof Unauthorized) {
        state.token = null;
        showLogin("That token was not accepted.");
        return;
      }
      failed(e);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    start();
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    showLogin("");
  }

  /* ---- the list ---------------------------------------------------------- */

  function sortMode() {
    const v = $("f-sort").value;
    return v !== "name" && state.sortByLoss ? v : "name";
  }

  function listQuery() {
    const q = new URLSearchParams();
    q.set("limit", $("f-limit").value);
    const prefix = $("f-prefix").value.trim();
    if (prefix) q.set("prefix", prefix);
    for (const l of $("f-label").value.split(",")) {
      const t = l.trim();
      if (t) q.append("label", t);
    }
    if (sortMode() !== "name") {
      q.set("sort", sortMode());
      q.set("offset", String(state.cursor || 0));
    } else if (state.cursor) {
      q.set("after", state.cursor);
    }
    return q;
  }

  function disableLossSort(why) {
    state.sortByLoss = false;
    $("sessions").classList.add("no-loss");
    for (const opt of $("f-sort").options) {
      if (opt.value === "name") continue;
      opt.disabled = true;
      opt.title = why;
    }
    $("f-sort").value = "name";
  }

  async function loadList() {
    let body;
    try {
      body = await get("sessions?" + listQuery().toString());
    } catch (e) {
      if (e instanceof ApiError && e.status === 400 && sortMode() !== "name") {
        /* A daemon from before the loss summary: sort by name instead. */
        disableLossSort("this daemon sorts by name only");
        state.page = [];
        state.cursor = null;
        status("This daemon cannot sort by loss; sorted by name.", false);
        return loadList();
      }
      throw e;
    }
    const sessions = body.sessions || [];
    if (sessions.length && !("loss" in sessions[0]) && state.sortByLoss)
      disableLossSort("this daemon keeps no loss summary");
    state.next = sortMode() !== "name" ? body.next_offset : body.next_after;
    renderList(sessions);
    performance.mark("optd-list");
  }

  function renderLabels(labels) {
    const div = el("div", null, "labels");
    for (const [k, v] of Object.entries(labels || {})) div.appendChild(el("span", k + ": " + v, "label"));
    return div;
  }

  /* Four significant digits: enough to rank, short enough for a column. */
  function short(x) {
    if (typeof x !== "number" || Number.isInteger(x)) return fmt(x);
    const a = Math.abs(x);
    return a < 1e-3 || a >= 1e6 ? x.toExponential(2) : String(Number(x.toPrecision(4)));
  }

  function renderList(sessions) {
    const tbody = $("sessions").tBodies[0];
    const rows = [];
    for (const s of sessions) {
      const tr = el("tr");
      tr.dataset.name = s.name;
      if (state.picked.has(s.name)) tr.classList.add("picked");
      if (state.detail === s.name) tr.classList.add("shown");
      const cb = el("input");
      cb.type = "checkbox";
      cb.checked = state.picked.has(s.name);
      cb.setAttribute("aria-label", "compare " + s.name);
      cb.addEventListener("change", () => { cb.checked ? pick(s.name) : unpick(s.name); });
      const tdc = el("td");
      tdc.appendChild(cb);
      const name = el("a", s.name, "name");
      name.href = "?session=" + encodeURIComponent(s.name);
      name.addEventListener("click", (ev) => { ev.preventDefault(); showDetail(s.name); });
      const tdn = el("td");
      tdn.append(name, renderLabels(s.labels));
      const loss = s.loss || {};
      tr.append(tdc, tdn, el("td", s.optimizer), el("td", s.step, "num step"),
                el("td", short(loss.best), "num"), el("td", short(loss.last), "num"));
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
    $("list-empty").hidden = sessions.length > 0;
    const n = state.page.length;
    $("page-info").textContent = sessions.length ? "page " + (n + 1) : "";
    $("prev").disabled = n === 0;
    $("next").disabled = state.next === null || state.next === undefined;
  }

  function applyFilters(ev) {
    if (ev) ev.preventDefault();
    state.page = [];
    state.cursor = null;
    saveUrl();
    loadList().catch(failed);
  }

  function nextPage() {
    if (state.next === null || state.next === undefined) return;
    state.page.push(state.cursor);
    state.cursor = state.next;
    loadList().catch(failed);
  }

  function prevPage() {
    if (!state.page.length) return;
    state.cursor = state.page.pop();
    loadList().catch(failed);
  }

  /* ---- the picked sessions and their curves ------------------------------ */

  function colorFor() {
    const used = new Set([...state.picked.values()].map((p) => p.color));
    return COLORS.find((c) => !used.has(c)) || COLORS[state.picked.size % COLORS.length];
  }

  function pick(name) {
    if (state.picked.has(name)) return;
    state.picked.set(name, { color: colorFor(), points: { loss: [], lr: [], grad_norm: [] }, last: null, gone: false });
    if (!state.detail) showDetail(name);
    saveUrl();
    renderPicked();
    markRows();
    pollHistory(name).then(drawChart).catch(failed);
  }

  function unpick(name) {
    state.picked.delete(name);
    saveUrl();
    renderPicked();
    markRows();
    drawChart();
  }

  function markRows() {
    for (const tr of $("sessions").tBodies[0].rows) {
      const on = state.picked.has(tr.dataset.name);
      tr.classList.toggle("picked", on);
      tr.querySelector("input").checked = on;
      tr.classList.toggle("shown", tr.dataset.name === state.detail);
    }
  }

  function renderPicked() {
    const chips = [];
    for (const [name, p] of state.picked) {
      const chip = el("span", null, "chip" + (p.gone ? " gone" : ""));
      const dot = el("span", null, "dot");
      dot.style.backgroundColor = p.color;
      const label = el("button", name, "chip-name");
      label.type = "button";
      label.title = "show the descriptor";
      label.addEventListener("click", () => showDetail(name));
      const x = el("button", "×", "chip-x");
      x.type = "button";
      x.title = "stop comparing " + name;
      x.addEventListener("click", () => unpick(name));
      chip.append(dot, label, x);
      chips.push(chip);
    }
    $("picked").replaceChildren(...chips);
    $("chart-empty").hidden = state.picked.size > 0;
  }

  /* Fetches the steps of name after the last one held (all of them the
   * first time) and appends them to its curves. */
  async function pollHistory(name) {
    const p = state.picked.get(name);
    if (!p || p.gone) return;
    const q = p.last === null ? "" : "?after_step=" + p.last;
    let body;
    try {
      body = await get("sessions/" + encodeURIComponent(name) + "/history" + q);
    } catch (e) {
      /* 404: deleted since the link was made; 400: a name no session can
       * have (a typo in a deep link).  Either way the chip is struck
       * through and the others' curves are drawn. */
      if (e instanceof ApiError && (e.status === 404 || e.status === 400)) {
        p.gone = true;
        renderPicked();
        return;
      }
      throw e;
    }
    for (const h of body.history || []) {
      if (p.last !== null && h.step <= p.last) continue;
      for (const m of Object.keys(METRICS))
        if (typeof h[m] === "number") p.points[m].push({ x: h.step, y: h[m] });
      p.last = h.step;
    }
    for (const m of Object.keys(METRICS))
      if (p.points[m].length > MAX_POINTS) p.points[m].splice(0, p.points[m].length - MAX_POINTS);
  }

  function shownMetrics() {
    return Object.keys(METRICS).filter((m) => $("m-" + m).checked);
  }

  function datasets() {
    const out = [];
    for (const [name, p] of state.picked) {
      for (const m of shownMetrics()) {
        const meta = METRICS[m];
        out.push({
          label: name + " · " + meta.label,
          data: p.points[m],
          yAxisID: meta.axis,
          borderColor: p.color,
          backgroundColor: p.color,
          borderDash: meta.dash,
          borderWidth: 1.5,
          pointRadius: 0,
          pointHitRadius: 4,
          tension: 0,
          spanGaps: true,
        });
      }
    }
    return out;
  }

  /* A log axis labels the powers of ten, and 2 and 5 times them too when
   * it spans three decades or less; the ticks between stay unlabelled. */
  function logTick(v, i, ticks) {
    const m = Number((v / Math.pow(10, Math.floor(Math.log10(v) + 1e-9))).toPrecision(3));
    const span = Math.log10(ticks[ticks.length - 1].value / ticks[0].value);
    return m === 1 || (span <= 3 && (m === 2 || m === 5)) ? fmt(Number(v.toPrecision(1))) : "";
  }

  function lastStep() {
    let last = null;
    for (const p of state.picked.values()) if (p.last !== null && (last === null || p.last > last)) last = p.last;
    return last;
  }

  function scales() {
    const log = $("log-scale").checked;
    const type = log ? "logarithmic" : "linear";
    const grid = { color: "#e5e7eb" };
    /* Unlabelled (minor) log ticks get a fainter line. */
    const ygrid = { color: (c) => (c.tick && c.tick.label === "" ? "#f3f4f6" : "#e5e7eb") };
    const ticks = log ? { callback: logTick, autoSkip: false } : { callback: (v) => fmt(v) };
    return {
      x: { type: "linear", title: { display: true, text: "step" }, grid, ticks: { precision: 0, includeBounds: false },
           max: lastStep() === null ? undefined : lastStep() },
      y: { type, display: "auto", position: "left", grid: ygrid, ticks,
           title: { display: true, text: shownMetrics().filter((m) => METRICS[m].axis === "y")
                                                      .map((m) => METRICS[m].label).join(", ") } },
      y1: { type, display: "auto", position: "right", grid: { drawOnChartArea: false }, ticks,
            title: { display: true, text: "lr" } },
    };
  }

  function drawChart() {
    if (typeof window.Chart !== "function") {
      $("chart-missing").hidden = state.picked.size === 0;
      return;
    }
    const box = $("chart").parentElement;
    box.hidden = state.picked.size === 0;
    if (!state.chart) {
      state.chart = new window.Chart($("chart"), {
        type: "line",
        data: { datasets: datasets() },
        options: {
          animation: false,
          parsing: false,
          normalized: true,
          maintainAspectRatio: false,
          interaction: { mode: "nearest", axis: "x", intersect: false },
          plugins: {
            legend: { position: "bottom", labels: { boxWidth: 24, boxHeight: 2 } },
            tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + fmt(c.parsed.y) } },
          },
          scales: scales(),
        },
      });
    } else {
      state.chart.data.datasets = datasets();
      state.chart.options.scales = scales();
      state.chart.update("none");
    }
    if (state.firstChart && state.picked.size && [...state.picked.values()].every((p) => p.last !== null || p.gone)) {
      state.firstChart = false;
      performance.mark("optd-chart");
    }
  }

  /* ---- one session's descriptor ------------------------------------------ */

  function renderValue(v) {
    if (v === null || v === undefined) return el("span", "null", "muted");
    if (Array.isArray(v)) {
      if (v.every((x) => x === null || typeof x !== "object")) return el("span", "[" + v.map(fmt).join(", ") + "]");
      const div = el("div");
      v.forEach((x, i) => {
        div.appendChild(el("div", "[" + i + "]", "muted"));
        div.appendChild(renderValue(x));
      });
      return div;
    }
    if (typeof v === "object") {
      const keys = Object.keys(v);
      if (!keys.length) return el("span", "{}", "muted");
      const t = el("table", null, "kv");
      for (const k of keys) {
        const tr = el("tr");
        const td = el("td");
        td.appendChild(renderValue(v[k]));
        tr.append(el("th", k), td);
        t.appendChild(tr);
      }
      return t;
    }
    return el("span", fmt(v), typeof v === "number" ? "num" : "");
  }

  async function loadDetail() {
    const name = state.detail;
    if (!name) return;
    let d;
    try {
      d = await get("sessions/" + encodeURIComponent(name));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        $("detail").replaceChildren(el("p", "No session named " + name + " (deleted?).", "muted"));
        return;
      }
      throw e;
    }
    if (state.detail !== name) return;
    $("detail-title").textContent = d.name;
    $("detail-empty").hidden = true;
    $("detail").replaceChildren(renderValue(d));
  }

  function showDetail(name) {
    state.detail = name;
    markRows();
    loadDetail().catch(failed);
  }

  /* ---- the address bar: deep links ---------------------------------------- */

  function saveUrl() {
    const q = new URLSearchParams();
    for (const name of state.picked.keys()) q.append("session", name);
    const prefix = $("f-prefix").value.trim();
    if (prefix) q.set("prefix", prefix);
    const labels = $("f-label").value.trim();
    if (labels) q.set("labels", labels);
    if ($("f-sort").value !== "name") q.set("sort", $("f-sort").value);
    const s = q.toString();
    history.replaceState(null, "", s ? "?" + s : location.pathname);
  }

  function readUrl() {
    const q = new URLSearchParams(location.search);
    $("f-prefix").value = q.get("prefix") || "";
    $("f-label").value = q.get("labels") || "";
    if (q.get("sort") === "best_loss" || q.get("sort") === "last_loss") $("f-sort").value = q.get("sort");
    return q.getAll("session");
  }

  /* ---- following ---------------------------------------------------------- */

  function stopPolling() {
    if (state.timer) clearTimeout(state.timer);
    state.timer = null;
  }

  async function poll() {
    state.timer = null;
    if ($("follow").checked) {
      try {
        await Promise.all([...state.picked.keys()].map(pollHistory));
        drawChart();
        await Promise.all([loadList(), loadDetail()]);
        status("updated " + new Date().toLocaleTimeString());
      } catch (e) {
        failed(e);
        if (e instanceof Unauthorized) return;
      }
    }
    state.timer = setTimeout(poll, POLL_MS);
  }

  async function start() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("forget-token").hidden = !state.token;
    try {
      /* The list first (it is what a person reads first), then the
       * curves and the descriptor side by side. */
      await loadList();
      const curves = Promise.all([...state.picked.keys()].map(pollHistory)).then(() => {
        renderPicked();
        drawChart();
      });
      await Promise.all([curves, loadDetail()]);
    } catch (e) {
      failed(e);
      if (e instanceof Unauthorized) return;
    }
    stopPolling();
    state.timer = setTimeout(poll, POLL_MS);
  }

  function init() {
    for (const name of readUrl()) {
      if (!state.picked.has(name))
        state.picked.set(name, { color: COLORS[state.picked.size % COLORS.length],
                                 points: { loss: [], lr: [], grad_norm: [] }, last: null, gone: false });
      if (!state.detail) state.detail = name;
    }
    $("token-form").addEventListener("submit", submitToken);
    $("forget-token").addEventListener("click", forgetToken);
    $("filters").addEventListener("submit", applyFilters);
    $("f-sort").addEventListener("change", applyFilters);
    $("f-limit").addEventListener("change", applyFilters);
    $("prev").addEventListener("click", prevPage);
    $("next").addEventListener("click", nextPage);
    for (const id of ["m-loss", "m-lr", "m-grad_norm", "log-scale"]) $(id).addEventListener("change", drawChart);
    renderPicked();
    start();
  }

  init();
})();
