// Drives the backups page's point-in-time control (`--pitr`) in headless Chromium as a
// person would: the restorable window is shown, a moment typed in the form is restored,
// then the latest, each confirmed first and its outcome (with the backup the other files
// came from) on the page. Screenshots go to SHOTS_DIR.
//
// Usage: node pitr.mjs BASE EMAIL PASSWORD SHOTS_DIR MOMENT
// (MOMENT: `YYYY-MM-DDTHH:MM:SS.mmm`, UTC, inside the window)
import assert from "node:assert/strict";
import { finish, openPage } from "./browser.mjs";

const [base, email, password, shots, moment] = process.argv.slice(2);
const { browser, page, failures, shot, visible, waitText } = await openPage(shots);

try {
  await page.goto(`${base}/_/`, { waitUntil: "networkidle0" });
  await visible("#login-form");
  await page.type("#login-email", email);
  await page.type("#login-password", password);
  await page.click("#login-form button[type=submit]");
  await visible("#app-view");

  // The window, per database, with the stream's lag and what its history takes in the store.
  await visible("#pitr-form");
  const window = await waitText("#pitr-window", /data\.db: from/);
  assert.match(window, /^Restorable: data\.db: from \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z to .*, \d+ ms behind, \d+\.\d of 1024\.0 MiB stored\. Not streamed \(backups only\): auxiliary\.db\.$/);
  await shot("pitr-window");

  // A moment typed in the form: confirmed, restored, the other files' backup named.
  await page.$eval("#pitr-time", (el, v) => {
    el.value = v;
    el.dispatchEvent(new Event("input", { bubbles: true }));
  }, moment);
  await page.click("#pitr-button");
  await visible("#confirm");
  assert.match(await page.$eval("#confirm-text", (el) => el.textContent), /newest backup at or before it/);
  await shot("pitr-confirm");
  await page.click("#confirm-ok");
  const done = await waitText("#restore-status", /Restored to|failed|refused/);
  assert.match(done, /^Restored to \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z; the other files are those of files\.zip \(/);
  await shot("pitr-restored");

  // The latest.
  await page.click("#pitr-latest");
  await visible("#confirm");
  await page.click("#confirm-ok");
  assert.match(await waitText("#restore-status", /Restored to latest|failed|refused/), /^Restored to latest; /);
  await shot("pitr-latest");
} catch (e) {
  await shot("failure").catch(() => {});
  failures.push(e.stack || String(e));
}
await finish(browser, failures);
