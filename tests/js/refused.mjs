// A client that keeps sending while the gateway refuses its request, over Node's keep-alive
// pool and one long-lived SDK client, as a user's program behaves: every refusal must reach
// the client as PocketBase's answer (never EPIPE/ECONNRESET), and a create sent right after
// must be answered at once. Prints what it saw; exits non-zero on any mismatch.
//
// Usage: node refused.mjs BASE_URL EMAIL PASSWORD
import assert from "node:assert/strict";
import PocketBase from "pocketbase";

const [base, email, password] = process.argv.slice(2);
const pb = new PocketBase(base);
pb.autoCancellation(false);
await pb.collection("_superusers").authWithPassword(email, password);

const MiB = 1 << 20;
const seen = {};
async function refusedUpload(size, token) {
  const form = new FormData();
  form.append("file", new Blob([Buffer.alloc(size, 0x61)]), "refused.zip");
  const headers = token ? { Authorization: token } : {};
  try {
    const res = await fetch(`${base}/api/backups/upload`, { method: "POST", headers, body: form });
    const body = await res.json();
    return `${res.status} ${body.message}`;
  } catch (e) {
    return `error ${e?.cause?.code || e?.message}`;
  }
}

// Under the drain bound the connection stays usable; past it (100 MiB) the gateway closes
// it gracefully after the answer.
for (const size of [300 << 10, MiB, 40 * MiB, 100 * MiB]) {
  for (const token of [null, "garbage"]) {
    const got = await refusedUpload(size, token);
    seen[`${size / MiB} MiB, ${token ?? "no token"}`] = got;
    assert.equal(got, "401 The request requires valid record authorization token.", `${size} bytes, token ${token}`);
  }
}

// A JSON route over PocketBase's 32 MiB body limit, still sending.
const big = await fetch(`${base}/api/backups`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: Buffer.alloc(100 * MiB, 0x20),
}).then(async (r) => `${r.status} ${(await r.json()).message}`, (e) => `error ${e?.cause?.code || e?.message}`);
seen["create, 100 MiB body"] = big;
assert.equal(big, "413 Request entity too large.");

// Refused uploads, then a create on the same pool: answered at once.
for (let i = 0; i < 12; i++) {
  const got = await refusedUpload(300 << 10, i % 2 ? "garbage" : null);
  assert.match(got, /^401 /);
}
const t0 = Date.now();
assert.equal(await pb.backups.create("after_refusals.zip"), true);
seen["create after refusals, ms"] = Date.now() - t0;
assert.ok(seen["create after refusals, ms"] < 10000, "the create was answered at once");
assert.deepEqual((await pb.backups.getFullList()).map((b) => b.key), ["after_refusals.zip"]);

console.log(JSON.stringify(seen, null, 1));
