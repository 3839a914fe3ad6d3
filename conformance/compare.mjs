// Compares the results of the same scenarios on PocketBase and on the gateway.
// Every difference must be listed in differences.json with its reason; any other difference
// fails. Also checks that the table of docs/differences.md ("Differences from PocketBase")
// lists exactly the cases of differences.json.
//
// Usage: node compare.mjs MODE POCKETBASE.json GATEWAY.json [LABEL]   (MODE: local or s3;
// LABEL names the run in the output, the mode by default)
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [mode, pbFile, gwFile, label = mode] = process.argv.slice(2);
const pb = JSON.parse(readFileSync(pbFile, "utf8"));
const gw = JSON.parse(readFileSync(gwFile, "utf8"));
const allowed = JSON.parse(readFileSync(join(here, "differences.json"), "utf8"));

function diff(a, b, path, out) {
  if (JSON.stringify(a) === JSON.stringify(b)) return;
  const obj = (x) => x && typeof x === "object" && !Array.isArray(x);
  if (obj(a) && obj(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) diff(a[k], b[k], [...path, k], out);
    return;
  }
  out.push({ path, pocketbase: a, gateway: b });
}

const differences = [];
for (const name of new Set([...Object.keys(pb), ...Object.keys(gw)])) diff(pb[name], gw[name], [name], differences);

const used = new Set();
const unexplained = [];
/** PocketBase's client saw a connection error for this request, the gateway's an answer. */
const pocketbaseFailed = (d) => {
  const [scenario, request] = d.path;
  return Boolean(pb[scenario]?.[request]?.error) && gw[scenario]?.[request]?.status !== undefined;
};
const matches = (r, d) =>
  (!r.modes || r.modes.includes(mode)) &&
  (r.whenPocketbaseFailed
    ? d.path[0].startsWith(r.scenarioPrefix) && pocketbaseFailed(d)
    : r.scenario === d.path[0] && (r.paths || []).some((p) => d.path.slice(1).join(".").startsWith(p)));
for (const d of differences) {
  const rule = allowed.find((r) => matches(r, d));
  if (rule) used.add(rule.case);
  else unexplained.push(d);
}

for (const d of differences) {
  const mark = unexplained.includes(d) ? "UNEXPLAINED" : "listed";
  console.log(`[${label}] ${mark}: ${d.path.join(" › ")}\n    pocketbase: ${JSON.stringify(d.pocketbase)}\n    gateway:    ${JSON.stringify(d.gateway)}`);
}

// docs/differences.md's table must list exactly the cases of differences.json.
const differencesDoc = "docs/differences.md";
const doc = readFileSync(join(here, "..", differencesDoc), "utf8");
const rows = doc
  .split("\n")
  .filter((l) => l.startsWith("| ") && !l.startsWith("| case") && !l.startsWith("| ---"))
  .map((l) => l.split("|")[1].trim());
const cases = allowed.map((r) => r.case);
const docProblems = [
  ...(rows.length ? [] : [`${differencesDoc} has no table rows`]),
  ...cases.filter((c) => !rows.includes(c)).map((c) => `differences.json case missing from ${differencesDoc}: ${c}`),
  ...rows.filter((r) => !cases.includes(r)).map((r) => `${differencesDoc} difference missing from differences.json: ${r}`),
];
for (const p of docProblems) console.log(p);

const total = differences.length;
console.log(`[${label}] ${Object.keys(pb).length} scenarios, ${total} differences, ${total - unexplained.length} listed, ${unexplained.length} unexplained`);
process.exit(unexplained.length || docProblems.length ? 1 : 0);
