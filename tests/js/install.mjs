// Drives the page's first-run screen (`/_/#/pbinstall/<token>`, the link `serve` prints with
// no superuser) in headless Chromium: a mismatched confirmation gets the API's message, the
// right fields create the superuser and log in, and the used link is refused afterwards.
// Screenshots go to SHOTS_DIR. Exits non-zero with a message on any mismatch.
//
// Usage: node install.mjs LINK EMAIL PASSWORD SHOTS_DIR
import assert from "node:assert/strict";
import { finish, openPage } from "./browser.mjs";

const [link, email, password, shots] = process.argv.slice(2);
const { browser, page, failures, shot, visible, waitText } = await openPage(shots);
const fill = async (sel, value) => {
  await page.$eval(sel, (el) => (el.value = ""));
  await page.type(sel, value);
};

try {
  await page.goto(link, { waitUntil: "networkidle0" });
  await visible("#install-form");
  assert.equal(await page.$eval("#login-view", (el) => el.hidden), true);
  await shot("install");

  await fill("#install-email", email);
  await fill("#install-password", password);
  await fill("#install-password-confirm", `${password}-not`);
  await page.click("#install-form button[type=submit]");
  assert.equal(await waitText("#install-passwordConfirm-error", /./), "Values don't match.");
  await shot("mismatch");

  await fill("#install-password-confirm", password);
  await page.click("#install-form button[type=submit]");
  await visible("#app-view");
  assert.equal(await waitText("#who", /@/), email);
  assert.equal(await page.$eval("#install-view", (el) => el.hidden), true);
  assert.equal(new URL(page.url()).hash, "", "the token left the address bar");
  await shot("created");

  // The same link again: refused, and the way to log in stays.
  await page.evaluate(() => localStorage.clear());
  await page.goto(link, { waitUntil: "networkidle0" });
  await page.reload({ waitUntil: "networkidle0" });
  await visible("#install-form");
  await fill("#install-email", "second@example.com");
  await fill("#install-password", password);
  await fill("#install-password-confirm", password);
  await page.click("#install-form button[type=submit]");
  assert.match(await waitText("#install-error", /./), /used already or has expired/);
  await shot("used");
} catch (e) {
  failures.push(e.stack || String(e));
}
await finish(browser, failures);
