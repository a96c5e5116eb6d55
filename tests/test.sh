#!/usr/bin/env bash
# The whole test suite: formatting and lint gates, then unit, handler, end-to-end and template tests, including the
# slow ones plain `cargo test` skips (the arm64 `sam build`, the redrive test). Ends with one line for the whole
# suite: `N passed, M failed`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tests/setup.sh"
cd "$root"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Build first, so the first build's progress shows (the whole-flow tests also build the binaries they run).
cargo build --workspace --locked --all-targets
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
# The recording proxy notes which policy grant allowed each call; the report after the suite reads these notes.
rm -rf "$root/target/iam-exercised"
cargo test --workspace --locked --no-fail-fast "$@" -- --include-ignored 2>&1 | tee "$log" || status=$?
# Least privilege, measured: grants of infra/template.yaml no test exercised, each to be covered or explained there.
# Only for the whole suite: a filtered run exercises less.
if [ "$#" -eq 0 ]; then
  cargo run --quiet --locked -p e2e-harness --bin iam-report || status=$?
fi
# One closing line for the whole suite, summed over every test binary's `test result:` line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
