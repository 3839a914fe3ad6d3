#!/usr/bin/env python3
"""The point-in-time stream beside the real PocketBase, as a deployment runs it: the
gateway configured only by the environment, PocketBase its `--exec` child, one long-lived
client creating records through PocketBase's REST API, and the operator's calls through
the gateway's. A soak, not a unit test: it runs for minutes and checks every restore.

    python3 bench/pitr_soak.py                  # release build, 10 minutes
    python3 bench/pitr_soak.py --minutes 3 --profile debug

What it does, in one run on one S3 server (examples/s3-server.rs):
1. PocketBase's record creates (one client, one record every 20 ms) under the gateway with
   the stream off, then, after a restart, on: the create latency p50/p99/worst of each,
   and the ratio (the stream's cost to the application); then the same beside a
   `wal_checkpoint(TRUNCATE)` every second, and the TRUNCATEs' own times.
2. The soak, the stream on: the client writes without pause while
   - a `wal_checkpoint(TRUNCATE)` runs on `data.db` from another connection every 10 s
     (10 s busy timeout, as PocketBase's daily one), each timed;
   - a backup is created every `--restore-every` seconds (the files a restore takes);
   - every `--restore-every` seconds the client pauses, the gateway restores to a moment
     (in turn: one in the current history, one in an older history, once the latest),
     PocketBase comes back under `--exec`, and the records it serves are compared with
     the client's own record of what it committed when: every record committed a second
     or more before the moment is there, none begun after it, and those of a history are
     a prefix of it. Then the client goes on, on the restored state;
   - once, midway, the gateway is stopped (SIGTERM; PocketBase with it) and started again.
3. At the end, a restore to the latest: exactly every record.

Rows: the create latency off/on; each restore (kind, seconds, records, how many of the
last second before the moment were not in it); TRUNCATEs (time, gave up busy); the
histories begun against those the restores and the restart explain; gateway CPU share and
peak RSS; store requests per minute. Any wrong restore, or a history that neither a restore
nor a start explains (a gap), fails the run (exit 1).

The numbers are only comparable inside one run: the machine is shared and noisy.
"""

import argparse
import http.client
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the main benchmark's harness: the S3 server, processes, requests)

REPO = run.REPO


def now_ms():
    return time.time_ns() // 1_000_000


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0


class Client(threading.Thread):
    """One long-lived client of PocketBase (a kept-alive connection, as an SDK's): creates
    a `ledger` record numbered 1, 2, 3, ... every `pause` seconds, and records when each
    began and when its answer came. `hold()` waits until it is between requests."""

    def __init__(self, pb_base, pause, after):
        super().__init__(daemon=True)
        self.host, self.port = pb_base.replace("http://", "").split(":")
        self.pause = pause
        self.seq = after
        self.records = []  # (seq, begun_ms, done_ms)
        self.latency_ms = []
        self.errors = []
        self.go = threading.Event()
        self.idle = threading.Event()
        self.quit = False

    def run(self):
        conn = None
        while not self.quit:
            if not self.go.is_set():
                if conn:
                    conn.close()
                    conn = None
                self.idle.set()
                self.go.wait(0.2)
                continue
            self.idle.clear()
            if conn is None:
                conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
            seq = self.seq + 1
            begun, t0 = now_ms(), time.monotonic()
            try:
                conn.request("POST", "/api/collections/ledger/records", body=json.dumps({"seq": seq}),
                             headers={"Content-Type": "application/json"})
                res = conn.getresponse()
                body = res.read()
            except OSError as e:
                self.errors.append(f"record {seq}: {e}")
                conn.close()
                conn = None
                time.sleep(0.2)
                continue
            done = now_ms()
            if res.status != 200:
                self.errors.append(f"record {seq}: {res.status} {body[:200]!r}")
                time.sleep(0.2)
                continue
            self.seq = seq
            self.records.append((seq, begun, done))
            self.latency_ms.append((time.monotonic() - t0) * 1000)
            time.sleep(self.pause)

    def hold(self):
        self.go.clear()
        self.idle.wait()
        while not self.idle.is_set():
            time.sleep(0.01)

    def resume(self):
        self.idle.clear()
        self.go.set()

    def latency(self, since):
        xs = self.latency_ms[since:]
        return {"n": len(xs), "p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99), "worst_ms": max(xs, default=0)}


class Timeline:
    """What PocketBase held at each moment, from the client's records: a history per stretch
    of writing between two restores, each on the state the restore before it brought back."""

    def __init__(self):
        self.stretches = []  # {"base": set, "records": [...], "from_ms", "to_ms"}

    def begin(self, base, client):
        self.stretches.append({"base": set(base), "first": len(client.records), "from_ms": now_ms(),
                               "to_ms": None})

    def end(self, client):
        s = self.stretches[-1]
        s["records"] = client.records[s["first"]:]
        s["to_ms"] = now_ms()

    def check(self, moment, served, latest=False):
        """Whether `served` (the record numbers) is the state at `moment`; (ok, detail)."""
        s = next(x for x in self.stretches if x["from_ms"] <= moment <= (x["to_ms"] or now_ms()))
        recs = s["records"]
        if latest:
            must = s["base"] | {q for q, _, _ in recs}
            allowed = must
        else:
            must = s["base"] | {q for q, _, done in recs if done <= moment - 1000}
            allowed = s["base"] | {q for q, begun, _ in recs if begun <= moment}
        served = set(served)
        missing, extra = must - served, served - allowed
        new = sorted(served - s["base"])
        prefix = new == [q for q, _, _ in recs[:len(new)]]
        late = [moment - done for q, _, done in recs if done <= moment and q not in served]
        detail = {"records": len(served), "missing": len(missing), "extra": len(extra), "prefix": prefix,
                  "done_before_and_not_in": len(late), "oldest_not_in_ms": max(late, default=0)}
        return not missing and not extra and prefix, detail


def served_records(pb_base):
    out, page = [], 1
    while True:
        status, body = run.request(pb_base, "GET",
                                   f"/api/collections/ledger/records?perPage=1000&page={page}"
                                   "&fields=seq&skipTotal=1&sort=seq")
        run.expect(status, body, 200, "list the ledger")
        out += [r["seq"] for r in body["items"]]
        if len(body["items"]) < 1000:
            return out
        page += 1


class Truncater(threading.Thread):
    """`wal_checkpoint(TRUNCATE)` on data.db every `every` s from a connection of its own
    (opened for each: a restore swaps the file), never during a restore (`lock`)."""

    def __init__(self, db, lock, every):
        super().__init__(daemon=True)
        self.db, self.lock, self.every = db, lock, every
        self.results = []  # (busy, ms)
        self.quit = threading.Event()

    def run(self):
        while not self.quit.wait(self.every):
            with self.lock:
                c = sqlite3.connect(self.db, timeout=10.0, isolation_level=None)
                t = time.monotonic()
                busy, log, _ = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                self.results.append((busy, log, (time.monotonic() - t) * 1000))
                c.close()

    def summary(self):
        """Times, and the TRUNCATEs that gave up busy (waited out their busy timeout on a
        reader or a writer: `1` with the WAL's frame counts) apart from those that met
        another checkpoint in progress (PocketBase's autocheckpoint, the stream's own),
        which SQLite answers at once with `1 -1 -1`."""
        ms = sorted(m for _, _, m in self.results)
        return {"n": len(ms), "busy": sum(1 for b, log, _ in self.results if b and log != -1),
                "met_another": sum(1 for b, log, _ in self.results if b and log == -1),
                "p50_ms": pct(ms, 0.5), "worst_ms": max(ms, default=0)}


LIVE = []  # the deployments started and not stopped (stopped if the run fails)
EXTRA_ENV = {}  # the gateway's environment beyond the defaults (`--max-size-mib`)
SIZE_LINE = b"takes half of --pitr-max-size-mib"  # the log line of a history ended for its size


class Deployment:
    """The gateway with PocketBase as its `--exec` child, configured by the environment."""

    def __init__(self, env, data, pitr):
        self.env, self.data = env, data
        self.pb_port = run.free_port()
        self.pb_base = f"http://127.0.0.1:{self.pb_port}"
        self.gw = run.Gateway(env, data)
        self.gw.extra_env.update({
            "GATEWAY_EXEC": f"exec {env.pb_bin} serve --http 127.0.0.1:{self.pb_port} --dir '{data}'",
            "GATEWAY_PITR": "true" if pitr else "false",
            **EXTRA_ENV,
        })
        self.gw.with_metrics()

    def start(self):
        LIVE.append(self)
        self.gw.start()
        run.wait_http(self.pb_base, timeout=60)
        self.watch = run.Watch(self.gw.proc.p.pid)
        self.t0 = time.time()
        return self

    def stop(self):
        used = self.watch.stop()
        used["secs"] = time.time() - self.t0
        self.gw.proc.stop()
        LIVE.remove(self)
        return used

    def requests(self):
        return run.scrape(self.gw.metrics_url)["requests"]

    def pitr(self, name="data.db"):
        status, body = run.request(self.gw.base, "GET", "/api/gateway/pitr", token=self.gw.token)
        run.expect(status, body, 200, "GET /api/gateway/pitr")
        return next((d for d in body["databases"] if d["name"] == name), {})

    def settled(self, timeout=120):
        time.sleep(1.5)
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.pitr()
            if s.get("stream", {}).get("streaming") and s["stream"].get("lagMs") == 0:
                return s
            time.sleep(0.2)
        raise RuntimeError(f"the stream never caught up: {self.pitr()}")

    def restore(self, body):
        t0 = time.time()
        status, out = run.request(self.gw.base, "POST", "/api/gateway/restore", body, token=self.gw.token)
        run.expect(status, out, 204, f"restore {body}")
        st = run.wait_gateway_restore(self.gw)
        if st.get("status") != "ok" or not (st.get("appStart") or {}).get("ok"):
            raise RuntimeError(f"restore {body}: {st}")
        run.wait_http(self.pb_base, timeout=60)
        return time.time() - t0, st

    def create(self, key):
        status, out = run.request(self.gw.base, "POST", "/api/backups", {"name": key}, token=self.gw.token)
        run.expect(status, out, 204, f"create {key}")


def size_ended(env):
    """How many histories the gateway's log says ended for the size bound, so far."""
    try:
        with open(os.path.join(env.logs, "gateway.log"), "rb") as f:
            return f.read().count(SIZE_LINE)
    except FileNotFoundError:
        return 0


def held_now(env):
    """The bytes of `data.db`'s history in the S3 server's directory now."""
    root = os.path.join(env.work, "s3", run.GW_BUCKET, ".pitr", "v1", "data.db")
    return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs)


def window_earliest_ms(d):
    """The first moment of `data.db` that can be restored (Unix ms)."""
    e = d.pitr().get("earliest")
    return run.pb_ms(e) if e else 0


def history_bytes(env):
    """The point-in-time history in the S3 server's directory, by database: the bytes of
    its segment objects, and the size of its newest base."""
    root = os.path.join(env.work, "s3", run.GW_BUCKET, ".pitr", "v1")
    out = {}
    for db in os.listdir(root) if os.path.isdir(root) else []:
        segs, newest = 0, (0, 0)
        for dirpath, _, files in os.walk(os.path.join(root, db)):
            for f in files:
                path = os.path.join(dirpath, f)
                if f.endswith(".seg"):
                    segs += os.path.getsize(path)
                elif f.startswith("base-"):
                    newest = max(newest, (os.path.getmtime(path), os.path.getsize(path)))
        out[db] = {"segments": segs, "base": newest[1]}
    return out


def prepare(env, data):
    # PocketBase's automigrate writes the collection created below into pb_migrations
    # beside the data directory, and would replay it on a fresh one.
    subprocess.run(["rm", "-rf", data, os.path.join(os.path.dirname(data), "pb_migrations")], check=True)
    os.makedirs(data)
    subprocess.run([env.pb_bin, "superuser", "upsert", run.EMAIL, run.PASSWORD, "--dir", data],
                   check=True, capture_output=True)


def ledger_collection(pb_base):
    token = run.login(pb_base)
    status, body = run.request(pb_base, "POST", "/api/collections", {
        "name": "ledger", "type": "base", "fields": [{"name": "seq", "type": "number", "required": True}],
        "indexes": ["CREATE UNIQUE INDEX idx_ledger_seq ON ledger (seq)"],
        "listRule": "", "viewRule": "", "createRule": "",
    }, token=token)
    run.expect(status, body, 200, "create the ledger collection")


def latency_phase(env, data, pitr, secs, pause, res, key):
    """The creates for `secs`, then for `secs` more beside a TRUNCATE every second."""
    d = Deployment(env, data, pitr).start()
    c = Client(d.pb_base, pause, max(served_records(d.pb_base), default=0))
    c.start()
    c.resume()
    time.sleep(secs)
    res[key] = c.latency(0)
    since = len(c.latency_ms)
    trunc = Truncater(os.path.join(data, "data.db"), threading.Lock(), 1.0)
    trunc.start()
    time.sleep(secs)
    trunc.quit.set()
    trunc.join()
    c.hold()
    c.quit = True
    res[key + "_truncating"] = c.latency(since)
    res[key + "_truncates"] = trunc.summary()
    res[key]["errors"] = len(c.errors)
    d.stop()
    run.log(f"creates with the stream {'on' if pitr else 'off'}: {res[key]}; beside TRUNCATEs "
            f"{res[key + '_truncating']}, the TRUNCATEs {res[key + '_truncates']}")


def soak(env, data, res, minutes, every, pause):
    d = Deployment(env, data, True).start()
    d.create("files-0.zip")
    base = set(served_records(d.pb_base))
    client = Client(d.pb_base, pause, max(base, default=0))
    client.start()
    timeline = Timeline()
    timeline.begin(base, client)
    lock = threading.Lock()
    trunc = Truncater(os.path.join(data, "data.db"), lock, 10.0)
    trunc.start()
    client.resume()
    req0, used = d.requests(), []
    held0 = history_bytes(env)
    held_most = 0
    sized0 = size_ended(env)
    res["restores"], failures = [], []
    kinds = ["current", "older"]
    t_end = time.time() + minutes * 60
    restarted, n, restarts = False, 0, 0
    rng = random.Random(7)
    while time.time() < t_end:
        time.sleep(every / 2)
        d.create(f"files-{n + 1}.zip")
        time.sleep(every / 2)
        n += 1
        if not restarted and time.time() > t_end - minutes * 30:
            # A deploy: the gateway (and PocketBase with it) stopped and started again.
            with lock:
                client.hold()
                req1 = d.requests()
                res.setdefault("requests_before_restart", {k: req1[k] - req0.get(k, 0) for k in req1})
                used.append(d.stop())
                d.start()
                req0 = d.requests()
                client.resume()
            restarted, restarts = True, 1
            run.log("the gateway was stopped and started again")
            continue
        held_most = max(held_most, held_now(env))
        # An older stretch still in the window (the size bound deletes the oldest history).
        earliest = window_earliest_ms(d)
        older = [s for s in timeline.stretches[:-1] if s["to_ms"] - 500 > earliest + 2000]
        kind = kinds[n % 2] if older else "current"
        with lock:
            client.hold()
            timeline.end(client)
            s = timeline.stretches[-1] if kind == "current" else rng.choice(older)
            lo, hi = max(s["from_ms"], earliest) + 2000, s["to_ms"] - 500
            moment = rng.randint(lo, hi) if hi > lo else s["to_ms"]
            d.settled()
            secs, st = d.restore({"time": run.pb_time(moment)})
            served = served_records(d.pb_base)
            ok, detail = timeline.check(moment, served)
            detail.update({"kind": kind, "secs": round(secs, 2)})
            res["restores"].append(detail)
            run.log(f"restore to a moment ({kind}): {'ok' if ok else 'WRONG'} {detail}")
            if not ok:
                failures.append(detail)
            timeline.begin(served, client)
            client.resume()
    time.sleep(every / 2)
    client.hold()
    timeline.end(client)
    trunc.quit.set()
    trunc.join()
    d.settled()
    req1 = d.requests()
    secs, st = d.restore({"latest": True})
    served = served_records(d.pb_base)
    ok, detail = timeline.check(timeline.stretches[-1]["to_ms"], served, latest=True)
    detail.update({"kind": "latest", "secs": round(secs, 2)})
    res["restores"].append(detail)
    run.log(f"restore to the latest: {'ok' if ok else 'WRONG'} {detail}")
    if not ok:
        failures.append(detail)
    histories = d.pitr().get("histories", [])
    used.append(d.stop())
    client.quit = True
    secs_total = sum(u["secs"] for u in used)
    before_restart = res.pop("requests_before_restart", {})
    res["requests_per_min"] = {
        op: (before_restart.get(op, 0) + req1.get(op, 0) - req0.get(op, 0)) / (secs_total / 60)
        for op in set(req1) | set(before_restart)
    }
    res["gateway_cpu_share"] = sum(u["cpu"] for u in used) / secs_total
    res["gateway_peak_rss_mib"] = max(u["peak_rss"] for u in used) / 2**20
    # What the history grew by in the store, per database: the segments (packed or not),
    # and the newest base (one a day in a deployment; here one per restore and start).
    grown = history_bytes(env)
    res["history"] = {
        db: {"segments_mib_per_hour": (g["segments"] - held0.get(db, {}).get("segments", 0)) / 2**20
             / (secs_total / 3600), "base_mib": g["base"] / 2**20}
        for db, g in grown.items()
    }
    res["truncates"] = trunc.summary()
    res["records"] = len(client.records)
    res["records_per_sec"] = len(client.records) / secs_total
    res["client_errors"] = client.errors
    res["creates_soak"] = client.latency(0)
    # Each restore begins a history, and so may each start of a gateway with the stream on
    # (the latency phase's, the soak's, the restart's: the stream begins again from a fresh
    # base when it cannot prove continuity); any more is a gap.
    # And so does a history that took half of the size bound (logged).
    res["histories"] = {"data.db": len(histories),
                        "explained": 2 + restarts + len(res["restores"]) + size_ended(env) - sized0,
                        "ended_for_size": size_ended(env) - sized0}
    res["held_most_mib"] = held_most / 2**20
    res["max_size_mib"] = EXTRA_ENV.get("GATEWAY_PITR_MAX_SIZE_MIB")
    if res["histories"]["data.db"] > res["histories"]["explained"]:
        failures.append({"gap": res["histories"]})
    res["failures"] = failures
    run.log(f"histories of data.db: {res['histories']}, TRUNCATEs {res['truncates']}, "
            f"CPU {res['gateway_cpu_share'] * 100:.1f}%, peak RSS {res['gateway_peak_rss_mib']:.0f} MiB")


def report(res):
    off, on = res["creates_off"], res["creates_on"]
    offt, ont = res["creates_off_truncating"], res["creates_on_truncating"]
    tof, ton = res["creates_off_truncates"], res["creates_on_truncates"]

    t = res["truncates"]
    lines = [
        f"# Point-in-time soak beside the real PocketBase ({res['profile']} build, {res['cores']} cores)",
        "",
        f"{res['minutes']:g} minutes; a restore every {res['every']:g} s; one client creating a record "
        f"every {res['pause'] * 1000:.0f} ms. Rerun: `python3 bench/pitr_soak.py{' --max-size-mib ' + str(res['max_size_mib']) if res.get('max_size_mib') else ''}`.",
        "",
        "| PocketBase record create | stream off | stream on | ratio |",
        "| --- | --- | --- | --- |",
        *run.latency_rows("create", off, on),
        f"| creates | {off['n']} | {on['n']} | |",
        f"| p99 beside a TRUNCATE every second (ms) | {offt['p99_ms']:.2f} | {ont['p99_ms']:.2f} | "
        f"{ont['p99_ms'] / offt['p99_ms']:.2f}x |",
        f"| worst beside a TRUNCATE every second (ms) | {offt['worst_ms']:.2f} | {ont['worst_ms']:.2f} | "
        f"{ont['worst_ms'] / offt['worst_ms']:.2f}x |",
        f"| TRUNCATE p50 (ms) | {tof['p50_ms']:.1f} | {ton['p50_ms']:.1f} | {ton['p50_ms'] / tof['p50_ms']:.2f}x |",
        f"| TRUNCATE worst (ms) | {tof['worst_ms']:.1f} | {ton['worst_ms']:.1f} | "
        f"{ton['worst_ms'] / tof['worst_ms']:.2f}x |",
        f"| TRUNCATEs that gave up busy (met another checkpoint) | {tof['busy']} of {tof['n']} "
        f"({tof['met_another']}) | {ton['busy']} of {ton['n']} ({ton['met_another']}) | |",
        "",
        "| restore | kind | seconds | records | committed before the moment, not in it (oldest) | right |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(res["restores"], 1):
        right = r["missing"] == 0 and r["extra"] == 0 and r["prefix"]
        lines.append(f"| {i} | {r['kind']} | {r['secs']:.2f} | {r['records']} | "
                     f"{r['done_before_and_not_in']} ({r['oldest_not_in_ms']} ms) | {'yes' if right else 'NO'} |")
    h = res["histories"]
    lines += [
        "",
        "| row | value |",
        "| --- | --- |",
        f"| records created in the soak | {res['records']} ({res['records_per_sec']:.0f} a second) |",
        f"| client errors while PocketBase was up (target 0) | {len(res['client_errors'])} |",
        f"| create p50 / p99 / worst in the soak (ms) | {res['creates_soak']['p50_ms']:.2f} / "
        f"{res['creates_soak']['p99_ms']:.2f} / {res['creates_soak']['worst_ms']:.2f} |",
        f"| TRUNCATE p50 / worst (ms), gave up busy (met another checkpoint) | {t['p50_ms']:.1f} / "
        f"{t['worst_ms']:.1f}, {t['busy']} of {t['n']} ({t['met_another']}) |",
        f"| histories of data.db (at most, explained by the restores, the gateway's starts and the size bound) | "
        f"{h['data.db']} ({h['explained']}; {h.get('ended_for_size', 0)} ended for size) |",
        f"| data.db's history held in the store at most (bound per database) | {res.get('held_most_mib', 0):.1f} MiB "
        f"({res.get('max_size_mib') or 'default'} MiB) |",
        f"| gateway CPU (share of a core) | {res['gateway_cpu_share'] * 100:.1f}% |",
        f"| gateway peak RSS | {res['gateway_peak_rss_mib']:.0f} MiB |",
        *[f"| history of {db}: segments an hour; a base (a week at this pace, 8 bases) | "
          f"{h['segments_mib_per_hour']:.0f} MiB; {h['base_mib']:.1f} MiB "
          f"({(h['segments_mib_per_hour'] * 24 * 7 + 8 * h['base_mib']) / 1024:.1f} GiB) |"
          # With a small size bound the history is deleted as it grows: no volume to tell.
          for db, h in sorted(res.get("history", {}).items()) if not res.get("max_size_mib")],
        f"| store requests per minute | {', '.join(f'{k} {v:.0f}' for k, v in sorted(res['requests_per_min'].items()) if v)} |",
        f"| wrong restores and unexplained histories (target 0) | {len(res['failures'])} |",
    ]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--restore-every", type=float, default=60, help="seconds between restores")
    ap.add_argument("--latency-secs", type=float, default=60, help="each create-latency phase")
    ap.add_argument("--pause", type=float, default=0.02, help="the client's pause between creates (s)")
    ap.add_argument("--profile", choices=["release", "debug"], default="release")
    ap.add_argument("--work", default=os.path.join(REPO, "target", "bench-pitr-soak"))
    ap.add_argument("--out", default=None, help="report (default target/bench-pitr-soak/report.md)")
    ap.add_argument("--max-size-mib", type=int, default=None,
                    help="the gateway's --pitr-max-size-mib (default: the gateway's)")
    args = ap.parse_args()
    if args.max_size_mib is not None:
        EXTRA_ENV["GATEWAY_PITR_MAX_SIZE_MIB"] = str(args.max_size_mib)
    build = ["cargo", "build", "--locked", "--bin", "backup-gateway", "--example", "s3-server"]
    subprocess.run(build + (["--release"] if args.profile == "release" else []), cwd=REPO, check=True)
    env = run.Env(argparse.Namespace(
        work=args.work, profile=args.profile, wan=False, s3_endpoint=None, pocketbase=None,
        baseline_gateway=None))
    env.start_s3()
    res = {"profile": args.profile, "cores": os.cpu_count(), "minutes": args.minutes,
           "every": args.restore_every, "pause": args.pause}
    data = os.path.join(env.work, "pb_data")
    try:
        prepare(env, data)
        d = Deployment(env, data, False).start()
        ledger_collection(d.pb_base)
        d.stop()
        latency_phase(env, data, False, args.latency_secs, args.pause, res, "creates_off")
        latency_phase(env, data, True, args.latency_secs, args.pause, res, "creates_on")
        soak(env, data, res, args.minutes, args.restore_every, args.pause)
    finally:
        for d in list(LIVE):
            d.gw.proc.stop()
        env.stop_s3()
    out = args.out or os.path.join(env.work, "report.md")
    with open(out, "w") as f:
        f.write(report(res))
    with open(os.path.join(env.work, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    run.log(f"report: {out}")
    sys.exit(1 if res["failures"] else 0)


if __name__ == "__main__":
    main()
