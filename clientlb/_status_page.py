"""The status page: one self-contained HTML document (inline CSS, JS and SVG; no
request leaves for another site). It carries the ``/stats`` body it was served
with, renders it at once, then fetches ``stats`` beside it every second and
renders again without reloading: state colours, latency (recent p50/p99 and a
sparkline of the last responses), in flight, the share of recent traffic,
the tier that serves, panic, the algorithm in one line, recent events newest
first, and a proxy's open client connections and WebSockets.
"""

from __future__ import annotations

import json

#: Each algorithm in one line, for the page's header.
ALGORITHM_NOTES = {
    "round_robin": "each upstream in turn, in a fixed order (weights ignored)",
    "weighted_round_robin": "each upstream in turn, as often as its weight says (smooth WRR)",
    "least_connections": "the fewest requests in flight per unit of weight",
    "least_response_time": "the lowest latency estimate x (in flight + 1) / weight",
    "ip_hash": "a consistent hash of the client address: each client keeps its upstream",
    "random": "at random, in proportion to weight",
    "power_of_two": "two at random, then the one with fewer in flight per weight",
    "peak_ewma": "two at random, then the lower peak-EWMA latency x load",
    "consistent_hash": "a consistent hash of the request's key: each key keeps its upstream",
}


def status_page(stats: str) -> bytes:
    """The page, carrying ``stats`` (the ``/stats`` JSON) to render first."""
    data = stats.replace("<", "\\u003c")  # nothing in it can close the script
    notes = json.dumps(ALGORITHM_NOTES)
    return _PAGE.replace("/*STATS*/null", data).replace("/*NOTES*/{}", notes).encode("utf-8")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clientlb status</title>
<style>
:root { --ok:#2e7d32; --ramp:#00838f; --held:#1565c0; --ejected:#ef6c00; --down:#c62828;
  --draining:#757575; --ink:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: #fff; }
header { display: flex; align-items: baseline; gap: 16px; padding: 14px 24px;
  border-bottom: 1px solid var(--line); background: var(--bg); }
header h1 { font-size: 18px; margin: 0; }
#updated { color: var(--muted); margin-left: auto; font-size: 12px; }
#updated.stale { color: var(--down); font-weight: 600; }
main { padding: 8px 24px 24px; }
section.pool { margin-top: 14px; }
h2 { font-size: 15px; margin: 12px 0 4px; }
.algo { color: var(--muted); margin: 0 0 8px; }
.algo b { color: var(--ink); }
.banner { padding: 8px 12px; border-radius: 6px; margin: 8px 0; font-weight: 600; }
.banner.panic, .banner.none { background: #ffebe9; color: var(--down); border: 1px solid #ffcecb; }
.banner.standby { background: #fff8c5; color: #7d4e00; border: 1px solid #eac54f; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 6px; border-bottom: 1px solid var(--line);
  vertical-align: middle; white-space: nowrap; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.url { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
table { font-size: 13px; }
.pill { display: inline-block; min-width: 72px; text-align: center; padding: 1px 8px;
  border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; }
.s-healthy { background: var(--ok); } .s-slow-start { background: var(--ramp); }
.s-recovering { background: var(--held); } .s-ejected { background: var(--ejected); }
.s-down { background: var(--down); } .s-draining { background: var(--draining); }
tr.out td { background: #fff5f5; }
.share { display: inline-block; width: 48px; height: 8px; background: #eaeef2;
  border-radius: 4px; overflow: hidden; vertical-align: middle; margin-right: 6px; }
.share i { display: block; height: 100%; background: #0969da; }
.note { color: var(--ejected); font-size: 12px; display: block; }
.tier { color: var(--muted); }
ol.events { list-style: none; padding: 0; margin: 0; max-height: 280px; overflow: auto;
  border: 1px solid var(--line); border-radius: 6px; }
ol.events li { padding: 4px 10px; border-bottom: 1px solid #eaeef2; font-size: 13px; }
ol.events li:last-child { border-bottom: 0; }
ol.events time { color: var(--muted); font-variant-numeric: tabular-nums; margin-right: 8px; }
.e-ejected, .e-serving-standby { color: var(--ejected); font-weight: 600; }
.e-down, .e-removed, .e-serving-panic, .e-serving-none { color: var(--down); font-weight: 600; }
.e-healthy, .e-serving-primary { color: var(--ok); font-weight: 600; }
.muted { color: var(--muted); }
svg.spark { vertical-align: middle; }
</style></head>
<body>
<header><h1>clientlb</h1><span id="pools" class="muted"></span>
<span id="updated">loading...</span></header>
<main><div id="root"></div>
<h2>Recent events</h2><ol class="events" id="events"></ol></main>
<noscript>This page renders with JavaScript; the same figures are at
<a href="stats">stats</a>.</noscript>
<script id="initial" type="application/json">/*STATS*/null</script>
<script>
"use strict";
const NOTES = /*NOTES*/{};
const BANNERS = {
  standby: "Failover: no primary can serve; the standbys carry the traffic.",
  panic: "Panic: no tier has enough available upstreams; balancing over all of them.",
  none: "No upstream can serve: every one is down or draining."
};
const OUT = new Set(["ejected", "down", "draining"]);
const base = location.pathname.replace(/[^/]*$/, "");
let previous = {};  // requests per pool/upstream at the last render: recent share

function esc(v) {
  return String(v).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",
    '"':"&quot;","'":"&#39;"}[c]));
}
function ms(s) {
  if (s === null || s === undefined) return "&ndash;";
  const v = s * 1000;
  return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " ms";
}
function spark(values) {
  if (!values || values.length < 2) return '<span class="muted">&ndash;</span>';
  const w = 90, h = 22, top = Math.max(...values) || 1;
  const step = w / (values.length - 1);
  const pts = values.map((v, i) =>
    (i * step).toFixed(1) + "," + (h - 1 - (v / top) * (h - 3)).toFixed(1)).join(" ");
  return '<svg class="spark" width="' + w + '" height="' + h + '" viewBox="0 0 ' + w + " " + h +
    '" role="img" aria-label="recent latency"><polyline fill="none" stroke="#0969da" ' +
    'stroke-width="1.5" points="' + pts + '"/></svg>';
}
function pools(stats) {
  return stats.pools ? stats.pools : {[stats.pool || "default"]: stats};
}
function renderPool(name, pool) {
  const rows = pool.upstreams || [];
  const seen = {}; let delta = 0, total = 0;
  for (const up of rows) {
    const key = name + " " + up.url, before = previous[key];
    seen[key] = up.requests;
    up._delta = before === undefined ? 0 : Math.max(0, up.requests - before);
    delta += up._delta; total += up.requests;
  }
  Object.assign(previous, seen);
  let html = '<section class="pool" data-pool="' + esc(name) + '">';
  html += "<h2>" + esc(name) + ' <span class="muted">(' + rows.length + " upstreams)</span></h2>";
  html += '<p class="algo"><b>' + esc(pool.algorithm) + "</b>: " +
    esc(NOTES[pool.algorithm] || "a custom algorithm") + "</p>";
  const serving = pool.panic ? "panic" : pool.serving;
  if (BANNERS[serving]) {
    html += '<div class="banner ' + serving + '" data-banner="' + serving + '">' +
      BANNERS[serving] + "</div>";
  }
  html += "<table><thead><tr><th>state</th><th>upstream</th><th>tier</th>" +
    '<th class="num">weight</th><th class="num">in flight</th><th>share</th>' +
    '<th class="num">p50</th><th class="num">p99</th><th>recent latency</th>' +
    '<th class="num">EWMA</th><th class="num">requests</th><th class="num">failures</th>' +
    '<th class="num">ejections</th></tr></thead><tbody>';
  for (const up of rows) {
    const share = delta ? up._delta / delta : total ? up.requests / total : 0;
    const ewma = ms(up.ewma_latency) + (up.penalized && up.ewma_latency !== null ?
      '<span class="note">includes failure penalties</span>' : "");
    html += '<tr data-upstream="' + esc(up.url) + '" data-state="' + esc(up.state) + '"' +
      (OUT.has(up.state) ? ' class="out"' : "") + ">" +
      '<td><span class="pill s-' + esc(up.state) + '">' + esc(up.state) + "</span></td>" +
      '<td class="url">' + esc(up.url) + "</td>" +
      '<td class="tier">' + esc(up.tier) + "</td>" +
      '<td class="num">' + esc(up.weight) + "</td>" +
      '<td class="num">' + esc(up.in_flight) + "</td>" +
      '<td><span class="share"><i style="width:' + (share * 100).toFixed(1) + '%"></i></span>' +
      (share * 100).toFixed(0) + "%</td>" +
      '<td class="num">' + ms(up.p50) + "</td>" +
      '<td class="num">' + ms(up.p99) + "</td>" +
      "<td>" + spark(up.recent) + "</td>" +
      '<td class="num">' + ewma + "</td>" +
      '<td class="num">' + esc(up.requests) + "</td>" +
      '<td class="num">' + esc(up.failures) + "</td>" +
      '<td class="num">' + esc(up.ejections) + "</td></tr>";
  }
  return html + "</tbody></table></section>";
}
function describe(e) {
  if (e.event === "serving") {
    return {standby: "failover: the standbys serve", primary: "the primaries serve again",
      panic: "panic: balancing over every upstream", none: "no upstream can serve"}[e.detail]
      || "serving: " + e.detail;
  }
  const what = {ejected: "ejected", healthy: "back in service", down: "down (health checks)",
    "slow-start": "back, ramping up (slow start)", recovering: "back, held for fail-back",
    draining: "draining", removed: "removed"}[e.event] || e.event;
  return what + (e.detail ? " (" + e.detail.replace(/_/g, " ") + ")" : "");
}
function proxyLine(proxy) {
  if (!proxy) return "";
  const count = (n, what) => " \\u00b7 " + n + " " + what + (n === 1 ? "" : "s");
  const clients = proxy.client_connections, sockets = proxy.websockets;
  return (clients === undefined ? "" : count(clients, "client connection")) +
    (sockets === undefined ? "" : count(sockets, "WebSocket"));
}
function render(stats) {
  const all = pools(stats);
  document.getElementById("root").innerHTML =
    Object.entries(all).map(([n, p]) => renderPool(n, p)).join("");
  document.getElementById("pools").textContent =
    Object.keys(all).length + " pool" + (Object.keys(all).length === 1 ? "" : "s") +
    (stats.listen ? " \\u00b7 proxy on " + stats.listen : "") + proxyLine(stats.proxy);
  const events = (stats.events || []).slice(0, 50);
  document.getElementById("events").innerHTML = events.length ? events.map(e => {
    const cls = e.event === "serving" ? "e-serving-" + e.detail : "e-" + e.event;
    return '<li data-event="' + esc(e.event) + '"><time>' +
      new Date(e.time * 1000).toLocaleTimeString() + "</time>" +
      (e.upstream ? '<span class="url">' + esc(e.upstream) + "</span> " : "") +
      '<span class="' + esc(cls) + '">' + esc(describe(e)) + "</span>" +
      (Object.keys(all).length > 1 ? ' <span class="muted">' + esc(e.pool) + "</span>" : "") +
      "</li>";
  }).join("") : '<li class="muted">nothing yet</li>';
  document.body.dataset.renders = (+document.body.dataset.renders || 0) + 1;
  const updated = document.getElementById("updated");
  updated.textContent = "updated " + new Date().toLocaleTimeString();
  updated.className = "";
}
async function refresh() {
  try {
    const answer = await fetch(base + "stats", {cache: "no-store"});
    if (!answer.ok) throw new Error(answer.status);
    render(await answer.json());
  } catch (err) {
    const updated = document.getElementById("updated");
    updated.textContent = "cannot reach the admin (" + err.message + "); retrying";
    updated.className = "stale";
  }
}
const initial = JSON.parse(document.getElementById("initial").textContent);
if (initial) render(initial);
setInterval(refresh, 1000);
</script></body></html>
"""
