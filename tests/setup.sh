#!/usr/bin/env bash
# Installs what the tests and the local run need into the project itself: a Python virtual environment (.venv)
# with moto (the local AWS), cargo-lambda, the SAM CLI, cfn-lint and checkov, from tests/requirements.txt; the
# arm64 Rust target that `sam build` cross-compiles to; and PostgreSQL (server and psql) where the machine lacks it.
# Idempotent and quiet when up to date.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if ! command -v cargo >/dev/null 2>&1 || ! command -v rustup >/dev/null 2>&1; then
  echo "setup: the Rust toolchain (cargo, rustup) is required: https://rustup.rs" >&2
  exit 1
fi
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  echo "setup: adding the aarch64-unknown-linux-gnu Rust target (for sam build)..." >&2
  rustup target add aarch64-unknown-linux-gnu >&2
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  echo "setup: installing PostgreSQL (apt)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

if ! command -v openssl >/dev/null 2>&1; then
  echo "setup: installing openssl (apt; the TLS test's certificate)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/moto_server" ]; then
  exit 0
fi

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup: installing python3 and venv (apt)..." >&2
  apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi

echo "setup: creating .venv with moto, cargo-lambda, the SAM CLI, cfn-lint and checkov (first run only, a minute or two)..." >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
echo "setup: done" >&2
