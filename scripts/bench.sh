#!/usr/bin/env bash
# End-to-end benchmark: for each size, the demo server generates one bundle of
# realistic synthetic events (the full field mix, custom vars, unicode) and
# serves it on loopback; the release tap syncs it into /dev/null with every
# field selected. Prints events/s, MB/s of uncompressed JSON, peak RSS, and
# `gzip -dc` of the same bundle as a reference for this machine.
#   scripts/bench.sh [EVENTS ...]      (default: 50000 200000 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(50000 200000 1000000)

cargo build --release --quiet --bins
export PATH="$PWD/target/release:$PATH"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

printf '%-9s %10s %10s %12s %9s %10s %12s\n' events "JSON MB" "gzip MB" "events/s" "MB/s" "peak RSS" "gzip -dc MB/s"
for n in "${sizes[@]}"; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fullstory-demo-server --port "$port" --bundles 1 --events "$n" 2>"$work/server.log" &
  server=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.2
  done
  base="http://127.0.0.1:$port"
  id=$(curl -s -H "Authorization: Basic demo-key" "$base/api/v1/export/list?start=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["exports"][0]["Id"])')
  curl -s -H "Authorization: Basic demo-key" "$base/api/v1/export/get?id=$id" -o "$work/bundle.gz"
  gz_bytes=$(stat -c %s "$work/bundle.gz")
  json_bytes=$(gzip -dc "$work/bundle.gz" | wc -c)
  gz_start=$(date +%s.%N); gzip -dc "$work/bundle.gz" >/dev/null; gz_end=$(date +%s.%N)

  echo "{\"api_key\": \"demo-key\", \"start_date\": \"2024-01-01\", \"base_url\": \"$base\", \"download_window_seconds\": 0}" >"$work/config.json"
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/rss" tap-fullstory --config "$work/config.json" >/dev/null 2>"$work/tap.log"
  end=$(date +%s.%N)
  kill "$server"; wait "$server" 2>/dev/null || true

  python3 - "$n" "$json_bytes" "$gz_bytes" "$start" "$end" "$(cat "$work/rss")" "$gz_start" "$gz_end" <<'PY'
import sys
n, json_b, gz_b = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
secs = float(sys.argv[5]) - float(sys.argv[4])
rss_kib = int(sys.argv[6])
gz_secs = float(sys.argv[8]) - float(sys.argv[7])
print(f"{n:<9} {json_b/1e6:10.1f} {gz_b/1e6:10.1f} {n/secs:12,.0f} {json_b/1e6/secs:9.1f} {rss_kib/1024:8.1f} MiB {json_b/1e6/gz_secs:10.1f}")
PY
done
