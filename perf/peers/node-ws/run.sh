#!/usr/bin/env bash
# Installs the Node `ws` peer locally (from package-lock.json) and runs it in the foreground.
# Usage: perf/peers/node-ws/run.sh [PORT] [HOST] [--deflate]   (default 127.0.0.1:9200)
# Prints "listening on HOST:PORT" once it accepts connections; stop it with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")"
port="${1:-9200}"
host="${2:-127.0.0.1}"
command -v node >/dev/null || { echo "node not found (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -d node_modules/ws ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
fi
exec node server.js --listen "$host:$port" "${@:3}"
