#!/usr/bin/env bash
# Benchmarks: cold start (init) time, peak memory, AWS calls per unit of work, package size, for each function.
# Release binaries against moto on loopback; prints figures.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tests/setup.sh"
cd "$root"
cargo build --locked --release --bins
exec "${CARGO_TARGET_DIR:-$root/target}/release/bench" "${CARGO_TARGET_DIR:-$root/target}/release"
