#!/usr/bin/env bash
# Checks that two builds of the tap write the same bytes: runs each build
# through the same fixed syncs against a fresh demo server and compares their
# stdout with cmp, `time_extracted`, table versions and batch run ids masked,
# batch files by their gunzipped content. Used to prove a change to the
# code's structure changes no behaviour.
#   scripts/same-output.sh BEFORE_TAP [AFTER_TAP]
# AFTER_TAP defaults to this checkout's release build; the demo server is
# this checkout's too. Exits non-zero on the first difference, naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BEFORE_TAP [AFTER_TAP]" >&2; exit 2; }
before=$(realpath "$1")
if [ $# -ge 2 ]; then
  after=$(realpath "$2")
else
  cargo build --release --quiet --bins
  after=$PWD/target/release/tap-fullstory
fi
server_bin=$PWD/target/release/fullstory-demo-server
[ -x "$server_bin" ] || cargo build --release --quiet --bin fullstory-demo-server
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

start_server() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$server_bin" --port "$port" --bundles 6 --events 300 --users 25 --segments 23 --versions 12 \
    2>"$work/server.log" &
  server=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
  done
  base="http://127.0.0.1:$port"
}

stop_server() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=
}

# The config of one scenario for a server at $base, in $work/config.json.
write_config() {
  python3 - "$1" "$base" "$work" >"$work/config.json" <<'PY'
import json, sys
kind, base, work = sys.argv[1:]
c = {"api_key": "demo-key", "start_date": "2024-01-01", "base_url": base,
     "api_url": base, "download_window_seconds": 0, "poll_interval_seconds": 0.05}
if kind.startswith("segment"):
    c.update({"source": "segment_export", "export_delay_hours": 0,
              "end_date": "2024-01-06T00:00:00Z"})
if kind.startswith("all"):
    c["end_date"] = "2024-01-06T00:00:00Z"
if kind.endswith("batch"):
    c["batch_config"] = {"encoding": {"format": "jsonl", "compression": "gzip"},
                         "storage": {"root": "file://" + work + "/batches", "prefix": "fs-"}}
print(json.dumps(c))
PY
}

# A catalog selecting every stream, from the tap's own discovery.
"$before" --discover | python3 -c '
import json, sys
cat = json.load(sys.stdin)
for s in cat["streams"]:
    s["metadata"][0]["metadata"]["selected"] = True
print(json.dumps(cat))' >"$work/all.json"

# Masks what differs from run to run by design.
mask() {
  sed -E -e 's/"time_extracted":"[^"]*"/"time_extracted":"T"/g' \
    -e 's/^(\{"type":"(RECORD|ACTIVATE_VERSION)".*)"version":[0-9]+/\1"version":V/' \
    -e 's/[0-9]{8}T[0-9]{6}Z-[0-9]+/RUNID/g' "$1"
}

# The batch files of a run, gunzipped, each under a name without its run id.
collect_batches() {
  local into=$1
  mkdir -p "$into"
  for f in "$work"/batches/*; do
    [ -e "$f" ] || continue
    local name
    name=$(basename "$f" | sed -E 's/[0-9]{8}T[0-9]{6}Z-[0-9]+/RUNID/')
    gzip -dc "$f" >"$into/$name"
  done
  rm -rf "$work/batches"
}

failed=0
# run NAME KIND [tap args...]: each build, on a fresh server, the same args.
run() {
  local name=$1 kind=$2
  shift 2
  for side in before after; do
    local tap=$before
    [ "$side" = after ] && tap=$after
    start_server
    write_config "$kind"
    mkdir -p "$work/batches"
    local args=("$@")
    args=("${args[@]//@CONFIG@/$work/config.json}")
    args=("${args[@]//@WORK@/$work}")
    set +e
    "$tap" "${args[@]}" >"$work/$name.$side.out" 2>"$work/$name.$side.err"
    echo $? >"$work/$name.$side.rc"
    set -e
    stop_server
    mask "$work/$name.$side.out" >"$work/$name.$side.masked"
    collect_batches "$work/$name.$side.batches"
  done
  local what="$name: exit $(cat "$work/$name.before.rc"), $(wc -l <"$work/$name.before.out") lines"
  if ! cmp -s "$work/$name.before.rc" "$work/$name.after.rc"; then
    echo "DIFFERENT $name: exit codes $(cat "$work/$name.before.rc") and $(cat "$work/$name.after.rc")" >&2
    failed=1
  elif ! cmp "$work/$name.before.masked" "$work/$name.after.masked"; then
    echo "DIFFERENT $name: stdout (first differing lines below)" >&2
    # diff's own status (1: they differ) must not end the script here.
    { diff "$work/$name.before.masked" "$work/$name.after.masked" || true; } | head -6 | cut -c1-300 >&2
    failed=1
  elif ! diff -r "$work/$name.before.batches" "$work/$name.after.batches" >/dev/null; then
    echo "DIFFERENT $name: batch files" >&2
    diff -rq "$work/$name.before.batches" "$work/$name.after.batches" >&2 || true
    failed=1
  else
    echo "same     $what, $(find "$work/$name.before.batches" -type f | wc -l) batch files"
  fi
}

# The STATE value on line N of the STATE lines of an earlier run's stdout.
state_at() {
  grep '"type":"STATE"' "$work/$1.before.out" | sed -n "$2p" |
    python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["value"]))' >"$work/$3"
}

for fmt in text json markdown; do
  run "about-$fmt" none --about --format "$fmt"
done
run discover none --discover
run discover-segment segment --config @CONFIG@ --discover
run bundles bundles --config @CONFIG@
state_at bundles 3 bundles-state.json
run bundles-resumed bundles --config @CONFIG@ --state @WORK@/bundles-state.json
run segment segment --config @CONFIG@
state_at segment 3 segment-state.json
run segment-resumed segment --config @CONFIG@ --state @WORK@/segment-state.json
run all-streams all --config @CONFIG@ --catalog @WORK@/all.json
state_at all-streams 9 all-state.json
run all-streams-resumed all --config @CONFIG@ --catalog @WORK@/all.json --state @WORK@/all-state.json
grep '"type":"STATE"' "$work/all-streams.before.out" | tail -1 |
  python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["value"]))' >"$work/all-final.json"
run all-streams-again all --config @CONFIG@ --catalog @WORK@/all.json --state @WORK@/all-final.json
run all-streams-batch all-batch --config @CONFIG@ --catalog @WORK@/all.json
run bad-config none --config @WORK@/all.json

if [ "$failed" -ne 0 ]; then
  echo "the two builds differ" >&2
  exit 1
fi
echo "the two builds wrote the same bytes in every scenario"
