"""Reproducible benchmark datasets (seeded, byte-identical on every machine and run).

A: a mixed application data directory (defaults, at scale 1.0):
   app.db     an SQLite database of JSON-ish rows, about 800 MiB
   logs/      text logs, about 250 MiB in 10 files
   storage/   already-compressed media: random bytes under .mp4 names (3 x 100 MiB) and
              .jpg names (about 724 x 1 MiB), in PocketBase's storage/<collection>/<record>/
B: 100,000 small files of 2-64 KiB in nested directories, 60% text-like, 40% random.

A dataset is generated once into its directory and reused while its stamp file matches
the parameters; `--scale` shrinks every size (and B's file count) for quick runs.
"""

import json
import os
import random
import sqlite3

MIB = 1 << 20
VERSION = 1

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use an "
    "each which she do how their if will up other about out many then them these so some "
    "her would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come "
    "made may part over new sound take only little work know place year live me back give "
    "most very after thing our just name good sentence man think say great where help "
    "through much before line right too mean old any same tell boy follow came want show "
    "also around form three small set put end does another well large must big even such "
    "because turn here why ask went men read need land different home us move try kind hand "
    "picture again change off play spell air away animal house point page letter mother "
    "answer found study still learn should america world high every near add food between "
    "own below country plant last school father keep tree never start city earth eye light "
    "thought head under story saw left few while along might close something seem next hard "
    "open example begin life always those both paper together got group often run important"
).split()
DOMAINS = ["example.com", "mail.test", "corp.example", "pocketbase.io", "users.example.org"]
LEVELS = ["INFO", "INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
PATHS = [
    "/api/collections/posts/records",
    "/api/collections/users/auth-with-password",
    "/api/collections/comments/records",
    "/api/files/posts/{id}/{name}",
    "/api/realtime",
    "/api/health",
]
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _pb_id(rng):
    return "".join(rng.choices(ALNUM, k=15))


def _sentence(rng, lo, hi):
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))


def _rows(rng):
    n = 0
    while True:
        n += 1
        created = f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d} " \
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z"
        name = f"{rng.choice(WORDS)}.{rng.choice(WORDS)}{rng.randint(1, 9999)}"
        data = {
            "title": _sentence(rng, 3, 9).capitalize(),
            "author": {"name": name, "email": f"{name}@{rng.choice(DOMAINS)}"},
            "body": _sentence(rng, 25, 70),
            "tags": rng.choices(WORDS, k=rng.randint(0, 5)),
            "views": rng.randint(0, 100000),
            "score": round(rng.random() * 5, 3),
            "published": rng.random() < 0.8,
        }
        yield (_pb_id(rng), created, created, json.dumps(data, separators=(",", ":")))
        if n % 100000 == 0:
            yield None


def _sqlite(path, target, rng):
    db = sqlite3.connect(path)
    db.executescript(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA page_size=4096;"
        "CREATE TABLE posts (id TEXT PRIMARY KEY NOT NULL, created TEXT NOT NULL,"
        " updated TEXT NOT NULL, data JSON NOT NULL);"
        "CREATE INDEX idx_posts_created ON posts (created);"
    )
    rows = _rows(rng)
    while True:
        batch = []
        for row in rows:
            if row is None:
                break
            batch.append(row)
        db.executemany("INSERT INTO posts VALUES (?, ?, ?, ?)", batch)
        db.commit()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        if pages * 4096 >= target:
            break
    db.close()


def _logs(dir_, target, rng, files=10):
    os.makedirs(dir_)
    per_file = max(target // files, 1)
    for i in range(files):
        lines, size = [], 0
        with open(os.path.join(dir_, f"app-2026-11-{i + 1:02d}.log"), "w") as f:
            t = 0
            while size < per_file:
                t += rng.randint(1, 900)
                path = rng.choice(PATHS).replace("{id}", _pb_id(rng)).replace("{name}", "a.jpg")
                line = (
                    f"2026-11-{i + 1:02d}T{t // 3600000 % 24:02d}:{t // 60000 % 60:02d}:"
                    f"{t // 1000 % 60:02d}.{t % 1000:03d}Z {rng.choice(LEVELS)} request "
                    f"method={rng.choice(['GET', 'GET', 'GET', 'POST', 'PATCH', 'DELETE'])} "
                    f"url={path}?page={rng.randint(1, 40)} status={rng.choice([200, 200, 200, 204, 400, 404])} "
                    f"ip=10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)} "
                    f"duration={rng.randint(0, 250)}ms user={_pb_id(rng)}\n"
                )
                lines.append(line)
                size += len(line)
                if len(lines) >= 10000:
                    f.write("".join(lines))
                    lines = []
            f.write("".join(lines))


def _random_file(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MIB)
            f.write(rng.randbytes(n))
            left -= n


def _media(dir_, target, rng):
    large = 3
    large_size = min(100 * MIB, max(target // 10, 1))
    for i in range(large):
        d = os.path.join(dir_, "videos_col", _pb_id(rng))
        os.makedirs(d)
        _random_file(os.path.join(d, f"clip_{i}_{_pb_id(rng)[:10]}.mp4"), large_size, rng)
    left = max(target - large * large_size, 0)
    count = max(left // MIB, 1)
    for i in range(count):
        d = os.path.join(dir_, "photos_col", _pb_id(rng))
        os.makedirs(d)
        _random_file(os.path.join(d, f"photo_{i}_{_pb_id(rng)[:10]}.jpg"), MIB, rng)


def gen_a(root, scale):
    rng = random.Random(20261121)
    _sqlite(os.path.join(root, "app.db"), int(800 * MIB * scale), rng)
    _logs(os.path.join(root, "logs"), int(250 * MIB * scale), rng)
    _media(os.path.join(root, "storage"), int(1024 * MIB * scale), rng)


def gen_b(root, scale):
    rng = random.Random(20261122)
    text_pool = " ".join(_sentence(rng, 8, 20) for _ in range(200000)).encode()[: 32 * MIB]
    rand_pool = rng.randbytes(32 * MIB)
    count = max(int(100000 * scale), 10)
    for i in range(count):
        d = os.path.join(root, f"d{i % 100:02d}", f"s{i // 100 % 10:02d}")
        if i < 1000:
            os.makedirs(d, exist_ok=True)
        size = rng.randint(2 * 1024, 64 * 1024)
        if rng.random() < 0.6:
            pool, ext = text_pool, rng.choice(["json", "txt", "md"])
        else:
            pool, ext = rand_pool, rng.choice(["jpg", "png", "bin"])
        off = rng.randrange(0, len(pool) - size)
        with open(os.path.join(d, f"f{i:06d}.{ext}"), "wb") as f:
            f.write(pool[off : off + size])


GENERATORS = {"A": gen_a, "B": gen_b}


def tree_stats(root):
    """(files, bytes, bytes rounded up to 4 KiB pages) under root."""
    files = size = paged = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            files += 1
            size += st.st_size
            paged += (st.st_size + 4095) // 4096 * 4096
    return files, size, paged


def ensure(base, name, scale, log=print):
    """The dataset's directory, generated unless a matching one exists."""
    root = os.path.join(base, f"{name}-x{scale:g}")
    stamp = os.path.join(base, f"{name}-x{scale:g}.stamp")
    want = {"version": VERSION, "name": name, "scale": scale}
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == want:
                return root
    if os.path.exists(root):
        import shutil

        shutil.rmtree(root)
    os.makedirs(root)
    log(f"generating dataset {name} (scale {scale:g}) in {root} ...")
    GENERATORS[name](root, scale)
    with open(stamp, "w") as f:
        json.dump(want, f)
    return root
