// Drives the system Chromium (puppeteer-core) through StreamMachine's public
// pages for tests/tests/web_pages.rs: the status page and the rewind player.
// Prints one JSON report on stdout; screenshots go to `out`.
// Usage: node pages.mjs '{"chromium": …, "base": …, "source": …, "auth": …, "stream": …, "out": …}'
import puppeteer from "puppeteer-core";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const cfg = JSON.parse(process.argv[2]);
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const report = {};

const browser = await puppeteer.launch({
  executablePath: cfg.chromium,
  headless: true,
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
});

// Loads `url`, noting every request (bytes of non-audio responses, other
// origins) until `settle` ms after load.
async function open(url) {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 700 });
  const seen = { bytes: 0, external: [], requests: [] };
  const origin = new URL(cfg.base).origin;
  page.on("request", (r) => {
    const url = new URL(r.url());
    seen.requests.push(r.url());
    // data: URLs are the browser's own (its audio controls' icons).
    if (url.protocol !== "data:" && url.origin !== origin) seen.external.push(r.url());
  });
  page.on("response", async (r) => {
    const type = r.headers()["content-type"] || "";
    if (type.startsWith("audio/")) return; // the stream itself never ends
    try { seen.bytes += (await r.buffer()).length; } catch { /* aborted */ }
  });
  await page.goto(url, { waitUntil: "load" });
  return { page, seen };
}

async function axe(page) {
  await page.evaluate(axeSource);
  const r = await page.evaluate(async () => await window.axe.run(document));
  return r.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => v.id + ": " + v.help);
}

async function waitFor(page, fn, arg, ms) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await page.evaluate(fn, arg)) return Date.now() - t0;
    await sleep(50);
  }
  return null;
}

try {
  // The status page: the stream and its title, then a title change.
  {
    const { page, seen } = await open(cfg.base + "/");
    report.statusShown = await waitFor(page, (k) => !!document.querySelector(`li[data-stream="${k}"] .title`)?.textContent.includes("Now:"), cfg.stream, 5000);
    await sleep(1500);
    const res = await fetch(`${cfg.source}/admin/metadata?mount=/${cfg.stream}&mode=updinfo&song=Status+Page+Check`, { headers: { Authorization: cfg.auth } });
    report.titleSet = res.status;
    report.titleChangeMs = await waitFor(page, (k) => document.querySelector(`li[data-stream="${k}"] .title`)?.textContent.includes("Status Page Check"), cfg.stream, 5000);
    report.statusText = await page.evaluate(() => document.body.innerText);
    report.statusViolations = await axe(page);
    await page.screenshot({ path: cfg.out + "/status-page.png" });
    report.statusBytes = seen.bytes;
    report.statusExternal = seen.external;
    await page.close();
  }
  // The rewind player: live, a minute back, back to live.
  {
    const { page, seen } = await open(`${cfg.base}/${cfg.stream}/player`);
    const t = await waitFor(page, () => { const a = document.getElementById("audio"); return a.currentTime > 2; }, null, 15000);
    report.liveAdvanced = t !== null;
    report.liveState = await page.evaluate(() => window.smPlayer.state());
    // A minute back with the position slider, as a user moves it.
    await page.evaluate(() => {
      const pos = document.getElementById("pos");
      // The slider spans the buffer as the page last fetched it.
      const buffer = window.smPlayer.state().buffer;
      pos.value = String(Math.round(1000 * (1 - 60 / buffer)));
      pos.dispatchEvent(new Event("change"));
    });
    const adv = await waitFor(page, () => { const a = document.getElementById("audio"); return a.currentTime > 2 && !a.paused && a.src.includes("offset="); }, null, 15000);
    report.backAdvanced = adv !== null;
    report.backState = await page.evaluate(() => window.smPlayer.state());
    await page.screenshot({ path: cfg.out + "/player.png" });
    await page.click("#live");
    report.liveAgain = await page.evaluate(() => window.smPlayer.state());
    report.playerViolations = await axe(page);
    report.playerBytes = seen.bytes;
    report.playerExternal = seen.external;
    await page.close();
  }
} catch (e) {
  report.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
