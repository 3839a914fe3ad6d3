// Drives a running gateway with the official PocketBase JS SDK, as a user's app would:
// auth, create, list, upload, file token + getDownloadURL + download, delete, and the
// SDK's error objects for a bad request. Exits non-zero with a message on any mismatch.
//
// Usage: node sdk.mjs BASE_URL EMAIL PASSWORD
import assert from "node:assert/strict";
import PocketBase from "pocketbase";
import { readFileSync } from "node:fs";

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

// A backup made by the real PocketBase 0.40.6.
const zip = new Uint8Array(readFileSync(new URL("../fixtures/pocketbase-0.40.6.zip", import.meta.url)));
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
