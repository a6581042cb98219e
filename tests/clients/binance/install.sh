#!/usr/bin/env bash
# Installs the pinned Binance connectors for tests/binance.rs: PyPI binance-sdk-spot (with every
# dependency pinned) into target/venv-binance, npm @binance/spot into target/node-binance, from
# requirements.txt and package-lock.json. Quick when already installed: pip is skipped while
# the venv holds exactly requirements.txt (a copy is kept beside it), npm while the lock is
# unchanged.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
venv="$root/target/venv-binance"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/requirements.txt"
fi
node="$root/target/node-binance"
mkdir -p "$node"
if ! cmp -s "$here/package-lock.json" "$node/package-lock.json" ||
    [ ! -d "$node/node_modules/@binance/spot" ]; then
    cp "$here/package.json" "$here/package-lock.json" "$node/"
    npm ci --silent --no-audit --no-fund --prefix "$node"
fi
