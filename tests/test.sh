#!/usr/bin/env bash
# The whole test suite: unit, handler and end-to-end tests (each end-to-end test starts its own moto server).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tests/setup.sh"
cd "$root"
# The scenario test runs the function binaries as Lambda would; cargo builds another package's binaries only when
# asked, so build them first.
cargo build --workspace --locked --bins
cargo test --workspace --locked "$@"
