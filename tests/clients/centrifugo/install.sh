#!/usr/bin/env bash
# Installs the pinned Centrifugo client SDKs for tests/centrifugo.rs: centrifuge-python into
# target/venv-centrifugo, npm `centrifuge` (with `ws`) into target/node-centrifugo, from
# requirements.txt and package-lock.json. Quick when already installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
venv="$root/target/venv-centrifugo"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
node="$root/target/node-centrifugo"
mkdir -p "$node"
if ! cmp -s "$here/package-lock.json" "$node/package-lock.json" || [ ! -d "$node/node_modules/centrifuge" ]; then
    cp "$here/package.json" "$here/package-lock.json" "$node/"
    npm ci --silent --no-audit --no-fund --prefix "$node"
fi
