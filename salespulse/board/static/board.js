// salespulse live board: renders the snapshots the server pushes on /board/events (server-sent events).
// Plain DOM, no framework, nothing fetched from elsewhere; text goes in through textContent only.
"use strict";

let board = null;        // the newest snapshot
let clockSkewMs = 0;     // server time - browser time, so ages tick from the server's clock

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function percent(rate) {
  return rate === null || rate === undefined ? "–" : `${Math.round(rate * 100)}%`;
}

function money(amount) {
  const currency = (board && board.currency) || "USD";
  const compact = Math.abs(amount) >= 100000;
  return new Intl.NumberFormat(undefined, {
    style: "currency", currency, maximumFractionDigits: compact ? 1 : 0, notation: compact ? "compact" : "standard",
  }).format(amount || 0);
}

function nowS() {
  return (Date.now() + clockSkewMs) / 1000;
}

function renderSpeed(data) {
  const speed = data.speed_to_lead;
  $("stl-p50").textContent = duration(speed.p50_s);
  $("stl-p90").textContent = duration(speed.p90_s);
  const within = $("stl-within");
  within.textContent = percent(speed.within_sla_rate);
  within.className = "value " + (speed.within_sla_rate === null ? "" : speed.within_sla_rate >= 0.8 ? "good" : speed.within_sla_rate >= 0.5 ? "warn" : "bad");
  $("stl-within-label").textContent = `within ${duration(data.sla_s)} SLA (${speed.within_sla} of ${speed.created} leads)`;
  $("stl-awaiting").textContent = speed.awaiting;
}

function renderWaiting(data) {
  const waiting = data.waiting;
  $("waiting-count").textContent = waiting.count;
  const rows = waiting.leads.map((lead) =>
    el("tr", { "data-lead-id": lead.lead_id, "data-created": lead.created_at, "data-deadline": lead.deadline },
      el("td", {}, lead.lead_id), el("td", {}, lead.rep_name), el("td", {}, lead.team), el("td", {}, lead.source),
      el("td", { class: "num age" }, "")));
  $("waiting-rows").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: "5" }, "no lead is waiting"))]));
  const hidden = waiting.count - waiting.leads.length;
  $("waiting-more").textContent = hidden > 0 ? `and ${hidden} more` : "";
  tickAges();
}

function tickAges() {
  const now = nowS();
  for (const row of document.querySelectorAll("#waiting-rows tr[data-created]")) {
    const created = Number(row.dataset.created), deadline = Number(row.dataset.deadline);
    row.querySelector(".age").textContent = duration(now - created);
    row.classList.toggle("late", now >= deadline);
    row.classList.toggle("due", now < deadline && deadline - now < 60);
  }
}

function renderAlerts(data) {
  const items = data.alerts.map((alert) =>
    el("li", { class: alert.status, "data-lead-id": alert.lead_id || "", "data-alert": alert.alert },
      el("span", { class: "tag" }, alert.status),
      el("span", {}, `${alert.alert.replaceAll("_", " ")} · ${alert.lead_id || alert.deal_id || ""} · ${alert.rep_name} · ${alert.team}`),
      el("span", { class: "when", title: alert.emitted_at }, `waited ${duration(alert.age_seconds)} · ${new Date(alert.emitted_at).toLocaleTimeString()}`)));
  $("alert-rows").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "no alert")]));
  const counts = data.alert_counts.map((row) =>
    el("tr", { "data-alert": row.alert, "data-team": row.team },
      el("td", {}, row.alert.replaceAll("_", " ")), el("td", {}, row.team),
      el("td", { class: "num fired" }, row.firing), el("td", { class: "num resolved" }, row.resolved)));
  $("alert-count-rows").replaceChildren(...(counts.length ? counts : [el("tr", {}, el("td", { class: "empty", colspan: "4" }, "no alert today"))]));
}

function renderFunnel(data) {
  const blocks = [];
  for (const pipeline of data.funnel) {
    const top = Math.max(1, ...pipeline.stages.map((s) => Math.max(s.entries, s.open_deals)));
    blocks.push(el("div", { class: "pipeline-name" }, pipeline.pipeline));
    for (const stage of pipeline.stages) {
      blocks.push(el("div", { class: "stage", "data-stage": stage.stage },
        el("span", {}, stage.stage),
        el("div", { class: "track" }, el("div", { style: `width:${(100 * stage.entries) / top}%` })),
        el("span", { class: "num", title: "entries this month" }, stage.entries),
        el("span", { class: "num muted", title: "open deals now" }, stage.open_deals)));
    }
  }
  $("funnel-body").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "empty" }, "no pipeline yet")]));
}

function renderForecast(data) {
  const fc = data.forecast;
  $("fc-month").textContent = data.month;
  $("fc-won").textContent = money(fc.won);
  $("fc-quota").textContent = fc.quota ? money(fc.quota) : "–";
  $("fc-weighted").textContent = money(fc.weighted);
  $("fc-open").textContent = money(fc.open_amount);
  $("fc-open-label").textContent = `open pipeline (${fc.open_deals} deals)`;
  const scale = Math.max(fc.quota, fc.won + fc.weighted, 1);
  $("fc-bar-won").style.width = `${(100 * fc.won) / scale}%`;
  $("fc-bar-weighted").style.width = `${(100 * fc.weighted) / scale}%`;
  $("fc-attainment").textContent = fc.quota
    ? `${percent(fc.attainment)} of quota won; with the weighted forecast ${percent((fc.won + fc.weighted) / fc.quota)}`
    : "no quota set for this month";
}

function renderActivity(data) {
  const rows = data.activity.map((rep) =>
    el("tr", { "data-rep-id": rep.rep_id },
      el("td", { title: rep.rep_id }, rep.rep_name),
      el("td", { class: "num" }, rep.total),
      el("td", {}, el("div", { class: "targets" }, ...rep.targets.map((t) =>
        el("span", { class: t.count >= t.target ? "target met" : "target" },
          `${t.kind} ${t.count}/${t.target}`,
          el("span", { class: "track" }, el("div", { style: `width:${Math.min(100, (100 * t.count) / t.target)}%` }))))))));
  $("activity-rows").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: "3" }, "no activity today"))]));
}

function render(data) {
  board = data;
  clockSkewMs = data.generated_at * 1000 - Date.now();
  $("day").textContent = `${data.today} (${data.timezone})`;
  renderSpeed(data);
  renderWaiting(data);
  renderAlerts(data);
  renderFunnel(data);
  renderForecast(data);
  renderActivity(data);
  document.body.dataset.generatedAt = data.generated_at;
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function connect() {
  const source = new EventSource("/board/events");
  source.addEventListener("snapshot", (event) => {
    render(JSON.parse(event.data));
    setStatus("live", "live");
  });
  source.onerror = () => setStatus("offline", "reconnecting…");  // EventSource retries by itself
}

function setupWallMode() {
  const button = $("wall");
  const apply = (on) => {
    document.documentElement.classList.toggle("wall", on);
    button.setAttribute("aria-pressed", String(on));
  };
  apply(new URLSearchParams(location.search).has("wall") || localStorage.getItem("salespulse.wall") === "1");
  button.addEventListener("click", () => {
    const on = !document.documentElement.classList.contains("wall");
    localStorage.setItem("salespulse.wall", on ? "1" : "0");
    apply(on);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupWallMode();
  connect();
  setInterval(tickAges, 1000);
});
