#!/usr/bin/env python3
"""The application's view of a backup: commit latencies while something else runs.

    python3 bench/writer.py sqlite DB OUT.json        # commits into a SQLite database
    python3 bench/writer.py api BASE TOKEN OUT.json   # creates PocketBase records

Commits one small transaction every 10 ms (a transfer between two accounts plus a ledger row,
`synchronous=NORMAL`, autocheckpoint on: what a web application does), or one record per
10 ms through PocketBase's API, until SIGTERM; then writes the latencies (count, p50, p99,
worst, in ms) to OUT.json. `prepare DB [MODE]` puts the database in journal mode MODE (default
wal) and adds the writer's tables.
"""

import json
import signal
import sqlite3
import sys
import time
import urllib.request

INTERVAL = 0.010
ACCOUNTS = 100

stop = False


def on_term(*_):
    global stop
    stop = True


def prepare(path, mode="wal"):
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={mode}")
    db.executescript(
        "CREATE TABLE IF NOT EXISTS bench_accounts (id INTEGER PRIMARY KEY, balance INTEGER);"
        "CREATE TABLE IF NOT EXISTS bench_ledger (seq INTEGER PRIMARY KEY, at REAL, note BLOB);"
    )
    db.executemany(
        "INSERT OR IGNORE INTO bench_accounts VALUES (?, 1000)", [(i,) for i in range(ACCOUNTS)]
    )
    db.commit()
    db.close()


def sqlite_commit(path):
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    db.execute("PRAGMA synchronous=NORMAL")
    n = 0

    def commit():
        nonlocal n
        n += 1
        a, b = n % ACCOUNTS, (n * 7) % ACCOUNTS
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE bench_accounts SET balance = balance - 1 WHERE id = ?", (a,))
        db.execute("UPDATE bench_accounts SET balance = balance + 1 WHERE id = ?", (b,))
        db.execute("INSERT INTO bench_ledger (at, note) VALUES (?, randomblob(100))", (time.time(),))
        db.execute("COMMIT")

    return commit


def api_commit(base, token):
    n = 0

    def commit():
        nonlocal n
        n += 1
        body = json.dumps({"title": f"note {n}", "n": n}).encode()
        req = urllib.request.Request(
            f"{base}/api/collections/bench_notes/records", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": token},
        )
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()

    return commit


def run(commit, out):
    signal.signal(signal.SIGTERM, on_term)
    lat = []
    next_at = time.perf_counter()
    while not stop:
        t0 = time.perf_counter()
        commit()
        lat.append((time.perf_counter() - t0) * 1000)
        next_at += INTERVAL
        time.sleep(max(0.0, next_at - time.perf_counter()))
        next_at = max(next_at, time.perf_counter() - INTERVAL)
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(len(lat) * p))] if lat else 0.0

    with open(out, "w") as f:
        json.dump({"count": len(lat), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                   "worst_ms": lat[-1] if lat else 0.0}, f)


def main():
    mode = sys.argv[1]
    if mode == "prepare":
        prepare(sys.argv[2], *sys.argv[3:4])
    elif mode == "sqlite":
        run(sqlite_commit(sys.argv[2]), sys.argv[3])
    elif mode == "api":
        run(api_commit(sys.argv[2], sys.argv[3]), sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
