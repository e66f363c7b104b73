// The Wallance dashboard: one live view of the node, fed by /api/events
// (server-sent events carrying the whole view each time it changes).
"use strict";

// Script errors, kept for the browser test (and visible in the console).
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));

const UNITS = 1000000; // units per DCoin
const $ = (sel) => document.querySelector(sel);
let view = null;
let purchase = null; // { id, sentAt }
const lastBalance = new Map();

function coins(units) {
  // Two decimals, more when the amount needs them (0.001 DCoin stays visible).
  return (Number(units || 0) / UNITS).toFixed(6).replace(/0{1,4}$/, "");
}
function short(hex, n) {
  return hex ? String(hex).slice(0, n || 10) + "…" : "";
}
function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}
// Builds an element; children are nodes or text (never parsed as HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}
function fill(tbody, rows, columns, emptyText) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, emptyText))]));
}
function dl(target, pairs) {
  target.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function renderSummary(v) {
  $("#me").textContent = v.me || "?";
  $("#me-id").textContent = short(v.id, 12);
  document.title = "Wallance · " + (v.me || "node");
  const up = v.uptime_s >= 3600 ? (v.uptime_s / 3600).toFixed(1) + " h" : v.uptime_s + " s";
  dl($("#summary"), [
    ["members", v.members + " (quorum " + v.quorum + ")"],
    ["DDS peers", v.peers.dds_participants],
    ["uptime", up],
    ["pending", v.pending.length],
    ["commits", v.stats.commits],
    ["services", v.services.length],
  ]);
}

function renderWallets(v) {
  const rows = v.wallets.map((w) => {
    const changed = lastBalance.has(w.id) && lastBalance.get(w.id) !== w.balance;
    lastBalance.set(w.id, w.balance);
    const cls = [w.id === v.id ? "me" : "", changed ? "changed" : ""].join(" ").trim();
    const last = w.last_commit
      ? el("span", {}, w.last_commit.service + " · " + coins(w.last_commit.price) + " · " + clock(w.last_commit.at_ms))
      : "";
    return el("tr", { class: cls || null, "data-member": w.name, "data-id": w.id },
      el("td", {}, w.name),
      el("td", { class: "num balance" }, coins(w.balance)),
      el("td", { class: "num opt" }, coins(w.spendable)),
      el("td", { class: "num version" }, w.version),
      el("td", { class: "num opt" }, w.shares),
      el("td", { class: "opt" }, el("code", { title: w.state }, short(w.state, 12))),
      el("td", { class: "opt" }, last));
  });
  fill($("#wallets tbody"), rows, 7, "no wallets yet");
}

function renderServices(v) {
  const select = $("#service");
  const current = select.value;
  const options = v.services.map((s) =>
    el("option", { value: s.provider_id + ":" + s.name, "data-price": s.price },
      s.name + " — " + coins(s.price) + " DCoin from " + s.provider));
  if (!options.length) options.push(el("option", { value: "", disabled: "" }, "no service on the network yet"));
  const key = options.map((o) => o.value + o.textContent).join("|");
  if (select.dataset.key !== key) {
    select.replaceChildren(...options);
    select.dataset.key = key;
    if ([...select.options].some((o) => o.value === current)) select.value = current;
    if (!$("#price").value || !current) setPriceFromService();
  }
  fill($("#services tbody"), v.services.map((s) => el("tr", { "data-service": s.name },
    el("td", {}, s.name), el("td", { class: "num" }, coins(s.price)), el("td", {}, s.provider),
    el("td", { class: "opt" }, el("code", { title: s.contract_hash }, short(s.contract_hash, 12))))),
    4, "no service offered yet");
}

function setPriceFromService() {
  const opt = $("#service").selectedOptions[0];
  if (opt && opt.dataset.price) $("#price").value = (Number(opt.dataset.price) / UNITS).toString();
}

function renderContracts(v) {
  const rows = v.contracts.map((c) => {
    const file = String(c.file).split("/").pop();
    return el("tr", { "data-file": file, "data-status": c.status },
      el("td", {}, el("code", { title: c.file }, file)),
      el("td", {}, c.service || ""),
      el("td", { class: "num" }, c.price === null ? "" : coins(c.price)),
      el("td", { class: "wrap" }, el("span", { class: "badge " + c.status }, c.status),
        c.error ? el("div", { class: "error-text" }, c.error) : null),
      el("td", { class: "opt" }, c.version || ""),
      el("td", {}, clock(c.at_ms)));
  });
  fill($("#contracts tbody"), rows, 6, "the folder holds no contract");
}

function renderPending(v) {
  fill($("#pending tbody"), v.pending.map((p) => el("tr", {},
    el("td", {}, p.requester), el("td", {}, p.service), el("td", { class: "num" }, coins(p.price)),
    el("td", { class: "num" }, p.version),
    el("td", { class: "opt" }, el("code", {}, short(p.request_id, 12)), p.waiting ? " (waiting)" : ""))),
    5, "nothing pending");
}

function renderCommits(v) {
  const outcomes = new Map(v.outcomes.map((o) => [o.request_id, o]));
  fill($("#commits tbody"), v.commits.slice(0, 30).map((c) => {
    const o = outcomes.get(c.request_id);
    const outcome = o
      ? el("span", {}, el("span", { class: "badge " + (o.ok ? "ok" : "refused") }, o.ok ? "ok" : "refused"), " " + o.body)
      : el("span", { class: "empty" }, c.from_certificate ? "settled by certificate" : "waiting for the provider");
    return el("tr", {},
      el("td", { class: "opt" }, clock(c.at_ms)), el("td", {}, c.requester + " v" + c.version), el("td", {}, c.service),
      el("td", { class: "num opt" }, coins(c.price)), el("td", { class: "num" }, c.latency_ms + " ms"),
      el("td", { class: "wrap" }, outcome));
  }), 6, "no commit since this node started");
}

function renderProduced(v) {
  fill($("#produced tbody"), (v.produced || []).slice(0, 30).map((o) =>
    el("tr", {},
      el("td", { class: "opt" }, clock(o.at_ms)), el("td", {}, o.requester + " v" + o.version), el("td", {}, o.service),
      el("td", { class: "wrap" }, el("span", { class: "badge " + (o.ok ? "ok" : "refused") }, o.ok ? "served" : "refunded"), " " + o.body),
      el("td", { class: "opt logs" }, o.logs.join("\n")))),
    5, "no outcome produced since this node started");
}

function renderStats(v) {
  const s = v.stats;
  dl($("#stats"), [
    ["DDS participants", v.peers.dds_participants],
    ["votes sent / received", s.votes_sent + " / " + s.votes_received],
    ["sensor shares received", s.shares_received],
    ["commits / certificates", s.commits + " / " + s.certificates_applied],
    ["contract runs / failures", s.contract_runs + " / " + s.contract_failures],
    ["verdicts paid / refunded / open", s.verdicts_paid + " / " + s.verdicts_refunded + " / " + s.escrows_open],
    ["messages sent", s.messages_sent],
    ["DDS samples / malformed", s.dds_received + " / " + s.dds_malformed],
    ["duplicates", s.duplicates],
    ["store", (s.store_bytes / 1048576).toFixed(2) + " MiB"],
  ]);
  const rej = Object.entries(s.rejected || {});
  if (rej.length) dl($("#rejected"), rej);
  else $("#rejected").replaceChildren(el("dd", { class: "empty" }, "none"));
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderLatency(v) {
  const pts = v.commits.filter((c) => !c.from_certificate).slice().sort((a, b) => a.at_ms - b.at_ms);
  const box = $("#latency-chart");
  if (!pts.length) {
    box.replaceChildren(el("p", { class: "empty" }, "no commit yet: the chart fills as purchases commit"));
    $("#latency-summary").textContent = "";
    return;
  }
  const lat = pts.map((p) => p.latency_ms);
  const sorted = lat.slice().sort((a, b) => a - b);
  const p95 = sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.95))];
  const avg = Math.round(lat.reduce((a, b) => a + b, 0) / lat.length);
  $("#latency-summary").textContent = "last " + lat[lat.length - 1] + " ms · mean " + avg + " ms · p95 " + p95 + " ms · " + lat.length + " commits";
  // Drawn at the box's own width so the labels stay readable on a phone.
  const W = Math.max(300, Math.round(box.clientWidth || 720)), H = 220, L = 48, R = 12, T = 10, B = 26;
  const maxY = niceMax(Math.max(...lat));
  const t0 = pts[0].at_ms, t1 = Math.max(pts[pts.length - 1].at_ms, t0 + 1);
  const x = (t) => L + (pts.length === 1 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (ms) => T + (1 - ms / maxY) * (H - T - B);
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "commit latency in ms over time" });
  for (let i = 0; i <= 5; i++) {
    const val = (maxY * i) / 5;
    s.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(val), y2: y(val) }));
    s.append(svg("text", { x: L - 6, y: y(val) + 4, "text-anchor": "end" }, Math.round(val) + ""));
  }
  s.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  s.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  s.append(svg("text", { x: L, y: H - 8 }, clock(t0)));
  s.append(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, clock(t1)));
  s.append(svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, "ms per commit"));
  s.append(svg("polyline", { class: "line", points: pts.map((p) => x(p.at_ms) + "," + y(p.latency_ms)).join(" ") }));
  for (const p of pts) {
    const d = svg("circle", { class: "dot", cx: x(p.at_ms), cy: y(p.latency_ms), r: 3 });
    d.append(svg("title", {}, p.requester + " " + p.service + ": " + p.latency_ms + " ms"));
    s.append(d);
  }
  box.replaceChildren(s);
}
function niceMax(v) {
  // Five grid lines on round numbers of ms.
  const steps = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
  return steps.find((s) => s >= v) || Math.ceil(v / 100000) * 100000;
}

// A purchase sent from the form, followed through the live view.
function renderPurchase(v) {
  if (!purchase) return;
  const box = $("#buy-result");
  const commit = v.commits.find((c) => c.request_id === purchase.id);
  const outcome = v.outcomes.find((o) => o.request_id === purchase.id);
  const pending = v.pending.find((p) => p.request_id === purchase.id);
  let status, text;
  if (outcome) {
    status = outcome.ok ? "done" : "refused";
    text = (outcome.ok ? "Done: " : "The contract refused: ") + outcome.body +
      "\n(committed in " + (commit ? commit.latency_ms + " ms" : "?") + ", outcome from " + outcome.provider + ")";
  } else if (commit) {
    status = "committed";
    text = "Committed in " + commit.latency_ms + " ms; waiting for " + commit.provider + " to run the contract…";
  } else {
    status = pending ? "pending" : "sent";
    text = "Request " + short(purchase.id, 12) + " sent; waiting for votes…";
  }
  box.dataset.status = status;
  box.dataset.request = purchase.id;
  box.textContent = text;
}

function render(v) {
  view = v;
  renderSummary(v);
  renderWallets(v);
  renderServices(v);
  renderContracts(v);
  renderPending(v);
  renderCommits(v);
  renderProduced(v);
  renderStats(v);
  renderLatency(v);
  renderPurchase(v);
}

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("view", (e) => {
    $("#conn").className = "conn on";
    $("#conn").textContent = "live";
    try { render(JSON.parse(e.data)); } catch (err) { console.error(err); }
  });
  es.onerror = () => {
    $("#conn").className = "conn off";
    $("#conn").textContent = "disconnected, retrying";
  };
}

async function buy(ev) {
  ev.preventDefault();
  const box = $("#buy-result");
  // The option's value is "<provider id (hex)>:<service name>".
  const value = $("#service").value || "";
  const provider = value.slice(0, value.indexOf(":"));
  const service = value.slice(value.indexOf(":") + 1);
  const token = $("#token").value.trim();
  localStorage.setItem("wallance-token", token);
  const params = {};
  for (const line of $("#params").value.split("\n")) {
    if (!line.trim()) continue;
    const i = line.indexOf("=");
    if (i <= 0) {
      box.dataset.status = "error";
      box.textContent = "Parameter " + JSON.stringify(line.trim()) + " is not key=value.";
      return;
    }
    params[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  const price = Math.round(Number($("#price").value) * UNITS);
  const body = { service, price, params };
  if (provider) body.provider = provider;
  $("#buy").disabled = true;
  purchase = null;
  box.dataset.status = "sent";
  box.textContent = "Sending…";
  try {
    const r = await fetch("/api/buy", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => ({}));
    if (r.status !== 202) {
      box.dataset.status = "error";
      box.textContent = "Refused (" + r.status + "): " + (answer.error || r.statusText);
      return;
    }
    purchase = { id: answer.request_id };
    if (view) renderPurchase(view);
  } catch (err) {
    box.dataset.status = "error";
    box.textContent = "Cannot reach the node: " + err;
  } finally {
    $("#buy").disabled = false;
  }
}

$("#token").value = localStorage.getItem("wallance-token") || "";
$("#service").addEventListener("change", setPriceFromService);
$("#buy-form").addEventListener("submit", buy);
fetch("/api/status").then((r) => r.json()).then((s) => {
  if (s.contracts_dir) $("#contracts-dir").textContent = s.contracts_dir;
}).catch(() => {});
connect();
