#!/usr/bin/env python3
"""The login flood of issue 27, against a gateway binary: wrong-password logins, N at a time
from 127.0.0.2 (Linux routes all of 127.0.0.0/8 to the loopback), while the real superuser
logs in from 127.0.0.1 once the flood is under way. Prints the answers' status counts, how
long the superuser's login took, and the process's peak RSS (VmHWM) before and after.

    python3 bench/login_flood.py --bin target/debug/backup-gateway [--logins 400] [--at-once 50]
        [-- extra serve flags, e.g. --rate-limits off]

Standard library only. Figures go in BENCHMARKS.md / bench/*.md, never in test asserts on time.
"""

import argparse
import concurrent.futures as cf
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

EMAIL, PASSWORD = "bench@example.com", "bench-password-1"


def login(port, source, password):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(source, 0))
    body = json.dumps({"identity": EMAIL, "password": password})
    start = time.monotonic()
    conn.request("POST", "/api/collections/_superusers/auth-with-password", body,
                 {"Content-Type": "application/json"})
    res = conn.getresponse()
    res.read()
    conn.close()
    return res.status, time.monotonic() - start


def vm_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--logins", type=int, default=400)
    ap.add_argument("--at-once", type=int, default=50)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "pb_data")
        os.makedirs(data)
        subprocess.run([args.bin, "superuser", "upsert", EMAIL, PASSWORD, "--dir", data],
                       check=True, capture_output=True)
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        proc = subprocess.Popen([args.bin, "serve", "--http", "127.0.0.1:0", "--dir", data, *args.extra],
                                stdout=subprocess.PIPE, env=env, text=True)
        try:
            port = None
            for line in proc.stdout:
                m = re.search(r"address=127\.0\.0\.1:(\d+)", line)
                if m:
                    port = int(m.group(1))
                    break
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            status, _ = login(port, "127.0.0.1", PASSWORD)
            assert status == 200, status
            before = vm_hwm_mib(proc.pid)
            answered = [0]
            lock = threading.Lock()

            def one(i):
                r = login(port, "127.0.0.2", f"wrong-{i}")
                with lock:
                    answered[0] += 1
                return r

            with cf.ThreadPoolExecutor(args.at_once) as pool:
                futures = [pool.submit(one, i) for i in range(args.logins)]
                while answered[0] < min(args.at_once, args.logins):
                    time.sleep(0.01)
                su_status, su_time = login(port, "127.0.0.1", PASSWORD)
                during = answered[0]
                results = [f.result() for f in futures]
            after = vm_hwm_mib(proc.pid)
            counts = {}
            for s, _ in results:
                counts[s] = counts.get(s, 0) + 1
            print(json.dumps({
                "logins": args.logins, "at_once": args.at_once, "statuses": counts,
                "superuser": {"status": su_status, "seconds": round(su_time, 3),
                              "flood_answered_before": during},
                "peak_rss_mib": {"before": round(before, 1), "after": round(after, 1)},
            }, indent=2))
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
