"""The benchmark's load step against a gateway you started yourself, so that it can run
under a profiler or with other settings: a create of `seed.zip`, then a create of
`load.zip` while 200 clients list 20 times each and 20 download `seed.zip` with curl.

Usage: python3 bench/load_probe.py BASE_URL EMAIL PASSWORD
Read the gateway's peak with `grep VmHWM /proc/PID/status` afterwards (see
bench/load-2026-12-01.md for the figures and the commands used).
"""
import json
import subprocess
import sys
import threading
import time
import urllib.request

BASE, EMAIL, PASSWORD = sys.argv[1:4]


def req(method, path, body=None, token=None):
    r = urllib.request.Request(BASE + path, method=method, data=body)
    if body is not None:
        r.add_header("content-type", "application/json")
    if token:
        r.add_header("Authorization", token)
    with urllib.request.urlopen(r, timeout=600) as res:
        return res.status, res.read()


def main():
    creds = json.dumps({"identity": EMAIL, "password": PASSWORD}).encode()
    token = json.loads(req("POST", "/api/collections/_superusers/auth-with-password", creds)[1])["token"]
    started = time.time()
    req("POST", "/api/backups", json.dumps({"name": "seed.zip"}).encode(), token)
    print(f"seed create {time.time() - started:.1f} s", flush=True)
    file_token = json.loads(req("POST", "/api/files/token", b"{}", token)[1])["token"]
    errors = []

    def lister():
        for _ in range(20):
            try:
                req("GET", "/api/backups", token=token)
            except OSError as e:
                errors.append(str(e))

    def downloader():
        url = f"{BASE}/api/backups/seed.zip?token={file_token}"
        if subprocess.run(["curl", "-sf", "-o", "/dev/null", url]).returncode != 0:
            errors.append("download failed")

    threads = [threading.Thread(target=lister) for _ in range(200)]
    threads += [threading.Thread(target=downloader) for _ in range(20)]
    for t in threads:
        t.start()
    started = time.time()
    req("POST", "/api/backups", json.dumps({"name": "load.zip"}).encode(), token)
    for t in threads:
        t.join()
    print(f"create under load {time.time() - started:.1f} s, {len(errors)} errors {errors[:3]}")


main()
