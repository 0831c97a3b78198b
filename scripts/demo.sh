#!/usr/bin/env bash
# Runs a real sync end to end with no FullStory account: builds the tap and the
# demo export server, serves 25 synthetic daily bundles on 127.0.0.1:8765 and
# syncs them with sample_config.json. Singer messages go to stdout, logs to
# stderr. Extra arguments go to the tap (e.g. --state state.json).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bins
port=8765
target/release/fullstory-demo-server --port "$port" --bundles 25 --events 200 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then echo "demo server failed to start" >&2; exit 1; fi
  sleep 0.1
done
sleep 0.2
if ! kill -0 "$server" 2>/dev/null; then echo "demo server is not running (is port $port taken?)" >&2; exit 1; fi

target/release/tap-fullstory --config sample_config.json "$@"
