// The backups page: the gateway's public API only (the routes the PocketBase SDK uses),
// the superuser's token kept as PocketBase's dashboard keeps it (localStorage), and never
// in a URL but the download's short-lived file token.
"use strict";

const AUTH_KEY = "__pb_superuser_auth__";
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `Request failed (${status}).`);
    this.status = status;
    this.data = (body && body.data) || {};
  }
}

function auth() {
  try {
    return JSON.parse(localStorage.getItem(AUTH_KEY) || "null");
  } catch {
    return null;
  }
}

async function api(method, path, body) {
  const headers = {};
  const a = auth();
  if (a && a.token) headers.Authorization = a.token;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, json);
    if (res.status === 401) signedOut(err.message);
    throw err;
  }
  return json;
}

// ---------------------------------------------------------------- formatting

function humanSize(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

// PocketBase's "YYYY-MM-DD hh:mm:ss.sssZ" (UTC).
function parsePbDate(s) {
  return new Date(String(s).replace(" ", "T"));
}

function localTime(d) {
  return d.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

function utcTime(d) {
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function show(el, text) {
  el.textContent = text || "";
  el.hidden = !text;
}

// ---------------------------------------------------------------- cron (PocketBase's, UTC)

const MACROS = {
  "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
};

// The allowed values of one field, or null when it does not parse.
function cronField(text, min, max) {
  const allowed = new Set();
  for (const part of text.split(",")) {
    const m = /^(\*|\d+|\d+-\d+)(?:\/(\d+))?$/.exec(part);
    if (!m) return null;
    let lo = min;
    let hi = max;
    if (m[1] !== "*") {
      const [a, b] = m[1].split("-").map(Number);
      lo = a;
      hi = b === undefined ? (m[2] ? max : a) : b;
    }
    const step = m[2] ? Number(m[2]) : 1;
    if (lo < min || hi > max || lo > hi || step < 1) return null;
    for (let v = lo; v <= hi; v += step) allowed.add(v);
  }
  return allowed;
}

// The next `count` times (Date, UTC minutes) an expression fires after `from`, or null.
function cronNext(expr, from, count) {
  const text = MACROS[expr] || expr;
  const parts = text.split(" ");
  if (parts.length !== 5) return null;
  const [mi, h, dom, mon, dow] = [
    cronField(parts[0], 0, 59), cronField(parts[1], 0, 23), cronField(parts[2], 1, 31),
    cronField(parts[3], 1, 12), cronField(parts[4], 0, 6),
  ];
  if (!mi || !h || !dom || !mon || !dow) return null;
  const out = [];
  const t = new Date(from.getTime());
  t.setUTCSeconds(0, 0);
  t.setUTCMinutes(t.getUTCMinutes() + 1);
  const limit = from.getTime() + 5 * 366 * 24 * 3600 * 1000;
  while (out.length < count && t.getTime() < limit) {
    if (!mon.has(t.getUTCMonth() + 1)) {
      t.setUTCMonth(t.getUTCMonth() + 1, 1);
      t.setUTCHours(0, 0);
    } else if (!dom.has(t.getUTCDate()) || !dow.has(t.getUTCDay())) {
      t.setUTCDate(t.getUTCDate() + 1);
      t.setUTCHours(0, 0);
    } else if (!h.has(t.getUTCHours())) {
      t.setUTCHours(t.getUTCHours() + 1, 0);
    } else if (!mi.has(t.getUTCMinutes())) {
      t.setUTCMinutes(t.getUTCMinutes() + 1);
    } else {
      out.push(new Date(t.getTime()));
      t.setUTCMinutes(t.getUTCMinutes() + 1);
    }
  }
  return out;
}

function showCronNext() {
  const expr = $("cron").value.trim();
  const el = $("cron-next");
  if (!expr) {
    el.textContent = "No scheduled backups.";
    return;
  }
  const next = cronNext(expr, new Date(), 3);
  if (!next) {
    el.textContent = "Not a valid expression yet.";
    return;
  }
  el.textContent = "";
  el.append("Next runs: ");
  next.forEach((d, i) => {
    const t = document.createElement("time");
    t.dateTime = d.toISOString();
    t.title = utcTime(d);
    t.textContent = localTime(d);
    t.className = "cron-next-run";
    if (i) el.append(", ");
    el.append(t);
  });
}

// ---------------------------------------------------------------- login

function signedOut(message) {
  localStorage.removeItem(AUTH_KEY);
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
  show($("login-error"), message);
}

async function login(ev) {
  ev.preventDefault();
  show($("login-error"), "");
  const identity = $("login-email").value.trim();
  const password = $("login-password").value;
  try {
    localStorage.removeItem(AUTH_KEY);
    const res = await api("POST", "/api/collections/_superusers/auth-with-password", { identity, password });
    localStorage.setItem(AUTH_KEY, JSON.stringify({ token: res.token, record: res.record }));
    $("login-password").value = "";
    await start();
  } catch (e) {
    show($("login-error"), e.message);
  }
}

// ---------------------------------------------------------------- first run

// `#/pbinstall/<token>`, the link `serve` prints when there is no superuser yet
// (PocketBase's install route): the token authorises one thing, creating the first one.
function installToken() {
  const m = /^#\/pbinstall\/([A-Za-z0-9]+)$/.exec(window.location.hash);
  return m ? m[1] : null;
}

function showInstall() {
  $("app-view").hidden = true;
  $("login-view").hidden = true;
  $("logout").hidden = true;
  $("install-view").hidden = false;
}

function leaveInstall() {
  $("install-view").hidden = true;
  history.replaceState(null, "", window.location.pathname);
}

async function install(ev) {
  ev.preventDefault();
  const token = installToken();
  for (const f of ["email", "password", "passwordConfirm", ""]) {
    show($(f ? `install-${f}-error` : "install-error"), "");
  }
  const email = $("install-email").value.trim();
  const password = $("install-password").value;
  const passwordConfirm = $("install-password-confirm").value;
  try {
    const res = await fetch("/api/collections/_superusers/records", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: token || "" },
      body: JSON.stringify({ email, password, passwordConfirm }),
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, body);
    localStorage.removeItem(AUTH_KEY);
    const auth = await api("POST", "/api/collections/_superusers/auth-with-password", { identity: email, password });
    localStorage.setItem(AUTH_KEY, JSON.stringify({ token: auth.token, record: auth.record }));
    $("install-password").value = "";
    $("install-password-confirm").value = "";
    leaveInstall();
    await start();
  } catch (e) {
    const fields = Object.keys(e.data || {});
    for (const f of fields) {
      const el = $(`install-${f}-error`);
      if (el) show(el, e.data[f].message);
    }
    show($("install-error"), e.status === 403 ? "This link was used already or has expired: ask for a new one (restart the gateway), or log in." : e.message);
  }
}

// ---------------------------------------------------------------- backups

let backups = [];
/** The last verify result of each key (`GET /api/gateway/verify`). */
let verified = {};

function renderBackups() {
  const filter = $("filter").value.trim().toLowerCase();
  const body = $("backups-body");
  body.textContent = "";
  const rows = backups
    .filter((b) => b.key.toLowerCase().includes(filter))
    .sort((a, b) => parsePbDate(b.modified) - parsePbDate(a.modified));
  for (const b of rows) {
    const tr = document.createElement("tr");
    tr.dataset.key = b.key;
    const key = document.createElement("td");
    key.className = "key";
    key.textContent = b.key;
    const size = document.createElement("td");
    size.className = "num";
    size.textContent = humanSize(b.size);
    size.title = `${b.size} bytes`;
    const modified = document.createElement("td");
    const d = parsePbDate(b.modified);
    const time = document.createElement("time");
    time.dateTime = d.toISOString();
    time.title = utcTime(d);
    time.textContent = localTime(d);
    modified.append(time);
    const check = document.createElement("td");
    check.className = "verified";
    const v = verified[b.key];
    if (v) {
      const when = parsePbDate(v.verifiedAt);
      check.textContent = v.ok ? "✓ verified" : "✗ failed";
      check.classList.add(v.ok ? "ok" : "failed");
      check.title = v.ok
        ? `Verified ${localTime(when)}: ${v.entries} entries, ${v.databases.length} database(s) checked`
        : `Verify failed ${localTime(when)}: ${v.entry ? v.entry + ": " : ""}${v.error}`;
    } else {
      check.textContent = "—";
      check.title = "Not verified yet";
    }
    const actions = document.createElement("td");
    actions.className = "actions";
    for (const [label, fn, cls] of [["Download", download, ""], ["Verify", verify, ""], ["Restore", restore, ""], ["Delete", remove, "danger"]]) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.textContent = label;
      btn.className = cls;
      btn.dataset.action = label.toLowerCase();
      btn.setAttribute("aria-label", `${label} ${b.key}`);
      btn.addEventListener("click", () => fn(b.key));
      actions.append(btn);
    }
    tr.append(key, size, modified, check, actions);
    body.append(tr);
  }
  $("backups-empty").hidden = rows.length > 0;
}

async function loadBackups() {
  const [list, checks] = await Promise.all([
    api("GET", "/api/backups"),
    api("GET", "/api/gateway/verify").catch(() => ({})),
  ]);
  backups = list;
  verified = checks || {};
  renderBackups();
}

async function verify(key) {
  const status = $("restore-status");
  status.className = "notice";
  show(status, `Verifying ${key}...`);
  try {
    const v = await api("POST", `/api/gateway/backups/${encodeURIComponent(key)}/verify`);
    status.className = v.ok ? "notice ok" : "notice failed";
    show(status, v.ok
      ? `${key} verified: ${v.entries} entries, ${humanSize(v.bytes)}, ${v.databases.length} database(s) pass integrity_check.`
      : `${key} failed its verify: ${v.entry ? v.entry + ": " : ""}${v.error}`);
  } catch (e) {
    status.className = "notice failed";
    show(status, `Verify of ${key} refused: ${e.message}`);
  }
  await loadBackups();
}

function fieldMessage(err, field) {
  const f = err.data && err.data[field];
  return f && f.message ? `${err.message} ${f.message}` : err.message;
}

async function pollProgress(statusEl, barEl, stop) {
  while (!stop.done) {
    try {
      const p = await api("GET", "/api/gateway/progress");
      const r = p && p.running;
      if (r && !stop.done) {
        const pct = r.bytesTotal ? Math.min(100, (100 * r.bytesDone) / r.bytesTotal) : 0;
        barEl.value = pct;
        statusEl.textContent = `${r.kind} ${r.key}: ${r.phase}, ${humanSize(r.bytesDone)} of ${humanSize(r.bytesTotal)} (${pct.toFixed(0)}%)`;
      }
    } catch {
      // The next poll tries again; the operation's own answer decides the outcome.
    }
    await new Promise((r) => setTimeout(r, 400));
  }
}

async function create(ev) {
  ev.preventDefault();
  show($("create-error"), "");
  const name = $("create-name").value.trim();
  const button = $("create-button");
  button.disabled = true;
  $("create-progress").hidden = false;
  $("create-bar").removeAttribute("value");
  $("create-status").textContent = "Starting...";
  const stop = { done: false };
  const polling = pollProgress($("create-status"), $("create-bar"), stop);
  try {
    await api("POST", "/api/backups", name ? { name } : {});
    stop.done = true;
    await polling;
    $("create-bar").value = 100;
    $("create-status").textContent = name ? `Backup ${name} created.` : "Backup created.";
    $("create-name").value = "";
    await loadBackups();
  } catch (e) {
    stop.done = true;
    await polling;
    $("create-progress").hidden = true;
    show($("create-error"), fieldMessage(e, e.data.name ? "name" : "database"));
  } finally {
    button.disabled = false;
  }
}

function upload(ev) {
  ev.preventDefault();
  show($("upload-error"), "");
  const file = $("upload-file").files[0];
  if (!file) {
    show($("upload-error"), "Choose a zip file first.");
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/backups/upload");
  const a = auth();
  if (a && a.token) xhr.setRequestHeader("Authorization", a.token);
  const bar = $("upload-bar");
  $("upload-progress").hidden = false;
  bar.value = 0;
  $("upload-button").disabled = true;
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) {
      bar.value = (100 * e.loaded) / e.total;
      $("upload-status").textContent = `${humanSize(e.loaded)} of ${humanSize(e.total)}`;
    }
  };
  xhr.onloadend = async () => {
    $("upload-button").disabled = false;
    if (xhr.status === 204) {
      bar.value = 100;
      $("upload-status").textContent = `Uploaded ${file.name}.`;
      $("upload-file").value = "";
      await loadBackups().catch(() => {});
      return;
    }
    $("upload-progress").hidden = true;
    let body = null;
    try {
      body = JSON.parse(xhr.responseText);
    } catch {
      body = null;
    }
    const err = new ApiError(xhr.status || 0, body || { message: "The upload failed (connection lost)." });
    if (xhr.status === 401) signedOut(err.message);
    show($("upload-error"), fieldMessage(err, "file"));
  };
  xhr.send(form);
}

async function download(key) {
  try {
    const { token } = await api("POST", "/api/files/token");
    const a = document.createElement("a");
    a.href = `/api/backups/${encodeURIComponent(key)}?token=${encodeURIComponent(token)}`;
    a.download = key;
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) {
    show($("app-error"), e.message);
  }
}

function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    const d = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = action;
    d.returnValue = "";
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
    $("confirm-cancel").focus();
  });
}

async function remove(key) {
  if (!(await confirmDialog("Delete backup", `Delete ${key}? This cannot be undone.`, "Delete"))) return;
  try {
    await api("DELETE", `/api/backups/${encodeURIComponent(key)}`);
    await loadBackups();
  } catch (e) {
    show($("app-error"), e.message);
  }
}

async function restore(key) {
  const text = `Restore ${key}? It replaces the whole content of the data directory (databases, `
    + "uploaded files, everything but the gateway's own state and local backups) with the "
    + "content of the backup. An application the gateway manages (--exec, --app-stop/--app-start) "
    + "is stopped before and started again after.";
  if (!(await confirmDialog("Restore backup", text, "Restore"))) return;
  const status = $("restore-status");
  status.className = "notice";
  show(status, `Restoring ${key}...`);
  try {
    await api("POST", `/api/backups/${encodeURIComponent(key)}/restore`);
  } catch (e) {
    status.className = "notice failed";
    show(status, `Restore of ${key} refused: ${fieldMessage(e, e.data && e.data.app ? "app" : "backup")}`);
    return;
  }
  await followRestore(key, (s) => s.key === key);
}

// ---------------------------------------------------------------- point in time

// The window of GET /api/gateway/pitr, shown with the form when the stream is on (--pitr).
async function loadPitr() {
  let w;
  try {
    w = await api("GET", "/api/gateway/pitr");
  } catch {
    return;
  }
  $("pitr-form").hidden = !w.enabled;
  const el = $("pitr-window");
  el.hidden = !w.enabled;
  if (!w.enabled) return;
  const lines = (w.databases || []).map((d) => {
    const span = d.earliest ? `from ${d.earliest} to ${d.latest}` : "no history yet";
    const s = d.stream;
    const lag = s ? (s.streaming ? `, ${s.lagMs} ms behind` : `, not streaming${s.error ? `: ${s.error}` : ""}`) : "";
    const mib = (n) => (n / 1048576).toFixed(1);
    const bound = w.maxStoredBytes ? ` of ${mib(w.maxStoredBytes)}` : "";
    const stored = d.storedBytes ? `, ${mib(d.storedBytes)}${bound} MiB stored` : "";
    return `${d.name}: ${span}${lag}${stored}`;
  });
  const skipped = (w.excluded || []).length ? ` Not streamed (backups only): ${w.excluded.join(", ")}.` : "";
  el.textContent = (lines.length ? `Restorable: ${lines.join("; ")}.` : "No database streamed yet.") + skipped;
  const earliest = (w.databases || []).map((d) => d.earliest).filter(Boolean).sort()[0];
  if (earliest) $("pitr-time").min = earliest.slice(0, 19).replace(" ", "T");
}

// "2026-12-06T23:00:00.000" (the input, read as UTC) as PocketBase's format.
function pitrTime(value) {
  const [date, time = "00:00"] = value.split("T");
  const [hms, ms = "000"] = time.split(".");
  const full = hms.length === 5 ? `${hms}:00` : hms;
  return `${date} ${full}.${ms.padEnd(3, "0").slice(0, 3)}Z`;
}

async function restorePitr(latest) {
  const value = $("pitr-time").value;
  if (!latest && !value) {
    show($("restore-status"), "Choose a moment first.");
    return;
  }
  const when = latest ? "the latest moment stored" : pitrTime(value);
  const text = `Restore to ${when}? Every streamed database is brought back to that moment, and `
    + "the other files come from the newest backup at or before it. It replaces the data "
    + "directory's content; an application the gateway manages is stopped before and started after.";
  if (!(await confirmDialog("Restore to a point in time", text, "Restore"))) return;
  const status = $("restore-status");
  status.className = "notice";
  show(status, `Restoring to ${when}...`);
  const before = await api("GET", "/api/gateway/restore").catch(() => ({}));
  try {
    await api("POST", "/api/gateway/restore", latest ? { latest: true } : { time: pitrTime(value) });
  } catch (e) {
    status.className = "notice failed";
    show(status, `Restore to ${when} refused: ${fieldMessage(e, e.data && e.data.app ? "app" : "time")}`);
    return;
  }
  await followRestore(when, (s) => s.startedAt !== before.startedAt && Boolean(s.pointInTime));
  loadPitr();
}

// Polls the restore's outcome until `mine(status)` is done; its progress meanwhile.
async function followRestore(label, mine) {
  const status = $("restore-status");
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    let s;
    try {
      s = await api("GET", "/api/gateway/restore");
    } catch {
      continue;
    }
    if (!mine(s) || s.status === "running") {
      const p = await api("GET", "/api/gateway/progress").catch(() => null);
      const r = p && p.running;
      if (r && r.kind === "restore") {
        show(status, `Restoring ${label}: ${r.phase}, ${humanSize(r.bytesDone)} of ${humanSize(r.bytesTotal)}`);
      }
      continue;
    }
    loadAppState();
    const pit = s.pointInTime;
    if (s.status === "ok" && pit) {
      status.className = "notice ok";
      show(status, `Restored to ${pit.time}; the other files are those of ${pit.filesFrom} (${pit.filesTime}).`);
    } else if (s.status === "ok") {
      status.className = "notice ok";
      show(status, `Restored ${label}.`);
    } else {
      status.className = "notice failed";
      show(status, `Restore of ${label} failed: ${s.error || "unknown reason"}`);
    }
    return;
  }
}

// ---------------------------------------------------------------- settings

let saved = null;

function fillSettings(s) {
  saved = s;
  const b = s.backups || {};
  const s3 = b.s3 || {};
  $("cron").value = b.cron || "";
  $("cron-max-keep").value = b.cronMaxKeep;
  $("verify-after-create").value = b.verifyAfterCreate || "scheduled";
  // The URL is never answered: a saved one shows as a placeholder, kept unless retyped.
  $("notify-url").value = "";
  $("notify-url").placeholder = b.notifyUrlSet ? "set (unchanged)" : "https://hooks.example.com/...";
  $("pitr-enabled").checked = Boolean(b.pitr);
  $("s3-enabled").checked = !!s3.enabled;
  $("s3-bucket").value = s3.bucket || "";
  $("s3-region").value = s3.region || "";
  $("s3-endpoint").value = s3.endpoint || "";
  $("s3-access-key").value = s3.accessKey || "";
  $("s3-secret").value = "";
  $("s3-force-path-style").checked = !!s3.forcePathStyle;
  $("superuser-ips").value = (s.superuserIPs || []).join(", ");
  const tp = s.trustedProxy || {};
  $("proxy-headers").value = (tp.headers || []).join(", ");
  $("proxy-sources").value = (tp.sources || []).join(", ");
  $("proxy-leftmost").checked = !!tp.useLeftmostIP;
  const rl = s.rateLimits || {};
  $("rate-enabled").checked = !!rl.enabled;
  $("rate-rules").value = (rl.rules || [])
    .map((r) => [r.label, r.maxRequests, r.duration, r.audience].filter((x) => x !== "" && x !== undefined).join(" "))
    .join("\n");
  $("rate-excluded").value = (rl.excludedIPs || []).join(", ");
  showCronNext();
  s3Changed();
}

function s3Form() {
  const s3 = {
    enabled: $("s3-enabled").checked,
    bucket: $("s3-bucket").value.trim(),
    region: $("s3-region").value.trim(),
    endpoint: $("s3-endpoint").value.trim(),
    accessKey: $("s3-access-key").value.trim(),
    forcePathStyle: $("s3-force-path-style").checked,
  };
  const secret = $("s3-secret").value;
  if (secret) s3.secret = secret;
  return s3;
}

function s3Dirty() {
  const now = s3Form();
  const was = (saved && saved.backups && saved.backups.s3) || {};
  return now.secret !== undefined
    || ["enabled", "bucket", "region", "endpoint", "accessKey", "forcePathStyle"].some((k) => now[k] !== (was[k] ?? (typeof now[k] === "boolean" ? false : "")));
}

function s3Changed() {
  const dirty = s3Dirty();
  $("s3-test").disabled = dirty;
  $("s3-test").title = dirty ? "Save the settings first: the test uses the saved ones." : "";
}

const FIELD_ERRORS = ["cron-error", "cronMaxKeep-error", "verifyAfterCreate-error", "notifyUrl-error", "pitr-error", "s3-error", "superuserIPs-error", "trustedProxy-error", "rateLimits-error"];

/** "label max seconds [audience]" lines as PocketBase's rules (numbers left as typed: the
 * API says what is wrong with them). */
function rulesForm() {
  return $("rate-rules").value.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const [label, max, duration, audience] = line.split(/\s+/);
    return { label, maxRequests: Number(max) || 0, duration: Number(duration) || 0, audience: audience || "" };
  });
}

/** The first message in a nested field-error object, with its path. */
function firstError(obj, path = []) {
  if (!obj || typeof obj !== "object") return "";
  if (typeof obj.message === "string") return (path.length ? path.join(".") + ": " : "") + obj.message;
  for (const [k, v] of Object.entries(obj)) {
    const m = firstError(v, [...path, k]);
    if (m) return m;
  }
  return "";
}

const commaList = (id) => $(id).value.split(",").map((x) => x.trim()).filter(Boolean);

function fieldErrors(err) {
  const data = err.data || {};
  const b = data.backups || {};
  const put = (id, f) => show($(id), f && f.message);
  put("cron-error", b.cron);
  put("cronMaxKeep-error", b.cronMaxKeep);
  put("verifyAfterCreate-error", b.verifyAfterCreate);
  put("notifyUrl-error", b.notifyUrl);
  put("pitr-error", b.pitr);
  const s3 = b.s3 || {};
  const s3Messages = Object.entries(s3).map(([k, v]) => `${k}: ${v.message}`).join("\n");
  show($("s3-error"), s3Messages);
  put("superuserIPs-error", data.superuserIPs && (data.superuserIPs.message ? data.superuserIPs : Object.values(data.superuserIPs)[0]));
  show($("trustedProxy-error"), firstError(data.trustedProxy));
  show($("rateLimits-error"), firstError(data.rateLimits));
}

async function saveSettings(ev) {
  ev.preventDefault();
  FIELD_ERRORS.forEach((id) => show($(id), ""));
  show($("settings-error"), "");
  $("settings-status").textContent = "";
  const ips = $("superuser-ips").value.split(",").map((x) => x.trim()).filter(Boolean);
  const body = {
    backups: {
      cron: $("cron").value.trim(),
      cronMaxKeep: Number($("cron-max-keep").value),
      s3: s3Form(),
      verifyAfterCreate: $("verify-after-create").value,
      // Sent only when typed: an empty field keeps the saved URL.
      ...($("notify-url").value.trim() ? { notifyUrl: $("notify-url").value.trim() } : {}),
      pitr: $("pitr-enabled").checked,
    },
    superuserIPs: ips,
    trustedProxy: {
      headers: commaList("proxy-headers"),
      sources: commaList("proxy-sources"),
      useLeftmostIP: $("proxy-leftmost").checked,
    },
    rateLimits: {
      enabled: $("rate-enabled").checked,
      rules: rulesForm(),
      excludedIPs: commaList("rate-excluded"),
    },
  };
  try {
    fillSettings(await api("PATCH", "/api/settings", body));
    $("settings-status").textContent = "Saved.";
    loadPitr();
  } catch (e) {
    fieldErrors(e);
    show($("settings-error"), e.message);
  }
}

async function testS3() {
  const st = $("s3-test-status");
  st.className = "";
  st.textContent = "Testing...";
  try {
    await api("POST", "/api/settings/test/s3", { filesystem: "backups" });
    st.className = "ok";
    st.textContent = "Connection OK.";
  } catch (e) {
    st.className = "error";
    st.textContent = e.message;
  }
}

// ---------------------------------------------------------------- start

// The application the gateway stops and starts around a restore (data.app of the health
// check): supervised under --exec (running or not), commands, or none.
async function loadAppState() {
  const el = $("app-state");
  try {
    const h = await api("GET", "/api/health");
    const app = h.data && h.data.app;
    if (!app) return;
    if (app.lifecycle === "exec") {
      const c = app.child || {};
      el.textContent = c.running
        ? `Application: supervised (--exec), running, pid ${c.pid}, started ${c.starts} time(s).`
        : `Application: supervised (--exec), not running${c.lastExit ? ` (${c.lastExit})` : ""}.`;
    } else if (app.lifecycle === "commands") {
      el.textContent = "Application: stopped and started around restores by --app-stop/--app-start.";
    } else {
      el.textContent = "Application: not managed by the gateway; a restore is refused while it has the data open.";
    }
    el.dataset.lifecycle = app.lifecycle;
    el.dataset.running = String(Boolean(app.child && app.child.running));
  } catch {
    // The health check is shown again after the next restore or reload.
  }
}

async function start() {
  if (installToken()) {
    showInstall();
    return;
  }
  const a = auth();
  if (!a || !a.token) {
    signedOut("");
    return;
  }
  try {
    await loadBackups();
    fillSettings(await api("GET", "/api/settings"));
  } catch (e) {
    if (e.status !== 401) signedOut(e.message);
    return;
  }
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = (a.record && a.record.email) || "";
  loadAppState();
  loadPitr();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("install-form").addEventListener("submit", install);
  $("logout").addEventListener("click", () => signedOut(""));
  $("filter").addEventListener("input", renderBackups);
  $("create-form").addEventListener("submit", create);
  $("upload-form").addEventListener("submit", upload);
  $("settings-form").addEventListener("submit", saveSettings);
  $("cron").addEventListener("input", showCronNext);
  for (const id of ["s3-enabled", "s3-bucket", "s3-region", "s3-endpoint", "s3-access-key", "s3-secret", "s3-force-path-style"]) {
    $(id).addEventListener("input", s3Changed);
    $(id).addEventListener("change", s3Changed);
  }
  $("s3-test").addEventListener("click", testS3);
  $("pitr-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    restorePitr(false);
  });
  $("pitr-latest").addEventListener("click", () => restorePitr(true));
  start();
});
