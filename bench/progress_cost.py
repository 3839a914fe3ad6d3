#!/usr/bin/env python3
"""What counting progress costs the create's zip stage and the restore's extract.

Runs `bench-tool compress` and `bench-tool extract` on a dataset of `bench/run.py`, without
and with a live progress, alternating (so that the shared machine's drift hits both sides
alike), and prints the median of each side and their ratio. Usage:

    python3 bench/progress_cost.py [--dataset target/bench/datasets/A-x1] [--runs 4]

It builds the release `bench-tool` first (reusing `target/`). The target of issue 13 is a
ratio of at most 1.01; each side's runs are printed, since on a shared machine one run's
noise (10-20% here) is far above that. `cpu_ratio` compares the CPU time used (user +
system), which the neighbours' load moves less. The extract reads the archive from memory
(no store), which makes the counting's share look larger than in a real restore.
"""

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "target", "release", "examples", "bench-tool")


def run(*args):
    """(wall seconds the tool reports, CPU seconds it used: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([TOOL, *args], check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(out.strip().splitlines()[-1])["secs"], cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default=os.path.join(REPO, "target", "bench", "datasets", "A-x1"))
    ap.add_argument("--runs", type=int, default=4, help="pairs of runs (even: as many of each order)")
    args = ap.parse_args()
    if not os.path.isdir(args.dataset):
        sys.exit(f"no dataset at {args.dataset}: `python3 bench/run.py` makes them")
    subprocess.run(
        ["cargo", "build", "--locked", "--release", "--example", "bench-tool"], cwd=REPO, check=True
    )
    work = tempfile.mkdtemp(prefix="progress-cost-")
    try:
        # The archive the extract reads: the gateway's zip writer over the dataset.
        archive = os.path.join(work, "a.zip")
        subprocess.run(
            [TOOL, "compress", args.dataset, "1"], check=True, capture_output=True
        )  # warm the page cache
        times = {"compress": ([], []), "extract": ([], [])}
        cpu = {"compress": ([], []), "extract": ([], [])}
        make_zip(args.dataset, archive)
        # ABBA order (without, with; then with, without), and every extract starts after
        # the previous one's writes reached the disk: else the second of a pair pays the
        # first's writeback.
        for i in range(args.runs):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for side in order:
                extra = ["progress"] if side else []
                wall, used = run("compress", args.dataset, "1", *extra)
                times["compress"][side].append(wall)
                cpu["compress"][side].append(used)
            for side in order:
                extra = ["progress"] if side else []
                dest = os.path.join(work, f"x{i}-{side}")
                os.sync()
                wall, used = run("extract", archive, dest, *extra)
                times["extract"][side].append(wall)
                cpu["extract"][side].append(used)
                shutil.rmtree(dest)
                os.sync()
        report = {}
        for stage, (without, with_) in times.items():
            a, b = statistics.median(without), statistics.median(with_)
            report[stage] = {
                "without_s": round(a, 3),
                "with_s": round(b, 3),
                "ratio": round(b / a, 4),
                "runs": args.runs,
                "all_without_s": [round(t, 3) for t in without],
                "all_with_s": [round(t, 3) for t in with_],
                # CPU time moves less with the neighbours' load than wall time does.
                "cpu_ratio": round(
                    statistics.median(cpu[stage][1]) / statistics.median(cpu[stage][0]), 4
                ),
            }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_zip(dataset, archive):
    """The dataset zipped by the gateway's writer, written to `archive` (Python's zipfile
    would make a different archive: the extract reads what the gateway makes)."""
    gw = os.path.join(REPO, "target", "release", "backup-gateway")
    if not os.path.exists(gw):
        subprocess.run(["cargo", "build", "--locked", "--release", "--bin", "backup-gateway"], cwd=REPO, check=True)
    # A local gateway on the dataset, its backups directory the work directory: one create
    # through the API.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    backups = os.path.dirname(archive)
    env = dict(
        os.environ,
        GATEWAY_SUPERUSER_EMAIL="bench@example.com",
        GATEWAY_SUPERUSER_PASSWORD="bench-password",
        RUST_LOG="warn",
    )
    proc = subprocess.Popen(
        [gw, "serve", "--dir", dataset, "--backups-dir", backups, "--http", f"127.0.0.1:{port}"],
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/api/health")
                break
            except OSError:
                time.sleep(0.05)

        def post(path, body, token=None):
            req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
            req.add_header("Content-Type", "application/json")
            if token:
                req.add_header("Authorization", token)
            with urllib.request.urlopen(req, timeout=3600) as r:
                data = r.read()
                return json.loads(data) if data else None

        token = post(
            "/api/collections/_superusers/auth-with-password",
            {"identity": "bench@example.com", "password": "bench-password"},
        )["token"]
        post("/api/backups", {"name": "a.zip"}, token)
    finally:
        proc.terminate()
        proc.wait()
    # The gateway's state directory inside the dataset is left out of every backup; remove
    # it so that the dataset stays as `bench/run.py` made it.
    shutil.rmtree(os.path.join(dataset, ".backup-gateway"), ignore_errors=True)


if __name__ == "__main__":
    main()
