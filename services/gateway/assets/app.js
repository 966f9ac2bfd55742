// Touchstone dashboard: plain JavaScript over the gateway's JSON API.
// The development token lives in sessionStorage and goes out as
// `Authorization: Bearer`. Text from the API is always set with
// textContent, never parsed as HTML. What a page shows (period, filters,
// indicator, complaint) is in the URL after `#/page?`, so a link shares it.
"use strict";

const TOKEN_KEY = "touchstone.token";
const SVG = "http://www.w3.org/2000/svg";

const PAGES = {
  overview: { title: "Agency overview", period: true, render: renderOverview },
  trend: { title: "Trend", period: false, render: renderTrend },
  complaints: { title: "Complaints queue", period: false, render: renderComplaints },
  complaint: { title: "Complaint", period: false, render: renderComplaint, nav: "complaints" },
  "follow-ups": { title: "Follow-ups", period: false, render: renderFollowUps },
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

// A table in a scrolling box of its own, so a wide table never makes the
// page scroll sideways on a phone; the box is focusable so a keyboard can
// scroll it.
function table(caption, headers, rows, numeric, cls) {
  const num = new Set(numeric || []);
  const head = el("tr", {}, ...headers.map((h, i) =>
    el("th", { scope: "col", class: num.has(i) ? "num" : null, text: h })));
  const body = rows.map((r) => el("tr", {}, ...r.map((cell, i) => {
    const blank = cell === null || cell === undefined || cell === "";
    // A blank cell is left out of a row read as a card on a phone.
    const td = el("td", { class: [num.has(i) ? "num" : "", blank ? "blank" : ""].join(" ").trim() || null, "data-label": headers[i] });
    if (!blank) td.append(cell instanceof Node ? cell : document.createTextNode(String(cell)));
    return td;
  })));
  // On a phone each row reads as a card of "column: value" lines.
  const t = el("table", { class: cls || "stack-narrow" }, el("caption", { text: caption }), el("thead", {}, head), el("tbody", {}, ...body));
  return el("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption }, t);
}

function badge(text, tone) {
  return el("span", { class: "badge " + (tone || ""), text });
}

function card(title, big, small, href) {
  return el("section", { class: "card" },
    el("h3", {}, href ? el("a", { href, text: title }) : title),
    el("p", { class: "big", text: big }),
    small ? el("p", { class: "small", text: small }) : null);
}

function notice(text, isError) {
  document.getElementById("notices").append(el("p", { class: "notice" + (isError ? " error" : ""), text }));
}

function words(s) {
  return String(s || "").toLowerCase().replace(/_/g, " ");
}

function sentence(s) {
  const w = words(s);
  return w.charAt(0).toUpperCase() + w.slice(1);
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
}

// ---- the URL: #/page?key=value ----

function pageName() {
  return (location.hash.replace(/^#\/?/, "") || "").split("?")[0];
}

function params() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

function link(page, values) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(values || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return "#/" + page + (s ? "?" + s : "");
}

function period() {
  return params().get("period") || "";
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

function hasValue(v) {
  return !!v && !v.suppressed && v.value !== null && v.value !== undefined;
}

// "better" or "worse" for a change, by which way is good for the indicator.
function direction(trend, higherIsBetter) {
  if (trend === "FLAT") return "no change";
  if (trend !== "UP" && trend !== "DOWN") return "—";
  return (trend === "UP") === higherIsBetter ? "better" : "worse";
}

// ---- human labels ----

const DIMENSIONS = {
  AGE_BAND: "Age", GENDER: "Gender", DISABILITY: "Disability", FIRST_NATIONS: "First Nations",
  CULTURALLY_LINGUISTICALLY_DIVERSE: "Cultural and linguistic diversity", REMOTE_LOCATION: "Remote location",
  UNIT: "Unit", CHANNEL: "Channel", SERVICE: "Service",
};

const YES_NO = {
  DISABILITY: ["With a disability", "Without a disability"],
  FIRST_NATIONS: ["First Nations", "Not First Nations"],
  CULTURALLY_LINGUISTICALLY_DIVERSE: ["Culturally and linguistically diverse", "Not culturally and linguistically diverse"],
  REMOTE_LOCATION: ["Remote location", "Not remote"],
};

function dimensionLabel(d) {
  return DIMENSIONS[d] || sentence(d);
}

function segmentLabel(dim, seg) {
  if (seg === "UNKNOWN") return "Did not say";
  if (/PREFER_NOT_TO_SAY$/.test(seg)) return "Prefer not to say";
  const age = /^AGE_BAND_(\d+)_(\d+)$/.exec(seg);
  if (age) return "Age " + age[1] + "–" + age[2];
  if (seg === "AGE_BAND_UNDER_18") return "Under 18";
  if (seg === "AGE_BAND_75_PLUS") return "Age 75 and over";
  const genders = { GENDER_WOMAN: "Women", GENDER_MAN: "Men", GENDER_NON_BINARY: "Non-binary", GENDER_DIFFERENT_TERM: "A different term" };
  if (genders[seg]) return genders[seg];
  if (YES_NO[dim] && seg === "ANSWER_YES") return YES_NO[dim][0];
  if (YES_NO[dim] && seg === "ANSWER_NO") return YES_NO[dim][1];
  return sentence(seg.replace(/^(CHANNEL|ANSWER)_/, ""));
}

const SOURCES = { feedback: "Feedback", complaints: "Complaints" };

// A picker of indicators grouped by where they come from, by title.
function indicatorPicker(id, indicators, selected) {
  const groups = {};
  for (const i of indicators) (groups[i.source] = groups[i.source] || []).push(i);
  const select = el("select", { id, name: "indicator" });
  for (const [source, list] of Object.entries(groups)) {
    const g = el("optgroup", { label: SOURCES[source] || sentence(source) });
    for (const i of list) g.append(el("option", { value: i.id, text: i.title }));
    select.append(g);
  }
  if (selected) select.value = selected;
  if (!select.value && indicators.length) select.value = indicators[0].id;
  return select;
}

// ---- the API ----

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, body) {
  // Without a token there is nothing to ask: say so without a failed request.
  if (!token()) return { error: { code: "Unauthenticated", message: "not signed in" } };
  const headers = { Accept: "application/json", Authorization: "Bearer " + token() };
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    return { error: { code: "Unavailable", message: "the gateway cannot be reached" } };
  }
  let json = null;
  try {
    json = await response.json();
  } catch (e) {
    json = null;
  }
  if (!response.ok) {
    return { error: (json && json.error) || { code: String(response.status), message: response.statusText } };
  }
  return json;
}

function errorText(err) {
  if (err.code === "Unauthenticated") return "You are not signed in, or your token has expired. Go to Sign in and paste a token.";
  if (err.code === "PermissionDenied") return "Your roles do not allow this: " + (err.message || "permission denied") + ".";
  const fields = (err.fields || []).map((f) => f.field + ": " + f.description).join("; ");
  return (err.message || err.code) + (fields ? " (" + fields + ")" : "");
}

function showError(err) {
  notice(errorText(err), true);
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
  const key = token() + "|" + period();
  if (dashboardCache.key === key && dashboardCache.data) return dashboardCache.data;
  const d = await api("/api/dashboard?period=" + encodeURIComponent(period()));
  if (!d.error) dashboardCache = { key, data: d };
  return d;
}

// An agency with nothing in it yet: no standards, no complaints, no
// comments, no segments. Its feedback figures would all read "suppressed",
// which says the wrong thing.
function isEmptyAgency(d) {
  return !d.headlines.length && (!d.complaints || d.complaints.open === 0) && !d.topics.length &&
    !d.equity.length && !(d.feedback && hasValue(d.feedback.satisfaction));
}

function emptyAgencyNote(agency) {
  const id = String(agency || "").replace(/^agencies\//, "");
  return el("div", { class: "notice", id: "no-data" },
    el("p", {}, el("strong", { text: "Agency \u201c" + id + "\u201d has no data yet." })),
    el("p", { text: (id === "demo"
      ? "This is the agency of the token that `touchstone up` prints when it starts without demo data. "
      : "") + "Nothing has been recorded for it: no standards, complaints or survey responses." }),
    el("p", { text: "To look around with realistic data, stop the server and start it with `touchstone up --demo`, " +
      "then sign in with the token it prints (agency \u201cpassports\u201d). Or record data for this agency through the APIs." }));
}

// ---- pages ----

async function renderOverview(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  if (isEmptyAgency(d)) {
    content.append(emptyAgencyNote(d.agency));
    return;
  }
  content.append(el("p", { class: "muted", text: d.agency + ", " + d.period + " (" + d.start_date + " to " + d.end_date + ")" }));
  const cards = el("div", { class: "cards" });
  if (d.complaints) {
    cards.append(card("Open complaints", String(d.complaints.open), d.complaints.overdue + " overdue", link("complaints")));
  }
  if (d.feedback) {
    const f = d.feedback;
    cards.append(card("Satisfied (A-11)", fmtValue(f.satisfaction, "share_satisfied"), fmtInterval(f.satisfaction, "share_satisfied"),
      link("trend", { indicator: "share_satisfied.a11_satisfaction" })));
    cards.append(card("Net Promoter Score", fmtValue(f.nps, "nps"), fmtInterval(f.nps, "nps"), link("trend", { indicator: "nps" })));
    const responses = f.response_rate && f.response_rate.numerator !== null && f.response_rate.numerator !== undefined
      ? f.response_rate.numerator + " responses" : "";
    cards.append(card("Response rate", fmtValue(f.response_rate, "response_rate"), responses));
    if (!(d.withheld || []).includes("follow_ups")) {
      cards.append(card("Follow-ups open", String(f.follow_ups_open), f.follow_ups_overdue + " past due", link("follow-ups")));
    }
  }
  const met = d.headlines.filter((h) => h.verdict === "MET").length;
  cards.append(card("Standards met", met + " of " + d.headlines.length, "published charter standards", link("charter", { period: period() })));
  content.append(el("h2", { text: "At a glance" }), cards);
  content.append(el("h2", { text: "Standards" }), charterTable(d));
  const gaps = equityGaps(d.equity).filter((g) => g.significant);
  content.append(el("h2", { text: "Significant equity gaps" }));
  content.append(gaps.length ? equityTable(gaps, "Groups whose satisfaction differs from everyone else's at the 95% level, largest gap first", d.min_count, true)
    : el("p", { text: "No significant gaps in satisfaction between groups in this period." }));
  if (d.topics.length) {
    content.append(el("h2", { text: "Top comment topics" }), topicsTable(d.topics.slice(0, 5)));
  }
}

// ---- trends ----

async function renderTrend(content) {
  const p = params();
  const [catalogue, d] = await Promise.all([api("/api/indicators"), loadDashboard()]);
  if (catalogue.error) return showError(catalogue.error);
  const indicatorId = p.get("indicator") || "share_satisfied.a11_satisfaction";
  const granularity = p.get("granularity") === "quarter" ? "quarter" : "month";
  const form = el("form", { class: "controls", id: "trend-form" });
  const picker = indicatorPicker("trend-indicator", catalogue.indicators, indicatorId);
  const grain = el("select", { id: "trend-granularity", name: "granularity" },
    el("option", { value: "month", text: "Monthly, last 12 months" }),
    el("option", { value: "quarter", text: "Quarterly, last 8 quarters" }));
  grain.value = granularity;
  form.append(el("label", { for: "trend-indicator", text: "Indicator" }), picker,
    el("label", { for: "trend-granularity", text: "Points" }), grain,
    el("button", { type: "submit", text: "Show" }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = link("trend", { indicator: picker.value, granularity: grain.value });
  });
  content.append(form);
  const t = await api("/api/trend?indicator=" + encodeURIComponent(indicatorId) + "&granularity=" + granularity +
    "&periods=" + (granularity === "quarter" ? 8 : 12));
  if (t.error) return showError(t.error);
  const standard = d.error ? null : (d.headlines.find((h) => h.standard.indicator === indicatorId) || {}).standard;
  const higher = standard ? standard.comparator !== "AT_MOST" : t.higher_is_better;
  const title = t.indicator ? t.indicator.title : indicatorId;
  document.getElementById("title").textContent = "Trend: " + title;
  document.title = "Trend: " + title + " · Touchstone";
  content.append(trendSummary(t, standard, higher, indicatorId));
  if (!t.points.some((x) => hasValue(x.value))) {
    content.append(el("p", { text: "No published figure in this range: every point is suppressed (fewer than " +
      t.min_count + " observations) or has no data." }));
  } else {
    content.append(trendChart(t, standard, indicatorId, higher));
  }
  const tableId = "trend-table";
  const toggle = el("button", { type: "button", class: "secondary", id: "trend-table-toggle",
    "aria-expanded": "false", "aria-controls": tableId, text: "Show the figures as a table" });
  const rows = t.points.map((x, i) => {
    const prev = i > 0 ? t.points[i - 1] : null;
    let change = "—";
    if (prev && hasValue(prev.value) && hasValue(x.value)) {
      const trend = x.value.value > prev.value.value ? "UP" : x.value.value < prev.value.value ? "DOWN" : "FLAT";
      change = direction(trend, higher) + (x.significant_change ? " (significant)" : "");
    }
    const value = x.value && x.value.suppressed ? "suppressed (fewer than " + t.min_count + ")" : fmtValue(x.value, indicatorId);
    return [periodLabel(x, t.granularity), value, fmtInterval(x.value, indicatorId),
      hasValue(x.value) ? x.value.n : "", change];
  });
  const box = el("div", { id: tableId, hidden: true },
    table(title + " by " + t.granularity + ", with 95% intervals", ["Period", "Value", "95% interval", "n", "Change from the period before"], rows, [3]));
  toggle.addEventListener("click", () => {
    const open = box.hidden;
    box.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? "Hide the table" : "Show the figures as a table";
  });
  content.append(el("p", {}, toggle), box);
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function periodLabel(point, granularity) {
  const [y, m, d] = point.start_date.split("-").map(Number);
  if (granularity === "quarter") return "Q" + (Math.floor((m - 1) / 3) + 1) + " " + y;
  return MONTHS[m - 1] + " " + y;
}

function trendSummary(t, standard, higher, ind) {
  const shown = t.points.filter((x) => hasValue(x.value));
  const parts = [];
  if (shown.length) {
    const last = shown[shown.length - 1];
    parts.push("Latest published: " + fmtNumber(last.value.value, ind) + " (" + periodLabel(last, t.granularity) + ").");
    if (shown.length > 1) {
      const first = shown[0];
      const trend = last.value.value > first.value.value ? "UP" : last.value.value < first.value.value ? "DOWN" : "FLAT";
      parts.push("Since " + periodLabel(first, t.granularity) + ": " + direction(trend, higher) + ".");
    }
  }
  parts.push(higher ? "Higher is better." : "Lower is better.");
  if (standard) parts.push("Standard: " + (standard.comparator === "AT_MOST" ? "at most " : "at least ") + fmtNumber(standard.target, ind) + ".");
  const marked = t.points.filter((x) => x.significant_change).length;
  if (marked) parts.push(marked + " significant change" + (marked > 1 ? "s" : "") + " from the period before (95% level).");
  return el("p", { id: "trend-summary", text: parts.join(" ") });
}

// About five round values from lo to hi for the axis.
function ticks(lo, hi) {
  const raw = (hi - lo) / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(v);
  return out;
}

function trendChart(t, standard, ind, higher) {
  // A phone gets a narrower drawing, so its text stays readable.
  const narrow = window.innerWidth < 600;
  const width = narrow ? 400 : 760, height = narrow ? 280 : 320, left = 56, right = 16, top = 20, bottom = 48;
  const pts = t.points;
  const ys = [];
  for (const x of pts) {
    if (!hasValue(x.value)) continue;
    ys.push(x.value.value);
    if (x.value.lower !== null && x.value.lower !== undefined) ys.push(x.value.lower, x.value.upper);
  }
  if (standard) ys.push(standard.target);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  const pad = (hi - lo) * 0.08 || 1;
  lo -= pad; hi += pad;
  if (isShareLike(ind)) { lo = Math.max(0, lo); hi = Math.min(1, hi); }
  const step = (width - left - right) / Math.max(1, pts.length - 1);
  const x = (i) => left + i * step;
  const y = (v) => top + (height - top - bottom) * (hi - v) / (hi - lo);
  const shownCount = pts.filter((p) => hasValue(p.value)).length;
  const gaps = pts.length - shownCount;
  const label = (t.indicator ? t.indicator.title : ind) + ": a line chart of " + shownCount + " " + t.granularity +
    "ly values with their 95% interval band" + (standard ? " and the standard's target as a dashed line" : "") +
    (gaps ? "; " + gaps + " period" + (gaps > 1 ? "s are" : " is") + " suppressed or without data and shown as gaps" : "") +
    ". The table below has the same figures.";
  const root = svg("svg", { class: "chart trend", viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": label });
  root.append(svg("title", { text: label }));
  // Axes: three value ticks and a label for every period that fits.
  for (const v of ticks(lo, hi)) {
    root.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), stroke: "#dde2e8" }));
    root.append(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", text: fmtNumber(v, ind) }));
  }
  const every = Math.ceil(pts.length / (narrow ? 6 : 12));
  pts.forEach((p, i) => {
    if (i % every) return;
    const [yy, mm, dd] = p.start_date.split("-").map(Number);
    const text = t.granularity === "quarter" ? "Q" + (Math.floor((mm - 1) / 3) + 1) + " " + yy : MONTHS[mm - 1] + (mm === 1 || i === 0 ? " " + yy : "");
    // The last label ends at its point, so it is not cut off at the chart's right edge.
    const anchor = i === pts.length - 1 && pts.length > 1 ? "end" : "middle";
    root.append(svg("text", { x: x(i), y: height - bottom + 18, "text-anchor": anchor, text }));
  });
  // Runs of published points: a band and a line each; a suppressed or
  // empty point breaks the run, so it shows as a gap.
  const runs = [];
  let run = [];
  pts.forEach((p, i) => {
    if (hasValue(p.value)) run.push(i);
    else {
      if (run.length) runs.push(run);
      run = [];
      root.append(svg("rect", { x: x(i) - 3, y: top, width: 6, height: height - top - bottom, fill: "#f3f5f8" }));
    }
  });
  if (run.length) runs.push(run);
  for (const r of runs) {
    const withBand = r.filter((i) => pts[i].value.lower !== null && pts[i].value.lower !== undefined);
    if (withBand.length) {
      const upper = withBand.map((i) => x(i) + "," + y(pts[i].value.upper));
      const lower = withBand.slice().reverse().map((i) => x(i) + "," + y(pts[i].value.lower));
      const points = withBand.length === 1
        ? [x(withBand[0]) - 4 + "," + y(pts[withBand[0]].value.upper), x(withBand[0]) + 4 + "," + y(pts[withBand[0]].value.upper),
          x(withBand[0]) + 4 + "," + y(pts[withBand[0]].value.lower), x(withBand[0]) - 4 + "," + y(pts[withBand[0]].value.lower)]
        : upper.concat(lower);
      root.append(svg("polygon", { points: points.join(" "), fill: "#0b4f8a", "fill-opacity": "0.15" }));
    }
    if (r.length > 1) {
      root.append(svg("polyline", { points: r.map((i) => x(i) + "," + y(pts[i].value.value)).join(" "),
        fill: "none", stroke: "#0b4f8a", "stroke-width": 2.5 }));
    }
    for (const i of r) {
      const p = pts[i];
      if (p.significant_change) {
        const before = i > 0 && hasValue(pts[i - 1].value) ? pts[i - 1].value.value : p.value.value;
        const better = (p.value.value > before) === higher;
        root.append(svg("rect", { x: x(i) - 6, y: y(p.value.value) - 6, width: 12, height: 12, fill: better ? "#1d6b36" : "#a3231a",
          transform: "rotate(45 " + x(i) + " " + y(p.value.value) + ")" }));
      } else {
        root.append(svg("circle", { cx: x(i), cy: y(p.value.value), r: 4, fill: "#0b4f8a" }));
      }
    }
  }
  if (standard && standard.target >= lo && standard.target <= hi) {
    const ty = y(standard.target);
    root.append(svg("line", { x1: left, x2: width - right, y1: ty, y2: ty, stroke: "#1d6b36", "stroke-width": 2, "stroke-dasharray": "6 4" }));
    root.append(svg("text", { x: width - right, y: ty - 6, "text-anchor": "end", class: "target", text: "target " + fmtNumber(standard.target, ind) }));
  }
  const item = (cls, text) => el("span", { class: "item" }, el("span", { class: "key " + cls, "aria-hidden": "true" }), text);
  const legend = el("p", { class: "legend" },
    item("band", "95% interval"),
    item("sig better", "significant change, better"),
    item("sig worse", "significant change, worse"),
    standard ? item("target", "target") : null,
    item("gap", "gap: suppressed or no data"));
  return el("figure", { class: "trend-figure" }, root, legend);
}

// ---- complaints ----

// How a clock reads to a person: overdue days, days left, or stopped.
function clockText(clock) {
  if (!clock || clock.allowed_days === undefined) return "—";
  if (clock.completed) return "done";
  if (clock.stopped) return "clock stopped";
  const over = clock.used_days - clock.allowed_days;
  if (clock.breached) return Math.max(over, 1) + " working day" + (Math.max(over, 1) === 1 ? "" : "s") + " overdue";
  if (clock.remaining_days === 0) return "due today";
  return clock.remaining_days + " working day" + (clock.remaining_days === 1 ? "" : "s") + " left";
}

function clockBadge(clock, overdue) {
  if (overdue) return badge(clockText(clock), "bad");
  if (clock && clock.stopped) return badge("clock stopped", "warn");
  return badge(clockText(clock), "good");
}

const STAGES = ["FRONTLINE", "INVESTIGATION", "INTERNAL_REVIEW", "EXTERNAL_REVIEW"];
const STATUSES = ["RECEIVED", "ACKNOWLEDGED", "IN_PROGRESS", "AWAITING_CLIENT", "RESOLVED", "CLOSED", "WITHDRAWN", "REOPENED"];

function pendingClock(c) {
  const ack = c.acknowledgement_clock;
  if (ack && !ack.completed) return ack;
  return c.response_clock;
}

async function renderComplaints(content) {
  const p = params();
  const filters = {
    officer: p.get("officer") || "", unit: p.get("unit") || "", category: p.get("category") || "",
    stage: p.get("stage") || "", status: p.get("status") || "open", overdue: p.get("overdue") || "",
  };
  const form = el("form", { class: "controls filters", id: "complaints-filter" });
  const text = (name, label) => {
    const input = el("input", { id: "f-" + name, name, type: "text", value: filters[name], autocomplete: "off" });
    return el("div", { class: "field" }, el("label", { for: "f-" + name, text: label }), input);
  };
  const stage = el("select", { id: "f-stage", name: "stage" }, el("option", { value: "", text: "Any stage" }),
    ...STAGES.map((s) => el("option", { value: s, text: sentence(s) })));
  stage.value = filters.stage;
  const status = el("select", { id: "f-status", name: "status" },
    el("option", { value: "open", text: "Open (any open status)" }), el("option", { value: "any", text: "Any status" }),
    ...STATUSES.map((s) => el("option", { value: s, text: sentence(s) })));
  status.value = filters.status;
  const overdue = el("select", { id: "f-overdue", name: "overdue" }, el("option", { value: "", text: "Overdue or not" }),
    el("option", { value: "true", text: "Overdue only" }), el("option", { value: "false", text: "Not overdue" }));
  overdue.value = filters.overdue;
  form.append(text("officer", "Officer"), text("unit", "Unit"), text("category", "Category"),
    el("div", { class: "field" }, el("label", { for: "f-stage", text: "Stage" }), stage),
    el("div", { class: "field" }, el("label", { for: "f-status", text: "Status" }), status),
    el("div", { class: "field" }, el("label", { for: "f-overdue", text: "Overdue" }), overdue),
    el("div", { class: "field" }, el("button", { type: "submit", text: "Filter" })));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const values = {};
    for (const [k, v] of new FormData(form).entries()) values[k] = String(v).trim();
    if (values.status === "open") delete values.status;
    location.hash = link("complaints", values);
  });
  content.append(form);
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  if (p.get("page_token")) q.set("page_token", p.get("page_token"));
  const r = await api("/api/complaints?" + q.toString());
  if (r.error) return showError(r.error);
  content.append(el("h2", { text: "Due first" }));
  if (!r.complaints.length) {
    content.append(el("p", { id: "no-complaints", text: "No complaint matches these filters." }));
    return;
  }
  const rows = r.complaints.map((c) => {
    const id = c.complaint.split("/").pop();
    const clock = c.clock || {};
    return [el("a", { href: link("complaint", { id }), text: id }), sentence(c.status), sentence(c.stage), sentence(c.severity),
      c.unit || "—", c.category || "—", c.officer || "unassigned", clock.due_date || "—", clockBadge(clock, c.overdue)];
  });
  content.append(table("Complaints matching the filters, due first (working days)",
    ["Complaint", "Status", "Stage", "Severity", "Unit", "Category", "Officer", "Due", "Clock"], rows));
  if (r.next_page_token) {
    const next = Object.fromEntries(q.entries());
    next.page_token = r.next_page_token;
    content.append(el("p", {}, el("a", { href: link("complaints", next), text: "Next page" })));
  }
}

// Which actions a complaint's status allows (the service decides; this
// only keeps the list short).
const ACTIONS = {
  acknowledge: { label: "Acknowledge", from: ["RECEIVED", "REOPENED"], done: "Acknowledged." },
  start: { label: "Start work", from: ["ACKNOWLEDGED", "REOPENED"], done: "Work started." },
  "await-client": { label: "Wait for the client (stops the clock)", from: ["IN_PROGRESS"], done: "Waiting for the client; the clock is stopped." },
  resume: { label: "Resume (the client answered)", from: ["AWAITING_CLIENT"], done: "Resumed; the clock runs again." },
  resolve: { label: "Resolve", from: ["RECEIVED", "ACKNOWLEDGED", "IN_PROGRESS", "REOPENED"], done: "Resolved." },
  escalate: { label: "Escalate to a later stage", from: ["RECEIVED", "ACKNOWLEDGED", "IN_PROGRESS", "AWAITING_CLIENT", "REOPENED", "RESOLVED"], done: "Escalated." },
  assign: { label: "Assign", from: ["RECEIVED", "ACKNOWLEDGED", "IN_PROGRESS", "AWAITING_CLIENT", "REOPENED", "RESOLVED"], done: "Assigned." },
};
const OUTCOMES = ["UPHELD", "PARTLY_UPHELD", "NOT_UPHELD", "RESOLVED_EARLY", "OUT_OF_JURISDICTION"];
const CHANNELS = ["PHONE", "EMAIL", "LETTER", "IN_PERSON", "WEB"];

async function renderComplaint(content, flash) {
  const id = params().get("id") || "";
  const r = await api("/api/complaints/" + encodeURIComponent(id));
  if (r.error) {
    content.append(el("p", {}, el("a", { href: link("complaints"), text: "Back to the queue" })));
    return showError(r.error);
  }
  const c = r.complaint;
  document.getElementById("title").textContent = "Complaint " + id;
  document.title = "Complaint " + id + " · Touchstone";
  content.append(el("p", {}, el("a", { href: link("complaints"), text: "Back to the queue" })));
  const status = el("div", { id: "action-status", role: "status", "aria-live": "polite", tabindex: "-1" });
  if (flash) status.append(el("p", { class: "notice" + (flash.error ? " error" : " done"), text: flash.text }));
  content.append(status);
  const who = c.complainant ? (c.complainant.client ? "Client " + c.complainant.client.split("/").pop()
    : c.complainant.anonymous ? "Anonymous" : "Contact details given (not a register client)") : "—";
  const clock = pendingClock(c);
  const facts = [
    ["Status", sentence(c.status)], ["Stage", sentence(c.stage)], ["Severity", sentence(c.severity)],
    ["Clock", clockText(clock) + (clock && clock.due_date ? " (due " + clock.due_date + ")" : "")],
    ["Received", (c.receive_time || "").replace("T", " ").replace(/\.\d+/, "")], ["Channel", sentence(c.channel)],
    ["Unit", c.unit || "—"], ["Service", c.service || "—"], ["Category", c.category || "—"],
    ["Officer", c.assignment.officer || "unassigned"], ["Complainant", who],
  ];
  if (c.senior_queue) facts.push(["Queue", "Senior officers"]);
  if (c.resolution) facts.push(["Outcome", sentence(c.resolution.outcome) + (c.resolution.summary ? ": " + c.resolution.summary : "")]);
  if (c.referral) facts.push(["Referred to", c.referral.body + (c.referral.reference ? " (" + c.referral.reference + ")" : "")]);
  const dl = el("dl", { class: "facts" });
  for (const [k, v] of facts) dl.append(el("div", {}, el("dt", { text: k }), el("dd", { text: v })));
  content.append(dl);
  if (c.overdue) content.append(el("p", {}, badge(clockText(clock), "bad")));
  content.append(el("h2", { text: "What the complainant said" }),
    el("p", { class: "narrative", text: c.redacted ? "(removed: the client was erased)" : c.description || "—" }));
  if (c.remedy_sought) content.append(el("p", {}, el("strong", { text: "Remedy sought: " }), c.remedy_sought));

  content.append(el("h2", { text: "Act on it" }));
  const allowed = Object.entries(ACTIONS).filter(([, a]) => a.from.includes(c.status));
  if (allowed.length) content.append(actionForm(id, c, allowed));
  else content.append(el("p", { text: "No action is open for a " + words(c.status) + " complaint." }));
  content.append(el("h2", { text: "Note a contact" }), contactForm(id, c));

  content.append(el("h2", { text: "Clocks" }));
  content.append(table("The complaint's clocks, in working days",
    ["Clock", "Allowed", "Used", "Due", "State"],
    [["Acknowledgement", c.acknowledgement_clock], ["Response", c.response_clock]].filter(([, k]) => k).map(([n, k]) =>
      [n, k.allowed_days, k.used_days, k.due_date || "—", clockText(k)]), [1, 2]));
  content.append(el("h2", { text: "History" }));
  content.append(table("Every step, oldest first", ["When", "Action", "By", "Status", "Stage", "Note"],
    r.history.map((h) => [(h.time || "").replace("T", " ").replace(/\.\d+/, ""), sentence(h.action), h.actor,
      h.from_status === h.to_status ? sentence(h.to_status) : sentence(h.from_status) + " → " + sentence(h.to_status),
      h.from_stage === h.to_stage ? sentence(h.to_stage) : sentence(h.from_stage) + " → " + sentence(h.to_stage), h.note || ""])));
  content.append(el("h2", { text: "Contacts" }));
  content.append(r.contacts.length ? table("Contacts with the complainant", ["When", "Channel", "Direction", "Officer", "Summary"],
    r.contacts.map((x) => [(x.contact_time || "").replace("T", " ").replace(/\.\d+/, ""), sentence(x.channel), sentence(x.direction), x.officer, x.summary]))
    : el("p", { text: "No contact noted yet." }));
  content.append(el("h2", { text: "Links" }));
  content.append(c.links.length ? el("ul", {}, ...c.links.map((l) => {
    const other = l.complaint.split("/").pop();
    return el("li", {}, words(l.kind) + ": ", el("a", { href: link("complaint", { id: other }), text: other }));
  })) : el("p", { text: "Not linked to another complaint." }));
}

// Sends an action, then shows the complaint as it now is with what
// happened. The request id is made once per form, so a retry after a lost
// answer is not done twice.
async function submitAction(id, path, body, done) {
  const r = await api("/api/complaints/" + encodeURIComponent(id) + "/" + path, body);
  let flash;
  if (r.error && r.error.code === "Aborted") {
    flash = { error: true, text: "Someone else changed this complaint after you opened it, so your change was not made. " +
      "Below is the complaint as it is now: check it, then try again." };
  } else if (r.error) {
    flash = { error: true, text: "Not done: " + errorText(r.error) };
  } else {
    flash = { error: false, text: done };
  }
  const content = document.getElementById("content");
  const fresh = el("div");
  await renderComplaint(fresh, flash);
  content.replaceChildren(...fresh.childNodes);
  const status = document.getElementById("action-status");
  if (status) status.focus();
}

function actionForm(id, c, allowed) {
  const form = el("form", { id: "action-form", class: "stack" });
  const requestId = uuid();
  const action = el("select", { id: "action", name: "action" },
    ...allowed.map(([k, a]) => el("option", { value: k, text: a.label })));
  const outcome = el("select", { id: "outcome", name: "outcome" }, ...OUTCOMES.map((o) => el("option", { value: o, text: sentence(o) })));
  const summary = el("input", { id: "summary", name: "summary", type: "text", autocomplete: "off" });
  const laterStages = STAGES.filter((s) => STAGES.indexOf(s) > STAGES.indexOf(c.stage));
  const stage = el("select", { id: "stage", name: "stage" }, ...laterStages.map((s) => el("option", { value: s, text: sentence(s) })));
  const unit = el("input", { id: "assign-unit", name: "unit", type: "text", value: c.assignment.unit || c.unit || "", autocomplete: "off" });
  const officer = el("input", { id: "assign-officer", name: "officer", type: "text", value: c.assignment.officer || "", autocomplete: "off" });
  const note = el("textarea", { id: "note", name: "note", rows: "3" });
  const extra = {
    resolve: el("div", { class: "stack" }, el("label", { for: "outcome", text: "Outcome" }), outcome,
      el("label", { for: "summary", text: "Summary of the resolution" }), summary),
    escalate: el("div", { class: "stack" }, el("label", { for: "stage", text: "To stage" }), stage),
    assign: el("div", { class: "stack" }, el("label", { for: "assign-unit", text: "Unit" }), unit,
      el("label", { for: "assign-officer", text: "Officer" }), officer),
  };
  const show = () => {
    for (const [k, node] of Object.entries(extra)) node.hidden = action.value !== k;
  };
  action.addEventListener("change", show);
  form.append(el("label", { for: "action", text: "Action" }), action, ...Object.values(extra),
    el("label", { for: "note", text: "Note (kept in the history)" }), note,
    el("p", {}, el("button", { type: "submit", id: "action-submit", text: "Apply" })));
  show();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const a = action.value;
    const body = { etag: c.etag, request_id: requestId, note: note.value.trim() };
    if (a === "resolve") Object.assign(body, { outcome: outcome.value, summary: summary.value.trim() });
    if (a === "escalate") body.stage = stage.value;
    if (a === "assign") Object.assign(body, { unit: unit.value.trim(), officer: officer.value.trim() });
    form.querySelector("button").disabled = true;
    await submitAction(id, a, body, ACTIONS[a].done);
  });
  return form;
}

function contactForm(id) {
  const form = el("form", { id: "contact-form", class: "stack" });
  const requestId = uuid();
  const channel = el("select", { id: "contact-channel", name: "channel" }, ...CHANNELS.map((x) => el("option", { value: x, text: sentence(x) })));
  const dir = el("select", { id: "contact-direction", name: "direction" },
    el("option", { value: "OUTBOUND", text: "We contacted them" }), el("option", { value: "INBOUND", text: "They contacted us" }));
  const summary = el("textarea", { id: "contact-summary", name: "summary", rows: "2" });
  form.append(el("label", { for: "contact-channel", text: "Channel" }), channel,
    el("label", { for: "contact-direction", text: "Who made contact" }), dir,
    el("label", { for: "contact-summary", text: "What was said" }), summary,
    el("p", {}, el("button", { type: "submit", id: "contact-submit", text: "Note the contact" })));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    form.querySelector("button").disabled = true;
    await submitAction(id, "contact", { request_id: requestId, channel: channel.value, direction: dir.value,
      note: summary.value.trim() }, "Contact noted.");
  });
  return form;
}

// ---- follow-ups ----

const FOLLOW_UP_STATUSES = ["OPEN", "CONTACTED", "RESOLVED", "NO_ACTION"];

async function renderFollowUps(content, flash) {
  const p = params();
  const which = p.get("status") || "open";
  const form = el("form", { class: "controls", id: "follow-ups-filter" });
  const status = el("select", { id: "fu-status", name: "status" },
    el("option", { value: "open", text: "Open or contacted" }), el("option", { value: "any", text: "Any status" }),
    ...FOLLOW_UP_STATUSES.map((s) => el("option", { value: s, text: sentence(s) })));
  status.value = which;
  form.append(el("label", { for: "fu-status", text: "Status" }), status, el("button", { type: "submit", text: "Show" }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = link("follow-ups", { status: status.value === "open" ? "" : status.value });
  });
  content.append(form);
  const live = el("div", { id: "follow-up-status", role: "status", "aria-live": "polite", tabindex: "-1" });
  if (flash) live.append(el("p", { class: "notice" + (flash.error ? " error" : " done"), text: flash.text }));
  content.append(live);
  const r = await api("/api/follow-ups?status=" + encodeURIComponent(which));
  if (r.error) return showError(r.error);
  if (!r.follow_ups.length) {
    content.append(el("p", { id: "no-follow-ups", text: "No follow-up with this status." }));
    return;
  }
  const today = new Date().toISOString().slice(0, 10);
  const list = el("ul", { class: "follow-ups" });
  for (const f of r.follow_ups) {
    const id = f.name.split("/").pop();
    const late = f.due_date && f.due_date < today && (f.status === "OPEN" || f.status === "CONTACTED");
    const item = el("li", { class: "card" },
      el("h3", { text: "Follow-up " + id }),
      el("p", {}, late ? badge("past due " + f.due_date, "bad") : badge("due " + (f.due_date || "—"), "good"), " ",
        sentence(f.status) + (f.assignee ? ", with " + f.assignee : ", unassigned")),
      el("p", { class: "small", text: "Why: " + f.reason + (f.unit ? " · unit " + f.unit : "") + " · " + sentence(f.channel) }));
    item.append(followUpForm(id, f));
    list.append(item);
  }
  content.append(list);
}

function followUpForm(id, f) {
  const form = el("form", { class: "inline", "aria-label": "Update follow-up " + id });
  const requestId = uuid();
  const status = el("select", { id: "fu-" + id + "-status", name: "status" },
    ...FOLLOW_UP_STATUSES.map((s) => el("option", { value: s, text: sentence(s) })));
  status.value = f.status;
  const assignee = el("input", { id: "fu-" + id + "-assignee", name: "assignee", type: "text", value: f.assignee || "", autocomplete: "off" });
  const due = el("input", { id: "fu-" + id + "-due", name: "due_date", type: "date", value: f.due_date || "" });
  form.append(
    el("div", { class: "field" }, el("label", { for: status.id, text: "Status" }), status),
    el("div", { class: "field" }, el("label", { for: assignee.id, text: "Assignee" }), assignee),
    el("div", { class: "field" }, el("label", { for: due.id, text: "Due" }), due),
    el("div", { class: "field" }, el("button", { type: "submit", text: "Save" })));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { etag: f.etag, request_id: requestId };
    if (status.value !== f.status) body.status = status.value;
    if (assignee.value.trim() !== (f.assignee || "")) body.assignee = assignee.value.trim();
    if (due.value && due.value !== f.due_date) body.due_date = due.value;
    const r = await api("/api/follow-ups/" + encodeURIComponent(id), body);
    const flash = r.error && r.error.code === "Aborted"
      ? { error: true, text: "Someone else changed follow-up " + id + " after you opened it, so your change was not made. The list now shows it as it is." }
      : r.error ? { error: true, text: "Not saved: " + errorText(r.error) } : { error: false, text: "Follow-up " + id + " saved." };
    const content = document.getElementById("content");
    const fresh = el("div");
    await renderFollowUps(fresh, flash);
    content.replaceChildren(...fresh.childNodes);
    const live = document.getElementById("follow-up-status");
    if (live) live.focus();
  });
  return form;
}

// ---- feedback, charter, equity, benchmark ----

function topicsTable(topics) {
  const max = Math.max(1, ...topics.map((t) => t.responses));
  return table("Comment topics by number of responses", ["Topic", "Responses", "Mean sentiment"],
    topics.map((t) => {
      const bar = el("span", { class: "bar", "aria-hidden": "true" });
      bar.style.width = Math.round(8 * t.responses / max) + "rem";
      const count = el("span", {}, bar, String(t.responses));
      return [sentence(t.topic), count, t.mean_sentiment.toFixed(2)];
    }), [1, 2]);
}

async function renderFeedback(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  if (isEmptyAgency(d)) {
    content.append(emptyAgencyNote(d.agency));
    return;
  }
  const f = d.feedback || {};
  content.append(el("div", { class: "cards" },
    card("Satisfied (A-11)", fmtValue(f.satisfaction, "share_satisfied"), fmtInterval(f.satisfaction, "share_satisfied"),
      link("trend", { indicator: "share_satisfied.a11_satisfaction" })),
    card("Net Promoter Score", fmtValue(f.nps, "nps"), fmtInterval(f.nps, "nps"), link("trend", { indicator: "nps" })),
    card("Response rate", fmtValue(f.response_rate, "response_rate"),
      f.response_rate && f.response_rate.denominator ? f.response_rate.numerator + " of " + f.response_rate.denominator + " offered" : null),
    card("Follow-ups open", String(f.follow_ups_open || 0), (f.follow_ups_overdue || 0) + " past due", link("follow-ups"))));
  content.append(el("h2", { text: "Comment topics" }));
  content.append(d.topics.length ? topicsTable(d.topics) : el("p", { text: "No tagged comments in this period." }));
}

function charterTable(d) {
  if (!d.headlines.length) return el("p", { text: "No published standards for this period." });
  const rows = d.headlines.map((h) => {
    const ind = h.standard.indicator;
    const verdict = h.verdict === "MET" ? badge("met", "good")
      : h.verdict === "NOT_MET" ? badge("not met", "bad") : badge("insufficient data", "muted");
    const lower = h.standard.comparator === "AT_MOST";
    const cmp = lower ? "at most " : "at least ";
    const change = direction(h.trend, !lower);
    const trend = change === "—" ? "—" : change + (h.significant_change ? " (significant)" : "");
    const name = el("a", { href: link("trend", { indicator: ind }), text: h.standard.display_name });
    return [name, cmp + fmtNumber(h.standard.target, ind), fmtValue(h.value, ind),
      fmtInterval(h.value, ind), h.value && !h.value.suppressed ? h.value.n : "", verdict, fmtValue(h.previous, ind), trend];
  });
  return table("Published standards against their targets; each links to its trend",
    ["Standard", "Target", "Value", "95% interval", "n", "Verdict", "Previous period", "Against the period before"], rows, [4]);
}

async function renderCharter(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  if (isEmptyAgency(d)) {
    content.append(emptyAgencyNote(d.agency));
    return;
  }
  content.append(el("p", { class: "muted", text: "The charter for " + d.period + ": every published standard with its value over the period, against the period before. Open a standard for its monthly trend." }));
  content.append(charterTable(d));
}

// Segments that are findings: people who did not say are not a group, so
// they are left out here and shown apart; the largest gap comes first.
function equityGaps(equity) {
  return equity.filter((g) => g.segment !== "UNKNOWN")
    .sort((a, b) => Math.abs(b.gap || 0) - Math.abs(a.gap || 0));
}

function gapCell(g) {
  if (g.gap === null || g.gap === undefined) return "—";
  const points = Math.abs(100 * g.gap).toFixed(1) + " points";
  // Satisfaction: a group below everyone else is a gap against it.
  if (Math.abs(g.gap) < 0.0005) return "level with everyone else";
  const against = g.gap < 0;
  const text = points + (against ? " below everyone else" : " above everyone else");
  return g.significant ? badge(text + (against ? " (against this group)" : " (in this group's favour)"), against ? "bad" : "good") : text;
}

function equityTable(gaps, caption, minCount, withDimension) {
  const headers = (withDimension ? ["Characteristic"] : []).concat(["Group", "Share satisfied", "95% interval", "n", "Gap to everyone else", "Significant"]);
  return table(caption, headers, gaps.map((g) => {
    const hidden = !!(g.value && g.value.suppressed);
    const value = hidden ? "hidden (under " + (minCount || 10) + " responses, or to protect another group)"
      : fmtValue(g.value, "share_satisfied");
    return (withDimension ? [dimensionLabel(g.dimension)] : []).concat([segmentLabel(g.dimension, g.segment), value,
      fmtInterval(g.value, "share_satisfied"), hidden ? "" : g.value ? g.value.n : "",
      gapCell(g), hidden ? "—" : g.significant ? "yes, at the 95% level" : "no (could be chance)"]);
  }), withDimension ? [4] : [3]);
}

async function renderEquity(content) {
  const d = await loadDashboard();
  if (d.error) return showError(d.error);
  partialNotices(d);
  if (isEmptyAgency(d)) {
    content.append(emptyAgencyNote(d.agency));
    return;
  }
  if (!d.equity.length) {
    content.append(el("p", { text: "No group data for this period (characteristics are kept only with consent to statistics)." }));
    return;
  }
  content.append(el("p", { class: "muted", text: "Share of respondents satisfied (A-11), each group against everyone else, " + d.period +
    ". Groups are ordered by the size of their gap; a significant gap below everyone else is a gap against that group." }));
  const dims = [...new Set(d.equity.map((g) => g.dimension))];
  for (const dim of dims) {
    const all = d.equity.filter((g) => g.dimension === dim);
    content.append(el("h2", { text: dimensionLabel(dim) }));
    content.append(equityTable(equityGaps(all), "Share satisfied by " + dimensionLabel(dim).toLowerCase() + ", largest gap first", d.min_count, false));
    const unknown = all.find((g) => g.segment === "UNKNOWN");
    if (unknown) {
      content.append(el("p", { class: "small muted", text: "Did not say (not a group, not compared): " +
        (unknown.value && unknown.value.suppressed ? "hidden, too few responses" : fmtValue(unknown.value, "share_satisfied") +
          (unknown.value && unknown.value.n ? " of " + unknown.value.n + " responses" : "")) + "." }));
    }
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
  const p = params();
  const form = el("form", { class: "controls", id: "benchmark-form" });
  const group = el("select", { id: "bm-group", name: "peer_group" },
    ...groups.peer_groups.map((g) => el("option", { value: g.name, text: g.display_name })));
  if (p.get("peer_group")) group.value = p.get("peer_group");
  if (!group.value) group.value = groups.peer_groups[0].name;
  const indicator = indicatorPicker("bm-indicator", catalogue.indicators, p.get("indicator") || "share_satisfied.a11_satisfaction");
  const periodInput = el("input", { id: "bm-period", name: "period", type: "text", placeholder: "2026-Q3", value: period() });
  form.append(el("label", { for: "bm-group", text: "Peer group" }), group,
    el("label", { for: "bm-indicator", text: "Indicator" }), indicator,
    el("label", { for: "bm-period", text: "Period" }), periodInput,
    el("button", { type: "submit", text: "Compare" }));
  const out = el("div", { id: "benchmark-result", "aria-live": "polite" });
  content.append(form, out);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = link("benchmark", { peer_group: group.value, indicator: indicator.value, period: periodInput.value.trim() });
  });
  out.append(el("p", { text: "Loading…" }));
  const q = "/api/benchmark?peer_group=" + encodeURIComponent(group.value) + "&indicator=" +
    encodeURIComponent(indicator.value) + "&period=" + encodeURIComponent(periodInput.value.trim());
  const b = await api(q);
  out.replaceChildren();
  if (b.error) {
    out.append(el("p", { class: "notice error", text: errorText(b.error) }));
    return;
  }
  drawBenchmark(out, b);
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
    const vs = e.versus_median === "ABOVE" ? badge(b.higher_is_better ? "better than the median" : "worse than the median", b.higher_is_better ? "good" : "bad")
      : e.versus_median === "BELOW" ? badge(b.higher_is_better ? "worse than the median" : "better than the median", b.higher_is_better ? "bad" : "good")
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

// ---- sign-in ----

async function renderSignIn(content) {
  const form = el("form", { id: "signin-form" });
  const area = el("textarea", { id: "token", name: "token", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "token-help" });
  form.append(
    el("p", { id: "token-help", text: "Development sign-in: paste the token that `touchstone up` prints (the line `export TOKEN=…`), or one from `touchstone token --agency A --role analyst`. It is kept in this browser tab only (sessionStorage)." }),
    el("label", { for: "token", text: "Token" }), area,
    el("p", {}, el("button", { type: "submit", text: "Sign in" }), " ",
      el("button", { type: "button", class: "secondary", id: "signout", text: "Sign out" })));
  const status = el("div", { id: "signin-status", role: "status" });
  const signOut = form.querySelector("#signout");
  content.append(form, status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, area.value.trim().replace(/^(export\s+TOKEN=)?(Bearer\s+)?/i, ""));
    dashboardCache = { key: "", data: null };
    const me = await whoAmI();
    if (!me) {
      status.replaceChildren(el("p", { class: "notice error", text: "That token was not accepted: it may have expired, or come from another hub's key." }));
      return;
    }
    // An agency with no data yet says so here, rather than showing a
    // dashboard of suppressed figures.
    const d = await loadDashboard();
    if (!d.error && isEmptyAgency(d)) {
      status.replaceChildren(el("p", { text: "Signed in as " + me + "." }), emptyAgencyNote(d.agency),
        el("p", {}, el("a", { href: link("overview"), text: "Go to the overview anyway" })));
      status.focus();
      return;
    }
    status.replaceChildren(el("p", { text: "Signed in as " + me }));
    location.hash = link("overview");
  });
  status.setAttribute("tabindex", "-1");
  signOut.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    dashboardCache = { key: "", data: null };
    whoAmI();
    status.replaceChildren(el("p", { text: "Signed out." }));
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

// Each navigation counts; a page that finishes loading after the reader
// has moved on is dropped rather than drawn over the newer one.
let navigation = 0;

async function route() {
  const mine = ++navigation;
  let page = pageName();
  if (!PAGES[page]) page = token() ? "overview" : "signin";
  const spec = PAGES[page];
  document.title = spec.title + " · Touchstone";
  document.getElementById("title").textContent = spec.title;
  const current = spec.nav || page;
  for (const a of document.querySelectorAll("nav a")) {
    // The period travels with the pages that use it.
    const target = a.dataset.page;
    a.setAttribute("href", PAGES[target] && PAGES[target].period ? link(target, { period: period() }) : link(target));
    if (target === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const form = document.getElementById("period-form");
  form.hidden = !spec.period;
  document.getElementById("period").value = period();
  document.getElementById("notices").replaceChildren();
  const content = document.getElementById("content");
  content.replaceChildren(el("p", { text: "Loading…" }));
  const fresh = el("div");
  try {
    await spec.render(fresh);
  } catch (e) {
    fresh.append(el("p", { class: "notice error", text: "This page could not be shown." }));
  }
  if (mine !== navigation) return;
  content.replaceChildren(...fresh.childNodes);
  document.getElementById("main").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("period-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const values = Object.fromEntries(params().entries());
    values.period = document.getElementById("period").value.trim();
    dashboardCache = { key: "", data: null };
    location.hash = link(pageName() || "overview", values);
  });
  window.addEventListener("hashchange", route);
  whoAmI();
  route();
});
