// The Parley dashboard: signs in with an API key (kept in sessionStorage) and renders
// every panel from the public API. Errors are explained in words, never a blank panel.
"use strict";

const state = { key: sessionStorage.getItem("parley-key"), me: null, page: 1, pageSize: 25, filters: null };
const QUEUE_LINKS = 60;
const $ = (sel) => document.querySelector(sel);
const panel = (name) => document.querySelector(`[data-panel="${name}"] .body`);

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, { raw = false } = {}) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.key}` } });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = body.detail || body.message || detail;
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return raw ? response : response.json();
}

function explain(error) {
  if (error.status === 401) return "This key is not valid any more. Sign out and paste a current key.";
  if (error.status === 403) return `Your key is not allowed to see this: ${error.message}.`;
  if (error.status === 404) return "Not found for this key's workspace or org.";
  if (error.status === 400) return `The request was refused: ${error.message}.`;
  return `Something went wrong (${error.status || "network"}): ${error.message}.`;
}

function show(container, kind, text) {
  const p = document.createElement("p");
  p.className = `state ${kind}`;
  p.dataset.state = kind;
  p.textContent = text;
  container.replaceChildren(p);
}

async function load(name, render) {
  const container = panel(name);
  show(container, "loading", "Loading…");
  try {
    await render(container);
  } catch (error) {
    show(container, "error", error instanceof ApiError ? explain(error) : `Could not draw this panel: ${error.message}`);
  }
}

// -- controls ------------------------------------------------------------------------

function today(tz) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
}

function shiftDays(isoDay, days) {
  const d = new Date(`${isoDay}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

function range() {
  const tz = $("#tz").value || "UTC";
  const preset = $("#preset").value;
  if (preset === "custom" && $("#from").value && $("#to").value) return { from: $("#from").value, to: $("#to").value, tz };
  const to = today(tz);
  return { from: shiftDays(to, -(Number(preset === "custom" ? 30 : preset) - 1)), to, tz };
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  return q.toString();
}

// -- panels --------------------------------------------------------------------------

const panels = {
  async usage(container) {
    const { from, to, tz } = range();
    const { org, workspaceId } = state.me;
    const body = await api(`/api/v2/org/${encodeURIComponent(org)}/workspace/${workspaceId}/metrics/assistants_usage?${query({ from_date: from, to_date: to, tz })}`);
    const names = Object.keys(body.data);
    if (!names.length) return show(container, "empty", "No assistant messages in this range.");
    const labels = body.data[names[0]].map((p) => p.x).reverse();
    const series = Object.fromEntries(names.map((n) => [n, body.data[n].map((p) => p.y).reverse()]));
    lineChart(container, labels, series);
  },

  async creation(container) {
    const { tz } = range();
    const body = await api(`/api/v2/w/${state.me.workspaceId}/chats/stats/daily-creation?${query({ tz })}`);
    const days = body.dailyStats;
    if (!days.some((d) => d.count)) return show(container, "empty", "No chats were created in the last 30 days.");
    const series = Object.fromEntries(["assignment", "manager", "dm", "testing"].map((t) => [t, days.map((d) => d[t])]));
    stackedBars(container, days.map((d) => d.date), series);
  },

  async queue(container) {
    const ids = await api(`/api/v2/w/${state.me.workspaceId}/chats/needs-response`);
    if (!ids.length) return show(container, "empty", "No chat is waiting for a reply.");
    const box = document.createElement("div");
    box.className = "queue";
    const count = document.createElement("p");
    count.innerHTML = `<span class="big" data-testid="queue-count">${ids.length}</span> chats wait for a reply`;
    const list = document.createElement("div");
    list.className = "queue-ids";
    for (const id of ids.slice(0, QUEUE_LINKS)) {
      const a = document.createElement("a");
      a.href = "#chats";
      a.textContent = `#${id}`;
      a.dataset.chatId = id;
      a.addEventListener("click", () => showChat(id));
      list.append(a);
    }
    if (ids.length > QUEUE_LINKS) list.append(`and ${ids.length - QUEUE_LINKS} more`);
    box.append(count, list);
    container.replaceChildren(box);
  },

  async chats(container) {
    const body = await api(`/api/v2/w/${state.me.workspaceId}/chats?${chatQuery({ page: state.page, pageSize: state.pageSize })}`);
    $("#page-info").textContent = `Page ${body.page} of ${Math.max(1, Math.ceil(body.total / body.pageSize))} · ${body.total.toLocaleString("en-US")} chats`;
    $("#prev").disabled = body.page <= 1;
    $("#next").disabled = body.page * body.pageSize >= body.total;
    if (!body.items.length) return show(container, "empty", "No chat matches these filters.");
    const rows = body.items.map((c) => `<tr data-chat-id="${c.id}">
      <td class="num">${c.id}</td><td>${escapeHtml(c.title ?? "")}</td><td>${c.chatType}</td><td>${escapeHtml(c.channel)}</td>
      <td>${escapeHtml(c.ownerName ?? String(c.ownerMemberId))}</td><td>${escapeHtml(c.assistantName ?? "")}</td>
      <td class="num">${c.messageCount}</td><td>${when(c.lastMessageAt)}</td><td>${c.needsResponse ? "needs reply" : ""}${c.archived ? " archived" : ""}</td></tr>`);
    container.innerHTML = `<table data-testid="chat-table"><thead><tr><th class="num">Id</th><th>Title</th><th>Type</th><th>Channel</th>
      <th>Owner</th><th>Assistant</th><th class="num">Messages</th><th>Last message</th><th>State</th></tr></thead>
      <tbody>${rows.join("")}</tbody></table>`;
  },

  async tools(container) {
    const names = await api(`/api/v2/w/${state.me.workspaceId}/chats/tool-call-names`);
    if (!names.length) return show(container, "empty", "No tool was called in these chats.");
    const box = document.createElement("div");
    box.className = "tools";
    for (const name of names) {
      const tag = document.createElement("span");
      tag.textContent = name;
      tag.dataset.tool = name;
      box.append(tag);
    }
    container.replaceChildren(box);
  },

  async calls(container) {
    const { from, to } = range();
    const body = await api(`/analytics/calls/by-assistant?${query({ start_date: from, end_date: to })}`);
    const rows = body.data.assistants;
    if (!rows.length) return show(container, "empty", "No calls in this range.");
    const chart = document.createElement("div");
    hbars(chart, rows.map((r) => ({ label: r.assistant_name, value: r.total_duration_minutes })));
    const table = document.createElement("table");
    table.dataset.testid = "calls-table";
    table.innerHTML = `<thead><tr><th>Assistant</th><th class="num">Calls</th><th class="num">Minutes</th><th class="num">Hours</th>
      <th class="num">Average minutes</th></tr></thead><tbody>${rows.map((r) => `<tr data-assistant-id="${escapeHtml(r.assistant_id)}">
      <td>${escapeHtml(r.assistant_name)}</td><td class="num">${r.total_calls}</td><td class="num">${r.total_duration_minutes}</td>
      <td class="num">${r.total_duration_hours}</td><td class="num">${r.avg_duration_minutes}</td></tr>`).join("")}</tbody>`;
    container.replaceChildren(chart, table);
  },

  async cohorts(container) {
    const { from, to, tz } = range();
    const body = await api(`/api/ai-analytics/orgs/${encodeURIComponent(state.me.org)}/users/me/user-cohorts-over-time/?${query({ start_date: from, end_date: to, tz, aggregation: $("#aggregation").value })}`);
    if (![...body.new_users, ...body.veteran_users].some(Boolean)) return show(container, "empty", "No user was new or active in this range.");
    stackedBars(container, body.periods, { new: body.new_users, veteran: body.veteran_users });
  },

  async feedback(container) {
    const { from, to, tz } = range();
    const [series] = await api(`/api/ai-analytics/orgs/${encodeURIComponent(state.me.org)}/users/me/user-feedback/?${query({ start_date: from, end_date: to, tz, aggregation: $("#aggregation").value })}`);
    if (!series.some((p) => p.feedback_count)) return show(container, "empty", "No feedback in this range.");
    stackedBars(container, series.map((p) => p.period), { positive: series.map((p) => p.positive), negative: series.map((p) => p.negative) });
  },

  async cost(container) {
    const user = $("#cost-user").value.trim();
    if (!user) return show(container, "empty", "Type a user id to see what their LLM usage cost in this range.");
    const { from, to } = range();
    const body = await api(`/api/ai-analytics/orgs/${encodeURIComponent(state.me.org)}/users/${encodeURIComponent(user)}/user-cost/?${query({ start_date: from, end_date: to, username: user })}`);
    container.innerHTML = `<p><span class="big" data-testid="cost-value">$${body.total_cost.toFixed(6)}</span></p>
      <p class="state">for ${escapeHtml(user)}, ${from} to ${to}</p>`;
  },
};

function chatQuery(extra) {
  return query({
    search: $("#search").value.trim(),
    chatType: $("#chat-type").value,
    channel: $("#channel").value.trim(),
    archived: $("#archived").value,
    needsResponse: $("#needs-response").value,
    isTest: $("#is-test").checked ? "true" : "",
    sortBy: $("#sort").value,
    sortOrder: $("#order").value,
    filters: state.filters,
    ...extra,
  });
}

async function showChat(id) {
  // The queue links to the chat list, narrowed to that chat until filters are applied again.
  state.filters = JSON.stringify({ field: "id", op: "eq", value: id });
  state.page = 1;
  $("#search").value = "";
  $("#archived").value = "";
  try {  // the queue holds test chats too, which the list hides unless asked
    const probe = await api(`/api/v2/w/${state.me.workspaceId}/chats?${query({ filters: state.filters, isTest: "true", pageSize: 1 })}`);
    $("#is-test").checked = probe.total > 0;
  } catch (_) { /* the list panel will explain */ }
  load("chats", panels.chats);
  document.querySelector('[data-panel="chats"]').scrollIntoView();
}

async function exportCsv() {
  const button = $("#export");
  button.disabled = true;
  button.textContent = "Exporting…";
  try {
    const response = await api(`/api/v2/w/${state.me.workspaceId}/chats/export?${chatQuery({})}`, { raw: true });
    const blob = await response.blob();
    const name = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "")?.[1] || "chats.csv";
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
  } catch (error) {
    show(panel("chats"), "error", explain(error));
  } finally {
    button.disabled = false;
    button.textContent = "Export CSV";
  }
}

function when(iso) {
  // A stored instant shown in the chosen zone, to the minute.
  if (!iso) return "";
  const tz = $("#tz").value || "UTC";
  try {
    return new Intl.DateTimeFormat("sv-SE", { timeZone: tz, dateStyle: "short", timeStyle: "short" }).format(new Date(iso));
  } catch (_) {
    return iso;
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function refresh() {
  for (const [name, render] of Object.entries(panels)) load(name, render);
}

// -- sign in -------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  try {
    const me = await api("/api/v2/me");
    if (me.ingest) throw new ApiError(403, "an ingestion key can only send events; paste a member's key");
    state.me = me;
  } catch (error) {
    state.key = null;
    sessionStorage.removeItem("parley-key");
    $("#sign-in-error").textContent = error instanceof ApiError ? explain(error) : error.message;
    return;
  }
  sessionStorage.setItem("parley-key", key);
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#sign-out").hidden = false;
  $("#who").textContent = `${state.me.org} · member ${state.me.memberId} (${state.me.role ?? "unknown role"})`;
  $("#workspace").innerHTML = `<option value="${state.me.workspaceId}">${state.me.workspaceId}</option>`;
  refresh();
}

function setUp() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  $("#tz").value = zone;
  const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [zone, "UTC"];
  $("#zones").innerHTML = ["UTC", ...zones].map((z) => `<option value="${z}">`).join("");
  const toggleCustom = () => document.querySelectorAll(".custom").forEach((el) => { el.hidden = $("#preset").value !== "custom"; });
  toggleCustom();
  $("#preset").addEventListener("change", toggleCustom);
  $("#sign-in-form").addEventListener("submit", (e) => { e.preventDefault(); $("#sign-in-error").textContent = ""; signIn($("#key").value.trim()); });
  $("#sign-out").addEventListener("click", () => { sessionStorage.removeItem("parley-key"); location.reload(); });
  $("#controls").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  $("#chat-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    state.page = 1;
    state.filters = null;
    load("chats", panels.chats);
  });
  $("#prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); load("chats", panels.chats); });
  $("#next").addEventListener("click", () => { state.page += 1; load("chats", panels.chats); });
  $("#export").addEventListener("click", exportCsv);
  $("#cost-form").addEventListener("submit", (e) => { e.preventDefault(); load("cost", panels.cost); });
  if (state.key) signIn(state.key);
}

setUp();
