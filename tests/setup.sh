#!/usr/bin/env bash
# Installs what the tests and the local run need into the project itself: a Python virtual environment (.venv)
# with moto (the local AWS) and cargo-lambda, from tests/requirements.txt. Idempotent and quiet when up to date.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/tests/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/moto_server" ]; then
  exit 0
fi

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "setup: installing python3 and venv (apt)..." >&2
  apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is required (rustup, https://rustup.rs)" >&2
  exit 1
fi

echo "setup: creating .venv with moto and cargo-lambda (first run only, about a minute)..." >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
echo "$want" > "$stamp"
echo "setup: done" >&2
