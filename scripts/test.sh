#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs what it needs (scripts/setup.sh,
# idempotent, quick when everything is there), then runs every test. `.ci/run` runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --locked
