#!/usr/bin/env bash
# Benchmarks: cold start as Lambda bills it (init + first invocation over TLS, at the CPU share of 128-1024 MB),
# warm invocations, peak memory, AWS calls per unit of work, cost per million invocations, arm64 zip sizes, and the
# levers measured on the SDK floor. Prints a Markdown report and writes it to tests/bench-results.md.
#
# BENCH_LEVERS=0 skips the lever builds (each a build of the floor of its own, a few minutes apiece);
# see tests/src/bin/bench.rs for BENCH_RUNS, BENCH_SIZES and BENCH_ONLY.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/tests/setup.sh"
cd "$root"
export PATH="$root/.venv/bin:$PATH"
target="${CARGO_TARGET_DIR:-$root/target}"
functions=(-p cognito-attribute-sync -p publish-history-email -p lifecycle-hook-completer -p alarm-instance-updater -p unsubscribe -p cognito-reconcile)

# What Lambda runs, for its size: the arm64 zips as cargo lambda makes them (target/lambda/<name>/bootstrap.zip).
cargo lambda build --locked --release --arm64 --output-format zip "${functions[@]}"
# What the benchmark runs here: the host's release binaries, the floor among them.
cargo build --locked --release --bins

# The levers, each on a build of the floor of its own: the choices shared::aws did not make.
variants=()
lever() {
  local name="$1" dir="$2"; shift 2
  env "$@" cargo build --locked --release -p sdk-floor --target-dir "$target/levers/$dir" ${FEATURES:+--features "$FEATURES"}
  variants+=("$name=$target/levers/$dir/release")
}
if [ "${BENCH_LEVERS:-1}" != 0 ]; then
  FEATURES="tls-aws-lc system-roots" lever "before: aws-lc, system roots, opt-level 3" aws-lc CARGO_PROFILE_RELEASE_OPT_LEVEL=3
  FEATURES="tls-aws-lc system-roots" lever "aws-lc without jitter entropy, system roots, opt-level 3" aws-lc-no-jitter \
    CARGO_PROFILE_RELEASE_OPT_LEVEL=3 AWS_LC_SYS_NO_JITTER_ENTROPY=1
  FEATURES="system-roots" lever "ring, system roots, opt-level 3" ring-system-roots CARGO_PROFILE_RELEASE_OPT_LEVEL=3
  FEATURES="" lever "ring, AWS roots, opt-level 3" opt-3 CARGO_PROFILE_RELEASE_OPT_LEVEL=3
fi

BENCH_VARIANTS="$(IFS=';'; echo "${variants[*]:-}")" exec "$target/release/bench" "$target/release"
