#!/usr/bin/env bash
# The main job, locally: installs moto (first run only), builds every function, then runs them as real binaries
# against a local AWS on the sample events and prints what they did. `--keep` leaves the local AWS running.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tests/setup.sh"
cd "$root"
echo "building the functions (the first build takes a few minutes)..." >&2
cargo build --locked --bins
exec "${CARGO_TARGET_DIR:-$root/target}/debug/local-run" "$@"
