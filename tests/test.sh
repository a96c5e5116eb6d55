#!/usr/bin/env bash
# The whole test suite: unit, handler and end-to-end tests (each end-to-end test starts its own moto server).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tests/setup.sh"
cd "$root"
# Build first, so the first build's progress shows (the whole-flow tests also build the binaries they run).
cargo build --workspace --locked --all-targets
cargo test --workspace --locked "$@"
