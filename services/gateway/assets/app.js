// Touchstone dashboard: plain JavaScript over the gateway's JSON API.
// The development token lives in sessionStorage and goes out as
// `Authorization: Bearer`. Text from the API is always set with
// textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "touchstone.token";
const PERIOD_KEY = "touchstone.period";
const SVG = "http://www.w3.org/2000/svg";

const PAGES = {
  overview: { title: "Agency overview", period: true, render: renderOverview },
  complaints: { title: "Complaints queue", period: false, render: renderComplaints },
  feedback: { title: "Feedback and topics", period: true, render: renderFeedback },
  charter: { title: "Charter report", period: true, render: renderCharter },
  equity: { title: "Equity", period: true, render: renderEquity },
  benchmark: { title: "Benchmark", period: false, render: renderBenchmark },
  signin: { title: "Sign in", period: false, render: renderSignIn },
};

// ---- small DOM helpers ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function table(caption, headers, rows, numeric) {
  const num = new Set(numeric || []);
  const head = el("tr", {}, ...headers.map((h, i) =>
    el("th", { scope: "col", class: num.has(i) ? "num" : null, text: h })));
  const body = rows.map((r) => el("tr", {}, ...r.map((cell, i) => {
    const td = el("td", { class: num.has(i) ? "num" : null });
    td.append(cell instanceof Node ? cell : document.createTextNode(cell === null || cell === undefined ? "" : String(cell)));
    return td;
  })));
  return el("table", {}, el("caption", { text: caption }), el("thead", {}, head), el("tbody", {}, ...body));
}

function badge(text, tone) {
  return el("span", { class: "badge " + (tone || ""), text });
}

function card(title, big, small) {
  return el("section", { class: "card" },
    el("h3", { text: title }),
    el("p", { class: "big", text: big }),
    small ? el("p", { class: "small", text: small }) : null);
}

function notice(text, isError) {
  document.getElementById("notices").append(el("p", { class: "notice" + (isError ? " error" : ""), text }));
}

function words(s) {
  return String(s || "").toLowerCase().replace(/_/g, " ");
}

// ---- numbers ----

function isShareLike(indicator) {
  return /^share_|_rate$|_within_standard|closed_on_time|^response_rate/.test(indicator || "");
}

function fmtValue(v, indicator) {
  if (!v) return "no data";
  if (v.suppressed) return "suppressed";
  if (v.value === null || v.value === undefined) return "no data";
  return fmtNumber(v.value, indicator);
}

function fmtNumber(x, indicator) {
  if (x === null || x === undefined) return "—";
  if (isShareLike(indicator)) return (100 * x).toFixed(1) + "%";
  return Number(x).toFixed(Math.abs(x) >= 100 ? 0 : 1);
}

function fmtInterval(v, indicator) {
  if (!v || v.suppressed || v.lower === null || v.lower === undefined) return "";
  return fmtNumber(v.lower, indicator) + " to " + fmtNumber(v.upper, indicator);
}

// ---- the API ----

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path) {
  // Without a token there is nothing to ask: say so without a failed request.
  if (!token()) return { error: { code: "Unauthenticated", message: "not signed in" } };
  const headers = { Accept: "application/json", Authorization: "Bearer " + token() };
  let response;
  try {
    response = await fetch(path, { headers });
  } catch (e) {
    return { error: { code: "Unavailable", message: "the gateway cannot be reached" } };
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    return { error: (body && body.error) || { code: String(response.status), message: response.statusText } };
  }
  return body;
}

function showError(err) {
  if (err.code === "Unauthenticated") {
    notice("You are not signed in, or your token has expired. Go to Sign in and paste a token.", true);
  } else {
    const fields = (err.fields || []).map((f) => f.field + ": " + f.description).join("; ");
    notice((err.message || err.code) + (fields ? " (" + fields + ")" : ""), true);
  }
}

function partialNotices(d) {
  if (d.unreachable && d.unreachable.length) {
    notice("Not shown because a service did not answer in time: " + d.unreachable.join(", ") + ".");
  }
  if (d.withheld && d.withheld.length) {
    notice("Not shown because your roles do not include it: " + d.withheld.map(words).join(", ") + ".");
  }
}

let dashboardCache = { key: "", data: null };

async function loadDashboard() {
  const period = sessionStorage.getItem(PERIOD_KEY) || "";
  const key = token() + "|" + period;
  if (dashboardCache.key === key && dashboardCache.data) return dashboardCache.data;
  const d = await api("/api/dashboard?period=" + encodeURIComponent(period));
  if (!d.error) dashboardCache = { key, data: d };
  return d;
}

// ---- pages ----

async function renderOverview(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  content.append(el("p", { class: "muted", text: d.agency + ", " + d.period + " (" + d.start_date + " to " + d.end_date + ")" }));
  const cards = el("div", { class: "cards" });
  if (d.complaints) {
    cards.append(card("Open complaints", String(d.complaints.open), d.complaints.overdue + " overdue"));
  }
  if (d.feedback) {
    const f = d.feedback;
    cards.append(card("Satisfied (A-11)", fmtValue(f.satisfaction, "share_satisfied"), fmtInterval(f.satisfaction, "share_satisfied")));
    cards.append(card("Net Promoter Score", fmtValue(f.nps, "nps"), fmtInterval(f.nps, "nps")));
    const responses = f.response_rate && f.response_rate.numerator !== null && f.response_rate.numerator !== undefined
      ? f.response_rate.numerator + " responses" : "";
    cards.append(card("Response rate", fmtValue(f.response_rate, "response_rate"), responses));
    if (!(d.withheld || []).includes("follow_ups")) {
      cards.append(card("Follow-ups open", String(f.follow_ups_open), f.follow_ups_overdue + " past due"));
    }
  }
  const met = d.headlines.filter((h) => h.verdict === "MET").length;
  cards.append(card("Standards met", met + " of " + d.headlines.length, "published charter standards"));
  content.append(el("h2", { text: "At a glance" }), cards);
  content.append(el("h2", { text: "Standards" }), charterTable(d));
  const gaps = d.equity.filter((g) => g.significant);
  content.append(el("h2", { text: "Significant equity gaps" }));
  content.append(gaps.length ? equityTable(gaps, "Segments that differ from everyone else at the 95% level")
    : el("p", { text: "No significant gaps in satisfaction between segments in this period." }));
  if (d.topics.length) {
    content.append(el("h2", { text: "Top comment topics" }), topicsTable(d.topics.slice(0, 5)));
  }
}

async function renderComplaints(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  const c = d.complaints;
  if (!c) {
    content.append(el("p", { text: "The complaints queue is not available." }));
    return;
  }
  content.append(el("div", { class: "cards" },
    card("Open", String(c.open), c.truncated ? "more than counted" : null),
    card("Overdue", String(c.overdue), "pending clock breached")));
  content.append(el("h2", { text: "By stage and severity" }));
  content.append(table("Open and overdue complaints by stage and severity", ["Stage", "Severity", "Open", "Overdue"],
    c.counts.map((x) => [words(x.stage), words(x.severity), x.open, x.overdue]), [2, 3]));
  content.append(el("h2", { text: "Due first" }));
  const rows = c.queue.map((q) => {
    const clock = q.clock || {};
    let state = badge("on time", "good");
    if (q.overdue) state = badge("overdue", "bad");
    else if (clock.stopped) state = badge("clock stopped", "warn");
    const id = q.complaint.split("/").pop();
    return [id, words(q.status), words(q.stage), words(q.severity), q.unit || "—", q.officer || "unassigned",
      clock.due_date || "—", clock.used_days !== undefined ? clock.used_days + " of " + clock.allowed_days : "—",
      clock.remaining_days !== undefined ? clock.remaining_days : "—", state];
  });
  content.append(table("Open complaints, overdue first, then by due date (working days)",
    ["Complaint", "Status", "Stage", "Severity", "Unit", "Officer", "Due", "Days used", "Days left", "Clock"], rows, [7, 8]));
}

function topicsTable(topics) {
  const max = Math.max(1, ...topics.map((t) => t.responses));
  return table("Comment topics by number of responses", ["Topic", "Responses", "Mean sentiment"],
    topics.map((t) => {
      const bar = el("span", { class: "bar", "aria-hidden": "true" });
      bar.style.width = Math.round(8 * t.responses / max) + "rem";
      const count = el("span", {}, bar, String(t.responses));
      return [t.topic, count, t.mean_sentiment.toFixed(2)];
    }), [1, 2]);
}

async function renderFeedback(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  const f = d.feedback || {};
  content.append(el("div", { class: "cards" },
    card("Satisfied (A-11)", fmtValue(f.satisfaction, "share_satisfied"), fmtInterval(f.satisfaction, "share_satisfied")),
    card("Net Promoter Score", fmtValue(f.nps, "nps"), fmtInterval(f.nps, "nps")),
    card("Response rate", fmtValue(f.response_rate, "response_rate"),
      f.response_rate && f.response_rate.denominator ? f.response_rate.numerator + " of " + f.response_rate.denominator + " offered" : null),
    card("Follow-ups open", String(f.follow_ups_open || 0), (f.follow_ups_overdue || 0) + " past due")));
  content.append(el("h2", { text: "Comment topics" }));
  content.append(d.topics.length ? topicsTable(d.topics) : el("p", { text: "No tagged comments in this period." }));
}

function charterTable(d) {
  if (!d.headlines.length) return el("p", { text: "No published standards for this period." });
  const rows = d.headlines.map((h) => {
    const ind = h.standard.indicator;
    const verdict = h.verdict === "MET" ? badge("met", "good")
      : h.verdict === "NOT_MET" ? badge("not met", "bad") : badge("insufficient data", "muted");
    const cmp = h.standard.comparator === "AT_MOST" ? "at most " : "at least ";
    const trend = h.trend === "UNSPECIFIED" ? "—"
      : words(h.trend) + (h.significant_change ? " (significant)" : "");
    return [h.standard.display_name, cmp + fmtNumber(h.standard.target, ind), fmtValue(h.value, ind),
      fmtInterval(h.value, ind), h.value ? h.value.n : "", verdict, fmtValue(h.previous, ind), trend];
  });
  return table("Published standards against their targets", ["Standard", "Target", "Value", "95% interval", "n", "Verdict", "Previous period", "Trend"], rows, [4]);
}

async function renderCharter(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  content.append(el("p", { class: "muted", text: "The charter for " + d.period + ": every published standard with its value over the period, against the period before." }));
  content.append(charterTable(d));
}

function equityTable(gaps, caption) {
  return table(caption, ["Characteristic", "Segment", "Share satisfied", "95% interval", "n", "Gap to all", "Significant"],
    gaps.map((g) => [words(g.dimension), words(g.segment), fmtValue(g.value, "share_satisfied"),
      fmtInterval(g.value, "share_satisfied"), g.value ? g.value.n : "",
      g.gap === null || g.gap === undefined ? "—" : (g.gap > 0 ? "+" : "") + (100 * g.gap).toFixed(1) + " points",
      g.significant ? badge("yes", "bad") : "no"]), [4]);
}

async function renderEquity(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  if (!d.equity.length) {
    content.append(el("p", { text: "No segment data for this period (characteristics are kept only with consent to statistics)." }));
    return;
  }
  const dims = [...new Set(d.equity.map((g) => g.dimension))];
  for (const dim of dims) {
    content.append(el("h2", { text: words(dim) }));
    content.append(equityTable(d.equity.filter((g) => g.dimension === dim), "Share satisfied by " + words(dim)));
  }
}

async function renderBenchmark(content) {
  const me = await api("/api/me");
  if (me.error) return showError(me.error);
  if (!me.roles.some((r) => r === "analyst" || r === "agency_admin" || r === "hub_admin")) {
    content.append(el("p", { text: "Benchmarks are for the analyst, agency_admin and hub_admin roles." }));
    return;
  }
  const [groups, catalogue] = await Promise.all([api("/api/peer-groups"), api("/api/indicators")]);
  if (groups.error) return showError(groups.error);
  if (catalogue.error) return showError(catalogue.error);
  if (!groups.peer_groups.length) {
    content.append(el("p", { text: "Your agency is not in a peer group yet; a hub administrator adds it." }));
    return;
  }
  const form = el("form", { class: "controls", id: "benchmark-form" });
  const group = el("select", { id: "bm-group", name: "peer_group" },
    ...groups.peer_groups.map((g) => el("option", { value: g.name, text: g.display_name })));
  const indicator = el("select", { id: "bm-indicator", name: "indicator" },
    ...catalogue.indicators.map((i) => el("option", { value: i.id, text: i.title })));
  indicator.value = "share_satisfied.a11_satisfaction";
  if (!indicator.value && catalogue.indicators.length) indicator.value = catalogue.indicators[0].id;
  const period = el("input", { id: "bm-period", name: "period", type: "text", placeholder: "2026-Q3",
    value: sessionStorage.getItem(PERIOD_KEY) || "" });
  form.append(el("label", { for: "bm-group", text: "Peer group" }), group,
    el("label", { for: "bm-indicator", text: "Indicator" }), indicator,
    el("label", { for: "bm-period", text: "Period" }), period,
    el("button", { type: "submit", text: "Compare" }));
  const out = el("div", { id: "benchmark-result", "aria-live": "polite" });
  content.append(form, out);
  const show = async () => {
    out.replaceChildren(el("p", { text: "Loading…" }));
    const q = "/api/benchmark?peer_group=" + encodeURIComponent(group.value) + "&indicator=" +
      encodeURIComponent(indicator.value) + "&period=" + encodeURIComponent(period.value.trim());
    const b = await api(q);
    out.replaceChildren();
    if (b.error) {
      out.append(el("p", { class: "notice error", text: b.error.message || b.error.code }));
      return;
    }
    drawBenchmark(out, b);
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); show(); });
  await show();
}

function drawBenchmark(out, b) {
  const ind = b.indicator ? b.indicator.id : "";
  if (b.unreachable.length) {
    out.append(el("p", { class: "notice", text: "The indicator service did not answer in time." }));
    return;
  }
  out.append(el("p", { class: "muted", text: (b.indicator ? b.indicator.title : "") + ", " + b.period +
    ". Peer median " + fmtNumber(b.peer_median, ind) + (b.higher_is_better ? "; higher is better." : "; lower is better.") +
    " Figures from fewer than " + b.min_count + " observations are suppressed." }));
  const shown = b.entries.filter((e) => e.value && !e.value.suppressed && e.value.value !== null);
  if (shown.length) out.append(chart(b, shown, ind));
  const rows = b.entries.map((e) => {
    const name = e.disclosure === "OWN" ? el("strong", { text: e.label + " (you)" }) : e.label;
    const reason = e.suppression === "PRIMARY" ? "suppressed (too few)" : e.suppression === "SECONDARY"
      ? "suppressed (protects another)" : e.suppression === "NO_DATA" ? "no data" : fmtValue(e.value, ind);
    const vs = e.versus_median === "ABOVE" ? badge("above median", b.higher_is_better ? "good" : "bad")
      : e.versus_median === "BELOW" ? badge("below median", b.higher_is_better ? "bad" : "good")
        : e.versus_median === "NOT_SIGNIFICANT" ? "not significantly different" : "—";
    return [e.rank || "—", name, reason, fmtInterval(e.value, ind), e.value && !e.value.suppressed ? e.value.n : "",
      e.quartile || "—", vs];
  });
  out.append(table("Each agency against the peer median", ["Rank", "Agency", "Value", "95% interval", "n", "Quartile", "Against the median"], rows, [0, 4, 5]));
  if (b.total_n !== null && b.total_n !== undefined) {
    out.append(el("p", { text: "All consenting members: " + b.total_n + " observations" +
      (b.pooled_value !== null && b.pooled_value !== undefined ? ", pooled value " + fmtNumber(b.pooled_value, ind) : "") + "." }));
  }
}

function chart(b, shown, ind) {
  const rowH = 28, left = 170, right = 40, top = 30, width = 760;
  const height = top + rowH * shown.length + 30;
  const xs = [];
  for (const e of shown) {
    xs.push(e.value.value);
    if (e.value.lower !== null && e.value.lower !== undefined) xs.push(e.value.lower, e.value.upper);
  }
  if (b.peer_median !== null && b.peer_median !== undefined) xs.push(b.peer_median);
  let lo = Math.min(...xs), hi = Math.max(...xs);
  if (isShareLike(ind)) { lo = Math.max(0, lo - 0.05); hi = Math.min(1, hi + 0.05); }
  if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
  const x = (v) => left + (width - left - right) * (v - lo) / (hi - lo);
  const label = "Chart of each agency's value with its 95% interval; the dashed line is the peer median " +
    fmtNumber(b.peer_median, ind) + ". The table below has the same figures.";
  const root = svg("svg", { class: "chart", viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": label });
  root.append(svg("title", { text: label }));
  root.append(svg("text", { x: left, y: 16, text: fmtNumber(lo, ind) }));
  root.append(svg("text", { x: width - right, y: 16, "text-anchor": "end", text: fmtNumber(hi, ind) }));
  shown.forEach((e, i) => {
    const y = top + i * rowH + rowH / 2;
    const own = e.disclosure === "OWN";
    root.append(svg("text", { x: left - 8, y: y + 4, "text-anchor": "end", "font-weight": own ? "700" : "400", text: e.label }));
    if (e.value.lower !== null && e.value.lower !== undefined) {
      root.append(svg("line", { x1: x(e.value.lower), x2: x(e.value.upper), y1: y, y2: y, stroke: "#4a5360", "stroke-width": 2 }));
    }
    root.append(svg("circle", { cx: x(e.value.value), cy: y, r: own ? 7 : 5, fill: own ? "#0b4f8a" : "#1b1f24" }));
  });
  if (b.peer_median !== null && b.peer_median !== undefined) {
    const mx = x(b.peer_median);
    root.append(svg("line", { x1: mx, x2: mx, y1: top - 6, y2: height - 22, stroke: "#a3231a", "stroke-dasharray": "5 4", "stroke-width": 2 }));
    root.append(svg("text", { x: mx, y: height - 8, "text-anchor": "middle", text: "peer median " + fmtNumber(b.peer_median, ind) }));
  }
  return root;
}

async function renderSignIn(content) {
  const form = el("form", { id: "signin-form" });
  const area = el("textarea", { id: "token", name: "token", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "token-help" });
  form.append(
    el("p", { id: "token-help", text: "Development sign-in: paste a token from `touchstone up` or `touchstone token --agency A --role analyst`. It is kept in this browser tab only (sessionStorage)." }),
    el("label", { for: "token", text: "Token" }), area,
    el("p", {}, el("button", { type: "submit", text: "Sign in" }), " ",
      el("button", { type: "button", class: "secondary", id: "signout", text: "Sign out" })));
  const status = el("p", { id: "signin-status", role: "status" });
  const signOut = form.querySelector("#signout");
  content.append(form, status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, area.value.trim().replace(/^Bearer\s+/i, ""));
    dashboardCache = { key: "", data: null };
    const me = await whoAmI();
    status.textContent = me ? "Signed in as " + me : "That token was not accepted.";
    if (me) location.hash = "#/overview";
  });
  signOut.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    dashboardCache = { key: "", data: null };
    whoAmI();
    status.textContent = "Signed out.";
  });
}

async function whoAmI() {
  const who = document.getElementById("who");
  if (!token()) {
    who.textContent = "Not signed in";
    return null;
  }
  const me = await api("/api/me");
  if (me.error) {
    who.textContent = "Not signed in";
    return null;
  }
  const text = me.subject + (me.agency ? " (" + me.agency + ")" : "") + ": " + me.roles.join(", ");
  who.textContent = text;
  return text;
}

// ---- routing ----

async function route() {
  let page = (location.hash.replace(/^#\//, "") || "").split("?")[0];
  if (!PAGES[page]) page = token() ? "overview" : "signin";
  const spec = PAGES[page];
  document.title = spec.title + " · Touchstone";
  document.getElementById("title").textContent = spec.title;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const form = document.getElementById("period-form");
  form.hidden = !spec.period;
  document.getElementById("period").value = sessionStorage.getItem(PERIOD_KEY) || "";
  document.getElementById("notices").replaceChildren();
  const content = document.getElementById("content");
  content.replaceChildren(el("p", { text: "Loading…" }));
  const fresh = el("div");
  try {
    await spec.render(fresh);
  } catch (e) {
    fresh.append(el("p", { class: "notice error", text: "This page could not be shown." }));
  }
  content.replaceChildren(...fresh.childNodes);
  document.getElementById("main").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("period-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(PERIOD_KEY, document.getElementById("period").value.trim());
    dashboardCache = { key: "", data: null };
    route();
  });
  window.addEventListener("hashchange", route);
  whoAmI();
  route();
});
