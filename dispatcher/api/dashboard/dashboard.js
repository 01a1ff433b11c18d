// The operations dashboard: one fetch of /v1/admin/dashboard/data with the admin key, drawn as plain SVG
// and tables. Every chart element gets data-points (how many marks it drew), which the tests read.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#3366cc", "#dc7633", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d4ac0d"];

function adminKey() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  if (fragment.get("key")) {
    sessionStorage.setItem("dispatcher-admin-key", fragment.get("key"));
    history.replaceState(null, "", window.location.pathname);  // the key leaves the address bar
  }
  return sessionStorage.getItem("dispatcher-admin-key");
}

function element(tag, attributes, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(id, node, points) {
  const box = document.getElementById(id);
  box.replaceChildren(points ? node : element("p", { class: "empty" }, "nothing in this window yet"));
  box.dataset.points = String(points);
}

// Horizontal bars, one per row: [label, value].
function bars(rows) {
  const height = 22 * rows.length + 10, width = 640, left = 260, most = Math.max(1, ...rows.map((r) => r[1]));
  const svg = element("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  rows.forEach(([label, value], index) => {
    const y = 5 + index * 22, length = ((width - left - 70) * value) / most;
    svg.append(element("svg:text", { x: left - 8, y: y + 14, "text-anchor": "end", "font-size": 12 }, label));
    const bar = element("svg:rect", { x: left, y, width: Math.max(1, length), height: 16, fill: COLOURS[0] });
    bar.append(element("svg:title", {}, `${label}: ${value}`));
    svg.append(bar, element("svg:text", { x: left + length + 6, y: y + 13, "font-size": 12 }, String(value)));
  });
  return svg;
}

// Stacked columns per day, one colour per stage in ladder order.
function funnel(rows, stages) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const order = [...stages, ...new Set(rows.map((r) => r.stage).filter((s) => !stages.includes(s)))];
  const count = (day, stage) => rows.filter((r) => r.day === day && r.stage === stage).reduce((a, r) => a + r.accounts, 0);
  const totals = days.map((day) => order.reduce((sum, stage) => sum + count(day, stage), 0));
  const width = 640, height = 240, bottom = 200, step = (width - 60) / Math.max(1, days.length);
  const most = Math.max(1, ...totals);
  const wrapper = element("div");
  const svg = element("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  let marks = 0;
  days.forEach((day, index) => {
    let top = bottom;
    order.forEach((stage, colour) => {
      const value = count(day, stage);
      if (!value) return;
      const tall = ((bottom - 10) * value) / most;
      top -= tall;
      const bar = element("svg:rect", { x: 50 + index * step, y: top, width: Math.max(2, step * 0.8), height: tall,
        fill: COLOURS[colour % COLOURS.length] });
      bar.append(element("svg:title", {}, `${day} ${stage}: ${value}`));
      svg.append(bar);
      marks += 1;
    });
    if (index % Math.ceil(days.length / 8) === 0) {
      svg.append(element("svg:text", { x: 50 + index * step, y: bottom + 16, "font-size": 11 }, day.slice(5)));
    }
  });
  svg.append(element("svg:text", { x: 44, y: 16, "text-anchor": "end", "font-size": 11 }, String(most)));
  const legend = element("p", { class: "legend" });
  order.forEach((stage, colour) => {
    const item = element("span");
    item.append(element("i", { style: `background:${COLOURS[colour % COLOURS.length]}` }), stage);
    legend.append(item);
  });
  wrapper.append(svg, legend);
  return [wrapper, marks];
}

function table(headers, rows, numeric) {
  const node = element("table");
  const head = element("tr");
  headers.forEach((h) => head.append(element("th", {}, h)));
  node.append(head);
  rows.forEach((row) => {
    const line = element("tr");
    row.forEach((cell, index) => {
      const td = element("td", numeric.includes(index) ? { class: "number" } : {}, cell === null ? "—" : String(cell));
      if (headers[index] === "state") td.className = String(cell);
      line.append(td);
    });
    node.append(line);
  });
  return node;
}

function interval(metric) {
  if (!metric || metric.value === null || metric.value === undefined) return "—";
  const digits = Math.abs(metric.value) < 10 ? 3 : 0;
  return `${metric.value.toFixed(digits)} [${Number(metric.low).toFixed(digits)}, ${Number(metric.high).toFixed(digits)}]`;
}

function drawVariants(report) {
  const variants = (report && report.variants) || [];
  const names = [...new Set(variants.flatMap((v) => Object.keys(v.metrics || {})))];
  const rows = names.map((metric) => [metric, ...variants.map((v) => interval(v.metrics[metric]))]);
  show("variants", table(["metric", ...variants.map((v) => `${v.name} (${v.accounts})`)], rows, []), variants.length);
}

function draw(data) {
  document.getElementById("window").textContent = `From ${data.since.slice(0, 16)} to ${data.until.slice(0, 16)} (UTC)`;
  const [funnelNode, funnelMarks] = funnel(data.funnel, data.stages);
  show("funnel", funnelNode, funnelMarks);
  show("attempts", bars(data.attempts.map((r) => [`${r.channel} · ${r.provider} · ${r.status}`, r.count])),
    data.attempts.length);
  show("outcomes", bars(data.outcomes.map((r) => [`${r.channel} · ${r.outcome}`, r.count])), data.outcomes.length);
  show("rules", bars(data.rules.map((r) => [`${r.verdict} · ${r.rule} (${r.where})`, r.count])), data.rules.length);
  const providers = data.providers.map((p) => [p.channel, p.provider, p.state, Math.round(p.weight), p.trips,
    p.open_until ? new Date(p.open_until * 1000).toISOString().slice(11, 19) : null, p.setting || p.reason || null]);
  show("providers", table(["channel", "provider", "state", "weight", "trips", "open until", "why"], providers, [3, 4]),
    providers.length);
}

async function load(key) {
  const headers = { Authorization: `Bearer ${key}` };
  const status = document.getElementById("status");
  const answer = await fetch("/v1/admin/dashboard/data", { headers });
  if (answer.status === 401 || answer.status === 403) {
    sessionStorage.removeItem("dispatcher-admin-key");
    status.textContent = "That key is not an admin key.";
    document.getElementById("key-form").hidden = false;
    return;
  }
  if (!answer.ok) {
    status.textContent = `The dashboard's data answered ${answer.status}; try again shortly.`;
    return;
  }
  draw(await answer.json());
  const variants = await fetch("/v1/reports/variants", { headers });
  drawVariants(variants.ok ? await variants.json() : null);
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("dispatcher-admin-key", document.getElementById("key-input").value);
  load(sessionStorage.getItem("dispatcher-admin-key"));
});

const key = adminKey();
if (key) load(key);
else document.getElementById("key-form").hidden = false;
