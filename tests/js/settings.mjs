// Drives the gateway's settings with the official PocketBase JS SDK, as the dashboard and
// user scripts do: pb.settings.getAll(), update() (validation errors, secret hiding,
// merge) and testS3("backups"), and the backups moving between local storage and S3
// without a restart. Exits non-zero with a message on any mismatch.
//
// Usage: node settings.mjs BASE_URL EMAIL PASSWORD S3_ENDPOINT BUCKET ACCESS_KEY SECRET
import assert from "node:assert/strict";
import PocketBase from "pocketbase";

const [base, email, password, endpoint, bucket, accessKey, secret] = process.argv.slice(2);
const pb = new PocketBase(base);
await pb.collection("_superusers").authWithPassword(email, password);

async function refused(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail("the call was expected to fail");
}

// PocketBase's shape and defaults, every section present.
const all = await pb.settings.getAll();
assert.deepEqual(all.superuserIPs, []);
assert.equal(all.backups.cron, "");
assert.equal(all.backups.cronMaxKeep, 3);
assert.equal(all.backups.s3.enabled, false);
assert.ok(!("secret" in all.backups.s3));
assert.equal(all.meta.appName, "Acme");
assert.deepEqual(all.trustedProxy, { headers: [], useLeftmostIP: false });
for (const section of ["smtp", "s3", "rateLimits", "batch", "logs"]) {
  assert.equal(typeof all[section], "object", section);
}

// Validation errors come back as the SDK's ClientResponseError, per field.
let e = await refused(pb.settings.update({ backups: { cron: "*/60 * * * *", cronMaxKeep: -1 } }));
assert.equal(e.status, 400);
assert.equal(e.response.message, "An error occurred while saving the new settings.");
assert.equal(e.response.data.backups.cron.code, "validation_invalid_cron");
assert.equal(
  e.response.data.backups.cron.message,
  "Invalid segment step boundary - the step must be between 1 and the 59.",
);
assert.equal(e.response.data.backups.cronMaxKeep.code, "validation_min_greater_equal_than_required");
e = await refused(pb.settings.update({ superuserIPs: ["nope"] }));
assert.equal(e.response.data.superuserIPs["0"].code, "validation_invlaid_ip_or_subnet");

// A valid change is answered with the new settings and merged into the rest.
let s = await pb.settings.update({ backups: { cron: "0 3 * * *", cronMaxKeep: 5 }, meta: { appName: "My App" } });
assert.equal(s.backups.cron, "0 3 * * *");
assert.equal(s.backups.cronMaxKeep, 5);
assert.equal(s.meta.appName, "My App");
s = await pb.settings.update({ backups: { cronMaxKeep: 4 } });
assert.equal(s.backups.cron, "0 3 * * *", "an omitted key keeps its value");

// The S3 test before S3 is on.
e = await refused(pb.settings.testS3("backups"));
assert.equal(e.status, 400);
assert.equal(e.response.message, "Failed to test the S3 filesystem. Raw error: \nS3 storage filesystem is not enabled.");
e = await refused(pb.settings.testS3("nope"));
assert.equal(e.response.data.filesystem.code, "validation_in_invalid");

// A local backup, then S3 on: the secret is never answered, the test passes.
assert.equal(await pb.backups.create("on-local.zip"), true);
s = await pb.settings.update({
  backups: { s3: { enabled: true, endpoint, bucket, region: "us-east-1", accessKey, secret, forcePathStyle: true } },
});
assert.equal(s.backups.s3.enabled, true);
assert.equal(s.backups.s3.accessKey, accessKey);
assert.ok(!("secret" in s.backups.s3), "the secret is never answered");
assert.ok(!JSON.stringify(await pb.settings.getAll()).includes(secret));
assert.equal(await pb.settings.testS3("backups"), true);

// Backups now go to (and are listed from) the bucket.
assert.deepEqual(await pb.backups.getFullList(), []);
assert.equal(await pb.backups.create("on-s3.zip"), true);
assert.deepEqual((await pb.backups.getFullList()).map((b) => b.key), ["on-s3.zip"]);

// An omitted secret keeps the stored one: a wrong access key fails the test with the
// store's reason (and the secret appears nowhere in it); the right one, sent again without
// the secret, passes.
await pb.settings.update({ backups: { s3: { accessKey: "not-the-key" } } });
e = await refused(pb.settings.testS3("backups"));
assert.equal(e.status, 400);
assert.match(e.response.message, /^Failed to test the S3 filesystem\. Raw error: \nfailed to upload a test file: \S+/);
assert.ok(!e.response.message.includes(secret));
await pb.settings.update({ backups: { s3: { accessKey } } });
assert.equal(await pb.settings.testS3("backups"), true);

// And back to local storage, without a restart.
await pb.settings.update({ backups: { s3: { enabled: false } } });
assert.deepEqual((await pb.backups.getFullList()).map((b) => b.key), ["on-local.zip"]);

console.log("settings.mjs: ok");
