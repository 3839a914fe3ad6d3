// Drives the backups page (`/_/`) in headless Chromium (Debian's, through puppeteer-core)
// as a person would: log in, create, upload, download, delete, restore, change the
// schedule and the S3 settings. A screenshot of every step goes to SHOTS_DIR; the
// downloaded backup goes to SHOTS_DIR/downloads for the Rust side to compare. Exits
// non-zero with a message on any mismatch.
//
// Usage: node ui.mjs BASE EMAIL PASSWORD SHOTS_DIR UPLOAD_ZIP BAD_ZIP S3_ENDPOINT BUCKET
//        ACCESS_KEY SECRET
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { finish, openPage } from "./browser.mjs";

const [base, email, password, shots, uploadZip, badZip, endpoint, bucket, accessKey, secret] =
  process.argv.slice(2);
const downloads = path.join(shots, "downloads");
fs.mkdirSync(downloads, { recursive: true });

const { browser, page, failures, shot, visible, waitText } = await openPage(shots);
const cdp = await page.createCDPSession();
await cdp.send("Browser.setDownloadBehavior", { behavior: "allow", downloadPath: downloads });
const text = (sel) => page.$eval(sel, (el) => el.textContent.trim());
const rowKeys = () => page.$$eval("#backups-body tr", (rows) => rows.map((r) => r.dataset.key));
async function fill(sel, value) {
  await page.$eval(sel, (el) => {
    el.value = "";
    el.dispatchEvent(new Event("input", { bubbles: true }));
  });
  if (value) await page.type(sel, value);
}

try {
  // The page itself: its headers, and the login form.
  const res = await page.goto(`${base}/_/`, { waitUntil: "networkidle0" });
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-security-policy"], /script-src 'self'/);
  assert.equal(res.headers()["content-type"], "text/html; charset=utf-8");
  await visible("#login-form");
  await shot("login");

  // A wrong password gets the API's message.
  await fill("#login-email", email);
  await fill("#login-password", "not-the-password");
  await page.click("#login-form button[type=submit]");
  assert.equal(await waitText("#login-error", /./), "Failed to authenticate.");
  await shot("wrong-password");

  // An expired session, and a token of another collection (not a superuser): back at the
  // login form with the API's message, never a blank page.
  const jwt = (payload) => {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(payload)}.c2lnbmF0dXJl`;
  };
  for (const [what, payload] of [
    ["expired-session", { collectionId: "pbc_3142635823", exp: 1, id: "x", type: "auth", refreshable: true }],
    ["not-a-superuser", { collectionId: "_pb_users_auth_", exp: 4102444800, id: "x", type: "auth", refreshable: true }],
  ]) {
    await page.evaluate((t) => localStorage.setItem("__pb_superuser_auth__", JSON.stringify({ token: t })), jwt(payload));
    await page.reload({ waitUntil: "networkidle0" });
    const message = await waitText("#login-error", /./);
    assert.match(message, /authorization token|not allowed|authorized/i, `${what}: ${message}`);
    assert.equal(await page.$eval("#app-view", (el) => el.hidden), true, what);
    await shot(what);
  }

  // Log in: the token is kept where PocketBase's dashboard keeps it.
  await fill("#login-email", email);
  await fill("#login-password", password);
  await page.click("#login-form button[type=submit]");
  await visible("#app-view");
  const kept = await page.evaluate(() => JSON.parse(localStorage.getItem("__pb_superuser_auth__")));
  assert.ok(kept.token && kept.record.email === email);
  // The application the gateway manages (none here): restores refuse while it runs.
  assert.equal(
    await waitText("#app-state", /Application:/),
    "Application: not managed by the gateway; a restore is refused while it has the data open.",
  );
  await shot("logged-in");

  // Create: an invalid name gets the API's validation message; a valid one appears.
  await fill("#create-name", "Not Valid.zip");
  await page.click("#create-button");
  assert.match(await waitText("#create-error", /./), /valid format/);
  await shot("create-invalid-name");
  await fill("#create-name", "ui_first.zip");
  await page.click("#create-button");
  await waitText("#create-status", /created/);
  await page.waitForFunction(() => [...document.querySelectorAll("#backups-body tr")].some((r) => r.dataset.key === "ui_first.zip"));
  const size = await page.$eval('#backups-body tr[data-key="ui_first.zip"] td.num', (el) => el.textContent);
  assert.match(size, /^\d+(\.\d)? (B|KiB|MiB)$/);
  const title = await page.$eval('#backups-body tr[data-key="ui_first.zip"] time', (el) => el.title);
  assert.match(title, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
  await shot("created");

  // Upload, with its progress bar.
  const input = await page.$("#upload-file");
  await input.uploadFile(uploadZip);
  await page.click("#upload-button");
  await waitText("#upload-status", /Uploaded/);
  assert.equal(await page.$eval("#upload-bar", (el) => el.value), 100);
  await page.waitForFunction(() => [...document.querySelectorAll("#backups-body tr")].some((r) => r.dataset.key === "uploaded.zip"));
  await shot("uploaded");

  // Newest first, and the filter.
  const keys = await rowKeys();
  assert.deepEqual(keys.slice(0, 2), ["uploaded.zip", "ui_first.zip"]);
  await fill("#filter", "first");
  assert.deepEqual(await rowKeys(), ["ui_first.zip"]);
  await shot("filtered");
  await fill("#filter", "");

  // Download through a file token.
  await page.click('#backups-body tr[data-key="ui_first.zip"] button[data-action=download]');
  const file = path.join(downloads, "ui_first.zip");
  for (let i = 0; i < 200 && !fs.existsSync(file); i += 1) await new Promise((r) => setTimeout(r, 100));
  assert.ok(fs.existsSync(file), "the download arrived");

  // Verify: the result on the page, and the mark in the list.
  await page.click('#backups-body tr[data-key="ui_first.zip"] button[data-action=verify]');
  assert.match(await waitText("#restore-status", /verified:|failed its verify|Verify of/), /^ui_first\.zip verified: \d+ entries/);
  await page.waitForFunction(() => document.querySelector('#backups-body tr[data-key="ui_first.zip"] td.verified')?.textContent === "✓ verified");
  await shot("verified");

  // Delete, after a confirmation; Escape (the keyboard) cancels it first.
  await page.click('#backups-body tr[data-key="uploaded.zip"] button[data-action=delete]');
  await visible("#confirm");
  assert.match(await text("#confirm-text"), /uploaded\.zip/);
  await shot("delete-confirm");
  await page.keyboard.press("Escape");
  await page.waitForFunction(() => !document.querySelector("#confirm").open);
  assert.ok((await rowKeys()).includes("uploaded.zip"), "cancelled: still there");
  await page.click('#backups-body tr[data-key="uploaded.zip"] button[data-action=delete]');
  await visible("#confirm");
  await page.click("#confirm-ok");
  await page.waitForFunction(() => ![...document.querySelectorAll("#backups-body tr")].some((r) => r.dataset.key === "uploaded.zip"));
  await shot("deleted");

  // Restore, with a confirmation that names the key and what it replaces; its outcome.
  await page.click('#backups-body tr[data-key="ui_first.zip"] button[data-action=restore]');
  await visible("#confirm");
  const confirmText = await text("#confirm-text");
  assert.match(confirmText, /ui_first\.zip/);
  assert.match(confirmText, /replaces the whole content of the data directory/);
  await shot("restore-confirm");
  await page.click("#confirm-ok");
  assert.equal(await waitText("#restore-status", /Restored|failed/), "Restored ui_first.zip.");
  await shot("restored");

  // A restore the gateway refuses: the reason is on the page.
  await page.waitForFunction(async () => {
    const r = await fetch("/api/gateway/progress", { headers: { Authorization: JSON.parse(localStorage.getItem("__pb_superuser_auth__")).token } });
    return (await r.json()).running === null;
  }, { polling: 500, timeout: 60000 });
  const bad = await page.$("#upload-file");
  await bad.uploadFile(badZip);
  await page.click("#upload-button");
  await page.waitForFunction(() => [...document.querySelectorAll("#backups-body tr")].some((r) => r.dataset.key === "bad.zip"));
  await page.click('#backups-body tr[data-key="bad.zip"] button[data-action=restore]');
  await visible("#confirm");
  await page.click("#confirm-ok");
  const refusedText = await waitText("#restore-status", /refused|failed/);
  assert.match(refusedText, /Restore of bad\.zip refused: Missing or invalid backup file\. unsafe entry/);
  await shot("restore-refused");
  // Its verify fails, naming the entry, and the list marks it.
  await page.click('#backups-body tr[data-key="bad.zip"] button[data-action=verify]');
  assert.match(await waitText("#restore-status", /verified:|failed its verify|Verify of/), /^bad\.zip failed its verify: \S+/);
  await page.waitForFunction(() => document.querySelector('#backups-body tr[data-key="bad.zip"] td.verified')?.textContent === "✗ failed");
  await shot("verify-failed");

  // The schedule: the next three runs for what is typed, an invalid expression refused by
  // the API next to the field, a valid one saved.
  await fill("#cron", "0 3 * * *");
  await page.waitForFunction(() => document.querySelectorAll("#cron-next time").length === 3);
  const next = await page.$$eval("#cron-next time", (ts) => ts.map((t) => t.dateTime));
  assert.ok(next.every((t) => t.endsWith("03:00:00.000Z")), next.join(" "));
  await fill("#cron", "61 * * * *");
  assert.equal(await text("#cron-next"), "Not a valid expression yet.");
  await page.click("#settings-save");
  assert.equal(
    await waitText("#cron-error", /./),
    "Invalid segment value - must be between the min and max of the segment.",
  );
  assert.equal(await text("#settings-error"), "An error occurred while saving the new settings.");
  await shot("cron-invalid");
  await fill("#cron", "0 3 * * *");
  await page.click("#settings-save");
  await waitText("#settings-status", /Saved/);
  assert.equal(await page.$eval("#cron-error", (el) => el.hidden), true);
  await shot("cron-saved");

  // Verify and notify: a URL the API refuses shows next to its field; a saved one is never
  // shown again, only said to be set.
  await page.select("#verify-after-create", "all");
  await fill("#notify-url", "ftp://example.com/hook");
  await page.click("#settings-save");
  assert.equal(await waitText("#notifyUrl-error", /./), "Must be a valid url.");
  await fill("#notify-url", "https://hooks.example.com/backups");
  await page.click("#settings-save");
  await waitText("#settings-status", /Saved/);
  assert.equal(await page.$eval("#notify-url", (el) => el.value), "");
  assert.equal(await page.$eval("#notify-url", (el) => el.placeholder), "set (unchanged)");
  assert.equal(await page.$eval("#verify-after-create", (el) => el.value), "all");
  await shot("verify-settings");

  // S3: testing is for saved settings; the secret is never shown.
  await page.click("#s3-enabled");
  await fill("#s3-bucket", bucket);
  await fill("#s3-region", "us-east-1");
  await fill("#s3-endpoint", endpoint);
  await fill("#s3-access-key", accessKey);
  await fill("#s3-secret", secret);
  await page.click("#s3-force-path-style");
  assert.equal(await page.$eval("#s3-test", (el) => el.disabled), true, "unsaved: no test");
  await page.click("#settings-save");
  await waitText("#settings-status", /Saved/);
  assert.equal(await page.$eval("#s3-secret", (el) => el.value), "", "the secret is not shown");
  await page.click("#s3-test");
  assert.equal(await waitText("#s3-test-status", /OK|Failed|failed/), "Connection OK.");
  await shot("s3-connection-ok");

  // An invalid allowlist entry is refused next to its field.
  await fill("#superuser-ips", "not-an-address");
  await page.click("#settings-save");
  assert.equal(await waitText("#superuserIPs-error", /./), "Invalid IP or CIDR subnet.");
  await shot("allowlist-invalid");
  await fill("#superuser-ips", "");
  await page.click("#settings-save");
  await waitText("#settings-status", /Saved/);

  // A phone-sized screen: everything still reachable, no horizontal scroll of the page.
  await page.setViewport({ width: 390, height: 844 });
  await page.reload({ waitUntil: "networkidle0" });
  await visible("#app-view");
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page scrolls sideways by ${overflow} px`);
  await shot("phone");
} catch (e) {
  await shot("failure").catch(() => {});
  failures.push(e.stack || String(e));
}
await finish(browser, failures);
