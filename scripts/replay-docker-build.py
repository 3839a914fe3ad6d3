#!/usr/bin/env python3
"""Replays the Dockerfile's build stage without a container engine, so that CI notices
when the image would not build (a file the build reads but the stage does not copy).

What it does, as `docker build` would:
1. reads the build context through `.dockerignore` (its patterns, `!` exceptions, last
   match wins);
2. parses the build stage (the stage the last stage copies `--from`): its `WORKDIR`,
   `ENV`, `COPY` and `RUN` instructions;
3. copies exactly the `COPY` sources into an empty temporary folder (the stage's file
   system root), failing as Docker does when a source is missing or ignored;
4. runs the stage's `RUN cargo ...` commands there with `--offline` (the dependencies come
   from ~/.cargo/registry, which `cargo fetch` filled), and any other `RUN` is refused
   rather than skipped;
5. checks that the files the last stage copies `--from` the build stage exist, and runs
   the binary's `--version`.

Options:
  --dockerfile PATH    the Dockerfile (default: ./Dockerfile)
  --profile dev        build with the dev profile instead of the stage's `--release`: the
                       same files are read, in a fraction of the time (what CI does, with
                       CARGO_TARGET_DIR=target so the test build's dependencies are reused)
  --keep               leave the temporary folder (its path is printed)
  --expect-version S   fail unless the built binary's `--version` contains S (CI:
                       "allocator: jemalloc", the allocator every build uses)

CARGO_TARGET_DIR, when set, is where cargo builds (and where step 5 looks); the crate's own
artifacts are cleaned there first, so that it is compiled from the copied files (the
dependencies' are kept).
"""

import argparse
import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(msg):
    sys.exit(f"replay-docker-build: {msg}")


def logical_lines(text):
    """The Dockerfile's instructions: comments dropped, continuations joined."""
    out, cur = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not cur and (not line or line.startswith("#")):
            continue
        if cur and line.startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_stages(lines):
    stages = []
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"name": name, "base": parts[0], "steps": []})
        elif stages:
            stages[-1]["steps"].append((word, rest.strip()))
        elif word not in ("ARG",):
            fail(f"instruction before FROM: {line}")
    return stages


def split_flags(rest):
    """`--from=x --chown=a src dest` -> ({"from": "x", ...}, ["src", "dest"])."""
    if rest.startswith("["):
        return {}, json.loads(rest)
    flags, args = {}, []
    for tok in shlex.split(rest):
        if not args and tok.startswith("--"):
            k, _, v = tok[2:].partition("=")
            flags[k] = v
        else:
            args.append(tok)
    return flags, args


def ignore_rules(context):
    path = os.path.join(context, ".dockerignore")
    rules = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            pat = os.path.normpath(line[1:] if neg else line).lstrip("/")
            rules.append((neg, pat))
    return rules


def ignored(rel, rules):
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    parts = rel.split("/")
    result = False
    for neg, pat in rules:
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:i]), pat):
                result = not neg
                break
    return result


def copy_source(context, rules, src, dest):
    """Copies one COPY source (a file or a directory's contents) to `dest`."""
    rel = os.path.normpath(src).lstrip("/")
    full = os.path.join(context, rel)
    if rel.startswith("..") or not os.path.exists(full) or (rel != "." and ignored(rel, rules)):
        fail(f'COPY {src}: not found in the build context (or excluded by .dockerignore)')
    if os.path.isdir(full):
        copied = 0
        for root, dirs, files in os.walk(full):
            for f in files:
                path = os.path.join(root, f)
                r = os.path.relpath(path, context)
                if ignored(r, rules):
                    continue
                target = os.path.join(dest, os.path.relpath(path, full))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(path, target)
                copied += 1
        os.makedirs(dest, exist_ok=True)
        return copied
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy2(full, dest)
    return 1


def in_root(root, workdir, path):
    """A path of the stage's file system, under `root`."""
    p = path if path.startswith("/") else os.path.join(workdir, path)
    return os.path.join(root, os.path.normpath(p).lstrip("/"))


def cargo_command(cmd, profile):
    toks = shlex.split(cmd)
    if not toks or toks[0] != "cargo":
        fail(f"RUN {cmd}: only cargo commands are replayed (a container engine would run it)")
    if "--offline" not in toks:
        toks.insert(2, "--offline")
    if profile == "dev":
        toks = [t for t in toks if t != "--release"]
    return toks


def fresh_crate(cwd, toks, env):
    """In a shared target dir, cargo would find the crate itself fresh: its fingerprint
    lists the repository's own source files, which exist and have not changed, so the
    copied sources would never be compiled and a file missing from them never noticed.
    Its artifacts (only its own: the dependencies stay) are cleaned first."""
    manifest = open(os.path.join(cwd, "Cargo.toml")).read()
    package = manifest.split("[package]", 1)[1].split("name", 1)[1].split('"')[1]
    clean = ["cargo", "clean", "--offline", "-p", package]
    if "--release" in toks:
        clean.append("--release")
    print(f"RUN (in {cwd}) {shlex.join(clean)}  (shared target dir: the crate is built afresh)", flush=True)
    subprocess.run(clean, cwd=cwd, env=env, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dockerfile", default=os.path.join(REPO, "Dockerfile"))
    ap.add_argument("--profile", choices=["as-written", "dev"], default="as-written")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--expect-version", default=None)
    args = ap.parse_args()
    context = REPO
    stages = parse_stages(logical_lines(open(args.dockerfile).read()))
    if len(stages) < 2:
        fail("expected a build stage and a final stage")
    final = stages[-1]
    froms = [split_flags(rest) for word, rest in final["steps"] if word == "COPY"]
    froms = [(f, a) for f, a in froms if "from" in f]
    build_name = froms[0][0]["from"] if froms else stages[0]["name"]
    build = next((s for s in stages if s["name"] == build_name), None)
    if build is None:
        fail(f"no stage named {build_name}")
    rules = ignore_rules(context)
    root = tempfile.mkdtemp(prefix="docker-replay-")
    env = dict(os.environ)
    workdir = "/"
    target_dir = os.environ.get("CARGO_TARGET_DIR")
    try:
        for word, rest in build["steps"]:
            if word == "WORKDIR":
                workdir = os.path.normpath(os.path.join(workdir, rest))
                os.makedirs(in_root(root, "/", workdir), exist_ok=True)
            elif word == "ENV":
                for tok in shlex.split(rest):
                    k, _, v = tok.partition("=")
                    env[k] = v
            elif word == "COPY":
                flags, paths = split_flags(rest)
                if "from" in flags:
                    fail("COPY --from in the build stage is not replayed")
                *srcs, dest = paths
                for src in srcs:
                    d = in_root(root, workdir, dest)
                    is_dir_src = os.path.isdir(os.path.join(context, src))
                    if not is_dir_src and (dest.endswith("/") or len(srcs) > 1):
                        d = os.path.join(d, os.path.basename(src))
                    n = copy_source(context, rules, src, d)
                    print(f"COPY {src} -> {dest}: {n} file(s)")
            elif word == "RUN":
                toks = cargo_command(rest, args.profile)
                cwd = in_root(root, "/", workdir)
                if target_dir:
                    fresh_crate(cwd, toks, env)
                print(f"RUN (in {cwd}) {shlex.join(toks)}", flush=True)
                r = subprocess.run(toks, cwd=cwd, env=env)
                if r.returncode != 0:
                    fail(f"the build stage's RUN failed (exit {r.returncode})")
            elif word in ("ARG", "LABEL", "SHELL", "USER"):
                pass
            else:
                fail(f"{word} in the build stage is not replayed")
        # What the last stage takes from the build stage exists.
        for flags, paths in froms:
            *srcs, _ = paths
            for src in srcs:
                path = in_root(root, "/", src)
                target_in_stage = in_root(root, "/", os.path.join(workdir, "target"))
                if target_dir and path.startswith(target_in_stage + "/"):
                    path = os.path.join(target_dir, os.path.relpath(path, target_in_stage))
                if args.profile == "dev":
                    path = path.replace(f"{os.sep}release{os.sep}", f"{os.sep}debug{os.sep}")
                if not os.path.exists(path):
                    fail(f"COPY --from={build_name} {src}: the build did not make it ({path})")
                print(f"COPY --from={build_name} {src}: present")
                if os.access(path, os.X_OK) and os.path.isfile(path):
                    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
                    print(f"  {out.stdout.strip()}")
                    if args.expect_version and args.expect_version not in out.stdout:
                        fail(f"{src} --version: {out.stdout.strip()!r} lacks {args.expect_version!r}")
        print("replay-docker-build: the build stage builds")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
