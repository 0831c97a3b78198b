#!/usr/bin/env bash
# End-to-end benchmark: for each size, the demo server generates one bundle of
# realistic synthetic events (the full field mix, custom vars, unicode) and
# serves it on loopback; the release tap syncs it with every field selected,
# once into /dev/null and once through a pipe into `cat > /dev/null` (as a
# target reads it), RUNS times each, alternating. Prints the median MB/s of
# uncompressed JSON for both, the highest peak RSS, the peak spool (temp
# space) the tap reports in its last log line and its share of the JSON, and
# `gzip -dc` of the same bundle as a reference for this machine.
#   scripts/bench.sh [EVENTS ...]      (default: 50000 200000 1000000)
#   RUNS=5 scripts/bench.sh            (default 3)
#   TAP=/path/to/tap-fullstory scripts/bench.sh   (measure another build)
#   BASELINE=/path/to/tap-fullstory scripts/bench.sh   (that build and this
#     one side by side: the same served bundle, the two alternating in every
#     round, so the machine's drift hits both alike; one row each)
#   PROPERTIES=12 scripts/bench.sh 200000   (events carrying 12 more custom
#     properties than the demo's own, about 20 in all; custom_properties
#     object and columns side by side, as above)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(50000 200000 1000000)
runs=${RUNS:-3}

cargo build --release --quiet --bins
export PATH="$PWD/target/release:$PATH"
tap=${TAP:-$PWD/target/release/tap-fullstory}
# The variants measured side by side: a name, a build, a custom_properties mode.
names=(this) taps=("$tap") modes=(columns)
[ -n "${BASELINE:-}" ] && names=(baseline this) taps=("$BASELINE" "$tap") modes=(columns columns)
properties=${PROPERTIES:-0}
[ "$properties" -gt 0 ] && names=(object columns) taps=("$tap" "$tap") modes=(object columns)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $runs runs each, ${taps[*]}, $properties extra custom properties" >&2
printf '%-9s %-8s %8s %8s %12s %12s %10s %11s %7s %10s\n' build events "JSON MB" "gzip MB" "MB/s null" "MB/s pipe" "peak RSS" "peak spool" "spool%" "gzip -dc"
for n in "${sizes[@]}"; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fullstory-demo-server --port "$port" --bundles 1 --events "$n" --properties "$properties" 2>"$work/server.log" &
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

  for t in "${!taps[@]}"; do
    echo "{\"api_key\": \"demo-key\", \"start_date\": \"2024-01-01\", \"base_url\": \"$base\", \"download_window_seconds\": 0, \"custom_properties\": \"${modes[$t]}\"}" >"$work/config$t.json"
  done
  : >"$work/times"
  for _ in $(seq "$runs"); do
    for t in "${!taps[@]}"; do
      for mode in null pipe; do
        start=$(date +%s.%N)
        if [ "$mode" = null ]; then
          /usr/bin/time -f '%M' -o "$work/rss" "${taps[$t]}" --config "$work/config$t.json" >/dev/null 2>"$work/tap.log"
        else
          /usr/bin/time -f '%M' -o "$work/rss" "${taps[$t]}" --config "$work/config$t.json" 2>"$work/tap.log" | cat >/dev/null
        fi
        end=$(date +%s.%N)
        spool=$(grep -o 'peak spool [^(]*([0-9]* bytes)' "$work/tap.log" | grep -o '[0-9]* bytes' | cut -d' ' -f1 || true)
        echo "$t $mode $start $end $(cat "$work/rss") ${spool:--1}" >>"$work/times"
      done
    done
  done
  kill "$server"; wait "$server" 2>/dev/null || true

  python3 - "$n" "$json_bytes" "$gz_bytes" "$gz_start" "$gz_end" "$work/times" "${names[@]}" <<'PY'
import statistics, sys
n, json_b, gz_b = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
gz_secs = float(sys.argv[5]) - float(sys.argv[4])
names = sys.argv[7:]
for t, name in enumerate(names):
    rates = {"null": [], "pipe": []}
    rss = spool = -1
    for line in open(sys.argv[6]):
        who, mode, start, end, rss_kib, spool_b = line.split()
        if int(who) != t:
            continue
        rates[mode].append(json_b / 1e6 / (float(end) - float(start)))
        rss, spool = max(rss, int(rss_kib)), max(spool, int(spool_b))
    med = {m: statistics.median(r) for m, r in rates.items()}
    spool_mb = f"{spool/1e6:7.1f} MB" if spool >= 0 else "      n/a"
    share = f"{100*spool/json_b:6.1f}%" if spool >= 0 else "    n/a"
    print(f"{name:<9} {n:<8} {json_b/1e6:8.1f} {gz_b/1e6:8.1f} {med['null']:12.1f} {med['pipe']:12.1f} {rss/1024:6.1f} MiB {spool_mb:>11} {share:>7} {json_b/1e6/gz_secs:10.1f}")
    print(f"          {name} runs null: " + " ".join(f"{r:.0f}" for r in rates["null"]) + "; pipe: " + " ".join(f"{r:.0f}" for r in rates["pipe"]), file=sys.stderr)
PY
done
