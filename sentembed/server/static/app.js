// The sentembed playground: Search, Compare and Model views over the server's own API.
// Every text from the server or the person goes into the page as text (textContent, text
// nodes, attribute values), never as HTML. The API key lives in this tab's sessionStorage and
// travels in the Authorization header only, never in a URL.
"use strict";

const KEY_STORE = "sentembed.apiKey";
const $ = (id) => document.getElementById(id);
let apiKey = readStoredKey();
let info = null;
let metricsTimer = null;
let currentTab = "search";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status; // 0: the server could not be reached
  }
}

function readStoredKey() {
  try { return sessionStorage.getItem(KEY_STORE); } catch { return null; } // storage may be off
}

// el("li", {class: "hit", text: "…"}, child, "more text"): strings become text nodes.
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function setStatus(target, kind, message) {
  target.className = "status " + kind;
  target.textContent = message;
}

function banner(message) {
  const box = $("server-status");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (apiKey) headers["Authorization"] = "Bearer " + apiKey;
  const started = performance.now();
  let response, text;
  try {
    response = await fetch(path, {
      method: body === undefined ? "GET" : "POST", headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    text = await response.text();
  } catch (err) {
    throw new ApiError(0, `Cannot reach the server at ${location.origin}: is sentembed serve still running? (${err.message})`);
  }
  const elapsed = performance.now() - started;
  if (!response.ok) {
    let message = response.statusText || "error";
    try { message = JSON.parse(text).error.message || message; } catch { /* not our JSON error */ }
    throw new ApiError(response.status, message);
  }
  banner("");
  return { response, text, elapsed };
}

function describe(err) {
  if (!(err instanceof ApiError)) return `The page could not show the answer: ${err.message}`;
  if (err.status === 0) return err.message;
  if (err.status === 401) return apiKey === null && err.message.startsWith("missing")
    ? "This server asks for an API key: enter it above."
    : `The server refused the API key: ${err.message}. Enter the right key above.`;
  return `The server answered ${err.status}: ${err.message}`;
}

function fail(target, err) {
  if (err instanceof ApiError && err.status === 0) banner(err.message);
  if (err instanceof ApiError && err.status === 401) askForKey(err.message);
  setStatus(target, "error", describe(err));
}

// -- the API key ------------------------------------------------------------------------
function askForKey(reason) {
  const refused = Boolean(apiKey);
  apiKey = null;
  try { sessionStorage.removeItem(KEY_STORE); } catch { /* storage may be off */ }
  banner(refused ? `The server refused the API key: ${reason}. Enter the right key below.`
    : "This server asks for an API key: enter it below.");
  $("key-form").hidden = false;
  $("key-input").focus();
}

function useKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!/^[\x21-\x7e]+$/.test(key)) { banner("An API key is printable ASCII without spaces."); return; }
  apiKey = key;
  try { sessionStorage.setItem(KEY_STORE, key); } catch { /* kept in memory only */ }
  $("key-input").value = "";
  $("key-form").hidden = true;
  $("key-change").hidden = false;
  if (currentTab === "model") selectTab("model"); // restarts the metrics a refused key stopped
  else loadInfo();
}

// -- views ------------------------------------------------------------------------------
const TABS = ["search", "compare", "model"];

function selectTab(name, focus = false) {
  currentTab = name;
  for (const tab of TABS) {
    const on = tab === name;
    const button = $("tab-" + tab);
    button.setAttribute("aria-selected", String(on));
    button.tabIndex = on ? 0 : -1;
    $("view-" + tab).hidden = !on;
    if (on && focus) button.focus();
  }
  if (history.replaceState) history.replaceState(null, "", "#" + name);
  clearInterval(metricsTimer);
  metricsTimer = null;
  if (name === "model") {
    loadInfo();
    refreshMetrics();
    metricsTimer = setInterval(() => { if (!document.hidden) refreshMetrics(); }, 2000);
  }
}

function tabKeys(event) {
  const at = TABS.indexOf(event.target.id.replace("tab-", ""));
  const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: TABS.length - 1 }[event.key];
  if (to === undefined) return;
  event.preventDefault();
  selectTab(TABS[(to + TABS.length) % TABS.length], true);
}

// -- model ------------------------------------------------------------------------------
// A value from /info as a line of text: {"a": 1, "b": {"c": true}} -> "a 1 · b (c true)".
function plain(value) {
  if (value === null || value === undefined) return "–";
  if (Array.isArray(value)) return value.map(plain).join(", ");
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k} ${typeof v === "object" && v ? `(${plain(v)})` : plain(v)}`).join(" · ");
  }
  return value === "" ? '""' : String(value);
}

function facts(target, entries) {
  target.replaceChildren(...entries.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: plain(value) })]));
}

async function loadInfo() {
  try {
    info = JSON.parse((await api("/info")).text);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      $("model-line").textContent = "Enter the API key to start.";
      askForKey(err.message);
    } else {
      $("model-line").textContent = describe(err);
      if (err instanceof ApiError && err.status === 0) banner(err.message);
    }
    return;
  }
  const parts = [info.model, `${info.dimension} dimensions`, `${info.similarity_fn} similarity`];
  if (info.index) parts.push(`index of ${info.index.count ?? "?"} documents`);
  $("model-line").textContent = parts.join(" · ");
  $("key-change").hidden = !info.auth;
  $("no-index").hidden = Boolean(info.index);
  $("search-form").hidden = !info.index;
  const { limits, index, ...model } = info;
  facts($("model-info"), Object.entries(model).concat(index ? [["index", index]] : []));
  facts($("model-limits"), Object.entries(limits || {}));
}

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || line.startsWith("#")) continue;
    const labels = {};
    for (const p of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

// The page's own requests would swamp the latency figures: count the API's routes only.
const PAGE_ROUTES = new Set(["/metrics", "/info", "/", "/static/app.js", "/static/style.css", "other"]);

function latencyQuantile(samples, q) {
  const buckets = new Map();
  for (const s of samples) {
    if (s.name !== "sentembed_request_duration_seconds_bucket" || PAGE_ROUTES.has(s.labels.route)) continue;
    buckets.set(s.labels.le, (buckets.get(s.labels.le) || 0) + s.value);
  }
  const sorted = [...buckets].map(([le, n]) => [le === "+Inf" ? Infinity : Number(le), n]).sort((a, b) => a[0] - b[0]);
  const total = sorted.length ? sorted[sorted.length - 1][1] : 0;
  if (!total) return "–";
  const [le] = sorted.find(([, n]) => n >= q * total);
  return Number.isFinite(le) ? `≤ ${(le * 1000).toFixed(1)} ms` : "> 30 s";
}

let metricsBusy = false;
async function refreshMetrics() {
  if (metricsBusy) return;
  metricsBusy = true;
  try {
    const samples = parseMetrics((await api("/metrics")).text);
    const sum = (name, keep = () => true) =>
      samples.filter((s) => s.name === name && keep(s.labels)).reduce((a, s) => a + s.value, 0);
    const api_ = (l) => !PAGE_ROUTES.has(l.route);
    const ratio = (a, b) => (b ? a / b : 0);
    facts($("model-metrics"), [
      ["API requests answered", String(sum("sentembed_requests_total", api_))],
      ["of them errors (4xx/5xx)", String(sum("sentembed_requests_total", (l) => api_(l) && l.status >= "400"))],
      ["request latency p50", latencyQuantile(samples, 0.5)],
      ["request latency p95", latencyQuantile(samples, 0.95)],
      ["inputs embedded", String(sum("sentembed_inputs_total"))],
      ["tokens embedded", String(sum("sentembed_input_tokens_total"))],
      ["model batches", String(sum("sentembed_batch_size_count"))],
      ["mean inputs per batch", ratio(sum("sentembed_batch_size_sum"), sum("sentembed_batch_size_count")).toFixed(1)],
      ["mean model time per batch", `${(1000 * ratio(sum("sentembed_batch_inference_seconds_sum"),
        sum("sentembed_batch_inference_seconds_count"))).toFixed(1)} ms`],
      ["inputs waiting now", String(sum("sentembed_queue_depth"))],
      ["requests refused by a limit", String(sum("sentembed_rejected_total"))],
    ]);
    setStatus($("metrics-status"), "ok", `Updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) clearInterval(metricsTimer); // until a key is given
    fail($("metrics-status"), err);
  } finally {
    metricsBusy = false;
  }
}

// -- search -----------------------------------------------------------------------------
const CONTEXT = 160; // characters shown either side of the matching passage

function passageView(hit) {
  const text = hit.text ?? hit.passage ?? "";
  const chars = Array.from(text); // spans count code points, as Python does
  const [start, end] = hit.span || [0, chars.length];
  const p = el("p", { class: "passage" });
  if (start === 0 && end >= chars.length) { // the whole text matched: nothing to pick out
    p.append(chars.length > 2 * CONTEXT + 400 ? chars.slice(0, 2 * CONTEXT + 400).join("") + "…" : text);
    return p;
  }
  const from = Math.max(0, start - CONTEXT), to = Math.min(chars.length, end + CONTEXT);
  p.append((from > 0 ? "…" : "") + chars.slice(from, start).join(""),
    el("mark", { text: hit.passage ?? chars.slice(start, end).join("") }),
    chars.slice(end, to).join("") + (to < chars.length ? "…" : ""));
  return p;
}

function hitView(hit) {
  const li = el("li", { class: "hit" },
    el("div", { class: "hit-head" },
      el("span", { class: "hit-id", text: hit.id }),
      el("span", { class: "hit-score", text: `score ${hit.score.toFixed(4)}` })),
    passageView(hit));
  li.dataset.id = hit.id;
  li.dataset.score = String(hit.score);
  if (hit.metadata && Object.keys(hit.metadata).length) {
    li.append(el("dl", { class: "meta" }, ...Object.entries(hit.metadata).flatMap(([k, v]) => [
      el("dt", { text: k }), el("dd", { text: typeof v === "string" ? v : JSON.stringify(v) })])));
  }
  return li;
}

function serverTime(response) {
  const ms = (name) => Number(response.headers.get(`x-${name}-time`) || 0).toFixed(1);
  return `server ${ms("total")} ms: tokenize ${ms("tokenization")}, queue ${ms("queue")}, model ${ms("inference")}`;
}

async function search(event) {
  event.preventDefault();
  const status = $("search-status"), list = $("search-results");
  const query = $("search-query").value;
  list.replaceChildren();
  if (!query.trim()) { setStatus(status, "error", "Type a query first."); $("search-query").focus(); return; }
  const body = { query, top_k: Math.min(100, Math.max(1, parseInt($("search-topk").value, 10) || 10)), truncate: true };
  const mode = $("search-mode").value, alpha = $("search-alpha").value.trim();
  if (mode) body.mode = mode;
  if (mode === "hybrid" && alpha !== "") body.alpha = Number(alpha);
  const whereText = $("search-where").value.trim();
  if (whereText) {
    try { body.where = JSON.parse(whereText); } catch (err) {
      setStatus(status, "error", `The metadata filter is not JSON: ${err.message}`); return;
    }
    if (!body.where || typeof body.where !== "object" || Array.isArray(body.where)) {
      setStatus(status, "error", 'The metadata filter is a JSON object, such as {"topic": "pets"}.'); return;
    }
  }
  setStatus(status, "busy", "Searching…");
  try {
    const { response, text, elapsed } = await api("/search", body);
    const hits = JSON.parse(text).results[0];
    list.replaceChildren(...hits.map(hitView));
    const long = info && query.length > 4 * info.max_seq_length
      ? ` The query is long: the model reads its first ${info.max_seq_length} tokens.` : "";
    setStatus(status, "ok", `${hits.length} hit${hits.length === 1 ? "" : "s"} in ${elapsed.toFixed(0)} ms (${serverTime(response)}).${long}`);
  } catch (err) {
    fail(status, err);
  }
}

// -- compare ----------------------------------------------------------------------------
const lines = (text) => text.split("\n").map((t) => t.trim()).filter(Boolean);

function shade(score, scale) { // 0 (white) .. 1 (deep blue)
  return Math.max(0, Math.min(1, score / scale));
}

async function compare(event) {
  event.preventDefault();
  const status = $("compare-status"), list = $("compare-results");
  const source = $("compare-source").value.trim(), targets = lines($("compare-targets").value);
  list.replaceChildren();
  if (!source || !targets.length) { setStatus(status, "error", "Give a source sentence and at least one sentence to compare."); return; }
  setStatus(status, "busy", "Comparing…");
  try {
    const { response, text, elapsed } = await api("/similarity", { sources: [source], targets, truncate: true });
    const answer = JSON.parse(text), scores = answer.scores[0];
    const scale = answer.similarity_fn === "cosine" ? 1 : Math.max(...scores.map(Math.abs), 1e-9);
    list.replaceChildren(...targets.map((target, i) => {
      const fill = el("span", { class: "fill" });
      fill.style.width = `${(100 * shade(scores[i], scale)).toFixed(1)}%`;
      const li = el("li", {}, el("span", { class: "bar-text", text: target }),
        el("span", { class: "bar", "aria-hidden": "true" }, fill),
        el("span", { class: "bar-score", text: scores[i].toFixed(4) }));
      li.dataset.score = String(scores[i]);
      return li;
    }));
    setStatus(status, "ok", `${answer.similarity_fn} similarity in ${elapsed.toFixed(0)} ms (${serverTime(response)}).`);
  } catch (err) {
    fail(status, err);
  }
}

const HEATMAP_MAX = 12;

async function heatmap(event) {
  event.preventDefault();
  const status = $("heatmap-status"), box = $("heatmap");
  const texts = lines($("heatmap-texts").value);
  box.replaceChildren();
  if (texts.length < 2) { setStatus(status, "error", "Give at least two texts, one per line."); return; }
  if (texts.length > HEATMAP_MAX) { setStatus(status, "error", `At most ${HEATMAP_MAX} texts: the table gets unreadable beyond.`); return; }
  setStatus(status, "busy", "Computing…");
  try {
    const { text, elapsed } = await api("/similarity", { sources: texts, targets: texts, truncate: true });
    const answer = JSON.parse(text);
    const scale = answer.similarity_fn === "cosine" ? 1 : Math.max(...answer.scores.flat().map(Math.abs), 1e-9);
    const table = el("table", { class: "heatmap" }, el("caption", { text: `${answer.similarity_fn} similarity between the texts` }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "text" }),
        ...texts.map((_, j) => el("th", { scope: "col", text: String(j + 1) })))),
      el("tbody", {}, ...answer.scores.map((row, i) => el("tr", {},
        el("th", { scope: "row", title: texts[i], text: `${i + 1}. ${texts[i]}` }),
        ...row.map((score) => {
          const t = shade(score, scale);
          const cell = el("td", { text: score.toFixed(2) });
          cell.dataset.score = String(score);
          cell.style.backgroundColor = `hsl(215, 70%, ${(97 - 55 * t).toFixed(0)}%)`;
          if (t > 0.6) cell.classList.add("dark");
          return cell;
        })))));
    box.append(table);
    setStatus(status, "ok", `${texts.length} × ${texts.length} scores in ${elapsed.toFixed(0)} ms.`);
  } catch (err) {
    fail(status, err);
  }
}

// -- start ------------------------------------------------------------------------------
function start() {
  for (const tab of TABS) $("tab-" + tab).addEventListener("click", () => selectTab(tab));
  $("tabs").addEventListener("keydown", tabKeys);
  $("key-form").addEventListener("submit", useKey);
  $("key-change").addEventListener("click", () => { $("key-form").hidden = false; $("key-input").focus(); });
  $("search-form").addEventListener("submit", search);
  $("search-query").addEventListener("keydown", (event) => { // Enter searches, Shift+Enter breaks the line
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("search-form").requestSubmit(); }
  });
  $("compare-form").addEventListener("submit", compare);
  $("heatmap-form").addEventListener("submit", heatmap);
  window.addEventListener("hashchange", () => { // a link or the back button names a view
    const view = location.hash.slice(1);
    if (TABS.includes(view)) selectTab(view);
  });
  const first = location.hash.slice(1);
  selectTab(TABS.includes(first) ? first : "search");
  if (first !== "model") loadInfo(); // the model view loads it itself
}

document.addEventListener("DOMContentLoaded", start);
