// Drives Debian's chromium (no browser download) through playwright-core against a Trust UI
// served on loopback by tests/browser.rs, which passes what it set up in the environment and
// checks the database afterwards. Prints one line per check; exits non-zero on the first
// failure.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing env ${name}`);
  return v;
};
const BASE = env("RUNLEDGER_URL");
const SHOTS = env("RUNLEDGER_SCREENSHOTS");
const WRITE_TOKEN = env("RUNLEDGER_UI_WRITE_TOKEN");
const READ_TOKEN = env("RUNLEDGER_UI_READ_TOKEN");
const PROGRESS_JOB = env("RUNLEDGER_PROGRESS_JOB");
const PAUSE_JOB = env("RUNLEDGER_PAUSE_JOB");
const FAILED_JOB = env("RUNLEDGER_FAILED_JOB");
const CHECKPOINT_KEYS = env("RUNLEDGER_CHECKPOINT_KEYS").split(",");
mkdirSync(SHOTS, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error("FAILED: " + what);
  console.log("ok: " + what);
}

const profile = mkdtempSync(join(tmpdir(), "runledger-chromium-"));
// A persistent context on a fresh profile directory: playwright passes it as --user-data-dir.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function signIn(token) {
  await context.clearCookies();
  const page = await context.newPage();
  await page.goto(BASE + "/ui/login");
  await page.fill('input[name="token"]', token);
  await Promise.all([page.waitForURL(BASE + "/"), page.click('button[type="submit"]')]);
  return page;
}

async function progressOf(page) {
  return Number(await page.locator(`[data-job="${PROGRESS_JOB}"] progress[data-field="progress"]`).first().evaluate((p) => p.value));
}

let failed = false;
try {
  // ---- signed out: the pages ask for the token ----
  const ap = await context.newPage();
  await ap.goto(BASE + "/");
  check(ap.url().endsWith("/ui/login"), "a signed-out browser is sent to the sign-in page");
  await ap.close();

  const page = await signIn(WRITE_TOKEN);

  // ---- overview: the blocked universe run with its gate and code ----
  const blocked = page.locator("tr[data-run]", { hasText: "universe" }).filter({ hasText: "MODULE_NOT_READY" });
  check(await blocked.count() >= 1, "overview lists the blocked universe run with MODULE_NOT_READY");
  check((await blocked.first().innerText()).includes("readiness"), "the blocked run's row names the readiness gate");
  check((await page.locator("text=Runs per scope and status").count()) === 1, "overview shows health per scope and status");
  await page.screenshot({ path: join(SHOTS, "overview.png"), fullPage: true });

  // ---- the run's page: timeline bars, the code explained from the guide ----
  await blocked.first().locator("a").first().click();
  await page.waitForSelector("svg.timeline");
  const bars = page.locator("svg.timeline g.bar");
  check(await bars.count() >= 2, `the run page draws ${await bars.count()} timeline bars`);
  check(await page.locator('svg.timeline g.bar[data-stage="readiness"][data-status="failed"]').count() === 1, "the readiness bar is drawn as failed");
  check((await page.locator(".banner").innerText()).includes("readiness gate"), "the run's code is explained from the error guide");
  await page.screenshot({ path: join(SHOTS, "run.png"), fullPage: true });

  // ---- jobs list: the progress bar moves with the worker, without a reload ----
  await page.goto(BASE + "/ui/jobs");
  await page.evaluate(() => { window.__notReloaded = true; });
  const v0 = await progressOf(page);
  await page.waitForFunction(([id, v]) => Number(document.querySelector(`[data-job="${id}"] progress`).value) > v, [PROGRESS_JOB, v0], { timeout: 20000 });
  const v1 = await progressOf(page);
  check(v1 > v0 && await page.evaluate(() => window.__notReloaded === true), `the list's progress bar advanced live ${v0} -> ${v1} (no reload)`);
  await page.waitForSelector("#new-jobs:not([hidden])", { timeout: 20000 });
  check((await page.locator("#new-jobs").innerText()).includes("since this page loaded"), "a job created meanwhile is announced, not inserted under the reader");
  await page.screenshot({ path: join(SHOTS, "jobs.png"), fullPage: true });

  // ---- a running job's page: live progress; an open dialog and the scroll survive updates ----
  await page.setViewportSize({ width: 1280, height: 500 });
  await page.goto(BASE + "/ui/jobs/" + PROGRESS_JOB);
  await page.click('button[data-action="pause"]');
  check(await page.locator("dialog#confirm[open]").count() === 1, "pause asks for confirmation in a dialog");
  // (Playwright scrolled the button into view to click it; scroll away behind the dialog.)
  await page.evaluate(() => window.scrollTo(0, 300));
  const y0 = await page.evaluate(() => window.scrollY);
  check(y0 > 0, `the page is scrolled (${y0}px) while the dialog is open`);
  const p0 = await progressOf(page);
  await page.waitForFunction(([id, v]) => Number(document.querySelector(`[data-job="${id}"] progress`).value) > v, [PROGRESS_JOB, p0], { timeout: 20000 });
  check(await page.locator("dialog#confirm[open]").count() === 1, "the open dialog survives a live update");
  const y1 = await page.evaluate(() => window.scrollY);
  check(y1 === y0, `the scroll position (${y0}px -> ${y1}px) survives a live update`);
  await page.keyboard.press("Escape");
  check(await page.locator("dialog#confirm[open]").count() === 0, "Escape closes the dialog without acting");
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.screenshot({ path: join(SHOTS, "job-running.png"), fullPage: true });

  // ---- pause with the button; the resume toast; the inspector; resume from the toast ----
  await page.goto(BASE + "/ui/jobs/" + PAUSE_JOB);
  const keys = await page.locator("#ckpt-keys li").allInnerTexts();
  check(CHECKPOINT_KEYS.every((k) => keys.includes(k)), `the checkpoint inspector lists its keys: ${keys.join(", ")}`);
  await page.click('button[data-action="pause"]');
  await page.click("#confirm-yes");
  await page.waitForSelector(`[data-job="${PAUSE_JOB}"] [data-field="state"][data-state="paused"]`, { timeout: 10000 });
  check(true, "pause with the button: the status bar says paused");
  const toast = page.locator(`[data-toast="resumable"][data-job-id="${PAUSE_JOB}"]`);
  await toast.waitFor({ timeout: 10000 });
  check((await toast.innerText()).includes("can be resumed"), "a toast says the paused job can be resumed");
  check(await page.locator('button[data-action="resume"]:not([hidden])').count() === 1, "the resume button appears");
  await page.screenshot({ path: join(SHOTS, "job-paused.png"), fullPage: true });
  await toast.locator("button", { hasText: "Resume" }).click();
  await page.click("#confirm-yes");
  await page.waitForSelector(`[data-job="${PAUSE_JOB}"] [data-field="state"][data-state="created"]`, { timeout: 10000 });
  check(true, "resume from the toast: the job is back in the queue");

  // ---- a failed job: the error banner explains its code ----
  await page.goto(BASE + "/ui/jobs/" + FAILED_JOB);
  check((await page.locator(".banner").innerText()).includes("What to do"), "a failed job's banner says what to do");
  check(await page.locator('button[data-action="restart"]:not([hidden])').count() === 1, "a failed job offers restart");
  await page.screenshot({ path: join(SHOTS, "job-failed.png"), fullPage: true });

  // ---- schedules and probes ----
  await page.goto(BASE + "/ui/schedules");
  check((await page.locator("table").innerText()).includes("Asia/Shanghai"), "schedules show the rule's zone");
  check(await page.locator("time[data-local] + .local-time").count() >= 1, "schedules show the next due time in the viewer's zone");
  await page.screenshot({ path: join(SHOTS, "schedules.png"), fullPage: true });
  await page.goto(BASE + "/ui/probes");
  check((await page.locator("main").innerText()).includes("not ready"), "probes show a scope that is not ready");
  await page.screenshot({ path: join(SHOTS, "probes.png"), fullPage: true });

  // ---- keyboard: the skip link and the nav are reachable with Tab ----
  await page.goto(BASE + "/");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement.textContent) === "Skip to content", "Tab reaches the skip link first");

  // ---- narrow window ----
  const narrow = await context.newPage();
  await narrow.setViewportSize({ width: 380, height: 800 });
  await narrow.goto(BASE + "/ui/jobs/" + PROGRESS_JOB);
  const overflow = await narrow.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `a 380px-wide window needs no horizontal scroll (overflow ${overflow}px)`);
  await narrow.screenshot({ path: join(SHOTS, "job-narrow.png"), fullPage: true });

  // ---- dark scheme ----
  const dp = await context.newPage();
  await dp.emulateMedia({ colorScheme: "dark" });
  await dp.goto(BASE + "/");
  const bg = await dp.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(bg === "rgb(22, 24, 27)", `the dark scheme is followed (body ${bg})`);
  await dp.screenshot({ path: join(SHOTS, "overview-dark.png"), fullPage: true });
  await dp.close();

  // ---- read-only token: no buttons, and a write is refused ----
  const rp = await signIn(READ_TOKEN);
  await rp.goto(BASE + "/ui/jobs/" + PROGRESS_JOB);
  check(await rp.locator("button[data-action]").count() === 0, "with the read-only token the action buttons are absent");
  const status = await rp.evaluate(async (id) => (await fetch(`/ui/jobs/${id}/pause`, { method: "POST", headers: { "X-Runledger-UI": "1" } })).status, PROGRESS_JOB);
  check(status === 403, `a read-only write is refused (${status})`);
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  failed = true;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
