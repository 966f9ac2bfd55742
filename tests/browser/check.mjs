// Drives Debian's chromium (headless, through playwright-core) over every
// page of the Touchstone web dashboard: signs in with a development token
// through the sign-in form, opens each page, checks that it shows the demo
// hub's data and that nothing went wrong (no console error, no uncaught
// exception, no failed API call, no error notice), and saves a screenshot
// of each page.
//
// Usage: node check.mjs URL TOKEN OUT_DIR
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const [url, token, out] = process.argv.slice(2);
if (!url || !token || !out) {
  console.error("usage: node check.mjs URL TOKEN OUT_DIR");
  process.exit(2);
}
mkdirSync(out, { recursive: true });

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
    },
  },
  {
    page: "complaints",
    ready: "#content table",
    expect: async (p) => {
      await has(p, "Due first");
      await rows(p, "#content table >> nth=1", 1);
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
    },
  },
  {
    page: "equity",
    ready: "#content table",
    expect: async (p) => {
      await rows(p, "#content table", 2);
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
    },
  },
];

async function has(p, text) {
  const content = await p.locator("main").innerText();
  if (!content.includes(text)) throw new Error(`expected to see ${JSON.stringify(text)}`);
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
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  let problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`uncaught exception: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });

  // Sign in through the form, as a person would.
  try {
    await page.goto(`${url}/#/signin`);
    await page.locator("#token").fill(token);
    await page.locator("#signin-form button[type=submit]").click();
    // Signed in, the header names the caller and the page moves to the overview.
    await page.waitForFunction(
      () => (document.querySelector("#who")?.textContent || "").includes("(passports)") &&
        location.hash === "#/overview",
      null,
      { timeout: 15_000 },
    );
  } catch (e) {
    const status = await page.locator("#who").innerText().catch(() => "");
    problems.push(`sign-in: ${String(e.message || e).split("\n")[0]} (status: ${JSON.stringify(status)})`);
  }
  const shot = join(out, "signin.png");
  await page.screenshot({ path: shot, fullPage: true });
  results.push({ page: "signin", ok: !problems.length, screenshot: shot, problems });
  if (problems.length) failed++;

  for (const spec of PAGES) {
    problems = [];
    const shot = join(out, `${spec.page}.png`);
    let ok = true;
    try {
      await page.goto(`${url}/#/${spec.page}`);
      await page.waitForFunction(
        (p) => document.title.startsWith(
          { overview: "Agency overview", complaints: "Complaints queue", feedback: "Feedback and topics",
            charter: "Charter report", equity: "Equity", benchmark: "Benchmark" }[p]),
        spec.page,
        { timeout: 10_000 },
      );
      await page.locator(spec.ready).first().waitFor({ timeout: 30_000 });
      await page.waitForLoadState("networkidle");
      const errors = await page.locator("main .notice.error").allInnerTexts();
      for (const e of errors) problems.push(`error notice: ${e}`);
      for (const a of await accessibility(page)) problems.push(`accessibility: ${a}`);
      await spec.expect(page);
    } catch (e) {
      problems.push(String(e.message || e).split("\n")[0]);
    }
    await page.screenshot({ path: shot, fullPage: true });
    if (problems.length) {
      ok = false;
      failed++;
    }
    results.push({ page: spec.page, ok, screenshot: shot, problems });
  }
} finally {
  await browser.close();
}

writeFileSync(join(out, "results.json"), JSON.stringify(results, null, 2));
for (const r of results) {
  console.log(`${r.ok ? "ok  " : "FAIL"} ${r.page}${r.screenshot ? "  " + r.screenshot : ""}`);
  for (const p of r.problems) console.log(`       ${p}`);
}
console.log(failed ? `${failed} page(s) failed` : `all ${results.length} pages passed`);
process.exit(failed ? 1 : 0);
