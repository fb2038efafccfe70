// Switchboard console: plain JavaScript, no build step, no dependency.
//
// Everything comes from the worker's API with the API key the person typed in, sent as an
// `Authorization: Bearer` header (never in a URL). The key is kept in this tab's sessionStorage.
// Live updates come from GET /console/api/events (server-sent events, read with fetch so that
// the header can be sent): they say which sessions changed, and the page re-reads those from
// GET /v1/sessions/{id}, at most once a second each. Text from the API is only ever set as
// textContent, never parsed as HTML.
"use strict";

const KEY = "switchboard.console.key";
const ORDER = ["delivered", "read", "sent", "failed", "undelivered", "expired", "suppressed",
  "rejected", "cancelled", "deferred"];
const PAGE = 50;

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem(KEY);
let stream = null;          // AbortController of the event stream
let listed = new Map();     // session id -> row, in the list view
let current = null;         // { id, doc, offset } in the session view
const due = new Map();      // session id -> timer of a scheduled re-read

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(method, path) {
  const response = await fetch(path, { method, headers: { Authorization: "Bearer " + apiKey } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401) { signOut("That API key was refused: sign in again."); }
  return { status: response.status, body };
}

function problem(answer) {
  const errors = (answer.body && answer.body.errors) || [];
  return answer.status + ": " + (errors.map((e) => e.error).join("; ") || "error");
}

// -- signing in and out ------------------------------------------------------------------------

function show(section) {
  for (const id of ["signin", "list", "session"]) $(id).hidden = id !== section;
  $("signout").hidden = section === "signin";
}

async function signIn(event) {
  event.preventDefault();
  apiKey = $("key").value.trim();
  $("key").value = "";
  const answer = await api("GET", "/console/api/sessions?limit=1");
  if (answer.status !== 200) {
    $("signin-error").textContent = answer.status === 401 ? "Unknown API key." : problem(answer);
    apiKey = null;
    return;
  }
  sessionStorage.setItem(KEY, apiKey);
  $("signin-error").textContent = "";
  start();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  apiKey = null;
  if (stream) stream.abort();
  stream = null;
  $("who").textContent = "";
  setLive(false);
  $("signin-error").textContent = message || "";
  show("signin");
}

function start() {
  openStream();
  route();
}

// -- the live stream ---------------------------------------------------------------------------

function setLive(on) {
  $("live").textContent = on ? "live" : "offline";
  $("live").className = "live " + (on ? "on" : "off");
}

async function openStream() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  try {
    const response = await fetch("/console/api/events", {
      headers: { Authorization: "Bearer " + apiKey, Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (response.status === 401) { signOut("That API key was refused: sign in again."); return; }
    if (!response.ok || !response.body) throw new Error("stream " + response.status);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  } catch (e) {
    if (controller.signal.aborted) return;
  }
  setLive(false);
  if (stream === controller && apiKey) setTimeout(openStream, 2000);  // the worker restarted
}

function dispatch(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trim());
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (name === "hello") {
    $("who").textContent = "client " + payload.client_id;
    setLive(true);
    route();  // read the present state: from now on, the stream tells what changes
  } else if (name === "activity") {
    onActivity(payload);
  }
}

function onActivity(update) {
  for (const s of update.sessions) {
    if (current && s.session_id === current.id) schedule(s.session_id, refreshSession);
    else if (!current && listed.has(s.session_id)) schedule(s.session_id, refreshRow);
    else if (!current) schedule("*list", loadList);
  }
  if (current) {
    for (const e of update.events) if (e.session_id === current.id) addEvent(e);
  }
}

function schedule(id, task) {
  if (due.has(id)) return;
  due.set(id, setTimeout(() => { due.delete(id); task(id); }, 1000));
}

// -- views -------------------------------------------------------------------------------------

function route() {
  if (!apiKey) { show("signin"); return; }
  const match = location.hash.match(/^#\/session\/([0-9a-f-]{36})$/);
  if (match) openSession(match[1]); else loadList();
}

function bar(node, doc) {
  node.replaceChildren();
  const total = doc.deliveries || 0;
  const counts = held(doc);
  for (const status of ORDER.concat(Object.keys(counts).filter((s) => !ORDER.includes(s)))) {
    const n = counts[status] || 0;
    if (!n || !total) continue;
    const part = el("span", null, "s-" + status);
    part.style.width = (100 * n / total) + "%";
    part.title = status + " " + n;
    node.append(part);
  }
  node.title = (doc.final || 0) + " of " + total + " final";
}

// The final deliveries by status, and the deliveries held by a time window now.
function held(doc) {
  return Object.assign({}, doc.counts || {}, doc.deferred ? { deferred: doc.deferred } : {});
}

function statusOf(doc) { return doc.status; }

function sessionRow(doc) {
  const row = el("tr", null, "row");
  row.dataset.session = doc.session_id;
  row.addEventListener("click", () => { location.hash = "#/session/" + doc.session_id; });
  fillRow(row, doc);
  return row;
}

function fillRow(row, doc) {
  const cells = [el("code", doc.session_id.slice(0, 8)), (doc.channels || []).join(", "), doc.trigger,
    new Date(doc.created_at).toLocaleString()];
  const status = el("span", statusOf(doc), "status " + statusOf(doc));
  const progress = el("div", null, "bar");
  bar(progress, doc);
  const counter = el("span", " " + (doc.final || 0) + "/" + (doc.deliveries || 0), "note");
  row.replaceChildren(...cells.map((c) => { const td = el("td"); td.append(c); return td; }));
  const st = el("td"); st.append(status); row.append(st);
  const pr = el("td"); pr.append(progress, counter); row.append(pr);
  row.dataset.status = statusOf(doc);
}

async function loadList() {
  current = null;
  show("list");
  const answer = await api("GET", "/console/api/sessions?limit=50");
  if (answer.status !== 200) { $("list-note").textContent = problem(answer); return; }
  const body = $("sessions").tBodies[0];
  listed = new Map();
  body.replaceChildren(...answer.body.sessions.map((doc) => {
    const row = sessionRow(doc);
    listed.set(doc.session_id, row);
    return row;
  }));
  $("list-empty").hidden = answer.body.sessions.length > 0;
  $("list-note").textContent = answer.body.partial ? "(a worker did not answer: the list may be incomplete)" : "";
}

async function refreshRow(id) {
  const answer = await api("GET", "/v1/sessions/" + id + "?limit=1");
  const row = listed.get(id);
  if (answer.status === 200 && row && !current) fillRow(row, answer.body);
}

async function openSession(id) {
  current = { id, doc: null, offset: 0 };
  show("session");
  $("events").replaceChildren();
  $("action-result").textContent = "";
  await refreshSession(id);
}

function recipientsQuery(offset) {
  const filter = $("filter").value;
  return "?offset=" + offset + "&limit=" + PAGE + (filter ? "&status=" + encodeURIComponent(filter) : "");
}

async function refreshSession(id) {
  if (!current || current.id !== id) return;
  const answer = await api("GET", "/v1/sessions/" + id + recipientsQuery(0));
  if (!current || current.id !== id) return;
  if (answer.status !== 200) { $("s-status").textContent = problem(answer); return; }
  renderSession(answer.body, false);
}

function renderSession(doc, append) {
  current.doc = doc;
  $("s-id").textContent = doc.session_id;
  $("s-status").textContent = doc.status;
  $("s-status").className = "status " + doc.status;
  $("s-status").dataset.status = doc.status;
  const meta = [["Channels", (doc.channels || []).join(", ")], ["Trigger", doc.trigger],
    ["Priority", doc.priority], ["Created", new Date(doc.created_at).toLocaleString()],
    ["Completed", doc.completed_at ? new Date(doc.completed_at).toLocaleString() : "—"],
    ["Recipients", doc.recipient_count], ["Deliveries", (doc.final || 0) + " final of " + doc.deliveries]];
  $("s-meta").replaceChildren(...meta.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  bar($("s-bar"), doc);
  const counts = held(doc);
  $("s-counts").replaceChildren(...Object.keys(counts).sort().map((s) => {
    const li = el("li");
    li.append(el("i", null, "s-" + s), s + " " + counts[s]);
    return li;
  }));
  $("trigger").disabled = !["waiting", "scheduled"].includes(doc.status);
  $("resend").disabled = !((counts.failed || 0) + (counts.undelivered || 0) + (counts.expired || 0));
  $("cancel").disabled = ["completed", "cancelled"].includes(doc.status);
  const body = $("recipients").tBodies[0];
  const rows = doc.recipients.map((r) => {
    const tr = el("tr");
    tr.dataset.status = r.status;
    const reason = [r.error_code, r.error].filter(Boolean).join(": ");
    for (const v of [r.index, r.channel, r.recipient || "", r.status, r.attempt ?? "", reason,
      r.release_at ? new Date(r.release_at).toLocaleString() : "",
      r.updated_at ? new Date(r.updated_at).toLocaleTimeString() : ""]) tr.append(el("td", v));
    return tr;
  });
  if (append) body.append(...rows); else body.replaceChildren(...rows);
  current.offset = doc.next_offset;
  $("more").hidden = doc.next_offset === null || doc.next_offset === undefined;
  $("r-note").textContent = body.rows.length ? "" : "No recipient in this status" + (doc.next_offset ? " yet: look further with More." : ".");
}

async function more() {
  if (!current || current.offset === null) return;
  const answer = await api("GET", "/v1/sessions/" + current.id + recipientsQuery(current.offset));
  if (answer.status === 200) renderSession(answer.body, true);
}

function addEvent(e) {
  const list = $("events");
  const text = [e.occurred_at, e.status, e.channel || "session", e.recipient || "", e.attempt ? "attempt " + e.attempt : "",
    [e.error_code, e.error].filter(Boolean).join(": ")].filter(Boolean).join("  ");
  list.prepend(el("li", text));
  while (list.children.length > 50) list.lastChild.remove();
}

async function act(path, label) {
  if (!current) return;
  for (const b of ["trigger", "resend", "cancel"]) $(b).disabled = true;
  $("action-result").textContent = label + "…";
  const answer = await api("POST", "/v1/sessions/" + current.id + path);
  $("action-result").textContent = answer.status === 202 ? label + ": done" : label + " refused: " + problem(answer);
  await refreshSession(current.id);
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut(""));
  $("filter").addEventListener("change", () => current && refreshSession(current.id));
  $("more").addEventListener("click", more);
  $("trigger").addEventListener("click", () => act("/trigger", "Trigger"));
  $("resend").addEventListener("click", () => act("/trigger?include_failed=true", "Send failed again"));
  $("cancel").addEventListener("click", () => act("/cancel", "Cancel"));
  window.addEventListener("hashchange", route);
  if (apiKey) start(); else show("signin");
});
