// The wearsync dashboard: one more client of the JSON API, with the key kept in sessionStorage.
// Everything shown is built with textContent (never HTML from data); the plots are SVG drawn here.
"use strict";

const KEY = "wearsync-api-key";
const API = "/api/v1";
const SVG = "http://www.w3.org/2000/svg";
const PAGE_SIZE = 100;
const MAX_PAGES = 20; // per plotted list: 2,000 rows
const USERS_PAGE = 50;
const REFRESH_MS = 5000;

const $ = (selector) => document.querySelector(selector);
let usersShown = USERS_PAGE;
let selected = null; // the user whose data is shown
let refreshTimer = null;

class Unauthorized extends Error {}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

async function api(path, options = {}) {
  const headers = { "X-API-Key": sessionStorage.getItem(KEY) || "", ...(options.headers || {}) };
  const resp = await fetch(API + path, { ...options, headers });
  if (resp.status === 401) throw new Unauthorized();
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.detail || `HTTP ${resp.status}`);
  return body;
}

// ---- formatting -------------------------------------------------------------------------------

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return date.toISOString().slice(0, 16).replace("T", " ");
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 0) return `in ${duration(-s)}`;
  return `${duration(s)} ago`;
}

function duration(s) {
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

function short(id) {
  return String(id).slice(0, 8);
}

function tokenState(c) {
  if (!c.active) return { text: `inactive: ${c.inactive_reason || "disconnected"}`, cls: "error" };
  if (!c.expires_at) return { text: "active, no expiry", cls: "ok" };
  const expired = new Date(c.expires_at) <= new Date();
  return expired
    ? { text: `expired ${ago(c.expires_at)} (refreshed when next used)`, cls: "warn" }
    : { text: `valid, expires ${ago(c.expires_at)}`, cls: "ok" };
}

function progressText(progress) {
  return Object.entries(progress || {})
    .map(([type, p]) => {
      const records = Object.entries(p.records || {}).map(([k, n]) => `${n} ${k}`).join(", ");
      const pages = p.pages_total ? `${p.pages}/${p.pages_total} pages` : `${p.pages || 0} pages`;
      const wait = p.status === "waiting" && p.resumes_at ? ` until ${when(p.resumes_at)}` : "";
      return `${type}: ${p.status}${wait}, ${pages}${records ? ", " + records : ""}`;
    })
    .join("; ");
}

// ---- signing in -------------------------------------------------------------------------------

function showLogin(message) {
  sessionStorage.removeItem(KEY);
  clearInterval(refreshTimer);
  $("#app").hidden = true;
  $("#sign-out").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#key").focus();
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("#key").value.trim());
  $("#key").value = "";
  try {
    await api("/dashboard/users?limit=1");
  } catch (e) {
    showLogin(e instanceof Unauthorized ? "That key is not valid (or it was revoked)." : e.message);
    return;
  }
  start();
}

function start() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  refreshAll();
  clearInterval(refreshTimer);
  refreshTimer = setInterval(refreshLists, REFRESH_MS);
}

function guarded(work) {
  return work().catch((e) => {
    if (e instanceof Unauthorized) showLogin("The key is no longer valid: sign in again.");
    else console.error(e);
  });
}

function refreshAll() {
  guarded(async () => {
    await refreshLists();
    const wanted = new URLSearchParams(location.hash.slice(1)).get("user");
    if (wanted) await showUser(wanted);
  });
}

async function refreshLists() {
  await Promise.all([loadUsers(), loadTasks(), loadEvents(), loadDeliveries()]);
}

// ---- the lists --------------------------------------------------------------------------------

let usersById = new Map();

async function loadUsers() {
  const wanted = $("#external-id").value.trim();
  const filter = wanted ? `&external_id=${encodeURIComponent(wanted)}` : "";
  const page = await api(`/dashboard/users?limit=${usersShown}${filter}`);
  usersById = new Map(page.data.map((u) => [u.id, u]));
  $("#users-total").textContent = `(${page.total})`;
  $("#users-more").hidden = page.total <= page.data.length;
  const rows = page.data.map((u) =>
    el("tr", { "data-user": u.id },
      el("td", {}, el("a", { href: `#user=${u.id}`, text: short(u.id), title: u.id })),
      el("td", { text: u.external_id || "—" }),
      el("td", {}, ...u.connections.map(connectionBadge)),
      el("td", { text: when(u.created_at) })));
  $("#users tbody").replaceChildren(...rows);
  if (selected && usersById.has(selected)) renderConnections(usersById.get(selected));
}

function connectionBadge(c) {
  const problem = !c.active ? "error" : c.waiting_until ? "warn" : c.last_error_at && c.last_error_at > (c.last_sync_at || "") ? "warn" : "ok";
  const title = `${tokenState(c).text}; last sync ${ago(c.last_sync_at)}`;
  return el("span", { class: `badge ${problem}`, title, text: c.provider });
}

async function loadTasks() {
  const status = $("#task-status").value;
  const page = await api(`/dashboard/tasks?limit=50${status ? "&status=" + status : ""}`);
  const rows = page.data.map((t) =>
    el("tr", { "data-task": t.task_id, "data-status": t.status },
      el("td", { text: when(t.created_at) }),
      el("td", {}, el("a", { href: `#user=${t.user_id}`, text: short(t.user_id), title: t.user_id })),
      el("td", { text: t.provider }),
      el("td", { class: `status ${t.status}`, text: t.status }),
      el("td", { class: "small", text: progressText(t.progress) }),
      el("td", { class: "small error", text: t.error || "" })));
  $("#tasks tbody").replaceChildren(...(rows.length ? rows : [nothing(6, "No tasks yet.")]));
}

async function loadEvents() {
  const page = await api("/dashboard/webhook-events?limit=50");
  const rows = page.data.map((e) =>
    el("tr", {},
      el("td", { text: when(e.received_at) }),
      el("td", { text: e.provider }),
      el("td", { text: e.kind }),
      el("td", {}, el("a", { href: `#user=${e.user_id}`, text: short(e.user_id), title: e.user_id })),
      el("td", { class: `status ${e.status}`, text: e.status }),
      el("td", { class: "small", text: e.detail || "" })));
  $("#events tbody").replaceChildren(...(rows.length ? rows : [nothing(6, "No webhook events received yet.")]));
}

function nothing(columns, text) {
  return el("tr", {}, el("td", { colspan: columns, class: "muted", text }));
}

async function loadDeliveries() {
  const [endpoints, page] = await Promise.all([api("/webhook-endpoints"), api("/dashboard/deliveries?limit=50")]);
  const rows = endpoints.map((p) =>
    el("tr", { "data-endpoint": p.id },
      el("td", { text: p.url }),
      el("td", { class: "small", text: p.event_types ? p.event_types.join(", ") : "all" }),
      el("td", { class: p.enabled ? "ok" : "error", text: p.enabled ? "enabled" : `disabled: ${p.disabled_reason || ""}` }),
      el("td", { text: p.last_success_at ? ago(p.last_success_at) : "never" }),
      el("td", { class: p.failing_since ? "warn" : "", text: p.failing_since ? when(p.failing_since) : "—" })));
  $("#endpoints tbody").replaceChildren(...(rows.length ? rows : [nothing(5, "No webhook endpoints (POST /api/v1/webhook-endpoints).")]));
  const sent = page.data.map((d) => {
    const answer = d.last_attempt_at ? `${d.status_code ?? d.error ?? "no answer"} (${ago(d.last_attempt_at)})` : "not tried yet";
    return el("tr", { "data-event": d.event_id, "data-status": d.status },
      el("td", { class: "small", text: `${when(d.created_at)} ${d.event_id}` }),
      el("td", { text: d.type }),
      el("td", { class: "small", text: d.url }),
      el("td", { class: `status ${d.status}`, text: d.status }),
      el("td", { text: String(d.attempts) }),
      el("td", { class: "small", text: answer }));
  });
  $("#deliveries tbody").replaceChildren(...(sent.length ? sent : [nothing(6, "No deliveries yet.")]));
}

// ---- one user ---------------------------------------------------------------------------------

async function showUser(userId) {
  selected = userId;
  let user = usersById.get(userId);
  if (!user) {
    const found = await api(`/users/${encodeURIComponent(userId)}`).catch(() => null);
    if (!found) return;
    const connections = await api(`/users/${encodeURIComponent(userId)}/connections`);
    user = { ...found, connections };
  }
  $("#user").hidden = false;
  $("#user-id").textContent = user.id;
  $("#user-external").textContent = user.external_id ? `(${user.external_id})` : "";
  renderConnections(user);
  await drawPlots();
}

function renderConnections(user) {
  const rows = user.connections.map((c) => {
    const token = tokenState(c);
    const waiting = c.waiting_until ? `waiting until ${when(c.waiting_until)}` : "—";
    const failed = c.last_error_at ? `${ago(c.last_error_at)}: ${c.last_error || "failed"}` : "—";
    return el("tr", { "data-provider": c.provider },
      el("td", { text: c.provider }),
      el("td", { class: c.active ? "ok" : "error", text: c.active ? "active" : "inactive" }),
      el("td", { class: token.cls, text: token.text }),
      el("td", { text: c.last_sync_at ? `${ago(c.last_sync_at)} (${c.last_sync_status})` : "never" }),
      el("td", { class: c.last_error_at ? "small error" : "small", text: failed }),
      el("td", { class: c.waiting_until ? "warn" : "", text: waiting }),
      el("td", {}, el("button", {
        type: "button", class: "sync-now", disabled: !c.active, "data-provider": c.provider,
        onclick: () => guarded(() => syncNow(user.id, c.provider)), text: "Sync now",
      })));
  });
  $("#user-connections tbody").replaceChildren(...rows);
}

async function syncNow(userId, provider) {
  const status = $("#sync-status");
  status.dataset.state = "queued";
  status.textContent = `${provider}: queuing a sync…`;
  let queued;
  try {
    queued = await api(`/${provider}/users/${encodeURIComponent(userId)}/sync`, { method: "POST" });
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    status.dataset.state = "failed";
    status.textContent = `${provider}: ${e.message}`;
    return;
  }
  status.dataset.task = queued.task_id;
  for (;;) {
    const task = await api(`/tasks/${queued.task_id}`);
    status.dataset.state = task.status;
    status.textContent = `${provider} sync ${short(task.task_id)}: ${task.status} — ${progressText(task.progress)}`;
    if (["succeeded", "partial", "failed"].includes(task.status)) break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  await refreshLists();
  if (selected === userId) await drawPlots();
  status.dataset.plotted = queued.task_id; // the plots now include what the sync stored
}

async function readAll(path, start) {
  const rows = [];
  let cursor = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const query = new URLSearchParams({ start: String(start), limit: String(PAGE_SIZE) });
    if (cursor) query.set("cursor", cursor);
    const body = await api(`${path}?${query}`);
    rows.push(...body.data);
    cursor = body.next_cursor;
    if (!cursor) return { rows, complete: true };
  }
  return { rows, complete: false };
}

async function drawPlots() {
  const userId = selected;
  const days = Number($("#window").value);
  const since = new Date(Date.now() - days * 86400000);
  since.setUTCHours(0, 0, 0, 0);
  const start = Math.floor(since.getTime() / 1000);
  const base = `/users/${encodeURIComponent(userId)}`;
  const [workouts, sleep, recovery] = await Promise.all([
    readAll(`${base}/workouts`, start), readAll(`${base}/sleep`, start), readAll(`${base}/recovery`, start),
  ]);
  if (selected !== userId) return; // another user was picked meanwhile

  const weeks = new Map();
  for (let t = mondayOf(since); t <= Date.now(); t += 7 * 86400000) weeks.set(t, 0);
  for (const w of workouts.rows) {
    const week = mondayOf(new Date(w.start_time));
    weeks.set(week, (weeks.get(week) || 0) + 1);
  }
  barChart($("#plot-workouts"), [...weeks].map(([t, n]) => ({
    x: t, value: n, label: `week of ${new Date(t).toISOString().slice(0, 10)}: ${n} workouts`,
  })), { empty: "No workouts in this window.", total: workouts.rows.length, complete: workouts.complete });

  const nights = sleep.rows.filter((s) => !s.is_nap && s.duration_s).map((s) => ({
    x: new Date(s.end_time).getTime(), value: s.duration_s / 3600,
    label: `${s.end_time.slice(0, 10)}: ${(s.duration_s / 3600).toFixed(1)} h (${s.provider})`,
  }));
  barChart($("#plot-sleep"), nights, { empty: "No sleep in this window.", total: nights.length, complete: sleep.complete });

  const resting = recovery.rows.filter((r) => r.resting_hr).map((r) => ({
    x: new Date(r.recorded_at).getTime(), value: r.resting_hr,
    label: `${r.recorded_at.slice(0, 10)}: ${Math.round(r.resting_hr)} bpm (${r.provider})`,
  }));
  lineChart($("#plot-resting-hr"), resting, {
    empty: "No resting heart rate in this window (Whoop's recoveries have it).", complete: recovery.complete,
  });
  $("#user").dataset.drawn = `${userId} ${days}`; // which plots are shown
}

function mondayOf(date) {
  const d = new Date(date);
  d.setUTCHours(0, 0, 0, 0);
  return d.getTime() - ((d.getUTCDay() + 6) % 7) * 86400000;
}

// ---- plots ------------------------------------------------------------------------------------

const W = 420, H = 170, PAD = { left: 34, right: 8, top: 8, bottom: 20 };

function frame(container, points, options) {
  container.replaceChildren();
  container.dataset.points = String(points.length);
  container.dataset.total = String(options.total ?? points.length);
  if (!options.complete) container.append(el("p", { class: "small warn", text: "Showing the first 2,000 rows." }));
  if (!points.some((p) => p.value > 0)) {
    container.append(el("p", { class: "muted empty", text: options.empty }));
    return null;
  }
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart" });
  const xs = points.map((p) => p.x), values = points.map((p) => p.value);
  const scale = {
    x0: Math.min(...xs), x1: Math.max(...xs), y0: options.zero ? 0 : Math.min(...values) * 0.95,
    y1: Math.max(...values) * 1.05 || 1,
  };
  const inset = options.inset || 0; // a bar's half width: the first and last bars stay inside
  const span = W - PAD.left - PAD.right - 2 * inset;
  scale.x = (x) => PAD.left + inset + (scale.x1 === scale.x0 ? 0.5 : (x - scale.x0) / (scale.x1 - scale.x0)) * span;
  scale.y = (v) => H - PAD.bottom - ((v - scale.y0) / (scale.y1 - scale.y0 || 1)) * (H - PAD.top - PAD.bottom);
  for (const v of [scale.y0, (scale.y0 + scale.y1) / 2, scale.y1]) {
    chart.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: scale.y(v), y2: scale.y(v), class: "gridline" }));
    const label = svg("text", { x: PAD.left - 4, y: scale.y(v) + 4, class: "axis", "text-anchor": "end" });
    label.textContent = v >= 10 ? Math.round(v) : v.toFixed(1);
    chart.append(label);
  }
  for (const [x, anchor] of [[scale.x0, "start"], [scale.x1, "end"]]) {
    const label = svg("text", { x: anchor === "start" ? PAD.left : W - PAD.right, y: H - 4, class: "axis", "text-anchor": anchor });
    label.textContent = new Date(x).toISOString().slice(0, 10);
    chart.append(label);
  }
  container.append(chart);
  return { chart, scale };
}

function barChart(container, points, options) {
  const width = Math.max(2, ((W - PAD.left - PAD.right) / Math.max(points.length, 1)) * 0.7);
  const drawn = frame(container, points, { ...options, zero: true, inset: width / 2 });
  if (!drawn) return;
  const { chart, scale } = drawn;
  for (const p of points) {
    const y = scale.y(p.value);
    const bar = svg("rect", {
      x: scale.x(p.x) - width / 2, y, width, height: Math.max(0, H - PAD.bottom - y), class: "bar", "data-value": p.value,
    });
    const title = svg("title");
    title.textContent = p.label;
    bar.append(title);
    chart.append(bar);
  }
}

function lineChart(container, points, options) {
  const drawn = frame(container, points, options);
  if (!drawn) return;
  const { chart, scale } = drawn;
  const sorted = [...points].sort((a, b) => a.x - b.x);
  chart.append(svg("polyline", { points: sorted.map((p) => `${scale.x(p.x)},${scale.y(p.value)}`).join(" "), class: "line" }));
  for (const p of sorted) {
    const dot = svg("circle", { cx: scale.x(p.x), cy: scale.y(p.value), r: 2.5, class: "dot", "data-value": p.value });
    const title = svg("title");
    title.textContent = p.label;
    dot.append(title);
    chart.append(dot);
  }
}

// ---- wiring -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", signIn);
  $("#sign-out").addEventListener("click", () => showLogin("Signed out."));
  $("#task-status").addEventListener("change", () => guarded(loadTasks));
  $("#window").addEventListener("change", () => guarded(drawPlots));
  $("#users-filter").addEventListener("submit", (event) => { event.preventDefault(); guarded(loadUsers); });
  $("#users-more").addEventListener("click", () => { usersShown += USERS_PAGE; guarded(loadUsers); });
  window.addEventListener("hashchange", refreshAll);
  if (sessionStorage.getItem(KEY)) start();
  else showLogin();
});
