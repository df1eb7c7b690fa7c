// Opens the dashboard, watches a running book job's progress bar move, cancels a running
// job and waits until its row says `cancelled`, pauses the queue (screenshot) and resumes it,
// then pauses and resumes the books' publisher group from the groups panel (screenshot).
// usage: node dashboard.mjs URL SCREENSHOT_PATH
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  await page.goto(url);
  const row = page.locator("tr.status-processing").first();
  await row.waitFor({ timeout: 20000 });
  const moving = await row.getAttribute("data-job");
  const before = Number(await row.getAttribute("data-progress"));
  await page.waitForFunction(([id, p]) => {
    const tr = document.querySelector(`tr[data-job="${id}"]`);
    return tr && Number(tr.dataset.progress) > p;
  }, [moving, before], { timeout: 20000 });
  const after = Number(await page.locator(`tr[data-job="${moving}"]`).getAttribute("data-progress"));

  console.error("step: schedules panel");
  // The nightly schedule is listed with its cadence, time zone and next run.
  const sched = page.locator('#schedules tr[data-schedule="nightly-reprocess"]');
  await sched.waitFor({ timeout: 10000 });
  const schedText = await sched.textContent();
  if (!schedText.includes("0 2 * * * (Europe/Berlin)") || !schedText.includes("active") || schedText.includes("\u00a0-\u00a0")) {
    throw new Error(`schedule row is wrong: ${schedText}`);
  }
  const nextRun = await sched.locator("td").nth(3).textContent();
  if (nextRun === "-" || !nextRun) throw new Error(`schedule has no next run: ${schedText}`);

  console.error("step: open a flow");
  // The chapters book's row has a Flow button; its tree lists the chapters and follows them
  // until every one is completed.
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
  await page.screenshot({ path: shot.replace(/\.png$/, "-flow.png"), fullPage: true });

  console.error("step: cancel a running job");
  // A running book may finish before the click lands (a slow machine): then its button is
  // disabled or the cancel comes too late, and another running book is taken.
  let victim = null;
  let status = null;
  for (let attempt = 0; attempt < 20 && status !== "cancelled"; attempt++) {
    const row = page.locator("tr.status-processing").last();
    await row.waitFor({ timeout: 20000 });
    victim = await row.getAttribute("data-job");
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

  console.error("step: pause the queue");
  // Pause the queue from its button: the badge shows and the API says so; then resume.
  await page.locator("#pause").click();
  await page.locator("#paused").waitFor({ state: "visible", timeout: 10000 });
  const paused = (await page.evaluate(() => fetch("/stats").then((r) => r.json()))).paused;
  await page.screenshot({ path: shot, fullPage: true });
  await page.locator("#pause").click();
  await page.locator("#paused").waitFor({ state: "hidden", timeout: 10000 });
  const resumed = !(await page.evaluate(() => fetch("/stats").then((r) => r.json()))).paused;

  console.error("step: pause a group");
  // The groups panel lists the publisher's group; its button pauses and resumes only it.
  const group = page.locator('#groups tr[data-group="p"]');
  await group.waitFor({ timeout: 10000 });
  await group.locator("button.toggle").click();
  await page.locator('#groups tr[data-group="p"] td.limits', { hasText: "paused" }).waitFor({ timeout: 10000 });
  const groupPaused = (await page.evaluate(() => fetch("/groups/p").then((r) => r.json()))).paused;
  await page.screenshot({ path: shot.replace(/\.png$/, "-groups.png"), fullPage: true });
  await page.locator('#groups tr[data-group="p"] button.toggle').click();
  await page.locator('#groups tr[data-group="p"] button.toggle', { hasText: "Pause" }).waitFor({ timeout: 10000 });
  const groupResumed = !(await page.evaluate(() => fetch("/groups/p").then((r) => r.json()))).paused;
  console.log(JSON.stringify({ moving, before, after, flowId, flowChildren, cancelled: victim, status, paused, resumed, groupPaused, groupResumed }));
} finally {
  await browser.close();
}
