#!/usr/bin/env bash
# End-to-end checks with real Singer tools from PyPI, against the demo export
# server on loopback:
#   1. tap | singer-check-tap validates every message;
#   2. tap | target-jsonl writes every event once and echoes the final STATE;
#   3. a run stopped by SIGTERM mid-sync and resumed from the STATE that
#      target-jsonl echoed loads every event exactly once;
#   4. `meltano run tap-fullstory target-jsonl` twice: the second run, with
#      state kept by Meltano, syncs nothing new;
#   5. tap | target-postgres (meltanolabs) into a PostgreSQL started here on
#      loopback: a run killed with SIGKILL part way, resumed from its STATE,
#      then a full re-sync without state: every event is one row (upserts on
#      EventKey), and 64-bit IDs are exact;
#   6. every stream selected (events and the REST streams): singer-check-tap
#      passes, and target-jsonl and target-postgres load every user, segment
#      and settings version exactly once; then a Meltano run with `select:`
#      patterns syncs just the streams they name;
#   7. source segment_export through target-jsonl, continuing from a bundle
#      run's STATE: the same EventKeys as the bundles, none missing or twice,
#      and the individuals stream beside it; singer-check-tap passes on both;
#   8. `meltano run` twice with source segment_export (settings from
#      TAP_FULLSTORY_* variables, select rules naming events and
#      individuals): every event in the range once, individuals beside them.
#   9. the same bundles loaded into PostgreSQL once as RECORDs and once as
#      BATCH files (batch_config): the same rows both ways, and both load
#      times printed (E2E_LOAD_BUNDLES x E2E_LOAD_EVENTS, default 5 x 10000);
#  10. `meltano run` twice into target-postgres with batch_config (from
#      TAP_FULLSTORY_BATCH_CONFIG): every event once, one batch file per
#      bundle, and nothing to sync the second time.
#  11. custom properties as columns: `meltano run` into target-postgres for
#      the first day, then four more (two properties new among them), then
#      again with nothing new: every property has its column with its
#      PostgreSQL type, the later ones added by the second run, the third
#      changes no column, and every value equals the exported one.
#  12. Segment Export with four exports in flight, piped into target-postgres,
#      killed with SIGKILL once three windows are written, then resumed from
#      the STATE the target echoed: the exports named are polled, not made
#      again, and every event of the range is one row.
#  13. the Python package: `pip install <checkout>` into a fresh venv puts
#      tap-fullstory on its PATH, and a Meltano project whose extractor has
#      only a `pip_url` (the wheel `pip wheel` built) runs into target-postgres
#      twice; a user and a segment deleted on the demo server in between are
#      marked deleted by the second run (ACTIVATE_VERSION), the rest not.
#  14. tap | target-duckdb 0.8.0 with duckdb pinned to 1.2.2 (newer ones drop
#      the first row of each load), then `meltano run` twice with
#      examples/meltano-duckdb.yml: every event once in DuckDB, IDs exact.
# Virtualenvs live under target/e2e and are reused when present. Step 5 needs
# PostgreSQL's server binaries; run as root it installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="$root/target/e2e"
mkdir -p "$work"

say() { printf '== %s\n' "$*" >&2; }
fail() { printf 'E2E FAILED: %s\n' "$*" >&2; exit 1; }

say "building release binaries"
cargo build --release --quiet --bins
export PATH="$root/target/release:$PATH"

venv() { # venv DIR PACKAGE...
  local dir=$1; shift
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -m pip show "${@%%==*}" >/dev/null 2>&1; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  fi
}
say "python tools (singer-tools, target-jsonl, meltano)"
venv "$work/venv-singer" singer-tools==0.4.1 target-jsonl==0.1.4
venv "$work/venv-meltano" meltano==4.4.1
venv "$work/venv-postgres" meltanolabs-target-postgres==0.8.1
py="$work/venv-singer/bin/python"

port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bundles=25
events=200
total=$((bundles * events))
fullstory-demo-server --port "$port" --bundles "$bundles" --events "$events" 2>"$work/server.log" &
server=$!
pgbin="" pgdir=""
server9=""
cleanup() {
  kill "$server" 2>/dev/null || true
  [ -z "$server9" ] || kill "$server9" 2>/dev/null || true
  if [ -n "$pgdir" ]; then
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"
  fi
}
trap cleanup EXIT
for _ in $(seq 1 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || fail "demo server did not start: $(cat "$work/server.log")"
  sleep 0.1
done

run="$work/run"
rm -rf "$run" && mkdir -p "$run"
cat >"$run/config.json" <<JSON
{"api_key": "demo-key", "start_date": "2024-01-01T00:00:00Z", "base_url": "http://127.0.0.1:$port", "api_url": "http://127.0.0.1:$port", "download_window_seconds": 0}
JSON

say "1. tap | singer-check-tap"
tap-fullstory --config "$run/config.json" 2>"$run/tap1.log" \
  | "$work/venv-singer/bin/singer-check-tap" >"$run/check.txt" 2>&1 \
  || fail "singer-check-tap rejected the output: $(tail -20 "$run/check.txt")"
grep -q "The output is valid" "$run/check.txt" || fail "singer-check-tap: $(cat "$run/check.txt")"
grep -Eq "^ *$total record messages" "$run/check.txt" || fail "expected $total records: $(cat "$run/check.txt")"

count_events() { # count_events DIR -> checks exactly-once, prints the count
  "$py" - "$1" "$total" <<'PY'
import glob, json, sys
rows = [json.loads(l) for f in sorted(glob.glob(sys.argv[1] + "/events-*.jsonl")) for l in open(f)]
keys = [r["EventKey"] for r in rows]
dupes = len(keys) - len(set(keys))
if dupes or len(rows) != int(sys.argv[2]):
    sys.exit(f"{len(rows)} rows, {dupes} duplicated keys; expected {sys.argv[2]} unique")
big = [r["UserId"] for r in rows if r.get("UserId", 0) > 2**53]
if not big:
    sys.exit("no 64-bit UserId came through")
print(len(rows))
PY
}

last_bookmark() { "$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["bookmarks"]["events"]["bundle_stop"])' "$1"; }

say "2. tap | target-jsonl"
mkdir -p "$run/jsonl"
echo "{\"destination_path\": \"$run/jsonl\"}" >"$run/target.json"
tap-fullstory --config "$run/config.json" 2>"$run/tap2.log" \
  | "$work/venv-singer/bin/target-jsonl" --config "$run/target.json" >"$run/state2.json" \
  || fail "tap | target-jsonl failed"
count_events "$run/jsonl" >/dev/null || fail "target-jsonl did not load every event exactly once"
[ "$(last_bookmark "$run/state2.json")" = "2024-01-26T00:00:00Z" ] || fail "final STATE: $(cat "$run/state2.json")"

say "3. interrupted (SIGTERM) and resumed through target-jsonl"
mkdir -p "$run/resume"
echo "{\"destination_path\": \"$run/resume\"}" >"$run/target3.json"
cat >"$run/slow.json" <<JSON
{"downloads_per_window": 1, "download_window_seconds": 0.3}
JSON
# The tap's PID is the pipeline's first stage: start it through a fifo.
rm -f "$run/pipe" && mkfifo "$run/pipe"
"$work/venv-singer/bin/target-jsonl" --config "$run/target3.json" <"$run/pipe" >"$run/state3a.json" &
target=$!
tap-fullstory --config "$run/config.json" --config "$run/slow.json" >"$run/pipe" 2>"$run/tap3a.log" &
tap=$!
# Stop it once some bundles have reached the target (the pacing makes the
# whole run take over 7 s).
for _ in $(seq 1 300); do
  [ "$(cat "$run"/resume/events-*.jsonl 2>/dev/null | wc -l)" -ge 400 ] && break
  sleep 0.1
done
kill -TERM "$tap"
set +e; wait "$tap"; code=$?; set -e
wait "$target" || fail "target-jsonl failed on the interrupted stream"
[ "$code" = 143 ] || fail "interrupted tap exited $code, expected 143: $(tail -2 "$run/tap3a.log")"
partial=$(cat "$run"/resume/events-*.jsonl | wc -l)
[ "$partial" -gt 0 ] && [ "$partial" -lt "$total" ] || fail "the interrupted run loaded $partial events"
tap-fullstory --config "$run/config.json" --state "$run/state3a.json" 2>"$run/tap3b.log" \
  | "$work/venv-singer/bin/target-jsonl" --config "$run/target3.json" >"$run/state3b.json" \
  || fail "resumed run failed"
count_events "$run/resume" >/dev/null || fail "interrupted + resumed runs did not load every event exactly once"
say "   first run loaded $partial events before SIGTERM; the resumed run loaded the rest"

say "4. meltano run tap-fullstory target-jsonl, twice"
# The example project installs the tap from its pip_url (step 13 does);
# these steps run the binary just built instead.
example="$run/example-meltano.yml"
sed 's#^    pip_url: \.\.$#    executable: tap-fullstory#' examples/meltano.yml >"$example"
grep -q '^    executable: tap-fullstory$' "$example" || fail "examples/meltano.yml: no 'pip_url: ..' line for the tap"
project="$run/meltano"
mkdir -p "$project/output"
sed "s#http://127.0.0.1:8765#http://127.0.0.1:$port#" "$example" >"$project/meltano.yml"
# A second extractor with Singer select patterns, for step 6.
"$py" - "$project/meltano.yml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
extra = """  - name: tap-fullstory-rest
    inherit_from: tap-fullstory
    select:
    - users.*
    - block_rules_history.*
    - '!segments.*'
"""
text = text.replace("  extractors:\n", "  extractors:\n" + extra, 1)
open(path, "w").write(text)
PY
(
  cd "$project"
  export PATH="$work/venv-meltano/bin:$PATH" MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
  export TAP_FULLSTORY_API_KEY=demo-key
  meltano install >"$run/meltano-install.log" 2>&1 || fail "meltano install: $(tail -5 "$run/meltano-install.log")"
  meltano run tap-fullstory target-jsonl >"$run/meltano1.log" 2>&1 || fail "meltano run 1: $(tail -5 "$run/meltano1.log")"
  count_events output >/dev/null || fail "meltano run 1 did not load every event once"
  meltano run tap-fullstory target-jsonl >"$run/meltano2.log" 2>&1 || fail "meltano run 2: $(tail -5 "$run/meltano2.log")"
  count_events output >/dev/null || fail "meltano run 2 loaded events again"
  grep -q "0 bundles to sync" "$run/meltano2.log" || fail "meltano run 2 did not resume from its state"
)

say "5. tap | target-postgres: killed (SIGKILL), resumed, then re-synced in full"
# The server's own binaries (a machine may have only the client, psql).
server_bin() { ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 | xargs -r dirname; }
pgbin=$(server_bin)
if [ -z "$pgbin" ]; then
  [ "$(id -u)" = 0 ] || fail "PostgreSQL server binaries are missing (apt-get install postgresql, as root)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
    || fail "cannot install PostgreSQL"
  pgbin=$(server_bin)
  [ -n "$pgbin" ] || fail "PostgreSQL installed, but no initdb found"
fi
id postgres >/dev/null 2>&1 || fail "no 'postgres' system user to run the server as"
pgdir=$(mktemp -d /tmp/tap-fullstory-pg.XXXXXX)
chown postgres "$pgdir"
pgport=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres >"$run/initdb.log" 2>&1 \
  || fail "initdb: $(tail -5 "$run/initdb.log")"
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w \
  -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1" start >/dev/null \
  || fail "PostgreSQL did not start: $(tail -5 "$pgdir/server.log")"
cat >"$run/postgres.json" <<JSON
{"host": "127.0.0.1", "port": $pgport, "user": "postgres", "password": "unused", "database": "postgres", "default_target_schema": "fullstory"}
JSON
sql() { "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -d postgres -Atc "$1"; }
# A run killed with SIGKILL part way, resumed from the STATE the target
# echoed, then a full re-sync without state: still one row per event.
rm -f "$run/pipe5" && mkfifo "$run/pipe5"
# SIGKILL can cut the tap's last line short while it waits on a slow target;
# like an orchestrator reading whole lines, pass only complete ones on.
whole_lines='import sys
for line in sys.stdin.buffer:
    if line.endswith(b"\n"):
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()'
"$py" -c "$whole_lines" <"$run/pipe5" \
  | "$work/venv-postgres/bin/target-postgres" --config "$run/postgres.json" >"$run/state5a.json" 2>"$run/postgres-a.log" &
target=$!
# One download a second: the kill lands while the tap waits for the next
# bundle, not half way through a line (a cut line is what a SIGKILL can
# leave, and target-postgres refuses it).
echo '{"downloads_per_window": 1, "download_window_seconds": 1}' >"$run/slower.json"
tap-fullstory --config "$run/config.json" --config "$run/slower.json" >"$run/pipe5" 2>"$run/tap5a.log" &
tap=$!
disown "$tap" # no job report when it is killed
for _ in $(seq 1 300); do
  seen=$(grep -c 'INFO bundle [0-9]*/' "$run/tap5a.log" 2>/dev/null) || true # the log may not exist yet
  [ "${seen:-0}" -ge 3 ] && break
  sleep 0.1
done
kill -KILL "$tap" 2>/dev/null || fail "the tap finished before it could be killed"
while kill -0 "$tap" 2>/dev/null; do sleep 0.05; done
wait "$target" || fail "target-postgres failed on the killed stream: $(tail -3 "$run/postgres-a.log")"
partial=$(sql 'select count(*) from fullstory.events')
[ "$partial" -gt 0 ] && [ "$partial" -lt "$total" ] || fail "the killed run loaded $partial rows"
state_arg=()
[ -s "$run/state5a.json" ] && { tail -1 "$run/state5a.json" >"$run/state5a.last"; state_arg=(--state "$run/state5a.last"); }
for pass in resumed full; do
  [ "$pass" = full ] && state_arg=()
  tap-fullstory --config "$run/config.json" "${state_arg[@]}" 2>"$run/tap5.log" \
    | "$work/venv-postgres/bin/target-postgres" --config "$run/postgres.json" >"$run/state5.json" 2>"$run/postgres-$pass.log" \
    || fail "tap | target-postgres ($pass): $(tail -3 "$run/postgres-$pass.log")"
  rows=$(sql 'select count(*), count(distinct "EventKey") from fullstory.events')
  [ "$rows" = "$total|$total" ] || fail "after the $pass run the table holds $rows rows|keys, expected $total|$total"
done
say "   the killed run loaded $partial rows; after resuming and a full re-sync: $total"
want_max=$(grep -o '9223372036854775807' "$run"/jsonl/events-*.jsonl | wc -l)
got_max=$(sql 'select count(*) from fullstory.events e, unnest(array[e."UserId", e."SessionId", e."PageId", e."IndvId"]) id where id = 9223372036854775807')
[ "$want_max" -gt 0 ] && [ "$got_max" = "$want_max" ] || fail "64-bit IDs: $got_max values of 2^63-1 in PostgreSQL, $want_max in the stream"

say "6. every stream selected: singer-check-tap, target-jsonl, target-postgres; meltano select"
# The demo server's REST data: 25 users (3 pages), 23 segments, 3 webhook
# endpoints, 4 operations, 6 web settings objects with 12 versions each,
# and 3 of them for mobile apps too, with 6 versions each (the other 3
# answer 404 for mobile).
users=25 segments=23 versions=12 mobile_versions=6
rest_records=$((users * 2 + segments + 3 + 4 + 6 + 6 * versions + 3 + 3 * mobile_versions))
tap-fullstory --config "$run/config.json" --discover \
  | "$py" -c 'import json, sys
c = json.load(sys.stdin)
for s in c["streams"]:
    # individuals comes from Segment Export: step 7 covers it.
    s["metadata"][0]["metadata"]["selected"] = s["tap_stream_id"] != "individuals"
json.dump(c, sys.stdout)' >"$run/all.json"
tap-fullstory --config "$run/config.json" --catalog "$run/all.json" 2>"$run/tap6a.log" \
  | "$work/venv-singer/bin/singer-check-tap" >"$run/check6.txt" 2>&1 \
  || fail "singer-check-tap rejected the all-streams output: $(tail -20 "$run/check6.txt")"
grep -Eq "^ *$((total + rest_records)) record messages" "$run/check6.txt" \
  || fail "expected $((total + rest_records)) records: $(cat "$run/check6.txt")"
count_rest() { # count_rest DIR STREAM KEY... -> rows, each key tuple once
  "$py" - "$@" <<'PY'
import glob, json, sys
d, stream, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [json.loads(l) for f in sorted(glob.glob(f"{d}/{stream}-*.jsonl")) for l in open(f)]
ids = {tuple(r.get(k) for k in keys) for r in rows}
if len(ids) != len(rows):
    sys.exit(f"{stream}: {len(rows)} rows, {len(ids)} distinct keys")
print(len(rows))
PY
}
mkdir -p "$run/all-jsonl"
echo "{\"destination_path\": \"$run/all-jsonl\"}" >"$run/target6.json"
tap-fullstory --config "$run/config.json" --catalog "$run/all.json" 2>"$run/tap6b.log" \
  | "$work/venv-singer/bin/target-jsonl" --config "$run/target6.json" >"$run/state6.json" \
  || fail "tap | target-jsonl with every stream failed"
[ "$(count_rest "$run/all-jsonl" users id)" = "$users" ] || fail "target-jsonl: users not each loaded once"
[ "$(count_rest "$run/all-jsonl" user id)" = "$users" ] || fail "target-jsonl: user not each loaded once"
[ "$(count_rest "$run/all-jsonl" segments id)" = "$segments" ] || fail "target-jsonl: segments not each loaded once"
[ "$(count_rest "$run/all-jsonl" webhook_endpoints id)" = 3 ] || fail "target-jsonl: webhook_endpoints not each loaded once"
[ "$(count_rest "$run/all-jsonl" operations id)" = 4 ] || fail "target-jsonl: operations not each loaded once"
for s in block_rules_history domain_settings_history geo_settings_history privacy_settings_history recording_features_history target_rule_history; do
  want=$versions
  case $s in block_rules_history|privacy_settings_history|recording_features_history) want=$((versions + mobile_versions)) ;; esac
  [ "$(count_rest "$run/all-jsonl" "$s" created createdBy lastUpdated platform)" = "$want" ] || fail "target-jsonl: $s not each version of each platform once"
done
sed 's/"fullstory"/"fullstory_rest"/' "$run/postgres.json" >"$run/postgres6.json"
tap-fullstory --config "$run/config.json" --catalog "$run/all.json" 2>"$run/tap6c.log" \
  | "$work/venv-postgres/bin/target-postgres" --config "$run/postgres6.json" >"$run/state6pg.json" 2>"$run/postgres-6.log" \
  || fail "tap | target-postgres with every stream: $(tail -3 "$run/postgres-6.log")"
rows=$(sql 'select count(*), count(distinct id) from fullstory_rest.users')
[ "$rows" = "$users|$users" ] || fail "PostgreSQL users: $rows rows|ids, expected $users|$users"
rows=$(sql "select count(*) filter (where platform = 'web') || '|' || count(*) filter (where platform = 'mobile') from fullstory_rest.block_rules_history")
[ "$rows" = "$versions|$mobile_versions" ] || fail "PostgreSQL block_rules_history: $rows web|mobile rows, expected $versions|$mobile_versions"
(
  cd "$project"
  export PATH="$work/venv-meltano/bin:$PATH" MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
  export TAP_FULLSTORY_API_KEY=demo-key
  meltano run tap-fullstory-rest target-jsonl >"$run/meltano3.log" 2>&1 || fail "meltano run tap-fullstory-rest: $(tail -5 "$run/meltano3.log")"
  [ "$(count_rest output users id)" = "$users" ] || fail "meltano select: users not each loaded once"
  [ "$(count_rest output block_rules_history created createdBy lastUpdated platform)" = "$((versions + mobile_versions))" ] || fail "meltano select: block_rules_history"
  if ls output/segments-*.jsonl >/dev/null 2>&1; then fail "meltano select: segments synced though not selected"; fi
)

say "7. Segment Export through target-jsonl, switched to from a bundle run's STATE"
mkdir -p "$run/segment"
echo "{\"destination_path\": \"$run/segment\"}" >"$run/target7.json"
cat >"$run/segment.json" <<JSON
{"source": "segment_export", "api_url": "http://127.0.0.1:$port", "export_delay_hours": 0,
 "poll_interval_seconds": 0.05, "export_window_hours": 12, "end_date": "2024-01-05T00:00:00Z"}
JSON
tap-fullstory --config "$run/config.json" --config <(echo '{"end_date": "2024-01-03T00:00:00Z"}') 2>"$run/tap7a.log" \
  | "$work/venv-singer/bin/target-jsonl" --config "$run/target7.json" >"$run/state7a.json" \
  || fail "bundle run before the switch failed"
tap-fullstory --config "$run/config.json" --config "$run/segment.json" --state <(tail -1 "$run/state7a.json") 2>"$run/tap7b.log" \
  | "$work/venv-singer/bin/target-jsonl" --config "$run/target7.json" >"$run/state7b.json" \
  || fail "tap (segment_export) | target-jsonl failed: $(tail -2 "$run/tap7b.log")"
# singer-check-tap on the Segment Export streams, individuals included.
echo '{"streams": [{"tap_stream_id": "events", "metadata": [{"breadcrumb": [], "metadata": {"selected": true}}]},
 {"tap_stream_id": "individuals", "metadata": [{"breadcrumb": [], "metadata": {"selected": true}}]}]}' >"$run/segment-streams.json"
tap-fullstory --config "$run/config.json" --config "$run/segment.json" --config <(echo '{"end_date": "2024-01-02T00:00:00Z"}') \
  --catalog "$run/segment-streams.json" 2>"$run/tap7c.log" \
  | "$work/venv-singer/bin/singer-check-tap" >"$run/check7.txt" 2>&1 \
  || fail "singer-check-tap rejected the Segment Export output: $(tail -20 "$run/check7.txt")"
grep -q "The output is valid" "$run/check7.txt" || fail "singer-check-tap (segment_export): $(cat "$run/check7.txt")"
grep -q "individuals" "$run/check7.txt" || fail "singer-check-tap saw no individuals: $(cat "$run/check7.txt")"
"$py" - "$run/jsonl" "$run/segment" "$run/state7b.json" <<'PY' || fail "segment export e2e check"
import glob, json, sys
def rows(d, stream):
    return [json.loads(l) for f in sorted(glob.glob(f"{d}/{stream}-*.jsonl")) for l in open(f)]
want = {r["EventKey"] for r in rows(sys.argv[1], "events") if r["EventStart"] < "2024-01-05"}
got = [r["EventKey"] for r in rows(sys.argv[2], "events")]
if len(got) != len(set(got)) or set(got) != want:
    sys.exit(f"{len(got)} rows, {len(set(got))} keys; expected the {len(want)} keys of the bundles")
people = rows(sys.argv[2], "individuals")
if not people or not all(isinstance(p["IndvId"], int) for p in people):
    sys.exit(f"individuals: {people[:2]}")
state = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1])
if state["bookmarks"]["events"].get("window_end") != "2024-01-05T00:00:00Z":
    sys.exit(f"final STATE: {state}")
print(f"   {len(got)} events ({len(want)} expected) and {len(people)} individual rows", file=sys.stderr)
PY

say "8. meltano run with source segment_export, twice"
project8="$run/meltano-segment"
mkdir -p "$project8/output"
sed -e "s#http://127.0.0.1:8765#http://127.0.0.1:$port#" -e 's#^    - events\.\*$#    - events.*\n    - individuals.*#' \
  "$example" >"$project8/meltano.yml"
grep -q 'individuals' "$project8/meltano.yml" || fail "step 8: could not add individuals.* to the select rules"
(
  cd "$project8"
  export PATH="$work/venv-meltano/bin:$PATH" MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
  export TAP_FULLSTORY_API_KEY=demo-key TAP_FULLSTORY_SOURCE=segment_export
  export TAP_FULLSTORY_EXPORT_DELAY_HOURS=0 TAP_FULLSTORY_POLL_INTERVAL_SECONDS=0.05
  export TAP_FULLSTORY_EXPORT_WINDOW_HOURS=12 TAP_FULLSTORY_END_DATE=2024-01-03T00:00:00Z
  meltano install >"$run/meltano8-install.log" 2>&1 || fail "meltano install: $(tail -5 "$run/meltano8-install.log")"
  for pass in 1 2; do
    meltano run tap-fullstory target-jsonl >"$run/meltano8-$pass.log" 2>&1 \
      || fail "meltano run $pass (segment_export): $(tail -5 "$run/meltano8-$pass.log")"
  done
  grep -q "0 windows to sync" "$run/meltano8-2.log" || fail "meltano run 2 (segment_export) did not resume from its state"
)
"$py" - "$run/jsonl" "$project8/output" <<'PY' || fail "meltano segment export check"
import glob, json, sys
def rows(d, stream):
    return [json.loads(l) for f in sorted(glob.glob(f"{d}/{stream}-*.jsonl")) for l in open(f)]
want = {r["EventKey"] for r in rows(sys.argv[1], "events") if r["EventStart"] < "2024-01-03"}
got = [r["EventKey"] for r in rows(sys.argv[2], "events")]
if len(got) != len(set(got)) or set(got) != want:
    sys.exit(f"{len(got)} rows, {len(set(got))} keys over two runs; expected the {len(want)} keys once")
people = rows(sys.argv[2], "individuals")
if not people:
    sys.exit("no individuals")
print(f"   two Meltano runs: {len(got)} events once each, {len(people)} individual rows", file=sys.stderr)
PY

say "9. RECORD vs BATCH into target-postgres: same rows, load times"
load_bundles=${E2E_LOAD_BUNDLES:-5}
load_events=${E2E_LOAD_EVENTS:-10000}
load_total=$((load_bundles * load_events))
port9=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fullstory-demo-server --port "$port9" --bundles "$load_bundles" --events "$load_events" 2>"$work/server9.log" &
server9=$!
for _ in $(seq 1 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port9") 2>/dev/null && break
  kill -0 "$server9" 2>/dev/null || fail "demo server did not start: $(cat "$work/server9.log")"
  sleep 0.1
done
sed "s#http://127.0.0.1:$port#http://127.0.0.1:$port9#" "$run/config.json" >"$run/config9.json"
# A directory name with a space and a "%": the manifest must be what the
# SDK (target-postgres) opens.
batchdir="$run/batch dir%20x"
rm -rf "$batchdir" && mkdir -p "$batchdir"
cat >"$run/batch.json" <<JSON
{"batch_config": {"encoding": {"format": "jsonl", "compression": "gzip"}, "storage": {"root": "file://$batchdir", "prefix": "e2e-"}}}
JSON
declare -A load_secs
for mode in records batch; do
  sed "s/\"fullstory\"/\"load_$mode\"/" "$run/postgres.json" >"$run/postgres9-$mode.json"
  extra=()
  [ "$mode" = batch ] && extra=(--config "$run/batch.json")
  start=$(date +%s.%N)
  tap-fullstory --config "$run/config9.json" "${extra[@]}" 2>"$run/tap9-$mode.log" \
    | "$work/venv-postgres/bin/target-postgres" --config "$run/postgres9-$mode.json" >"$run/state9-$mode.json" 2>"$run/postgres9-$mode.log" \
    || fail "tap | target-postgres ($mode): $(tail -3 "$run/postgres9-$mode.log")"
  end=$(date +%s.%N)
  load_secs[$mode]=$("$py" -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$start" "$end")
  rows=$(sql "select count(*), count(distinct \"EventKey\") from load_$mode.events")
  [ "$rows" = "$load_total|$load_total" ] || fail "$mode load: the table holds $rows rows|keys, expected $load_total|$load_total"
done
files=$(find "$batchdir" -name 'e2e-events-*.jsonl.gz' | wc -l)
[ "$files" = "$load_bundles" ] || fail "expected $load_bundles batch files, found $files"
[ "$(tail -1 "$run/state9-records.json")" = "$(tail -1 "$run/state9-batch.json")" ] \
  || fail "final STATE differs: $(tail -1 "$run/state9-records.json") vs $(tail -1 "$run/state9-batch.json")"
cols=$(sql "select string_agg(quote_ident(column_name), ',' order by column_name) from information_schema.columns where table_schema = 'load_records' and table_name = 'events' and column_name not like '\\_sdc\\_%'")
differ=$(sql "select count(*) from ((select $cols from load_records.events except all select $cols from load_batch.events) union all (select $cols from load_batch.events except all select $cols from load_records.events)) d")
[ "$differ" = 0 ] || fail "RECORD and BATCH loads differ in $differ rows"
say "   $load_total events: RECORD load ${load_secs[records]} s, BATCH load ${load_secs[batch]} s, same rows"

# A Meltano project in directory $1 from the meltano.yml $3 (default: the
# example with `executable: tap-fullstory`), pointed at the demo server, whose
# target-postgres (the e2e venv's) loads into schema $2 of the PostgreSQL
# started in step 5.
postgres_project() {
  rm -rf "$1" && mkdir -p "$1"
  "$py" - "${3:-$example}" "$1/meltano.yml" "$port" "$work/venv-postgres/bin/target-postgres" "$pgport" "$2" <<'PY'
import sys
src, dst, port, target, pgport, schema = sys.argv[1:]
text = open(src).read().replace("http://127.0.0.1:8765", f"http://127.0.0.1:{port}")
loader = f"""  - name: target-postgres
    namespace: target_postgres
    executable: {target}
    config:
      host: 127.0.0.1
      port: {pgport}
      user: postgres
      password: unused
      database: postgres
      default_target_schema: {schema}
"""
text = text.replace("  loaders:\n", "  loaders:\n" + loader, 1)
open(dst, "w").write(text)
PY
}

say "10. meltano run with batch_config into target-postgres, twice"
project10="$run/meltano-batch"
rm -rf "$run/batch10" && mkdir -p "$run/batch10"
postgres_project "$project10" meltano_batch
grep -q "name: batch_config" "$project10/meltano.yml" || fail "examples/meltano.yml does not declare batch_config"
(
  cd "$project10"
  export PATH="$work/venv-meltano/bin:$PATH" MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
  export TAP_FULLSTORY_API_KEY=demo-key
  export TAP_FULLSTORY_BATCH_CONFIG="{\"encoding\": {\"format\": \"jsonl\", \"compression\": \"gzip\"}, \"storage\": {\"root\": \"file://$run/batch10\", \"prefix\": \"m-\"}}"
  for pass in 1 2; do
    meltano run tap-fullstory target-postgres >"$run/meltano10-$pass.log" 2>&1 \
      || fail "meltano run $pass (batch_config, target-postgres): $(tail -5 "$run/meltano10-$pass.log")"
  done
  grep -q "0 bundles to sync" "$run/meltano10-2.log" || fail "meltano run 2 (batch_config) did not resume from its state"
)
rows=$(sql 'select count(*), count(distinct "EventKey") from meltano_batch.events')
[ "$rows" = "$total|$total" ] || fail "Meltano BATCH load: $rows rows|keys, expected $total|$total"
files=$(find "$run/batch10" -name 'm-events-*.jsonl.gz' | wc -l)
[ "$files" = "$bundles" ] || fail "Meltano BATCH load: $files batch files, expected $bundles"
say "   $total events through Meltano as $files BATCH files, once each; the second run had nothing to sync"

say "11. custom property columns: meltano run into target-postgres, twice; types and values"
project11="$run/meltano-props"
postgres_project "$project11" meltano_props
columns11() { sql "select column_name || ' ' || udt_name from information_schema.columns where table_schema = 'meltano_props' and table_name = 'events' order by 1"; }
(
  cd "$project11"
  export PATH="$work/venv-meltano/bin:$PATH" MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
  export TAP_FULLSTORY_API_KEY=demo-key
  # Run 1: the first day alone; run 2: four days more, two properties new
  # among them; run 3: nothing new.
  for pass in 1 2 3; do
    end=2024-01-06T00:00:00Z
    [ "$pass" = 1 ] && end=2024-01-02T00:00:00Z
    TAP_FULLSTORY_END_DATE=$end meltano run tap-fullstory target-postgres >"$run/meltano11-$pass.log" 2>&1 \
      || fail "meltano run $pass (custom properties, target-postgres): $(tail -5 "$run/meltano11-$pass.log")"
    columns11 >"$run/columns11-$pass.txt"
  done
  grep -q "0 bundles to sync" "$run/meltano11-3.log" || fail "meltano run 3 (custom properties) did not resume from its state"
)
cmp -s "$run/columns11-2.txt" "$run/columns11-3.txt" || fail "a run with nothing new changed the columns: $(diff "$run/columns11-2.txt" "$run/columns11-3.txt")"
sql "select row_to_json(e) from meltano_props.events e" >"$run/rows11.jsonl"
sed 's/}$/, "end_date": "2024-01-06T00:00:00Z"}/' "$run/config.json" >"$run/config11.json"
tap-fullstory --config "$run/config11.json" 2>"$run/tap11.log" >"$run/tap11.jsonl" || fail "tap (custom properties)"
"$py" - "$port" "$run" <<'PY' || fail "custom property columns"
import datetime, decimal, json, sys, urllib.request
port, run = sys.argv[1:]
def get(path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Basic demo-key"})
    return urllib.request.urlopen(req).read()
import gzip
exported, first_day = [], {}
for day, b in enumerate(json.loads(get("/api/v1/export/list?start=1"))["exports"][:5]):
    events = json.loads(gzip.decompress(get(f"/api/v1/export/get?id={b['Id']}")), parse_float=decimal.Decimal)
    for e in events:
        for k in e:
            if k.split("_")[0] in ("user", "evt", "page"):
                first_day.setdefault(k, day)
    exported += events
records = [json.loads(l, parse_float=decimal.Decimal)["record"] for l in open(f"{run}/tap11.jsonl") if '"type":"RECORD"' in l]
if len(records) != len(exported):
    sys.exit(f"{len(records)} records for {len(exported)} exported events")
want_types = {"str": "text", "int": "int8", "real": "numeric", "bool": "bool", "date": "timestamp",
              "strs": "_text", "ints": "_int8", "reals": "jsonb", "bools": "_bool", "dates": "_text"}
cols = {}
for line in open(f"{run}/columns11-3.txt"):
    name, udt = line.rsplit(" ", 1)
    cols[name] = udt.strip()
first = {line.rsplit(" ", 1)[0] for line in open(f"{run}/columns11-1.txt")}
props = sorted(first_day)
late = {p for p, day in first_day.items() if day > 0}
if not {"page_campaign_str", "evt_order.items_real"} <= late:
    sys.exit(f"the demo's later properties came early: {late}")
for p in props:
    want = want_types[p.rsplit("_", 1)[1]]
    if cols.get(p) != want:
        sys.exit(f"column {p}: {cols.get(p)}, expected {want}")
    if (p in first) == (p in late):
        sys.exit(f"column {p} {'appeared in' if p in first else 'missing from'} the first run's table")
# The tap's records: every value as exported, in its column, or in
# ExtraFields when not of its type (the demo's evt_count_int "n/a").
misfits = 0
for e, r in zip(exported, records):
    for p in props:
        if p not in e:
            continue
        if p in r:
            if r[p] != e[p]:
                sys.exit(f"{p}: {r[p]!r} in the record, {e[p]!r} exported")
        elif r.get("ExtraFields", {}).get(p) == e[p]:
            misfits += 1
        else:
            sys.exit(f"{p} = {e[p]!r} is neither a column nor in ExtraFields: {r}")
if misfits != 5:
    sys.exit(f"{misfits} values kept in ExtraFields; the demo has one per bundle")
# The table: every value as the record had it, by EventKey.
rows = {}
for line in open(f"{run}/rows11.jsonl"):
    row = json.loads(line, parse_float=decimal.Decimal)
    rows[row["EventKey"]] = row
if len(rows) != len(records):
    sys.exit(f"{len(rows)} rows for {len(records)} records")
def ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)
checked = 0
for r in records:
    row = rows[r["EventKey"]]
    for p in props:
        if p not in r:
            continue
        want, got = r[p], row[p]
        kind = p.rsplit("_", 1)[1]
        if want is None:
            ok = got is None
        elif kind == "date":
            ok = ts(got) == ts(want)
        elif kind == "real":
            ok = decimal.Decimal(str(got)) == decimal.Decimal(str(want))
        elif kind == "reals":
            ok = [decimal.Decimal(str(x)) for x in got] == [decimal.Decimal(str(x)) for x in want]
        else:
            ok = got == want
        if not ok:
            sys.exit(f"{p} of {r['EventKey']}: {got!r} in PostgreSQL, {want!r} in the record")
        checked += 1
    for p, v in (r.get("ExtraFields") or {}).items():
        if row["ExtraFields"].get(p) != v:
            sys.exit(f"ExtraFields.{p} of {r['EventKey']}: {row['ExtraFields'].get(p)!r}, expected {v!r}")
print(f"   {len(props)} property columns with their types, {len(late)} added by run 2; {checked} values equal to the export, {misfits} misfits in ExtraFields", file=sys.stderr)
PY

say "12. Segment Export with exports in flight into target-postgres: killed (SIGKILL), resumed"
cat >"$run/segment12.json" <<JSON
{"source": "segment_export", "export_delay_hours": 0, "end_date": "2024-01-11T00:00:00Z",
 "poll_interval_seconds": 0.3, "exports_in_flight": 4}
JSON
sed 's/"fullstory"/"segment_kill"/' "$run/postgres.json" >"$run/postgres12.json"
echo '{"streams": [{"tap_stream_id": "events", "metadata": [{"breadcrumb": [], "metadata": {"selected": true}}]}]}' >"$run/events-only.json"
rm -f "$run/pipe12" && mkfifo "$run/pipe12"
"$py" -c "$whole_lines" <"$run/pipe12" \
  | "$work/venv-postgres/bin/target-postgres" --config "$run/postgres12.json" >"$run/state12a.json" 2>"$run/postgres12-a.log" &
target=$!
tap-fullstory --config "$run/config.json" --config "$run/segment12.json" --catalog "$run/events-only.json" \
  >"$run/pipe12" 2>"$run/tap12a.log" &
tap=$!
disown "$tap"
# Killed once three windows are written, with later ones' exports in flight.
for _ in $(seq 1 600); do
  seen=$(grep -c 'INFO window [0-9]*/' "$run/tap12a.log" 2>/dev/null) || true # the log may not exist yet
  [ "${seen:-0}" -ge 3 ] && break
  sleep 0.05
done
kill -KILL "$tap" 2>/dev/null || fail "step 12: the tap finished before it could be killed"
while kill -0 "$tap" 2>/dev/null; do sleep 0.05; done
wait "$target" || fail "target-postgres failed on the killed stream: $(tail -3 "$run/postgres12-a.log")"
[ -s "$run/state12a.json" ] || fail "step 12: no STATE came out of the killed run"
tail -1 "$run/state12a.json" >"$run/state12a.last"
in_flight=$("$py" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["bookmarks"]["events"].get("exports", [])))' "$run/state12a.last")
[ "$in_flight" -ge 2 ] || fail "step 12: the killed run's STATE names $in_flight exports in flight: $(cat "$run/state12a.last")"
partial=$(sql 'select count(*) from segment_kill.events')
tap-fullstory --config "$run/config.json" --config "$run/segment12.json" --catalog "$run/events-only.json" \
  --state "$run/state12a.last" 2>"$run/tap12b.log" \
  | "$work/venv-postgres/bin/target-postgres" --config "$run/postgres12.json" >"$run/state12b.json" 2>"$run/postgres12-b.log" \
  || fail "step 12: the resumed run: $(tail -3 "$run/tap12b.log")"
resumed=$(grep -c "resuming operation" "$run/tap12b.log" || true)
[ "$resumed" = "$in_flight" ] || fail "step 12: the resumed run polled $resumed of the $in_flight exports in flight"
left=$("$py" -c 'import json,sys,datetime
e = json.load(open(sys.argv[1]))["bookmarks"]["events"].get("window_end", "2024-01-01T00:00:00Z")
done = datetime.datetime.fromisoformat(e.replace("Z", "+00:00")).day - 1
print(10 - done)' "$run/state12a.last")
created=$(grep -c "created operation" "$run/tap12b.log" || true)
[ "$created" = $((left - resumed)) ] || fail "step 12: the resumed run created $created exports for $left windows left, $resumed of them in flight"
want=$((10 * events))
rows=$(sql 'select count(*), count(distinct "EventKey") from segment_kill.events')
[ "$rows" = "$want|$want" ] || fail "step 12: the table holds $rows rows|keys, expected $want|$want"
say "   killed with $in_flight exports in flight after $partial rows; resumed them ($resumed polled, none made again): $want events once"

say "13. the wheel: pip install into a fresh venv; Meltano with only a pip_url; deletions reach PostgreSQL"
# `pip install <checkout>` is a PEP 517 build (maturin, from pyproject.toml);
# `pip wheel` makes the wheel a Meltano project installs from its pip_url.
rm -rf "$run/venv-tap" "$run/wheels"
python3 -m venv "$run/venv-tap"
"$run/venv-tap/bin/python" -m pip install --quiet --disable-pip-version-check "$root" >"$run/pip-install.log" 2>&1 \
  || fail "pip install of the checkout: $(tail -5 "$run/pip-install.log")"
[ -x "$run/venv-tap/bin/tap-fullstory" ] || fail "pip install put no tap-fullstory in the venv's bin"
[ "$("$run/venv-tap/bin/tap-fullstory" --version)" = "$(tap-fullstory --version)" ] \
  || fail "the pip-installed tap says $("$run/venv-tap/bin/tap-fullstory" --version)"
"$run/venv-tap/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$run/wheels" "$root" >"$run/pip-wheel.log" 2>&1 \
  || fail "pip wheel: $(tail -5 "$run/pip-wheel.log")"
wheel=$(ls "$run"/wheels/tap_fullstory-*.whl)
# The listing is read whole before it is searched: `grep -q` stops reading at
# the first match, and under pipefail the lister's broken pipe fails the step.
listing=$("$py" -m zipfile -l "$wheel")
grep -q 'tap_fullstory-[^/]*\.data/scripts/tap-fullstory ' <<<"$listing" \
  || fail "the wheel holds no tap-fullstory script: $listing"
project13="$run/meltano-wheel"
gone_user=9007199254740999 gone_segment=seg-5
postgres_project "$project13" meltano_wheel examples/meltano.yml
"$py" - "$project13/meltano.yml" "$wheel" <<'PY'
import sys
path, wheel = sys.argv[1:]
text = open(path).read()
if "    pip_url: ..\n" not in text or "executable: tap-fullstory" in text:
    sys.exit("examples/meltano.yml: the tap should have `pip_url: ..` and no executable")
text = text.replace("    pip_url: ..\n", f"    pip_url: {wheel}\n")
text = text.replace("    select:\n    - events.*\n", "    select:\n    - users.*\n    - segments.*\n")
open(path, "w").write(text)
PY
grep -q -- '- segments\.\*' "$project13/meltano.yml" || fail "step 13: could not select users and segments"
(
  cd "$project13"
  # Only the venv Meltano makes from the pip_url has a tap-fullstory.
  export PATH="$work/venv-meltano/bin:$(printf '%s' "$PATH" | tr ':' '\n' | grep -vx "$root/target/release" | paste -sd:)"
  export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false TAP_FULLSTORY_API_KEY=demo-key
  ! command -v tap-fullstory >/dev/null || fail "step 13: a tap-fullstory is on PATH: $(command -v tap-fullstory)"
  meltano install >"$run/meltano13-install.log" 2>&1 || fail "meltano install (pip_url wheel): $(tail -5 "$run/meltano13-install.log")"
  [ -x .meltano/extractors/tap-fullstory/venv/bin/tap-fullstory ] || fail "meltano install put no tap-fullstory in the extractor's venv"
  meltano run tap-fullstory target-postgres >"$run/meltano13-1.log" 2>&1 \
    || fail "meltano run 1 (pip_url wheel): $(tail -5 "$run/meltano13-1.log")"
  "$py" - "$port" "$gone_user" "$gone_segment" <<'PY' || fail "step 13: could not delete on the demo server"
import sys, urllib.request
port, user, segment = sys.argv[1:]
for path in (f"/v2/users/{user}", f"/segments/v1/{segment}"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="DELETE", headers={"Authorization": "Basic demo-key"})
    urllib.request.urlopen(req).read()
PY
  meltano run tap-fullstory target-postgres >"$run/meltano13-2.log" 2>&1 \
    || fail "meltano run 2 (pip_url wheel): $(tail -5 "$run/meltano13-2.log")"
)
for check in "users id $users $gone_user" "segments id $segments $gone_segment"; do
  read -r table key want gone <<<"$check"
  got=$(sql "select count(*) || '|' || count(*) filter (where _sdc_deleted_at is not null) || '|' || coalesce(string_agg($key, ',') filter (where _sdc_deleted_at is not null), '') from meltano_wheel.$table")
  [ "$got" = "$want|1|$gone" ] || fail "step 13: $table rows|marked deleted|ids marked: $got, expected $want|1|$gone"
done
say "   pip-installed $(basename "$wheel"); after a user and a segment were deleted, run 2 marked exactly those two in PostgreSQL"

say "14. tap | target-duckdb (duckdb 1.2.2), and Meltano with examples/meltano-duckdb.yml"
# duckdb from 1.3.0 on takes the first row of target-duckdb 0.8.0's CSV for a
# header and drops it: pinned to 1.2.2, the newest that loads every row.
venv "$work/venv-duckdb" target-duckdb==0.8.0 duckdb==1.2.2
"$work/venv-duckdb/bin/python" -c 'import duckdb, sys; sys.exit(duckdb.__version__ != "1.2.2")' \
  || fail "step 14: the DuckDB venv does not hold duckdb 1.2.2"
rm -rf "$run/duckdb" && mkdir -p "$run/duckdb"
echo "{\"path\": \"$run/duckdb/warehouse.duckdb\", \"default_target_schema\": \"fullstory\"}" >"$run/duckdb.json"
tap-fullstory --config "$run/config.json" 2>"$run/tap14.log" \
  | "$work/venv-duckdb/bin/target-duckdb" --config "$run/duckdb.json" >"$run/state14.json" 2>"$run/duckdb14.log" \
  || fail "tap | target-duckdb: $(tail -3 "$run/duckdb14.log")"
check_duckdb() { # check_duckdb DB -> every event of the bundle run once, IDs exact
  "$work/venv-duckdb/bin/python" - "$1" "$run/jsonl" "$total" <<'PY'
import duckdb, glob, json, sys
db, jsonl, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = duckdb.connect(db, read_only=True)
n = c.execute("select count(*) from fullstory.events").fetchone()[0]
got = {r[0]: r[1:] for r in c.execute(
    "select eventkey, userid, sessionid, pageid, indvid from fullstory.events").fetchall()}
want = {}
for f in glob.glob(jsonl + "/events-*.jsonl"):
    for line in open(f):
        r = json.loads(line)
        want[r["EventKey"]] = (r.get("UserId"), r.get("SessionId"), r.get("PageId"), r.get("IndvId"))
if n != total or len(got) != total or set(got) != set(want):
    sys.exit(f"{n} rows, {len(got)} keys; expected the {total} EventKeys of the bundles once each; missing: {sorted(set(want) - set(got))[:3]}")
wrong = [k for k in want if got[k] != want[k]]
if wrong:
    sys.exit(f"{len(wrong)} rows with IDs not as exported, e.g. {got[wrong[0]]} for {want[wrong[0]]}")
big = sum(v == 2**63 - 1 for ids in got.values() for v in ids)
if not big:
    sys.exit("no 64-bit ID of 2^63-1 came through")
print(n)
PY
}
check_duckdb "$run/duckdb/warehouse.duckdb" >/dev/null || fail "target-duckdb did not load every event exactly once"
project14="$run/meltano-duckdb"
rm -rf "$project14" && mkdir -p "$project14/output"
sed -e "s#http://127.0.0.1:8765#http://127.0.0.1:$port#" -e 's#^    pip_url: \.\.$#    executable: tap-fullstory#' \
  examples/meltano-duckdb.yml >"$project14/meltano.yml"
grep -q '^    executable: tap-fullstory$' "$project14/meltano.yml" || fail "examples/meltano-duckdb.yml: no 'pip_url: ..' line for the tap"
(
  cd "$project14"
  export PATH="$work/venv-meltano/bin:$PATH" MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
  export TAP_FULLSTORY_API_KEY=demo-key
  meltano install >"$run/meltano14-install.log" 2>&1 || fail "meltano install (DuckDB): $(tail -5 "$run/meltano14-install.log")"
  for pass in 1 2; do
    meltano run tap-fullstory target-duckdb >"$run/meltano14-$pass.log" 2>&1 \
      || fail "meltano run $pass (target-duckdb): $(tail -5 "$run/meltano14-$pass.log")"
  done
  grep -q "0 bundles to sync" "$run/meltano14-2.log" || fail "meltano run 2 (target-duckdb) did not resume from its state"
)
check_duckdb "$project14/output/warehouse.duckdb" >/dev/null || fail "Meltano into DuckDB did not load every event exactly once"
say "   $total events into DuckDB once each, piped and through Meltano (duckdb 1.2.2; 64-bit IDs exact)"

echo "e2e: 14 passed, 0 failed"
