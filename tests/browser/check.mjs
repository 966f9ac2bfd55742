// Drives Debian's chromium (headless, through playwright-core) over every
// page of the Touchstone web dashboard: signs in with a development token
// through the sign-in form, opens each page, checks that it shows the demo
// hub's data and that nothing went wrong (no console error, no uncaught
// exception, no failed API call, no error notice), runs axe-core on it
// (WCAG 2.2 AA: zero violations), checks it fits a 390 px wide phone
// without sideways scrolling, and saves a screenshot of each page at both
// widths. Then it works a complaint with the keyboard only (acknowledge,
// start, wait for the client, resume, note a contact), provokes a stale
// etag, updates a follow-up, and signs in with a token for an agency that
// has no data.
//
// Usage: node check.mjs URL TOKEN EMPTY_AGENCY_TOKEN OUT_DIR
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const [url, token, emptyToken, out] = process.argv.slice(2);
if (!url || !token || !emptyToken || !out) {
  console.error("usage: node check.mjs URL TOKEN EMPTY_AGENCY_TOKEN OUT_DIR");
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const WCAG22AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"];

const TITLES = {
  overview: "Agency overview", complaints: "Complaints queue", complaint: "Complaint", "follow-ups": "Follow-ups",
  feedback: "Feedback and topics", charter: "Charter report", equity: "Equity", benchmark: "Benchmark", trend: "Trend",
};

// What each page must show once the demo hub is loaded (the passports agency).
const PAGES = [
  {
    page: "overview",
    ready: "#content .cards",
    expect: async (p) => {
      await has(p, "Open complaints");
      await has(p, "Standards met");
      await has(p, "Complaints acknowledged within 2 working days");
      await rows(p, "#content table", 6);
      await hasNot(p, /\bUNKNOWN\b|AGE_BAND|ANSWER_/);
    },
  },
  {
    page: "trend",
    hash: "trend?indicator=share_satisfied.a11_satisfaction",
    ready: "#content svg.trend",
    expect: async (p) => {
      await has(p, "Higher is better");
      await has(p, "Standard: at least");
      // The table toggle is the chart's text alternative.
      const hidden = await p.locator("#trend-table").isHidden();
      if (!hidden) throw new Error("the trend table should start hidden");
      await p.locator("#trend-table-toggle").focus();
      await p.keyboard.press("Enter");
      await p.locator("#trend-table table").waitFor({ timeout: 5_000 });
      if ((await p.locator("#trend-table-toggle").getAttribute("aria-expanded")) !== "true") {
        throw new Error("the table toggle does not say it is expanded");
      }
      await rows(p, "#trend-table table", 12);
    },
  },
  {
    page: "trend-lower",
    hash: "trend?indicator=days_to_resolve_p90&granularity=quarter",
    ready: "#trend-summary",
    expect: async (p) => {
      await has(p, "Lower is better");
      if ((await p.locator("#trend-granularity").inputValue()) !== "quarter") throw new Error("granularity not taken from the URL");
    },
  },
  {
    page: "complaints",
    hash: "complaints?stage=FRONTLINE",
    ready: "#content table",
    expect: async (p) => {
      await has(p, "Due first");
      await rows(p, "#content table", 1);
      if ((await p.locator("#f-stage").inputValue()) !== "FRONTLINE") throw new Error("stage filter not taken from the URL");
      await hasNot(p, /\b0 days left\b/);
    },
  },
  {
    page: "follow-ups",
    ready: "#content .follow-ups, #no-follow-ups",
    expect: async (p) => {
      await has(p, "Status");
    },
  },
  {
    page: "feedback",
    ready: "#content .cards",
    expect: async (p) => {
      await has(p, "Satisfied (A-11)");
      await has(p, "Comment topics");
      await rows(p, "#content table", 1);
    },
  },
  {
    page: "charter",
    ready: "#content table",
    expect: async (p) => {
      await has(p, "Net Promoter Score of at least 20");
      await rows(p, "#content table", 6);
      await hasNot(p, /\b(up|down)\b/);
    },
  },
  {
    page: "equity",
    ready: "#content table",
    expect: async (p) => {
      await rows(p, "#content table", 2);
      await hasNot(p, /\bUNKNOWN\b|AGE_BAND|ANSWER_|GENDER_/);
      await has(p, "Age");
    },
  },
  {
    page: "benchmark",
    ready: "#benchmark-result table",
    expect: async (p) => {
      await has(p, "Passports Office");
      await has(p, "Peer median");
      await p.locator("#benchmark-result svg.chart").waitFor({ timeout: 10_000 });
      await rows(p, "#benchmark-result table", 3);
      if (!(await p.locator("#bm-indicator optgroup").count())) throw new Error("the indicator picker is not grouped");
    },
  },
];

async function has(p, text) {
  const content = await p.locator("main").innerText();
  if (!content.includes(text)) throw new Error(`expected to see ${JSON.stringify(text)}`);
}

async function hasNot(p, re) {
  const content = await p.locator("main").innerText();
  const m = content.match(re);
  if (m) throw new Error(`did not expect to see ${JSON.stringify(m[0])}`);
}

async function rows(p, selector, atLeast) {
  const n = await p.locator(`${selector} >> tbody tr`).count();
  if (n < atLeast) throw new Error(`expected at least ${atLeast} rows in ${selector}, found ${n}`);
}

// Basic accessibility of what is on screen: one h1, every visible form
// control labelled, every table captioned, charts described; and a skip
// link first in the tab order.
async function accessibility(p) {
  const found = await p.evaluate(() => {
    const out = [];
    const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
    if (document.querySelectorAll("h1").length !== 1) out.push("not exactly one h1");
    for (const c of document.querySelectorAll("input, select, textarea")) {
      if (!visible(c) || c.type === "hidden") continue;
      if (!(c.labels && c.labels.length) && !c.getAttribute("aria-label")) {
        out.push(`unlabelled ${c.tagName.toLowerCase()}#${c.id || "?"}`);
      }
    }
    for (const t of document.querySelectorAll("main table")) {
      if (!t.querySelector("caption")) out.push("table without a caption");
    }
    for (const g of document.querySelectorAll("main svg")) {
      if (!g.getAttribute("aria-label") && !g.querySelector("title")) out.push("chart without a description");
    }
    return out;
  });
  // The skip link comes first in the tab order, and the keyboard reaches it.
  const first = await p.evaluate(() => {
    const focusable = document.querySelectorAll(
      'a[href], button, input, select, textarea, [tabindex]:not([tabindex="-1"])');
    return focusable.length ? focusable[0].className : "";
  });
  if (first !== "skip") found.push(`the first focusable element is ".${first}", not the skip link`);
  await p.locator("a.skip").focus();
  if (!(await p.locator("a.skip").isVisible())) found.push("the skip link does not show when focused");
  await p.locator("a.skip").blur();
  return found;
}

// axe-core over the whole page at WCAG 2.2 AA. It is evaluated through the
// DevTools protocol, which the page's Content-Security-Policy does not
// govern, so the page under test keeps its real policy.
async function axe(p) {
  if (!(await p.evaluate(() => typeof window.axe === "object"))) await p.evaluate(AXE);
  const result = await p.evaluate((tags) => window.axe.run(document, { runOnly: { type: "tag", values: tags } }), WCAG22AA);
  return result.violations.map((v) =>
    `axe ${v.id} (${v.impact}): ${v.help}; ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`);
}

// No sideways scrolling of the page itself at the current width.
async function fits(p) {
  const [scroll, width] = await p.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
  return scroll > width ? [`the page scrolls sideways (${scroll} px of content in ${width} px)`] : [];
}

async function open(p, hash, title, ready) {
  await p.goto(`${url}/#/${hash}`);
  await p.waitForFunction((t) => document.title.startsWith(t), title, { timeout: 10_000 });
  await p.locator(ready).first().waitFor({ timeout: 30_000 });
  await p.waitForLoadState("networkidle");
}

async function checkPage(page, name, problems) {
  const errors = await page.locator("main .notice.error").allInnerTexts();
  for (const e of errors) problems.push(`error notice: ${e}`);
  for (const a of await accessibility(page)) problems.push(`accessibility: ${a}`);
  for (const v of await axe(page)) problems.push(v);
}

// Tabs forward until the element matching `selector` has the focus; the
// keyboard is the only way there.
async function tabTo(p, selector, max = 80) {
  for (let i = 0; i < max; i++) {
    await p.keyboard.press("Tab");
    if (await p.evaluate((s) => document.activeElement && document.activeElement.matches(s), selector)) return;
  }
  throw new Error(`the keyboard did not reach ${selector} in ${max} tabs`);
}

// Chooses an option of the focused select by keyboard: Home, then Down
// until its value is `value`.
async function chooseByKeyboard(p, value) {
  await p.keyboard.press("Home");
  for (let i = 0; i < 12; i++) {
    if ((await p.evaluate(() => document.activeElement.value)) === value) return;
    await p.keyboard.press("ArrowDown");
  }
  throw new Error(`could not choose ${value} with the keyboard`);
}

async function complaintStatus(p) {
  const dl = await p.locator(".facts").innerText();
  return (dl.match(/Status\s*\n?\s*([A-Za-z ]+)\n/) || [])[1] || dl;
}

// Works one complaint from the keyboard alone.
async function keyboardWalk(p, problems) {
  await open(p, "complaints?status=RECEIVED", "Complaints queue", "#content table, #no-complaints");
  const first = p.locator("#content table tbody tr a").first();
  if (!(await first.count())) throw new Error("no received complaint to work on");
  const id = (await first.innerText()).trim();
  // Reach the complaint's link by keyboard and follow it.
  await tabTo(p, `#content table a[href$="id=${id}"]`, 200);
  await p.keyboard.press("Enter");
  await p.waitForFunction((i) => document.title.startsWith("Complaint " + i), id, { timeout: 10_000 });
  await p.locator("#action").waitFor({ timeout: 10_000 });
  for (const v of await axe(p)) problems.push("complaint page: " + v);
  await p.screenshot({ path: join(out, "complaint.png"), fullPage: true });

  const steps = [
    ["acknowledge", "Acknowledged"],
    ["start", "In progress"],
    ["await-client", "Awaiting client"],
    ["resume", "In progress"],
  ];
  for (const [action, status] of steps) {
    await tabTo(p, "#action");
    await chooseByKeyboard(p, action);
    await tabTo(p, "#note");
    await p.keyboard.type(`keyboard walk: ${action}`);
    await tabTo(p, "#action-submit");
    await p.keyboard.press("Enter");
    await p.waitForFunction((s) => (document.querySelector(".facts")?.innerText || "").includes(s) &&
      document.querySelector("#action-status .notice.done"), status, { timeout: 10_000 });
    // The outcome is announced and takes the focus.
    if (!(await p.evaluate(() => document.activeElement?.id === "action-status"))) {
      problems.push(`after ${action}, the focus is not on the outcome message`);
    }
  }
  await tabTo(p, "#contact-channel");
  await chooseByKeyboard(p, "PHONE");
  await tabTo(p, "#contact-summary");
  await p.keyboard.type("Called back, left a message");
  await tabTo(p, "#contact-submit");
  await p.keyboard.press("Enter");
  await p.waitForFunction(() => (document.querySelector("#action-status")?.innerText || "").includes("Contact noted"), null, { timeout: 10_000 });
  await has(p, "Called back, left a message");
  await p.screenshot({ path: join(out, "complaint-worked.png"), fullPage: true });

  // Someone else changes it meanwhile: the page's etag is now stale.
  const current = await p.evaluate(async (i) => {
    const r = await fetch("/api/complaints/" + i, { headers: { Authorization: "Bearer " + sessionStorage.getItem("touchstone.token") } });
    return r.json();
  }, id);
  const other = await p.evaluate(async ([i, etag]) => {
    const r = await fetch("/api/complaints/" + i + "/await-client", {
      method: "POST",
      headers: { Authorization: "Bearer " + sessionStorage.getItem("touchstone.token"), "Content-Type": "application/json" },
      body: JSON.stringify({ etag, request_id: crypto.randomUUID(), note: "someone else" }),
    });
    return r.status;
  }, [id, current.complaint.etag]);
  if (other !== 200) problems.push(`the other officer's change answered ${other}`);
  await tabTo(p, "#action");
  await chooseByKeyboard(p, "escalate");
  await tabTo(p, "#action-submit");
  await p.keyboard.press("Enter");
  await p.waitForFunction(() => (document.querySelector("#action-status")?.innerText || "").includes("Someone else changed this complaint"),
    null, { timeout: 10_000 });
  if (!(await complaintStatus(p)).includes("Awaiting client")) problems.push("after a stale etag the page does not show the latest version");
  await p.screenshot({ path: join(out, "complaint-stale.png"), fullPage: true });
}

async function followUpUpdate(p, problems) {
  await open(p, "follow-ups", "Follow-ups", "#content .follow-ups, #no-follow-ups");
  const form = p.locator(".follow-ups form").first();
  if (!(await form.count())) {
    problems.push("no open follow-up in the demo hub to update");
    return;
  }
  await form.locator("select").selectOption("CONTACTED");
  await form.locator("input[name=assignee]").fill("browser-test");
  await form.locator("button").click();
  await p.waitForFunction(() => (document.querySelector("#follow-up-status")?.innerText || "").includes("saved"), null, { timeout: 10_000 });
  for (const v of await axe(p)) problems.push("follow-ups: " + v);
  await p.screenshot({ path: join(out, "follow-ups-updated.png"), fullPage: true });
}

async function signIn(p, t, expectAgency) {
  await p.goto(`${url}/#/signin`);
  await p.locator("#token").fill(t);
  await p.locator("#signin-form button[type=submit]").click();
  await p.waitForFunction((a) => (document.querySelector("#who")?.textContent || "").includes(`(${a})`), expectAgency, { timeout: 15_000 });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const results = [];
let failed = 0;
function record(page, problems, screenshot) {
  results.push({ page, ok: !problems.length, screenshot, problems });
  if (problems.length) failed++;
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  let problems = [];
  // A stale etag answers 409 on purpose, in the walk below (and the
  // browser logs it as a console error too): only that one is expected.
  const action = /\/api\/complaints\/[^/]+\/[a-z-]+$/;
  const stale = (text, where) => text.includes("409") && action.test(where || "");
  page.on("console", (m) => {
    if (m.type() === "error" && !stale(m.text(), m.location().url)) problems.push(`console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`uncaught exception: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  page.on("response", (r) => {
    if (r.status() >= 400 && !(r.status() === 409 && action.test(r.url()))) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });

  // Sign in through the form, as a person would.
  try {
    await page.goto(`${url}/#/signin`);
    for (const v of await axe(page)) problems.push(v);
    await page.locator("#token").fill(token);
    await page.locator("#signin-form button[type=submit]").click();
    // Signed in, the header names the caller and the page moves to the overview.
    await page.waitForFunction(
      () => (document.querySelector("#who")?.textContent || "").includes("(passports)") &&
        location.hash.startsWith("#/overview"),
      null,
      { timeout: 15_000 },
    );
  } catch (e) {
    const status = await page.locator("#who").innerText().catch(() => "");
    problems.push(`sign-in: ${String(e.message || e).split("\n")[0]} (status: ${JSON.stringify(status)})`);
  }
  let shot = join(out, "signin.png");
  await page.screenshot({ path: shot, fullPage: true });
  record("signin", problems, shot);

  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: width === 390 ? 844 : 900 });
    for (const spec of PAGES) {
      problems = [];
      const name = spec.page + (width === 390 ? "-390" : "");
      shot = join(out, `${name}.png`);
      try {
        const hash = spec.hash || spec.page;
        await open(page, hash, TITLES[hash.split("?")[0]], spec.ready);
        await checkPage(page, name, problems);
        for (const f of await fits(page)) problems.push(f);
        await spec.expect(page);
      } catch (e) {
        problems.push(String(e.message || e).split("\n")[0]);
      }
      await page.screenshot({ path: shot, fullPage: true });
      record(name, problems, shot);
    }
  }
  await page.setViewportSize({ width: 1280, height: 900 });

  // The period and filters are in the URL: a reload keeps them.
  problems = [];
  try {
    await open(page, "overview?period=2026-Q2", "Agency overview", "#content .cards");
    await page.reload();
    await page.locator("#content .cards").waitFor({ timeout: 30_000 });
    if ((await page.locator("#period").inputValue()) !== "2026-Q2") problems.push("the period did not survive a reload");
    await has(page, "2026-Q2");
    await open(page, "complaints", "Complaints queue", "#content table, #no-complaints");
    await page.locator("#f-unit").fill("no-such-unit");
    await page.locator("#complaints-filter button[type=submit]").click();
    await page.waitForFunction(() => location.hash.includes("unit=no-such-unit"), null, { timeout: 5_000 });
    await page.locator("text=No complaint matches these filters.").waitFor({ timeout: 10_000 });
  } catch (e) {
    problems.push(String(e.message || e).split("\n")[0]);
  }
  record("url-state", problems, null);

  problems = [];
  try {
    await keyboardWalk(page, problems);
  } catch (e) {
    problems.push(String(e.message || e).split("\n")[0]);
    await page.screenshot({ path: join(out, "complaint-failed.png"), fullPage: true });
  }
  record("complaint-keyboard-walk", problems, join(out, "complaint-worked.png"));

  problems = [];
  try {
    await followUpUpdate(page, problems);
  } catch (e) {
    problems.push(String(e.message || e).split("\n")[0]);
  }
  record("follow-up-update", problems, join(out, "follow-ups-updated.png"));

  // A token for an agency with no data (as `up` without --demo prints):
  // the sign-in says so and no "suppressed" card shows.
  problems = [];
  shot = join(out, "signin-no-data.png");
  try {
    await signIn(page, emptyToken, "demo");
    await page.locator("#no-data").waitFor({ timeout: 10_000 });
    await has(page, "has no data yet");
    for (const v of await axe(page)) problems.push(v);
    await page.screenshot({ path: shot, fullPage: true });
    await open(page, "overview", "Agency overview", "#no-data");
    await hasNot(page, /suppressed/);
    await page.screenshot({ path: join(out, "overview-no-data.png"), fullPage: true });
  } catch (e) {
    problems.push(String(e.message || e).split("\n")[0]);
  }
  record("signin-no-data", problems, shot);
} finally {
  await browser.close();
}

writeFileSync(join(out, "results.json"), JSON.stringify(results, null, 2));
for (const r of results) {
  console.log(`${r.ok ? "ok  " : "FAIL"} ${r.page}${r.screenshot ? "  " + r.screenshot : ""}`);
  for (const p of r.problems) console.log(`       ${p}`);
}
console.log(failed ? `${failed} check(s) failed` : `all ${results.length} checks passed`);
process.exit(failed ? 1 : 0);
