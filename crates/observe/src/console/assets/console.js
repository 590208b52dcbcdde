// The fleetcore console: one page, routed by the URL fragment (#overview, #rules, ...), drawn
// from the server's read-only JSON endpoints under /console/api/. Charts are SVG: one polyline
// per series and one <circle class="pt" data-v="..."> per data point.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
// Pages built in; a section whose id one of them claims is drawn inside it.
const PAGES = [
  ["overview", "Overview"], ["rules", "Rules"], ["streams", "Streams & lake"],
  ["functions", "Functions"], ["events", "Detectors"], ["alarms", "Alarms"],
  ["dashboards", "Dashboards"],
];
const CLAIMED = new Set(["streams", "consumer-lag", "delivery-streams", "functions", "detectors"]);
let info = null;

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch("/console/api/" + path, init);
  if (response.status === 401) {
    window.location.href = "/console/login";
    throw new Error("signed out");
  }
  const value = await response.json();
  if (!response.ok) throw new Error(value.message || response.statusText);
  return value;
}

const cloudwatch = (op, input) => api("cloudwatch/" + op, input || {});

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function fmt(v) {
  if (typeof v !== "number") return v === null || v === undefined ? "" : String(v);
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function table(columns, rows, id) {
  const t = el("table", id ? {id} : {});
  t.append(el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, c)))));
  const body = el("tbody");
  for (const row of rows) body.append(el("tr", {}, ...row.map((v) => el("td", {}, fmt(v)))));
  t.append(body);
  if (!rows.length) body.append(el("tr", {}, el("td", {colspan: columns.length}, "none")));
  return t;
}

function card(label, value, id) {
  return el("div", {class: "card", id: "card-" + id}, el("span", {class: "value"}, fmt(value)),
    el("span", {class: "label"}, label));
}

// A line chart of series [{label, points: [[epochSeconds, value], ...]}].
function chart(title, series, id) {
  const w = 640, h = 180, left = 48, bottom = 22, top = 8;
  const box = el("figure", {class: "chart", id: "chart-" + id});
  box.append(el("figcaption", {}, title));
  const all = series.flatMap((s) => s.points);
  const root = svg("svg", {viewBox: `0 0 ${w} ${h}`, width: w, height: h, "data-points": all.length});
  box.append(root);
  if (!all.length) {
    const empty = svg("text", {x: w / 2, y: h / 2, "text-anchor": "middle", class: "empty"});
    empty.textContent = "no data yet";
    root.append(empty);
    return box;
  }
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(...all.map((p) => p[1]), 0) || 1;
  const x = (t) => left + (t1 === t0 ? (w - left) / 2 : ((t - t0) / (t1 - t0)) * (w - left - 8));
  const y = (v) => h - bottom - (v / vmax) * (h - bottom - top);
  root.append(svg("line", {x1: left, y1: h - bottom, x2: w, y2: h - bottom, class: "axis"}));
  for (const [v, label] of [[vmax, fmt(vmax)], [0, "0"]]) {
    const text = svg("text", {x: left - 4, y: y(v) + 4, "text-anchor": "end", class: "tick"});
    text.textContent = label;
    root.append(text);
  }
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const text = svg("text", {x: x(t), y: h - 6, "text-anchor": anchor, class: "tick"});
    text.textContent = new Date(t * 1000).toLocaleTimeString();
    root.append(text);
  }
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const points = [...s.points].sort((a, b) => a[0] - b[0]);
    root.append(svg("polyline", {fill: "none", stroke: color, "stroke-width": 1.5,
      points: points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ")}));
    for (const [t, v] of points) {
      const dot = svg("circle", {class: "pt", cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2,
        fill: color, "data-series": s.label, "data-t": t, "data-v": v});
      const tip = svg("title");
      tip.textContent = `${s.label} ${new Date(t * 1000).toLocaleString()}: ${fmt(v)}`;
      dot.append(tip);
      root.append(dot);
    }
  });
  const legend = el("div", {class: "legend"});
  series.forEach((s, i) => legend.append(el("span", {style: `color:${COLORS[i % COLORS.length]}`}, "■ " + s.label)));
  box.append(legend);
  return box;
}

function hours() {
  return Number(document.getElementById("hours").value) || 3;
}

// The period for `hours` of data: at least the store's resolution, coarse enough for <= 360
// points, and one CloudWatch accepts (1, 5, 10, 30 or a multiple of 60 seconds).
function period(h) {
  const wanted = Math.max(info.resolution || 60, (h * 3600) / 360);
  return [1, 5, 10, 30].find((p) => p >= wanted) || Math.ceil(wanted / 60) * 60;
}

// GetMetricData for queries [{id, label, namespace, name, dimensions, stat, perSecond}].
async function metricSeries(queries, h, fixedPeriod) {
  const end = Math.ceil(Date.now() / 1000), start = end - h * 3600;
  const p = fixedPeriod || period(h);
  const out = await cloudwatch("GetMetricData", {
    StartTime: start, EndTime: end, ScanBy: "TimestampAscending",
    MetricDataQueries: queries.map((q) => q.expression
      ? {Id: q.id, Expression: q.expression, Label: q.label}
      : {Id: q.id, Label: q.label, MetricStat: {Period: q.period || p, Stat: q.stat || "Sum",
        Metric: {Namespace: q.namespace, MetricName: q.name,
          Dimensions: Object.entries(q.dimensions || {}).map(([Name, Value]) => ({Name, Value}))}}}),
  });
  return out.MetricDataResults.map((r) => {
    const q = queries.find((x) => x.id === r.Id) || {};
    const scale = q.perSecond ? 1 / (q.period || p) : 1;
    return {label: r.Label, points: r.Timestamps.map((t, i) => [t, r.Values[i] * scale])};
  });
}

async function samples() {
  return (await api("metrics")).samples;
}

function total(list, name, labels) {
  return list.filter((s) => s.name === name && Object.entries(labels || {})
    .every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

function grouped(list, prefix, keys) {
  const rows = new Map();
  for (const s of list.filter((s) => s.name.startsWith(prefix))) {
    if (!keys.every((k) => k in s.labels)) continue;
    const key = keys.map((k) => s.labels[k]).join("\u0000");
    if (!rows.has(key)) rows.set(key, {labels: s.labels, values: {}});
    const field = s.name.slice(prefix.length);
    rows.get(key).values[field] = (rows.get(key).values[field] || 0) + s.value;
  }
  return [...rows.values()];
}

async function sectionInto(page, id) {
  if (!info.sections.some((s) => s.id === id)) return;
  const title = info.sections.find((s) => s.id === id).title;
  const data = await api("sections/" + id);
  page.append(el("h2", {}, title));
  if (data.summary.length) {
    page.append(el("div", {class: "cards"}, ...data.summary.map(([k, v]) => card(k, v, id + "-" + k))));
  }
  if (data.columns.length) page.append(table(data.columns, data.rows, "section-" + id));
}

const fleet = (name, label, stat, perSecond) =>
  ({id: "q" + name.replace(/[^a-z]/g, "").slice(-20), label, namespace: "fleetcore", name, stat, perSecond});

const render = {
  async overview(page, h) {
    const s = await samples();
    page.append(el("h2", {}, "Fleet"));
    page.append(el("div", {class: "cards"},
      card("connected devices", total(s, "fleetcore_mqtt_connections"), "connections"),
      card("sessions", total(s, "fleetcore_mqtt_sessions"), "sessions"),
      card("subscriptions", total(s, "fleetcore_mqtt_subscriptions"), "subscriptions"),
      card("messages in (total)", total(s, "fleetcore_mqtt_messages_received_total"), "messages-in"),
      card("messages out (total)", total(s, "fleetcore_mqtt_messages_sent_total"), "messages-out")));
    await sectionInto(page, "things");
    const [inOut, connections] = await Promise.all([
      metricSeries([fleet("fleetcore_mqtt_messages_received_total", "in/s", "Sum", true),
        fleet("fleetcore_mqtt_messages_sent_total", "out/s", "Sum", true)], h),
      metricSeries([fleet("fleetcore_mqtt_connections", "connections", "Maximum")], h),
    ]);
    page.append(chart("Messages per second", inOut, "messages"));
    page.append(chart("Connected devices", connections, "connections"));
  },

  async rules(page, h) {
    const s = await samples();
    const rows = grouped(s, "fleetcore_rules_", ["rule", "action"]).map((r) => [r.labels.rule,
      r.labels.action, r.values.action_succeeded_total || 0, r.values.action_failed_total || 0,
      r.values.dropped_total || 0, r.values.error_action_fired_total || 0]);
    page.append(el("h2", {}, "Rule actions"));
    page.append(table(["rule", "action", "succeeded", "failed", "dropped", "error action fired"],
      rows, "rule-actions"));
    const evaluated = grouped(s, "fleetcore_rules_", ["rule"]).filter((r) => !r.labels.action)
      .map((r) => [r.labels.rule, r.values.matched_total || 0, r.values.evaluated_total || 0,
        r.values.eval_errors_total || 0]);
    page.append(el("h2", {}, "Rules"));
    page.append(table(["rule", "matched", "evaluated", "evaluation errors"], evaluated, "rules"));
    page.append(chart("Rules engine: records in per second",
      await metricSeries([fleet("fleetcore_ingest_records_total", "ingested/s", "Sum", true),
        fleet("fleetcore_ingest_shed_total", "shed/s", "Sum", true)], h), "ingest"));
  },

  async streams(page, h) {
    await sectionInto(page, "streams");
    await sectionInto(page, "consumer-lag");
    await sectionInto(page, "delivery-streams");
    const s = await samples();
    const rows = grouped(s, "fleetcore_archive_", ["delivery_stream"]).map((r) => [
      r.labels.delivery_stream, r.values.incoming_records_total || 0,
      r.values.delivered_records_total || 0, r.values.backlog_bytes || 0,
      r.values.data_freshness_seconds || 0]);
    page.append(el("h2", {}, "Lake deliveries"));
    page.append(table(["delivery stream", "records in", "records delivered", "backlog (bytes)",
      "lag: oldest undelivered (s)"], rows, "lake"));
    page.append(chart("Stream appends per second",
      await metricSeries([fleet("fleetcore_stream_records_appended_total", "records/s", "Sum", true)], h),
      "streams"));
  },

  async functions(page, h) {
    const s = await samples();
    page.append(el("div", {class: "cards"},
      card("invocations", total(s, "fleetcore_functions_invocations_total"), "invocations"),
      card("failures", total(s, "fleetcore_functions_failures_total"), "failures"),
      card("cold starts", total(s, "fleetcore_functions_cold_starts_total"), "cold-starts")));
    await sectionInto(page, "functions");
    page.append(chart("Invocations and errors (AWS/Lambda)", await metricSeries([
      {id: "inv", label: "Invocations", namespace: "AWS/Lambda", name: "Invocations"},
      {id: "err", label: "Errors", namespace: "AWS/Lambda", name: "Errors"}], h), "lambda"));
  },

  async events(page, h) {
    const s = await samples();
    page.append(el("div", {class: "cards"},
      card("evaluations", total(s, "fleetcore_events_evaluations_total"), "evaluations"),
      card("timers fired", total(s, "fleetcore_events_timers_fired_total"), "timers"),
      card("action failures", total(s, "fleetcore_events_action_failures_total"), "event-failures")));
    await sectionInto(page, "detectors");
    page.append(chart("Detector evaluations per second", await metricSeries(
      [fleet("fleetcore_events_evaluations_total", "evaluations/s", "Sum", true)], h), "events"));
  },

  async alarms(page) {
    const out = await cloudwatch("DescribeAlarms", {});
    const rows = out.MetricAlarms.map((a) => [a.AlarmName, a.StateValue, a.Namespace, a.MetricName,
      `${a.Statistic} ${a.ComparisonOperator} ${a.Threshold}`, a.StateReason || ""]);
    page.append(el("h2", {}, "Alarms"));
    const t = table(["alarm", "state", "namespace", "metric", "condition", "reason"], rows, "alarms");
    t.querySelectorAll("tbody tr").forEach((tr) => {
      const state = tr.children[1] && tr.children[1].textContent;
      if (state) tr.classList.add("state-" + state.toLowerCase());
    });
    page.append(t);
  },

  async dashboards(page, h) {
    const list = (await cloudwatch("ListDashboards", {})).DashboardEntries;
    page.append(el("h2", {}, "Dashboards"));
    if (!list.length) {
      page.append(el("p", {}, "No dashboards yet (PutDashboard creates them)."));
      return;
    }
    const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("name");
    const name = wanted || list[0].DashboardName;
    page.append(el("nav", {class: "tabs"}, ...list.map((d) => el("a", {
      href: "#dashboards?name=" + encodeURIComponent(d.DashboardName),
      class: d.DashboardName === name ? "current" : ""}, d.DashboardName))));
    const body = JSON.parse((await cloudwatch("GetDashboard", {DashboardName: name})).DashboardBody);
    const grid = el("div", {class: "dashboard", id: "dashboard-" + name});
    page.append(grid);
    let n = 0;
    for (const widget of body.widgets || []) {
      n += 1;
      const p = widget.properties || {};
      if (widget.type === "text") {
        grid.append(el("pre", {class: "text-widget"}, p.markdown || ""));
      } else if (widget.type === "metric") {
        grid.append(chart(p.title || `widget ${n}`, await metricSeries(widgetQueries(p), h, p.period || 300),
          "widget-" + n));
      } else {
        grid.append(el("p", {class: "unsupported"}, `widget ${n}: type ${widget.type} is not drawn`));
      }
    }
  },
};

// A metric widget's `metrics` (AWS's dashboard body form, with "." and "..." shorthand) as
// GetMetricData queries.
function widgetQueries(p) {
  const queries = [];
  let previous = [];
  (p.metrics || []).forEach((entry, i) => {
    const options = typeof entry[entry.length - 1] === "object" ? entry[entry.length - 1] : {};
    let parts = entry.filter((x) => typeof x !== "object");
    if (parts[0] === "...") parts = previous.slice(0, previous.length - (parts.length - 1)).concat(parts.slice(1));
    parts = parts.map((x, j) => (x === "." ? previous[j] : x));
    previous = parts;
    const id = options.id || "w" + i;
    if (options.expression) {
      queries.push({id, expression: options.expression, label: options.label || id});
      return;
    }
    const dimensions = {};
    for (let j = 2; j + 1 < parts.length; j += 2) dimensions[parts[j]] = parts[j + 1];
    queries.push({id, label: options.label || parts[1], namespace: parts[0], name: parts[1], dimensions,
      stat: options.stat || p.stat || "Average", period: options.period || p.period || 300});
  });
  return queries;
}

function navigation() {
  const nav = document.getElementById("nav");
  const pages = PAGES.concat(info.sections.filter((s) => !CLAIMED.has(s.id) && s.id !== "things")
    .map((s) => ["section-" + s.id, s.title]));
  if (info.sections.some((s) => s.id === "things")) pages.splice(1, 0, ["section-things", "Things"]);
  nav.replaceChildren(...pages.map(([id, title]) => el("a", {href: "#" + id, id: "nav-" + id}, title)));
}

async function show() {
  const page = document.getElementById("page");
  const name = (location.hash.slice(1) || "overview").split("?")[0];
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("current", a.id === "nav-" + name));
  page.dataset.state = "loading";
  const fresh = el("div");
  try {
    if (name.startsWith("section-")) await sectionInto(fresh, name.slice(8));
    else await (render[name] || render.overview)(fresh, hours());
    page.replaceChildren(fresh);
    page.dataset.page = name;
    page.dataset.state = "ready";
    performance.mark("console-ready"); // benches/console_load.py reads it
  } catch (e) {
    page.replaceChildren(el("p", {class: "error"}, "Could not load this page: " + e.message));
    page.dataset.state = "failed";
  }
}

async function start() {
  info = await api("info");
  navigation();
  window.addEventListener("hashchange", show);
  document.getElementById("hours").addEventListener("change", show);
  await show();
}

start();
