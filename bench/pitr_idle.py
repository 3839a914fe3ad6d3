#!/usr/bin/env python3
"""What idle point-in-time streams cost: the gateway's CPU with N idle WAL databases.

    python3 bench/pitr_idle.py [--databases 20] [--bin target/release/backup-gateway]
                               [--baseline OTHER_BINARY] [--runs 2]

Creates N databases in WAL mode (one row each) in a data directory, holds a connection to
each open (the `-wal` stays, as under a running application), starts the gateway with
`--pitr` (local storage) and measures its CPU over 30 s, starting 15 s after it (the
streams have started and gone quiet). With `--baseline`, the other binary is measured the
same way, alternately, in the same run (the machine is shared and noisy). Build first:
`cargo build --release --bin backup-gateway`.
"""
import argparse
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(binary, databases):
    root = tempfile.mkdtemp(prefix="pitr-idle-")
    try:
        os.makedirs(f"{root}/data")
        held = []
        for i in range(databases):
            c = sqlite3.connect(f"{root}/data/t{i}.db", isolation_level=None)
            c.execute("PRAGMA journal_mode=wal")
            c.execute("CREATE TABLE t (x)")
            c.execute("INSERT INTO t VALUES (1)")
            held.append(c)
        log = open(f"{root}/gateway.log", "w")
        p = subprocess.Popen([binary, "serve", "--http", "127.0.0.1:0", "--dir", f"{root}/data",
                              "--backups-dir", f"{root}/backups", "--pitr"],
                             stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(15)
            a, t = cpu_secs(p.pid), time.time()
            time.sleep(30)
            share = (cpu_secs(p.pid) - a) / (time.time() - t)
        finally:
            p.terminate()
            p.wait()
        with open(f"{root}/gateway.log") as f:
            started = f.read().count("point-in-time stream starts")
        for c in held:
            c.close()
        return share, started
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--databases", type=int, default=20)
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "backup-gateway"))
    ap.add_argument("--baseline", default=None, help="another gateway binary, measured alternately")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    binaries = [("this build", args.bin)] + ([("baseline", args.baseline)] if args.baseline else [])
    for run in range(args.runs):
        for name, binary in binaries:
            share, started = measure(binary, args.databases)
            print(f"run {run + 1}, {name}: {args.databases} idle databases ({started} streams): "
                  f"{share * 100:.2f}% of a core ({share * 100 / max(started, 1):.3f}% a stream)", flush=True)


if __name__ == "__main__":
    main()
