#!/usr/bin/env python3
"""The point-in-time stream's benchmark (`--pitr`, docs/pitr.md), in one run on one S3
server, every figure beside its baseline:

    python3 bench/pitr.py                    # release build, 60 s phases, 10 min of history
    python3 bench/pitr.py --quick            # CI-sized: debug build, short phases

Rows:
- the application's commit latency (bench/writer.py: one transaction every 10 ms, 100
  commits/s, WAL, synchronous=NORMAL) with no gateway, then with the gateway streaming the
  same database: p50, p99, worst, and the ratios;
- the stream's lag (commit seen to segment stored) p50/p99, as the gateway measures it;
- the store requests per minute while the writer runs and while the database is idle, and
  the bytes shipped per minute (from the gateway's own `backup_gateway_store_requests_total`);
- the gateway's CPU while it streams 100 commits/s, as a share of one core;
- PocketBase's daily `wal_checkpoint(TRUNCATE)`, run by another process (10 s busy
  timeout, as PocketBase's) every 0.5 s in a phase of its own while the writer runs, alone
  and streamed: each checkpoint's time, whether it gave up busy, the writer's commit
  latency beside them, and the histories the stream had to begin (a gap) meanwhile;
- restore to a moment in the middle of the history, and to the latest: the time, and the
  store reads, beside a key restore of a backup of the same database; the packs written
  before (a minute's segments, an hour's minutes: `--history-secs 3600` shows an hour
  packed again).

The numbers are only comparable inside one run: the machine is shared and noisy.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the main benchmark's harness: the S3 server, processes, requests)

REPO = run.REPO


def metrics(gw):
    """The gateway's store requests by operation, and the stream's counters."""
    return run.scrape(gw.metrics_url)


def delta(after, before):
    ops = set(after["requests"]) | set(before["requests"])
    return {op: after["requests"].get(op, 0) - before["requests"].get(op, 0) for op in ops}


def pitr_state(gw):
    status, body = run.request(gw.base, "GET", "/api/gateway/pitr", token=gw.token)
    run.expect(status, body, 200, "GET /api/gateway/pitr")
    dbs = [d for d in body["databases"] if d["name"] == "app.db"]
    return dbs[0] if dbs else {}


def wait_streaming(gw, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pitr_state(gw).get("stream", {}).get("streaming"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the stream of app.db never started: {pitr_state(gw)}")


def wait_settled(gw, timeout=120):
    time.sleep(1.5)
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = pitr_state(gw)
        if s.get("stream", {}).get("lagMs") == 0:
            return s
        time.sleep(0.2)
    raise RuntimeError(f"the stream never caught up: {pitr_state(gw)}")


TRUNCATER = r"""
import json, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], timeout=10.0, isolation_level=None)
out = []
for _ in range(int(sys.argv[2])):
    time.sleep(0.5)
    t = time.monotonic()
    busy = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    out.append([busy, (time.monotonic() - t) * 1000])
print(json.dumps(out))
"""


class Truncates:
    """The application's `wal_checkpoint(TRUNCATE)` from a process of its own, every 0.5 s
    for `secs`, in the background."""

    def __init__(self, db, secs):
        self.p = subprocess.Popen([sys.executable, "-c", TRUNCATER, db, str(max(1, int(secs * 2) - 2))],
                                  stdout=subprocess.PIPE)

    def stop(self):
        out, _ = self.p.communicate(timeout=600)
        ms = sorted(m for _, m in json.loads(out))
        return {"n": len(ms), "busy": sum(b for b, _ in json.loads(out)),
                "p50_ms": ms[len(ms) // 2], "max_ms": ms[-1]}


def restore(gw, path, body):
    t0 = time.time()
    status, out = run.request(gw.base, "POST", path, body, token=gw.token)
    run.expect(status, out, 204, f"POST {path}")
    st = run.wait_gateway_restore(gw)
    if st.get("status") != "ok":
        raise RuntimeError(f"restore {body}: {st}")
    secs = time.time() - t0
    # The clean-up after it still holds the busy lock.
    while run.request(gw.base, "GET", "/api/gateway/progress", token=gw.token)[1].get("running"):
        time.sleep(0.05)
    return secs, st


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="debug build, 10 s phases, 20 s of history")
    ap.add_argument("--phase-secs", type=float, default=None, help="writer phases (default 60; quick 10)")
    ap.add_argument("--idle-secs", type=float, default=None, help="the idle phase (default 60; quick 10)")
    ap.add_argument("--history-secs", type=float, default=None,
                    help="history written before the restores (default 600; quick 20)")
    ap.add_argument("--profile", choices=["release", "debug"], default=None)
    ap.add_argument("--work", default=os.path.join(REPO, "target", "bench-pitr"))
    ap.add_argument("--out", default=None, help="report (default target/bench-pitr/report.md)")
    args = ap.parse_args()
    phase = args.phase_secs or (10 if args.quick else 60)
    idle = args.idle_secs or (10 if args.quick else 60)
    history = args.history_secs or (20 if args.quick else 600)
    profile = args.profile or ("debug" if args.quick else "release")
    build = ["cargo", "build", "--locked", "--bin", "backup-gateway", "--example", "s3-server"]
    subprocess.run(build + (["--release"] if profile == "release" else []), cwd=REPO, check=True)

    env = run.Env(argparse.Namespace(
        work=args.work, profile=profile, wan=False, s3_endpoint=None, pocketbase=None,
        baseline_gateway=None))
    env.start_s3()
    res = {"profile": profile, "phase_secs": phase, "idle_secs": idle, "history_secs": history,
           "cores": os.cpu_count()}
    try:
        measure(env, res, phase, idle, history)
    finally:
        env.stop_s3()
    out = args.out or os.path.join(env.work, "report.md")
    with open(out, "w") as f:
        f.write(report(res))
    with open(os.path.join(env.work, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    run.log(f"report: {out}")


def measure(env, res, phase, idle, history):
    data = os.path.join(env.work, "data")
    subprocess.run(["rm", "-rf", data], check=True)
    os.makedirs(data)
    db = os.path.join(data, "app.db")
    subprocess.run([sys.executable, run.WRITER, "prepare", db], check=True)

    # The baseline: the application alone.
    run.settle()
    w = run.Writer(env, "sqlite", db)
    time.sleep(phase)
    res["writer_alone"] = w.stop()
    run.log(f"writer alone: {res['writer_alone']}")
    w = run.Writer(env, "sqlite", db)
    t = Truncates(db, phase)
    time.sleep(phase)
    res["truncate_alone"] = t.stop()
    res["writer_alone_truncating"] = w.stop()
    run.log(f"TRUNCATE alone: {res['truncate_alone']}, writer {res['writer_alone_truncating']}")

    gw = run.Gateway(env, data)
    gw.extra_env["GATEWAY_PITR"] = "true"
    gw.with_metrics()
    gw.start()
    try:
        stream(env, gw, db, res, phase, idle, history)
    finally:
        gw.stop()


def stream(env, gw, db, res, phase, idle, history):
    # The other files' backup, before every moment restored.
    status, body = run.request(gw.base, "POST", "/api/backups", {"name": "files.zip"}, token=gw.token)
    run.expect(status, body, 204, "create")
    w = run.Writer(env, "sqlite", db)
    wait_streaming(gw)
    before, t0 = metrics(gw), time.time()
    watch = run.Watch(gw.proc.p.pid)
    time.sleep(phase)
    cpu = watch.stop()["cpu"]
    after, t1 = metrics(gw), time.time()
    res["writer_streamed"] = w.stop()
    minutes = (t1 - t0) / 60
    res["busy_requests_per_min"] = {op: n / minutes for op, n in delta(after, before).items() if n}
    res["busy_bytes_per_min"] = (after["pitr"].get("bytes_shipped", 0) - before["pitr"].get("bytes_shipped", 0)) / minutes
    res["busy_commits_per_min"] = (after["pitr"].get("commits_shipped", 0) - before["pitr"].get("commits_shipped", 0)) / minutes
    res["gateway_cpu_share"] = cpu / (t1 - t0)
    s = wait_settled(gw)
    res["lag_p50_ms"], res["lag_p99_ms"] = s["stream"]["lagP50Ms"], s["stream"]["lagP99Ms"]
    run.log(f"streamed: {res['writer_streamed']}, lag p50/p99 {res['lag_p50_ms']}/{res['lag_p99_ms']} ms, "
            f"CPU {res['gateway_cpu_share'] * 100:.1f}% of a core, requests/min {res['busy_requests_per_min']}")

    # The application's TRUNCATE checkpoints, from another connection, while it writes.
    histories = metrics(gw)["pitr"].get("histories_started", 0)
    w = run.Writer(env, "sqlite", db)
    t = Truncates(db, phase)
    time.sleep(phase)
    res["truncate_streamed"] = t.stop()
    res["writer_streamed_truncating"] = w.stop()
    wait_settled(gw)
    res["truncate_histories_begun"] = int(metrics(gw)["pitr"].get("histories_started", 0) - histories)
    run.log(f"TRUNCATE streamed: {res['truncate_streamed']}, writer {res['writer_streamed_truncating']}, "
            f"histories begun {res['truncate_histories_begun']}")

    # Idle: the database unchanged (quiet after 5 s: the stream looks at it slowly).
    before, t0 = metrics(gw), time.time()
    watch = run.Watch(gw.proc.p.pid)
    time.sleep(idle)
    cpu = watch.stop()["cpu"]
    after, t1 = metrics(gw), time.time()
    res["idle_requests_per_min"] = {op: n / ((t1 - t0) / 60) for op, n in delta(after, before).items() if n}
    res["idle_cpu_share"] = cpu / (t1 - t0)
    res["idle_quiet"] = pitr_state(gw).get("stream", {}).get("quiet")
    run.log(f"idle requests/min: {res['idle_requests_per_min']}, CPU {res['idle_cpu_share'] * 100:.2f}% "
            f"of a core, quiet at the end: {res['idle_quiet']}")

    # History, then the restores.
    w = run.Writer(env, "sqlite", db)
    start = time.time()
    time.sleep(history)
    middle_ms = int((start + history / 2) * 1000)
    w.stop()
    s = wait_settled(gw)
    res["history_objects"] = len(s.get("histories", []))
    m = metrics(gw)["pitr"]
    res["packs"] = {level: int(m.get(f"packs_{level}", 0)) for level in ("minute", "hour")}
    run.log(f"packs: {res['packs']}")
    res["restores"] = {}
    for name, path, body in [
        # Each restore begins a new history, so "latest" after any restore would be the
        # restored state: it goes first, and the key restore (the baseline) last.
        ("latest", "/api/gateway/restore", {"latest": True}),
        ("middle", "/api/gateway/restore", {"time": run.pb_time(middle_ms)}),
        ("key", "/api/backups/files.zip/restore", None),
    ]:
        run.settle()
        m0 = metrics(gw)
        secs, st = restore(gw, path, body)
        reads = delta(metrics(gw), m0)
        res["restores"][name] = {
            "secs": secs, "gets": reads.get("GetObject", 0), "lists": reads.get("ListObjectsV2", 0),
            "segments_read": sum(d.get("segmentsRead", 0) for d in (st.get("pointInTime") or {}).get("databases", [])),
        }
        run.log(f"restore {name}: {res['restores'][name]}")


def report(res):
    a, s = res["writer_alone"], res["writer_streamed"]
    ta, ts = res["truncate_alone"], res["truncate_streamed"]
    at, st = res["writer_alone_truncating"], res["writer_streamed_truncating"]

    r = res["restores"]
    lines = [
        f"# Point-in-time stream benchmark ({res['profile']} build, {res['cores']} cores)",
        "",
        f"Writer phases {res['phase_secs']:g} s at 100 commits/s; idle {res['idle_secs']:g} s; "
        f"{res['history_secs']:g} s of history before the restores. Rerun: `python3 bench/pitr.py`.",
        "",
        "| row | alone | streamed | ratio |",
        "| --- | --- | --- | --- |",
        *run.latency_rows("commit", a, s),
        f"| TRUNCATE checkpoint p50 (ms) | {ta['p50_ms']:.1f} | {ts['p50_ms']:.1f} | {ts['p50_ms'] / ta['p50_ms']:.2f}x |",
        f"| TRUNCATE checkpoint worst (ms) | {ta['max_ms']:.1f} | {ts['max_ms']:.1f} | {ts['max_ms'] / ta['max_ms']:.2f}x |",
        f"| TRUNCATE checkpoints busy (gave up) | {ta['busy']} of {ta['n']} | {ts['busy']} of {ts['n']} | |",
        f"| commit p99 beside the TRUNCATEs (ms) | {at['p99_ms']:.2f} | {st['p99_ms']:.2f} | {st['p99_ms'] / at['p99_ms']:.2f}x |",
        f"| commit worst beside the TRUNCATEs (ms) | {at['worst_ms']:.2f} | {st['worst_ms']:.2f} | {st['worst_ms'] / at['worst_ms']:.2f}x |",
        "",
        "| row | value |",
        "| --- | --- |",
        f"| lag p50 / p99 (ms; target p99 < 1000) | {res['lag_p50_ms']} / {res['lag_p99_ms']} |",
        f"| new histories during the TRUNCATE phase (target 0) | {res['truncate_histories_begun']} |",
        f"| store requests per minute, busy | {fmt_ops(res['busy_requests_per_min'])} |",
        f"| store requests per minute, idle (target 0) | {fmt_ops(res['idle_requests_per_min'])} |",
        f"| segment bytes shipped per minute, busy | {res['busy_bytes_per_min'] / 2**20:.1f} MiB |",
        f"| gateway CPU at 100 commits/s (target < 5% of a core) | {res['gateway_cpu_share'] * 100:.1f}% |",
        f"| gateway CPU idle (quiet at the end: {res.get('idle_quiet')}) | {res.get('idle_cpu_share', 0) * 100:.2f}% |",
        f"| objects packed before the restores: a minute's segments / an hour's minutes | "
        f"{res['packs']['minute']} / {res['packs']['hour']} |",
        "",
        "| restore | time (s) | GETs | LISTs | segment objects read | time vs the key restore |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("key", "latest", "middle"):
        x = r[name]
        lines.append(f"| {name} | {x['secs']:.2f} | {x['gets']:g} | {x['lists']:g} | {x['segments_read']} | "
                     f"{x['secs'] / r['key']['secs']:.2f}x |")
    return "\n".join(lines) + "\n"


def fmt_ops(ops):
    return ", ".join(f"{op} {n:.1f}" for op, n in sorted(ops.items())) or "none"


if __name__ == "__main__":
    main()
