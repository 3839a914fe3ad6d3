// Runs the conformance scenarios against one server (PocketBase or the gateway) and writes a
// normalized result per scenario: statuses, messages, validation codes, the headers that
// matter and hashes of downloaded bytes are kept; volatile values (tokens, ids, timestamps,
// sizes, generated names) are replaced by their shape.
//
// Usage: node run.mjs --base URL --email E --password P --data-dir DIR --out FILE
//                    [--only NAME] [--connections pool|fresh]
//
// --data-dir is the server's data directory (pb_data), used to check a restore on disk.
// The official SDK is used where it covers a call, through one client for the whole run, as
// real programs do; plain fetch for raw edge cases. With `--connections pool` (the default)
// every request goes over Node's keep-alive pool; with `fresh`, each request opens its own
// connection.
import PocketBase from "pocketbase";
import { Agent, setGlobalDispatcher } from "undici";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const base = args.base.replace(/\/$/, "");
const here = dirname(fileURLToPath(import.meta.url));
const fixture = readFileSync(join(here, "..", "tests", "fixtures", "pocketbase-0.40.6.zip"));
if (args.connections === "fresh") setGlobalDispatcher(new Agent({ pipelining: 0 }));

/** The one SDK client of the run (its auth store is refreshed by `login`). */
const sdk = new PocketBase(base);
sdk.autoCancellation(false);

// ---------------------------------------------------------------- helpers

const b64url = (s) => Buffer.from(s).toString("base64url");
const sha = (buf) => createHash("sha256").update(buf).digest("hex").slice(0, 16);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let superToken = "";
async function login() {
  const res = await fetch(`${base}/api/collections/_superusers/auth-with-password`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ identity: args.email, password: args.password }),
  });
  if (res.status !== 200) throw new Error(`login failed: ${res.status}`);
  const body = await res.json();
  superToken = body.token;
  sdk.authStore.save(superToken, body.record);
  return superToken;
}

async function fileToken() {
  const res = await fetch(`${base}/api/files/token`, { method: "POST", headers: { Authorization: superToken } });
  return (await res.json()).token;
}

/** Replaces volatile values by their shape. */
function normalize(value, key = "") {
  if (Array.isArray(value)) return value.map((v) => normalize(v, key));
  if (value && typeof value === "object") {
    const out = {};
    for (const k of Object.keys(value).sort()) out[k] = normalize(value[k], k);
    return out;
  }
  if (typeof value === "string") {
    if (key === "token") return value.split(".").length === 3 ? "<jwt>" : "<not-a-jwt>";
    if (key === "id") return `<id:${value.length}>`;
    if (["created", "updated", "modified"].includes(key))
      return /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$/.test(value) ? "<datetime>" : `<bad-datetime:${value}>`;
    if (/^pb_backup_.*\d{14}\.zip$/.test(value)) return "<default-backup-name>";
    // PocketBase names the uploaded file by its normalized name (random suffix); the
    // gateway by the name sent. The code and the rest of the text are compared.
    if (/mime type must be one of/.test(value)) return value.replace(/^".*?"/, '"<file name>"');
    return value;
  }
  if (typeof value === "number" && key === "size") return value > 0 ? "<positive>" : value;
  return value;
}

/** Every response header, with the volatile values replaced by their shape. */
function headersOf(res, isJson) {
  const out = {};
  res.headers.forEach((value, name) => {
    if (name === "date" || name === "last-modified") value = /GMT$/.test(value) ? "<http-date>" : `<bad-date:${value}>`;
    // A JSON body's length follows its tokens, ids and times; its content is compared.
    else if (name === "content-length" && isJson) value = "<length>";
    // Connection handling (keep-alive) is not part of the API.
    else if (name === "connection" || name === "keep-alive") return;
    out[name] = value;
  });
  return out;
}

/** A request; returns the normalized response. */
async function call(method, path, { auth = "super", json, body, headers = {}, raw = false, noHeaders = false } = {}) {
  const h = { ...headers };
  if (auth === "super") h.Authorization = superToken;
  else if (auth) h.Authorization = auth;
  let payload = body;
  if (json !== undefined) {
    h["content-type"] = "application/json";
    payload = typeof json === "string" ? json : JSON.stringify(json);
  }
  const res = await fetch(base + path, { method, headers: h, body: payload });
  const buf = Buffer.from(await res.arrayBuffer());
  const out = { status: res.status };
  const ct = res.headers.get("content-type") || "";
  if (ct.includes("json")) {
    try {
      out.body = normalize(JSON.parse(buf.toString("utf8")));
    } catch {
      out.body = "<invalid json>";
    }
  } else if (raw || buf.length) {
    out.bytes = buf.length ? `sha256:${sha(buf)} len:${buf.length}` : "<empty>";
  }
  if (!noHeaders) out.headers = headersOf(res, ct.includes("json"));
  return out;
}

function multipart(parts) {
  const form = new FormData();
  for (const [name, value, filename] of parts) {
    if (filename !== undefined) form.append(name, new Blob([value]), filename);
    else form.append(name, value);
  }
  return form;
}

const upload = (parts, auth = "super") => call("POST", "/api/backups/upload", { auth, body: multipart(parts) });

async function keys() {
  const res = await fetch(`${base}/api/backups`, { headers: { Authorization: superToken } });
  const list = await res.json();
  return list.map((b) => b.key).sort();
}

async function clearBackups() {
  for (const k of await keys()) await call("DELETE", `/api/backups/${encodeURIComponent(k)}`);
}

async function waitHealthy(timeoutMs = 60000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const r = await fetch(`${base}/api/health`);
      if (r.status === 200) return true;
    } catch {}
    await sleep(100);
  }
  throw new Error("server did not come back");
}

/** Waits until no create/restore runs (gateway: health canBackup; PocketBase: the same). */
async function waitIdle(timeoutMs = 120000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const r = await fetch(`${base}/api/health`, { headers: { Authorization: superToken } });
      if (r.status === 200) {
        const body = await r.json();
        if (body.data?.canBackup !== false) return;
      }
    } catch {}
    await sleep(100);
  }
  throw new Error("still busy");
}

function forged(claims, header = { alg: "HS256", typ: "JWT" }, sig = "c2lnbmF0dXJl") {
  return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}.${sig}`;
}

function claimsOf(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
}

/** A stored zip with entries [name, bytes], optionally a unix mode per entry. */
function makeZip(entries) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, data, mode = 0o100644] of entries) {
    const n = Buffer.from(name);
    const d = Buffer.from(data);
    const crc = crc32(d);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(d.length, 18);
    lh.writeUInt32LE(d.length, 22);
    lh.writeUInt16LE(n.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE((3 << 8) | 20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(d.length, 20);
    ch.writeUInt32LE(d.length, 24);
    ch.writeUInt16LE(n.length, 28);
    ch.writeUInt32LE((mode << 16) >>> 0, 38);
    ch.writeUInt32LE(offset, 42);
    locals.push(lh, n, d);
    centrals.push(ch, n);
    offset += 30 + n.length + d.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

// ---------------------------------------------------------------- scenarios

const scenarios = {};
const scenario = (name, fn) => (scenarios[name] = fn);

scenario("auth: password ok (SDK)", async () => {
  const r = await sdk.collection("_superusers").authWithPassword(args.email, args.password);
  return normalize({ token: r.token, record: r.record, isSuperuser: sdk.authStore.isSuperuser });
});
scenario("auth: wrong password", () =>
  call("POST", "/api/collections/_superusers/auth-with-password", { auth: null, json: { identity: args.email, password: "wrong-password" } }),
);
scenario("auth: unknown identity", () =>
  call("POST", "/api/collections/_superusers/auth-with-password", { auth: null, json: { identity: "nobody@example.com", password: args.password } }),
);
scenario("auth: blank fields", () =>
  call("POST", "/api/collections/_superusers/auth-with-password", { auth: null, json: {} }),
);
scenario("auth: unparsable body", () =>
  call("POST", "/api/collections/_superusers/auth-with-password", { auth: null, json: "{nope" }),
);
scenario("auth: refresh", () => call("POST", "/api/collections/_superusers/auth-refresh"));
scenario("auth: bearer prefix accepted", () => call("GET", "/api/backups", { auth: `Bearer ${superToken}` }));
scenario("files: token", () => call("POST", "/api/files/token"));
scenario("files: token without auth", () => call("POST", "/api/files/token", { auth: null }));

const protectedRoutes = [
  ["GET", "/api/backups"],
  ["POST", "/api/backups"],
  ["POST", "/api/backups/upload"],
  ["DELETE", "/api/backups/x.zip"],
  ["POST", "/api/backups/x.zip/restore"],
  ["POST", "/api/collections/_superusers/auth-refresh"],
];
function badTokens() {
  const c = claimsOf(superToken);
  return {
    none: null,
    garbage: "garbage",
    "three parts": "a.b.c",
    "forged signature": forged({ ...c, exp: c.exp + 1000 }),
    "alg none": forged(c, { alg: "none", typ: "JWT" }, ""),
    "alg HS512": forged(c, { alg: "HS512", typ: "JWT" }),
    expired: forged({ ...c, exp: 1 }),
  };
}
for (const [method, path] of protectedRoutes) {
  scenario(`tokens: ${method} ${path} with bad tokens`, async () => {
    const out = {};
    for (const [what, token] of Object.entries(badTokens())) out[what] = await call(method, path, { auth: token });
    out["file token as auth"] = await call(method, path, { auth: await fileToken() });
    return out;
  });
}
scenario("tokens: download with bad file tokens", async () => {
  await clearBackups();
  await upload([["file", fixture, "dl.zip"]]);
  const c = claimsOf(await fileToken());
  const out = {};
  const tokens = {
    none: "",
    garbage: "garbage",
    "auth token": superToken,
    "forged file token": forged({ ...c, exp: c.exp + 1000 }),
    "alg none file token": forged(c, { alg: "none", typ: "JWT" }, ""),
  };
  for (const [what, t] of Object.entries(tokens)) out[what] = await call("GET", `/api/backups/dl.zip?token=${encodeURIComponent(t)}`, { auth: null });
  out["auth header instead of token"] = await call("GET", "/api/backups/dl.zip");
  return out;
});

scenario("list: empty", async () => {
  await clearBackups();
  return call("GET", "/api/backups");
});
scenario("list: sorted, with fields", async () => {
  await clearBackups();
  for (const n of ["b.zip", "a.zip", "c_1.zip"]) await upload([["file", fixture, n]]);
  return {
    all: await call("GET", "/api/backups"),
    key: await call("GET", "/api/backups?fields=key"),
    "key,size": await call("GET", "/api/backups?fields=key,size"),
    star: await call("GET", "/api/backups?fields=*"),
    unknown: await call("GET", "/api/backups?fields=nope"),
  };
});

scenario("create: named (SDK) then listed", async () => {
  await clearBackups();
  const pb = sdk;
  const ok = await pb.backups.create("named.zip");
  await waitIdle();
  return { ok, keys: await keys() };
});
scenario("create: empty body gets a default name", async () => {
  await clearBackups();
  const r = await call("POST", "/api/backups", { body: "" });
  await waitIdle();
  return { r, keys: normalize(await keys()) };
});
scenario("create: name rules", async () => {
  await clearBackups();
  const out = {};
  for (const name of [
    "Upper.zip", "with space.zip", "a.tar", "no_ext", ".zip", "../up.zip", "a/b.zip", "é.zip", "a.zip ",
    "x".repeat(147) + ".zip", "x".repeat(146) + ".zip", "ok-name_1.zip",
  ]) {
    out[name.length > 40 ? `${name.length} chars` : name] = await call("POST", "/api/backups", { json: { name } });
    await waitIdle();
  }
  out.keys = await keys();
  return out;
});
scenario("create: name of wrong type", () => call("POST", "/api/backups", { json: { name: 123 } }));
scenario("create: unparsable body", () => call("POST", "/api/backups", { json: "{nope" }));
scenario("create: duplicate name", async () => {
  await clearBackups();
  const first = await call("POST", "/api/backups", { json: { name: "dup.zip" } });
  await waitIdle();
  const second = await call("POST", "/api/backups", { json: { name: "dup.zip" } });
  return { first, second, keys: await keys() };
});

scenario("upload: zip (SDK)", async () => {
  await clearBackups();
  const pb = sdk;
  const ok = await pb.backups.upload({ file: new File([fixture], "sdk.zip") });
  return { ok, keys: await keys() };
});
scenario("upload: edge cases", async () => {
  await clearBackups();
  const zip = makeZip([["a.txt", "a"]]);
  return {
    "no file part": await upload([["other", "x"]]),
    "file part without filename": await upload([["file", "just text"]]),
    "not multipart": await call("POST", "/api/backups/upload", { json: { file: "x" } }),
    "no body": await call("POST", "/api/backups/upload"),
    "non-zip": await upload([["file", "hello world", "notes.zip"]]),
    "empty file": await upload([["file", "", "empty.zip"]]),
    "path in file name": await upload([["file", zip, "../../x/pathy.zip"]]),
    "windows path in file name": await upload([["file", zip, "C:\\Users\\me\\win.zip"]]),
    "space in name": await upload([["file", zip, "My Backup (1).zip"]]),
    "unicode name": await upload([["file", zip, "résumé ✓.zip"]]),
    "no .zip extension": await upload([["file", zip, "noext"]]),
    duplicate: await upload([["file", zip, "pathy.zip"]]),
    "two files": await upload([["file", zip, "two1.zip"], ["file", zip, "two2.zip"]]),
    keys: await keys(),
  };
});
scenario("upload: large body (24 MiB)", async () => {
  await clearBackups();
  const big = makeZip([["big.bin", Buffer.alloc(24 << 20, 7)]]);
  return { r: await upload([["file", big, "large.zip"]]), keys: await keys() };
});

scenario("download: whole, ranges, SDK URL", async () => {
  await clearBackups();
  await upload([["file", fixture, "dl.zip"]]);
  const t = await fileToken();
  const url = sdk.backups.getDownloadURL(t, "dl.zip");
  const viaSdk = await fetch(url);
  const q = `?token=${t}`;
  return {
    sdk: { status: viaSdk.status, bytes: `sha256:${sha(Buffer.from(await viaSdk.arrayBuffer()))}` },
    whole: await call("GET", `/api/backups/dl.zip${q}`, { auth: null, raw: true }),
    "bytes=0-9": await call("GET", `/api/backups/dl.zip${q}`, { auth: null, raw: true, headers: { Range: "bytes=0-9" } }),
    "bytes=-22": await call("GET", `/api/backups/dl.zip${q}`, { auth: null, raw: true, headers: { Range: "bytes=-22" } }),
    "bytes=1000-": await call("GET", `/api/backups/dl.zip${q}`, { auth: null, raw: true, headers: { Range: "bytes=1000-" } }),
    "unsatisfiable": (await call("GET", `/api/backups/dl.zip${q}`, { auth: null, raw: true, headers: { Range: "bytes=99999999-" } })).status,
  };
});
scenario("download: unknown and odd keys", async () => {
  const t = await fileToken();
  const out = {};
  for (const k of ["missing.zip", "..%2Fdata.db", "a%2Fb.zip", "%00.zip"]) {
    const r = await call("GET", `/api/backups/${k}?token=${t}`, { auth: null });
    out[k] = { status: r.status, message: r.body?.message };
  }
  return out;
});
scenario("download: url-encoded and unicode keys", async () => {
  await clearBackups();
  const zip = makeZip([["a.txt", "a"]]);
  await upload([["file", zip, "My Backup (1).zip"]]);
  await upload([["file", zip, "résumé ✓.zip"]]);
  const t = await fileToken();
  const out = {};
  for (const k of await keys()) out[k] = await call("GET", `/api/backups/${encodeURIComponent(k)}?token=${t}`, { auth: null, raw: true });
  return out;
});

scenario("delete: existing (SDK), missing, traversal", async () => {
  await clearBackups();
  await upload([["file", fixture, "del.zip"]]);
  const pb = sdk;
  const ok = await pb.backups.delete("del.zip");
  return {
    ok,
    again: await call("DELETE", "/api/backups/del.zip"),
    missing: await call("DELETE", "/api/backups/missing.zip"),
    traversal: await call("DELETE", "/api/backups/..%2Fdata.db"),
    keys: await keys(),
  };
});

/** Writes `mib` MiB of incompressible ballast under the data directory; returns its dir. */
function ballast(mib) {
  const dir = join(args["data-dir"], "conformance-bulk");
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < mib / 16; i++) writeFileSync(join(dir, `blob-${i}.bin`), randomBytes(16 << 20));
  return dir;
}

/** Waits until health reports a create or restore as running (canBackup false). */
async function waitBusy(timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const h = await fetch(`${base}/api/health`, { headers: { Authorization: superToken } }).then((r) => r.json());
      if (h.data?.canBackup === false) return true;
    } catch {}
    await sleep(5);
  }
  return false;
}

/** Waits until a restore has replaced the data directory (the marker written after the
 * backup is gone), then until the server is back and idle. */
async function waitRestored(marker, timeoutMs = 120000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end && existsSync(marker)) await sleep(100);
  await waitHealthy();
  await login();
  await waitIdle();
  return !existsSync(marker);
}

scenario("busy: create, delete, restore and upload while a slow create runs", async () => {
  await clearBackups();
  await upload([["file", fixture, "other.zip"]]);
  // 192 MiB of incompressible data: the create takes seconds on both servers.
  const dir = ballast(192);
  try {
    const running = call("POST", "/api/backups", { json: { name: "slow.zip" } });
    const seen = await waitBusy();
    const out = {
      "busy seen": seen,
      "second create": await call("POST", "/api/backups", { json: { name: "other2.zip" } }),
      "second create (SDK)": await sdk.backups.create("other3.zip").then(() => "ok", (e) => ({ status: e.status, message: e.response?.message })),
      "delete running": await call("DELETE", "/api/backups/slow.zip"),
      "restore another": await call("POST", "/api/backups/other.zip/restore"),
    };
    out.first = await running;
    await waitIdle();
    out.keys = await keys();
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

scenario("busy: create and restore while a restore runs", async () => {
  await clearBackups();
  const dir = ballast(128);
  const marker = join(args["data-dir"], "conformance-restore-marker.txt");
  try {
    await call("POST", "/api/backups", { json: { name: "big.zip" } });
    await waitIdle();
    writeFileSync(marker, "written after the backup");
    const started = await call("POST", "/api/backups/big.zip/restore");
    const seen = await waitBusy();
    const out = {
      started,
      "busy seen": seen,
      create: await call("POST", "/api/backups", { json: { name: "during.zip" } }),
      "restore again": await call("POST", "/api/backups/big.zip/restore"),
      "delete restoring": await call("DELETE", "/api/backups/big.zip"),
    };
    out.restored = await waitRestored(marker);
    out.keys = await keys();
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(marker, { force: true });
  }
});

scenario("sequence: create, restore, create from one SDK client", async () => {
  await clearBackups();
  const marker = join(args["data-dir"], "conformance-seq-marker.txt");
  const ok = (p) => p.then(() => "ok", (e) => ({ status: e.status, message: e.response?.message }));
  // Something to restore besides the server's own files (the gateway's test directory
  // would otherwise be empty, and an empty archive is refused).
  const kept = join(args["data-dir"], "conformance-seq-data.txt");
  writeFileSync(kept, "in the backup");
  const out = { first: await ok(sdk.backups.create("seq1.zip")) };
  await waitIdle();
  writeFileSync(marker, "written after the backup");
  out.restore = await ok(sdk.backups.restore("seq1.zip"));
  out.restored = await waitRestored(marker);
  out.second = await ok(sdk.backups.create("seq2.zip"));
  await waitIdle();
  out.keys = await keys();
  out.kept = existsSync(kept) ? readFileSync(kept, "utf8") : "<missing>";
  rmSync(marker, { force: true });
  rmSync(kept, { force: true });
  return out;
});

// ---------------------------------------------------------------- bodies and connections

/** A request whose failure to get an answer is recorded rather than thrown. */
async function attempt(method, path, opts) {
  try {
    return await call(method, path, opts);
  } catch (e) {
    return { error: String(e?.cause?.code || e?.message || e) };
  }
}

const BODY_SIZES = { empty: 0, small: 1024, "1 MiB": 1 << 20, "40 MiB": 40 << 20 };

/** A body of `n` bytes for a route: a multipart file for the upload, JSON for the rest. */
function bodyOf(path, n) {
  if (path === "/api/backups/upload") return { body: multipart([["file", Buffer.alloc(n, 0x61), "big.zip"]]) };
  if (n === 0) return { body: "", headers: { "content-type": "application/json" } };
  const pad = Math.max(0, n - 20);
  return { body: `{"pad":"${"a".repeat(pad)}"}`, headers: { "content-type": "application/json" } };
}

const BODY_ROUTES = [
  ["POST", "/api/backups"],
  ["POST", "/api/backups/upload"],
  ["POST", "/api/backups/x.zip/restore"],
  ["DELETE", "/api/backups/x.zip"],
  ["POST", "/api/collections/_superusers/auth-refresh"],
  ["POST", "/api/files/token"],
  ["POST", "/api/collections/_superusers/auth-with-password"],
];
for (const [method, path] of BODY_ROUTES) {
  scenario(`refused bodies: ${method} ${path}`, async () => {
    const out = {};
    for (const [cred, token] of [["no token", null], ["garbage token", "garbage"], ["expired token", forged({ ...claimsOf(superToken), exp: 1 })]]) {
      for (const [size, n] of Object.entries(BODY_SIZES)) {
        out[`${cred}, ${size}`] = await attempt(method, path, { auth: token, ...bodyOf(path, n) });
      }
    }
    return out;
  });
}

scenario("refused bodies: superuser, over the limits", async () => {
  await clearBackups();
  return {
    "create, 40 MiB": await attempt("POST", "/api/backups", bodyOf("/api/backups", 40 << 20)),
    "restore, 40 MiB": await attempt("POST", "/api/backups/x.zip/restore", bodyOf("/api/backups", 40 << 20)),
    "upload, 40 MiB without a file part": await attempt("POST", "/api/backups/upload", { body: multipart([["other", Buffer.alloc(40 << 20, 0x61), "o.zip"]]) }),
    "upload, 1 MiB not a zip": await attempt("POST", "/api/backups/upload", bodyOf("/api/backups/upload", 1 << 20)),
    keys: await keys(),
  };
});

scenario("refused bodies: a create right after refused uploads on the same client", async () => {
  await clearBackups();
  const refused = {};
  for (let i = 0; i < 12; i++) {
    const r = await attempt("POST", "/api/backups/upload", { auth: i % 2 ? "garbage" : null, body: multipart([["file", Buffer.alloc(300 << 10, 0x61), "r.zip"]]) });
    const k = r.error ? `error ${r.error}` : String(r.status);
    refused[k] = (refused[k] || 0) + 1;
  }
  const t0 = Date.now();
  const created = await sdk.backups.create("after-refusals.zip").then(() => "ok", (e) => ({ status: e.status, message: e.response?.message }));
  const prompt = Date.now() - t0 < 10000;
  await waitIdle();
  return { refused, created, "answered within 10 s": prompt, keys: await keys() };
});

// ---------------------------------------------------------------- content types

/** Creates with each body; a default name is cleared after it so the next one is free. */
async function createWith(cases) {
  const out = {};
  for (const [what, { type, body }] of Object.entries(cases)) {
    const headers = type ? { "content-type": type } : {};
    out[what] = await call("POST", "/api/backups", { body, headers });
    await waitIdle();
    out[`${what}: keys`] = normalize(await keys());
    await clearBackups();
  }
  return out;
}

scenario("content types: create", async () => {
  await clearBackups();
  return createWith({
    json: { type: "application/json", body: '{"name":"ct-json.zip"}' },
    "json with charset": { type: "application/json; charset=utf-8", body: '{"name":"ct-charset.zip"}' },
    "json, upper-case key": { type: "application/json", body: '{"NAME":"ct-upper.zip"}' },
    "json, trailing text": { type: "application/json", body: '{"name":"ct-trail.zip"} x' },
    "json null": { type: "application/json", body: "null" },
    "json array": { type: "application/json", body: "[]" },
    "json, whitespace only": { type: "application/json", body: "   " },
    "json, name null": { type: "application/json", body: '{"name":null}' },
    "form-urlencoded": { type: "application/x-www-form-urlencoded", body: "name=ct-form.zip" },
    "form-urlencoded, bad name": { type: "application/x-www-form-urlencoded", body: "name=Bad%20Name.zip" },
    multipart: { body: multipart([["name", "ct-multi.zip"]]) },
    "multipart @jsonPayload": { body: multipart([["@jsonPayload", '{"name":"ct-payload.zip"}']]) },
    "text/plain": { type: "text/plain", body: "name=ct-text.zip" },
    "text/plain, empty": { type: "text/plain", body: "" },
    "octet-stream": { type: "application/octet-stream", body: '{"name":"ct-oct.zip"}' },
    "no content type": { body: Buffer.from('{"name":"ct-none.zip"}') },
    xml: { type: "application/xml", body: "<CreateBody><Name>ct-xml.zip</Name></CreateBody>" },
  });
});

scenario("content types: auth-with-password", async () => {
  const path = "/api/collections/_superusers/auth-with-password";
  const id = args.email;
  const pw = args.password;
  const form = `identity=${encodeURIComponent(id)}&password=${encodeURIComponent(pw)}`;
  const ask = (type, body) => call("POST", path, { auth: null, body, headers: type ? { "content-type": type } : {} });
  return {
    json: await ask("application/json", JSON.stringify({ identity: id, password: pw })),
    "json, upper-case keys": await ask("application/json", JSON.stringify({ Identity: id, PASSWORD: pw })),
    "form-urlencoded": await ask("application/x-www-form-urlencoded", form),
    multipart: await ask(null, multipart([["identity", id], ["password", pw]])),
    "text/plain": await ask("text/plain", JSON.stringify({ identity: id, password: pw })),
    "no content type": await ask(null, Buffer.from(JSON.stringify({ identity: id, password: pw }))),
  };
});

scenario("content types: upload", async () => {
  await clearBackups();
  const zip = makeZip([["a.txt", "a"]]);
  const ask = (type, body) => call("POST", "/api/backups/upload", { body, headers: type ? { "content-type": type } : {} });
  return {
    json: await ask("application/json", '{"file":"x"}'),
    "form-urlencoded": await ask("application/x-www-form-urlencoded", "file=x.zip"),
    "text/plain": await ask("text/plain", "x"),
    "zip bytes": await ask("application/zip", zip),
    "multipart without boundary": await ask("multipart/form-data", zip),
    "multipart, file part typed text/plain": await call("POST", "/api/backups/upload", {
      body: (() => { const f = new FormData(); f.append("file", new Blob([zip], { type: "text/plain" }), "typed.zip"); return f; })(),
    }),
    "multipart, filename*": await ask("multipart/form-data; boundary=BB", Buffer.concat([
      Buffer.from("--BB\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''star%41.zip\r\nContent-Type: application/zip\r\n\r\n"),
      zip,
      Buffer.from("\r\n--BB--\r\n"),
    ])),
    keys: await keys(),
  };
});

// ---------------------------------------------------------------- fields, headers, routes

scenario("fields: syntax", async () => {
  await clearBackups();
  for (const n of ["@test.zip", "b <i>it</i>.zip", "c_1.zip"]) await upload([["file", makeZip([["a.txt", "a"]]), n]]);
  const out = {};
  for (const f of [
    "key:excerpt(4,true)", "key:excerpt(4)", "*:excerpt(2,true)", "key:excerpt(3,true),size", "modified:excerpt(5,true)",
    "size:excerpt(1,true)", "key:excerpt(200,true)", "key:excerpt(3,false)", "key:excerpt(3,1)", "key:excerpt(3 , true)",
    "*,key:excerpt(1)", "a.b", "key.x", " , ", "key:excerpt(x)", "key:foo(1)", "key:excerpt(0,true)", "key:excerpt()",
    "key:excerpt(3,true,1)", "key:excerpt(3", "key:", "key :excerpt(2)",
  ]) {
    const r = await call("GET", `/api/backups?fields=${encodeURIComponent(f)}`);
    // PocketBase's key order after a pick is not stable; the values are compared.
    if (Array.isArray(r.body)) r.body = r.body.map((item) => normalize(item)).sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));
    out[f] = r;
  }
  out["health, fields=message"] = await call("GET", "/api/health?fields=message", { auth: null });
  out["health, fields=code,data"] = await call("GET", "/api/health?fields=code,data");
  out["auth-refresh, fields=token"] = await call("POST", "/api/collections/_superusers/auth-refresh?fields=token");
  out["auth-refresh, fields=record.email,record.id"] = await call("POST", "/api/collections/_superusers/auth-refresh?fields=record.email,record.id");
  out["files token, fields=token:excerpt(3,true)"] = await call("POST", "/api/files/token?fields=token:excerpt(3,true)");
  out["error answer, fields=message"] = await call("GET", "/api/backups?fields=message", { auth: null });
  return out;
});

scenario("cors: preflight and origins", async () => ({
  "preflight with origin": await call("OPTIONS", "/api/backups", {
    auth: null,
    headers: { Origin: "https://app.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type" },
  }),
  "preflight without origin": await call("OPTIONS", "/api/backups", { auth: null }),
  "get with origin": await call("GET", "/api/backups", { headers: { Origin: "https://app.example.com" } }),
  "refused with origin": await call("GET", "/api/backups", { auth: null, headers: { Origin: "https://app.example.com" } }),
  "head health": await call("HEAD", "/api/health", { auth: null }),
}));

scenario("routes: the key upload", async () => {
  await clearBackups();
  const t = await fileToken();
  return {
    "get without token": await call("GET", "/api/backups/upload", { auth: null }),
    "get with token": await call("GET", `/api/backups/upload?token=${t}`, { auth: null }),
    delete: await call("DELETE", "/api/backups/upload"),
    restore: await call("POST", "/api/backups/upload/restore"),
  };
});

scenario("restore: missing key", () => call("POST", "/api/backups/missing.zip/restore"));
scenario("restore: round trip checked on disk", async () => {
  await clearBackups();
  const marker = join(args["data-dir"], "conformance-marker.txt");
  writeFileSync(marker, "before");
  await call("POST", "/api/backups", { json: { name: "rt.zip" } });
  await waitIdle();
  writeFileSync(marker, "after");
  writeFileSync(join(args["data-dir"], "conformance-added.txt"), "added after the backup");
  const pb = sdk;
  const ok = await pb.backups.restore("rt.zip");
  // PocketBase restarts itself; the gateway restores in the background. Wait for both.
  await sleep(500);
  await waitHealthy();
  const end = Date.now() + 60000;
  while (Date.now() < end && existsSync(join(args["data-dir"], "conformance-added.txt"))) await sleep(100);
  await waitHealthy();
  await login();
  await waitIdle();
  const result = {
    ok,
    marker: existsSync(marker) ? readFileSync(marker, "utf8") : "<missing>",
    added: existsSync(join(args["data-dir"], "conformance-added.txt")),
    keys: await keys(),
  };
  rmSync(marker, { force: true });
  return result;
});
scenario("restore: zip-slip archive", async () => {
  await clearBackups();
  await upload([["file", makeZip([["../escape.txt", "x"]]), "slip.zip"]]);
  const r = await call("POST", "/api/backups/slip.zip/restore");
  await sleep(1000);
  await waitHealthy();
  await login();
  await waitIdle();
  return { status: r.status, message: r.body?.message, escaped: existsSync(join(args["data-dir"], "..", "escape.txt")) };
});

scenario("routing: unknown route and method", async () => ({
  route: await call("GET", "/api/nothing-here"),
  "post route": await call("POST", "/api/nothing-here"),
  method: await call("PUT", "/api/backups"),
  "patch backup": await call("PATCH", "/api/backups/x.zip"),
}));
scenario("health", () => call("GET", "/api/health", { auth: null }));
// ---------------------------------------------------------------- settings
// Each scenario leaves the settings as it found them: the same server runs the suite twice
// (pooled and fresh connections), and in S3 mode its backups live in the bucket set here.

/** A settings answer without what differs by deployment (bucket and endpoint of the S3 run). */
function settingsShape(r) {
  const s3 = r.body?.backups?.s3;
  if (s3) {
    s3.bucket = s3.bucket ? "<set>" : "";
    s3.endpoint = s3.endpoint ? "<set>" : "";
  }
  return r;
}

const patchSettings = (json, opts = {}) => call("PATCH", "/api/settings", { json, ...opts });

scenario("settings: get, auth", async () => ({
  get: settingsShape(await call("GET", "/api/settings")),
  "get without auth": await call("GET", "/api/settings", { auth: null }),
  "patch without auth": await call("PATCH", "/api/settings", { auth: null, json: { backups: { cron: "@daily" } } }),
  "patch with a file token": await call("PATCH", "/api/settings", { auth: await fileToken(), json: {} }),
  "test s3 without auth": await call("POST", "/api/settings/test/s3", { auth: null, json: { filesystem: "backups" } }),
}));

scenario("settings: validation errors", async () => {
  const out = {};
  const bodies = {
    "cron: not 5 fields": { backups: { cron: "bad" } },
    "cron: step over the maximum": { backups: { cron: "*/60 * * * *" } },
    "cron: not a number": { backups: { cron: "x * * * *" } },
    "cron: range backwards": { backups: { cron: "5-1 * * * *" } },
    "cron: weekday 7": { backups: { cron: "* * * * 7" } },
    "cron: two spaces": { backups: { cron: "*  * * * *" } },
    "cron: unknown macro": { backups: { cron: "@every 1m" } },
    "cronMaxKeep: 0 with a cron": { backups: { cron: "* * * * *", cronMaxKeep: 0 } },
    "cronMaxKeep: negative": { backups: { cronMaxKeep: -1 } },
    "cronMaxKeep: a string": { backups: { cronMaxKeep: "x" } },
    "superuserIPs: empty, invalid, bad prefix": { superuserIPs: ["1.2.3.4", "", "nope", "10.0.0.0/8", "::1", "fe80::/10", "1.2.3.4/33"] },
    "appName: empty": { meta: { appName: "" } },
    "appName: 256 characters": { meta: { appName: "x".repeat(256) } },
    "s3: enabled without bucket and secret": { backups: { s3: { enabled: true, bucket: "", secret: "" } } },
    "s3: endpoint not a URL": { backups: { s3: { endpoint: "not a url" } } },
    "not an object": [1, 2],
    "one key twice, in two cases": { backups: { cron: "@hourly", Cron: "@daily" } },
    "trustedProxy: null": { trustedProxy: null, superuserIPs: null },
  };
  for (const [name, json] of Object.entries(bodies)) out[name] = settingsShape(await patchSettings(json));
  out["unparsable body"] = await patchSettings("{nope");
  out["settings unchanged"] = settingsShape(await call("GET", "/api/settings"));
  return out;
});

scenario("settings: merge, secret hidden", async () => {
  const out = {};
  try {
    out.set = settingsShape(await patchSettings({ backups: { cron: "0 3 * * *", cronMaxKeep: 5 }, meta: { appName: "Conformance App" } }));
    out["only cronMaxKeep"] = settingsShape(await patchSettings({ backups: { cronMaxKeep: 4 } }));
    out["null sets the zero value"] = settingsShape(await patchSettings({ backups: { cron: null } }));
    out["keys in another case"] = settingsShape(await patchSettings({ BACKUPS: { CronMaxKeep: 6 } }));
    out["empty body"] = settingsShape(await call("PATCH", "/api/settings"));
    out.get = settingsShape(await call("GET", "/api/settings"));
  } finally {
    out.reset = (await patchSettings({ backups: { cron: "", cronMaxKeep: 3 }, meta: { appName: "Acme" } })).status;
  }
  return out;
});

scenario("settings: test s3", async () => ({
  "no filesystem": await call("POST", "/api/settings/test/s3", { json: {} }),
  "unknown filesystem": await call("POST", "/api/settings/test/s3", { json: { filesystem: "x" } }),
  storage: await call("POST", "/api/settings/test/s3", { json: { filesystem: "storage" } }),
  backups: await call("POST", "/api/settings/test/s3", { json: { filesystem: "backups" } }),
  "unparsable body": await call("POST", "/api/settings/test/s3", { json: "{nope" }),
}));

scenario("settings: superuser IPs behind a trusted proxy header", async () => {
  const out = {};
  const inside = { "X-Real-IP": "203.0.113.9, 10.0.0.7" };
  const ft = await fileToken();
  try {
    out.set = settingsShape(await patchSettings({ trustedProxy: { headers: ["X-Real-IP"] }, superuserIPs: ["10.0.0.0/24"] }));
    out["list from outside"] = await call("GET", "/api/backups");
    out["settings from outside"] = await call("GET", "/api/settings");
    out["unknown route from outside"] = await call("DELETE", "/api/nothing-here");
    out["health from outside"] = await call("GET", "/api/health");
    out["health without a token"] = await call("GET", "/api/health", { auth: null });
    out["download with a file token from outside"] = await call("GET", `/api/backups/x.zip?token=${ft}`, { auth: null });
    out["login from outside"] = await call("POST", "/api/collections/_superusers/auth-with-password", {
      auth: null,
      json: { identity: args.email, password: args.password },
    });
    out["login from outside, wrong password"] = await call("POST", "/api/collections/_superusers/auth-with-password", {
      auth: null,
      json: { identity: args.email, password: "wrong-password" },
    });
    out["list through the proxy"] = await call("GET", "/api/backups", { headers: inside, noHeaders: true });
    out["list, client's own leftmost claim"] = await call("GET", "/api/backups", { headers: { "X-Real-IP": "10.0.0.7, 203.0.113.9" } });
    const health = await call("GET", "/api/health", { headers: inside });
    out["health through the proxy"] = { status: health.status, realIP: health.body?.data?.realIP, possibleProxyHeader: health.body?.data?.possibleProxyHeader };
    out["leftmost"] = settingsShape(await patchSettings({ trustedProxy: { useLeftmostIP: true } }, { headers: inside }));
    out["list, leftmost now"] = await call("GET", "/api/backups", { headers: { "X-Real-IP": "10.0.0.7, 203.0.113.9" }, noHeaders: true });
  } finally {
    const reset = { superuserIPs: [], trustedProxy: { headers: [], useLeftmostIP: false } };
    out.reset = (await patchSettings(reset, { headers: { "X-Real-IP": "10.0.0.7" } })).status;
    if (out.reset !== 200) out["reset from the socket"] = (await patchSettings(reset)).status;
  }
  return out;
});


// ---------------------------------------------------------------- main

await waitHealthy();
await login();
const results = {};
for (const [name, fn] of Object.entries(scenarios)) {
  if (args.only && !name.includes(args.only)) continue;
  try {
    results[name] = await fn();
  } catch (e) {
    results[name] = { error: String(e?.message || e) };
  }
  // A restore restarts PocketBase, maybe after the scenario saw it answer (a second
  // restore it accepted): the next scenario starts once the server answers again. The
  // superuser token may change (PocketBase restarts, nothing else): refresh it.
  try {
    await waitHealthy();
    await login();
  } catch {}
}
writeFileSync(args.out, JSON.stringify(results, null, 2) + "\n");
console.log(`${Object.keys(results).length} scenarios written to ${args.out}`);
