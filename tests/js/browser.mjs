// What the page's browser scripts (ui.mjs, install.mjs, pitr.mjs) share: headless Chromium
// (Debian's, through puppeteer-core) with one page whose errors are collected, numbered
// screenshots in SHOTS_DIR, and waits on what a person sees.
import fs from "node:fs";
import path from "node:path";
import puppeteer from "puppeteer-core";

// Opens the browser and its page. `failures` gathers the page's uncaught errors and console
// errors (refused requests, which the scripts provoke, are left out).
export async function openPage(shots, { width = 1200, height = 900, timeout = 30000 } = {}) {
  fs.mkdirSync(shots, { recursive: true });
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const failures = [];
  const page = await browser.newPage();
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      failures.push(`console error: ${m.text()}`);
    }
  });
  await page.setViewport({ width, height });
  let step = 0;
  const shot = async (name) => {
    step += 1;
    await page.screenshot({ path: path.join(shots, `${String(step).padStart(2, "0")}-${name}.png`), fullPage: true });
  };
  const visible = (sel) => page.waitForSelector(sel, { visible: true, timeout });
  // Waits until `sel` is shown with text matching `pattern`; returns its text.
  const waitText = async (sel, pattern) => {
    await page.waitForFunction(
      (s, p) => {
        const el = document.querySelector(s);
        return el && !el.hidden && new RegExp(p).test(el.textContent);
      },
      { timeout: Math.max(timeout, 60000) },
      sel,
      pattern.source,
    );
    return page.$eval(sel, (el) => el.textContent.trim());
  };
  return { browser, page, failures, shot, visible, waitText };
}

// Closes the browser and exits non-zero with every failure, if there was one.
export async function finish(browser, failures) {
  await browser.close();
  if (failures.length) {
    console.error(failures.join("\n"));
    process.exit(1);
  }
}
