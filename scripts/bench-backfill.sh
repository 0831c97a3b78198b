#!/usr/bin/env bash
# Segment Export backfill benchmark: the demo server serves DAYS daily
# windows of EVENTS events, each export taking PREPARE seconds to prepare, as
# FullStory's do; the release tap backfills them all with exports_in_flight 1
# (one window at a time) and with IN_FLIGHT, alternating, RUNS times, and
# reports the median wall times. Then the downloads are cut at 60% (the first
# request for each file), and the bytes the server sent are counted with the
# tap resuming them (Range) and with a server that cannot resume.
#   scripts/bench-backfill.sh      (DAYS=30 EVENTS=2000 PREPARE=2 IN_FLIGHT=4 RUNS=1)
set -euo pipefail
cd "$(dirname "$0")/.."
days=${DAYS:-30} events=${EVENTS:-2000} prepare=${PREPARE:-2} in_flight=${IN_FLIGHT:-4} runs=${RUNS:-1}

cargo build --release --quiet --bins
bin=$PWD/target/release
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

start_server() { # extra server flags...
  [ -n "$server" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$bin/fullstory-demo-server" --port "$port" --bundles "$days" --events "$events" \
    --export-prepare-secs "$prepare" "$@" 2>"$work/server.log" &
  server=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
  done
}

config() { # exports_in_flight
  end=$(python3 -c "import datetime; print((datetime.datetime(2024,1,1)+datetime.timedelta(days=$days)).strftime('%Y-%m-%dT00:00:00Z'))")
  echo "{\"api_key\": \"demo-key\", \"start_date\": \"2024-01-01\", \"end_date\": \"$end\",
    \"base_url\": \"http://127.0.0.1:$port\", \"api_url\": \"http://127.0.0.1:$port\",
    \"source\": \"segment_export\", \"export_delay_hours\": 0, \"poll_interval_seconds\": 0.25,
    \"exports_in_flight\": $1}" >"$work/config.json"
  echo '{"streams": [{"tap_stream_id": "events", "metadata": [{"breadcrumb": [], "metadata": {"selected": true}}]}]}' >"$work/catalog.json"
}

sync() { # exports_in_flight -> seconds; checks every event arrived once
  config "$1"
  local start end
  start=$(date +%s.%N)
  "$bin/tap-fullstory" --config "$work/config.json" --catalog "$work/catalog.json" 2>"$work/tap.log" >"$work/out.jsonl"
  end=$(date +%s.%N)
  python3 - "$work/out.jsonl" "$((days * events))" <<'PY'
import json, sys
keys = [json.loads(l)["record"]["EventKey"] for l in open(sys.argv[1]) if '"type":"RECORD"' in l]
if len(keys) != int(sys.argv[2]) or len(set(keys)) != len(keys):
    sys.exit(f"{len(keys)} records, {len(set(keys))} keys; expected {sys.argv[2]}")
PY
  python3 -c "print(f'{$end - $start:.1f}')"
}

stats() { curl -s "http://127.0.0.1:$port/demo/stats"; }

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $days windows of $events events, ${prepare}s to prepare each" >&2
start_server
declare -a one many
for _ in $(seq "$runs"); do
  one+=("$(sync 1)")
  many+=("$(sync "$in_flight")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-28s %10s\n' "backfill" "wall time"
printf '%-28s %9ss   (runs: %s)\n' "exports_in_flight 1" "$(median "${one[@]}")" "${one[*]}"
printf '%-28s %9ss   (runs: %s)\n' "exports_in_flight $in_flight" "$(median "${many[@]}")" "${many[*]}"

bytes() { python3 -c 'import json,sys; print(json.load(sys.stdin)["download_bytes"])'; }
start_server
sync "$in_flight" >/dev/null
whole=$(stats | bytes)
start_server --cut-downloads 0.6
sync "$in_flight" >/dev/null
resumed=$(stats | bytes)
start_server --cut-downloads 0.6 --no-ranges
sync "$in_flight" >/dev/null
restarted=$(stats | bytes)
printf '%-28s %12s %8s\n' "downloads" "bytes sent" "share"
for row in "uncut:$whole" "cut at 60%, resumed:$resumed" "cut at 60%, started over:$restarted"; do
  python3 -c "import sys; name, n = sys.argv[1].rsplit(':', 1); print(f'{name:<28} {int(n):>12} {int(n)/int(sys.argv[2]):7.2f}x')" "$row" "$whole"
done
