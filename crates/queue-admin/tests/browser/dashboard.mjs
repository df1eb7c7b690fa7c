// Drives the dashboard in headless Chromium (run by tests/browser.rs):
// - jobs view: a running book's progress bar moves; a flow's tree lists its chapters until
//   they complete; a running job is cancelled from its button;
// - overview: the schedules panel lists the nightly schedule; the queue pauses and resumes;
//   the groups table shows the API's numbers, each under its header; a group pauses and
//   resumes; the finished-jobs chart counts the run;
// - job page: a failing job shows its attempts, and one more after Retry; the details
//   count as many attempts as the table lists;
// - a deep link restores a filter; 100 failed jobs are retried in bulk (count, confirm,
//   progress);
// - workers page: each worker's version, tasks and running jobs, a silent one as lost;
// - axe-core on every page (and the overview in dark mode): no serious or critical
//   violation. Screenshots of each page beside SCREENSHOT_PATH.
// usage: node dashboard.mjs URL SCREENSHOT_PATH FLAKY_JOB_ID
import { chromium } from "playwright-core";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const axePath = require.resolve("axe-core/axe.min.js");
const [url, shot, flaky] = process.argv.slice(2);
const base = url.split("?")[0].replace(/\/$/, "");
const png = (name) => shot.replace(/\.png$/, `-${name}.png`);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const axe = [];
let axePages = 0;
// Runs axe-core on what the page shows now; keeps serious and critical violations.
async function audit(page, name) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  for (const v of result.violations) {
    if (v.impact === "serious" || v.impact === "critical") {
      axe.push({ page: name, id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) });
    }
  }
  axePages += 1;
}
const go = async (page, hash) => {
  await page.evaluate((h) => { location.hash = h; }, hash);
};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url);
  await page.locator('#counts .card[data-count="total"]').waitFor({ timeout: 20000 });

  console.error("step: jobs view, a progress bar moves");
  await go(page, "#/jobs");
  const row = page.locator("tr.status-processing").first();
  await row.waitFor({ timeout: 20000 });
  const moving = await row.getAttribute("data-job");
  const before = Number(await row.getAttribute("data-progress"));
  await page.waitForFunction(([id, p]) => {
    const tr = document.querySelector(`tr[data-job="${id}"]`);
    return tr && Number(tr.dataset.progress) > p;
  }, [moving, before], { timeout: 20000 });
  const after = Number(await page.locator(`tr[data-job="${moving}"]`).getAttribute("data-progress"));

  console.error("step: open a flow");
  // Filtered to the chapters book (a hundred newer jobs push it off the first page).
  await go(page, "#/jobs?key=book-chapters");
  const parentRow = page.locator("tr:has(button.tree:not([hidden]))").first();
  await parentRow.waitFor({ timeout: 20000 });
  const flowId = await parentRow.getAttribute("data-job");
  await parentRow.locator("button.tree").click();
  await page.locator(`tr.flow[data-flow="${flowId}"] li[data-job]`).first().waitFor({ timeout: 10000 });
  await page.waitForFunction((id) => {
    const items = [...document.querySelectorAll(`tr.flow[data-flow="${id}"] li[data-job]`)];
    return items.length > 0 && items.every((li) => li.querySelector(".st").textContent === "completed");
  }, flowId, { timeout: 60000 });
  const flowChildren = await page.locator(`tr.flow[data-flow="${flowId}"] li[data-job]`).count();
  await page.screenshot({ path: png("flow"), fullPage: true });
  await audit(page, "jobs");

  console.error("step: cancel a running job");
  await go(page, "#/jobs?status=processing");
  // A running book may finish before the click lands (a slow machine): then its button is
  // disabled or the cancel comes too late, and another running book is taken.
  let victim = null;
  let status = null;
  for (let attempt = 0; attempt < 20 && status !== "cancelled"; attempt++) {
    const r = page.locator("tr.status-processing").last();
    await r.waitFor({ timeout: 20000 });
    victim = await r.getAttribute("data-job");
    try {
      await page.locator(`tr[data-job="${victim}"] button.cancel`).click({ timeout: 2000 });
    } catch (e) {
      continue;
    }
    await page.waitForFunction((id) => {
      const tr = document.querySelector(`tr[data-job="${id}"]`);
      return tr && !tr.className.match(/status-(queued|processing)/);
    }, victim, { timeout: 20000 });
    status = await page.locator(`tr[data-job="${victim}"] td.status`).textContent();
  }

  console.error("step: overview, schedules panel");
  await go(page, "#/");
  const sched = page.locator('#schedules tr[data-schedule="nightly-reprocess"]');
  await sched.waitFor({ timeout: 10000 });
  const schedText = await sched.textContent();
  if (!schedText.includes("0 2 * * * (Europe/Berlin)") || !schedText.includes("active")) {
    throw new Error(`schedule row is wrong: ${schedText}`);
  }
  const nextRun = await sched.locator("td").nth(3).textContent();
  if (nextRun === "–" || !nextRun) throw new Error(`schedule has no next run: ${schedText}`);

  console.error("step: the finished-jobs chart counts the run");
  await page.waitForFunction(() => Number(document.getElementById("chart-finished").dataset.completed) > 0
    && document.querySelectorAll("#chart-finished svg rect").length > 0, null, { timeout: 30000 });
  const finishedChart = Number(await page.locator("#chart-finished").getAttribute("data-completed"));
  await page.screenshot({ path: png("overview"), fullPage: true });
  await audit(page, "overview");

  console.error("step: pause the queue");
  await page.locator("#pause").click();
  await page.locator("#paused").waitFor({ state: "visible", timeout: 10000 });
  const paused = (await page.evaluate(() => fetch("/stats").then((r) => r.json()))).paused;
  await page.screenshot({ path: shot, fullPage: true });
  await page.locator("#pause").click();
  await page.locator("#paused").waitFor({ state: "hidden", timeout: 10000 });
  const resumed = !(await page.evaluate(() => fetch("/stats").then((r) => r.json()))).paused;

  console.error("step: the groups table shows the API's numbers, each under its header");
  const group = page.locator('#groups tr[data-group="p"]');
  await group.waitFor({ timeout: 10000 });
  // The page and the API are read together until they agree (jobs move meanwhile).
  const groupCells = await page.evaluate(async () => {
    const headers = [...document.querySelectorAll("#groups-table thead th")];
    const textBox = (el) => {
      const range = document.createRange();
      range.selectNodeContents(el);
      return range.getBoundingClientRect();
    };
    for (let round = 0; round < 50; round++) {
      await window.loadGroups();
      const api = (await fetch("/groups?limit=20").then((r) => r.json())).groups.find((g) => g.group === "p");
      const tds = [...document.querySelectorAll('#groups tr[data-group="p"] td')];
      const shown = tds.slice(1, 5).map((td) => Number(td.textContent));
      const want = [api.unfinished, api.ready, api.running, Math.max(0, api.unfinished - api.ready - api.running)];
      if (JSON.stringify(shown) !== JSON.stringify(want)) continue;
      // Each value's text sits under its header's text (columns 0 to 5).
      const aligned = tds.slice(0, 6).every((td, i) => {
        if (!td.textContent.trim()) return true;
        const v = textBox(td), h = textBox(headers[i]);
        return v.left < h.right && v.right > h.left;
      });
      return { shown, want, aligned };
    }
    return { shown: null, want: null, aligned: false };
  });
  if (!groupCells.shown || !groupCells.aligned) throw new Error(`groups table: ${JSON.stringify(groupCells)}`);

  console.error("step: pause a group");
  await group.locator("button.toggle").click();
  await page.locator('#groups tr[data-group="p"] td.limits', { hasText: "paused" }).waitFor({ timeout: 10000 });
  const groupPaused = (await page.evaluate(() => fetch("/groups/p").then((r) => r.json()))).paused;
  await page.screenshot({ path: png("groups"), fullPage: true });
  await page.locator('#groups tr[data-group="p"] button.toggle').click();
  await page.locator('#groups tr[data-group="p"] button.toggle', { hasText: "Pause" }).waitFor({ timeout: 10000 });
  const groupResumed = !(await page.evaluate(() => fetch("/groups/p").then((r) => r.json()))).paused;

  console.error("step: a job's attempt history, and one more after a retry");
  await go(page, `#/job/${flaky}`);
  await page.waitForFunction(() => document.getElementById("view-job").dataset.status === "failed"
    && document.querySelectorAll("#d-attempts tbody tr").length >= 2, null, { timeout: 30000 }).catch(async (e) => {
    const seen = await page.evaluate(() => [document.getElementById("view-job").dataset.status,
      document.querySelectorAll("#d-attempts tbody tr").length, document.getElementById("error").textContent, location.hash]);
    throw new Error(`job page: ${JSON.stringify(seen)}: ${e.message}`);
  });
  const attemptsBefore = await page.locator("#d-attempts tbody tr").count();
  await page.locator("#d-retry").click();
  await page.waitForFunction((n) => document.querySelectorAll("#d-attempts tbody tr").length > n
    && document.getElementById("view-job").dataset.status === "failed", attemptsBefore, { timeout: 30000 });
  const attemptsAfter = await page.locator("#d-attempts tbody tr").count();
  // The attempts the details count are the rows listed (every one failed and is kept).
  const attemptsCounted = await page.evaluate(() => {
    const dt = [...document.querySelectorAll("#d-meta dt")].find((d) => d.textContent === "attempts");
    return dt ? Number(dt.nextElementSibling.textContent) : null;
  });
  await page.screenshot({ path: png("job"), fullPage: true });
  await audit(page, "job");

  console.error("step: a deep link restores its filter");
  await page.goto(`${base}/#/jobs?status=failed&task=doomed`);
  await page.locator("#jobs tr.status-failed").first().waitFor({ timeout: 20000 });
  const deepStatus = await page.locator("#f-status").inputValue();
  const deepTask = await page.locator("#f-task").inputValue();
  const tasks = await page.locator("#jobs tr[data-job] td.task").allTextContents();
  if (tasks.some((t) => t !== "doomed")) throw new Error(`the filter shows other tasks: ${tasks}`);

  console.error("step: bulk retry of the 100 failed jobs");
  await page.locator('.bulk-go[data-action="retry"]').click();
  await page.locator("#confirm[open]").waitFor({ timeout: 30000 });
  const bulkCounted = Number(await page.locator("#confirm").getAttribute("data-count"));
  await page.screenshot({ path: png("bulk"), fullPage: false });
  await page.locator("#confirm-ok").click();
  await page.waitForFunction(() => document.getElementById("bulk-state").dataset.done !== undefined, null, { timeout: 60000 });
  const bulkDone = Number(await page.locator("#bulk-state").getAttribute("data-done"));
  // The retried jobs left the failed filter: the screenshot shows every job instead.
  await go(page, "#/jobs");
  await page.locator("#jobs tr[data-job]").nth(9).waitFor({ timeout: 20000 });
  const jobsShown = await page.locator("#jobs tr[data-job]").count();
  await page.screenshot({ path: png("jobs"), fullPage: false });

  console.error("step: workers page");
  await go(page, "#/workers");
  const worker = page.locator("#workers tr[data-worker]").first();
  await worker.waitFor({ timeout: 20000 });
  const workerVersion = await worker.locator("td").nth(3).textContent();
  const workerTasks = await worker.locator("td").nth(4).textContent();
  await page.locator('#workers tr[data-worker="ghost-worker"][data-lost="true"]').waitFor({ timeout: 20000 });
  const lostShown = (await page.locator('#workers tr[data-worker="ghost-worker"] td').last().textContent()).startsWith("lost");
  await page.screenshot({ path: png("workers"), fullPage: true });
  await audit(page, "workers");

  console.error("step: dark mode");
  await page.emulateMedia({ colorScheme: "dark" });
  await go(page, "#/");
  await page.locator("#chart-finished svg rect").first().waitFor({ timeout: 20000 });
  await page.screenshot({ path: png("dark"), fullPage: true });
  await audit(page, "overview (dark)");
  await go(page, "#/jobs?status=failed");
  await page.locator("#jobs tr[data-job]").first().waitFor({ timeout: 20000 });
  await audit(page, "jobs (dark)");

  console.log(JSON.stringify({ moving, before, after, flowId, flowChildren, cancelled: victim, status, paused, resumed,
    groupPaused, groupResumed, groupCells, finishedChart, attemptsBefore, attemptsAfter, attemptsCounted, deepStatus,
    deepTask, bulkCounted, bulkDone, jobsShown,
    workerVersion, workerTasks, lostShown, axe, axePages }));
} finally {
  await browser.close();
}
