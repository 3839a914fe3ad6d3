// Drives a running gateway with the official PocketBase JS SDK, as a user's app would:
// auth, create, list, upload, file token + getDownloadURL + download, delete, and the
// SDK's error objects for a bad request. Exits non-zero with a message on any mismatch.
//
// Usage: node sdk.mjs BASE_URL EMAIL PASSWORD
import assert from "node:assert/strict";
import PocketBase from "pocketbase";

const [base, email, password] = process.argv.slice(2);
const pb = new PocketBase(base);

const auth = await pb.collection("_superusers").authWithPassword(email, password);
assert.equal(auth.record.email, email);
assert.equal(auth.record.collectionName, "_superusers");
assert.ok(pb.authStore.isValid, "auth store holds a valid token");
assert.ok(pb.authStore.isSuperuser, "SDK recognizes a superuser token");

await pb.collection("_superusers").authRefresh();

assert.deepEqual(await pb.backups.getFullList(), []);

assert.equal(await pb.backups.create("sdk_made.zip"), true);

// A zip made by hand: one stored entry "hello.txt" = "hi".
const zip = makeZip("hello.txt", new TextEncoder().encode("hi"));
assert.equal(await pb.backups.upload({ file: new File([zip], "sdk_up.zip") }), true);

const list = await pb.backups.getFullList();
assert.deepEqual(list.map((b) => b.key), ["sdk_made.zip", "sdk_up.zip"]);
for (const b of list) {
  assert.match(b.modified, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.ok(b.size > 0);
}

const fileToken = await pb.files.getToken();
const url = pb.backups.getDownloadURL(fileToken, "sdk_up.zip");
const res = await fetch(url);
assert.equal(res.status, 200);
assert.deepEqual(new Uint8Array(await res.arrayBuffer()), zip);

// Errors surface as ClientResponseError with PocketBase's body.
try {
  await pb.backups.create("Bad Name");
  assert.fail("bad name accepted");
} catch (e) {
  assert.equal(e.status, 400);
  assert.equal(e.response.data.name.code, "validation_match_invalid");
}
try {
  await pb.backups.delete("missing.zip");
  assert.fail("missing delete accepted");
} catch (e) {
  assert.equal(e.status, 400);
  assert.equal(e.response.message, "Invalid or already deleted backup file.");
}

assert.equal(await pb.backups.delete("sdk_made.zip"), true);
assert.equal(await pb.backups.delete("sdk_up.zip"), true);
assert.deepEqual(await pb.backups.getFullList(), []);

console.log("sdk: all checks passed");

function makeZip(name, data) {
  const enc = new TextEncoder().encode(name);
  const crc = crc32(data);
  const local = new DataView(new ArrayBuffer(30));
  local.setUint32(0, 0x04034b50, true);
  local.setUint16(4, 20, true);
  local.setUint32(14, crc, true);
  local.setUint32(18, data.length, true);
  local.setUint32(22, data.length, true);
  local.setUint16(26, enc.length, true);
  const central = new DataView(new ArrayBuffer(46));
  central.setUint32(0, 0x02014b50, true);
  central.setUint16(4, 20, true);
  central.setUint16(6, 20, true);
  central.setUint32(16, crc, true);
  central.setUint32(20, data.length, true);
  central.setUint32(24, data.length, true);
  central.setUint16(28, enc.length, true);
  const cdOffset = 30 + enc.length + data.length;
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, 1, true);
  end.setUint16(10, 1, true);
  end.setUint32(12, 46 + enc.length, true);
  end.setUint32(16, cdOffset, true);
  const parts = [new Uint8Array(local.buffer), enc, data, new Uint8Array(central.buffer), enc, new Uint8Array(end.buffer)];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}
