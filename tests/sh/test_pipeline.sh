#!/usr/bin/env bash
# End-to-end: the five stages under the supervisor (pipelines/local.conf) on
# the local stack. What arrives is read by `delayer watch --json` (a queue
# subscribed to the topic, raw delivery): every schedule exactly once, never
# before its due time, and the state table agrees.
. "$(dirname "$0")/../lib/suite.sh"

SUP="$REPO/scripts/delayer-supervise"

oneTimeSetUp() {
  work_up e2e
}

oneTimeTearDown() {
  [ -n "${RUN:-}" ] && "$SUP" -c "$CONF" -d "$RUN" stop >/dev/null 2>&1
  work_down
}

# A deployment with a 5 s window (most schedules go through the state table;
# $2 sets another) and a pipeline from local.conf, edited by the sed
# expression in $1.
pipeline_up() {
  PFX=$(new_prefix)
  export DELAYER_PREFIX=$PFX
  DELAYER_WINDOW=${2:-5s} D init --topic t >/dev/null || fail "init"
  CONF="$WORK/$PFX.conf"
  RUN="$WORK/run-$PFX"
  sed -e "${1:-s/^//}" "$REPO/pipelines/local.conf" >"$CONF"
  "$SUP" -c "$CONF" -d "$RUN" start >/dev/null || { fail "pipeline start"; cat "$RUN"/*.log; }
}

pipeline_down() {
  "$SUP" -c "$CONF" -d "$RUN" stop >/dev/null || fail "pipeline stop"
  if grep -h 'level=error' "$RUN"/*.log | grep -v 'watch' | head -5 | grep -q .; then
    echo "errors logged by the stages:"; grep -h 'level=error' "$RUN"/*.log | head -5
  fi
  RUN=
}

# watch_start N TIMEOUT: a subscribed queue collecting N arrivals as NDJSON.
watch_start() {
  WATCH_OUT="$WORK/watch-$PFX.ndjson"
  D watch --topic t --json --count "$1" --timeout "$2" >"$WATCH_OUT" 2>"$WORK/watch.err" &
  WATCH_PID=$!
  for _ in $(seq 50); do grep -q watching "$WORK/watch.err" && return 0; sleep 0.1; done
  fail "watch did not subscribe"
}

# make_schedules N FROM_S TO_S: N NDJSON lines due evenly between now+FROM and now+TO.
make_schedules() {
  python3 - "$@" <<'PY'
import json, sys, time
n, lo, hi = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
now = time.time() * 1000
for i in range(n):
    at = int(now + (lo + (hi - lo) * i / max(n - 1, 1)) * 1000)
    print(json.dumps({"id": "e2e-%05d" % i, "at": at, "topic": "t", "payload": "payload %d" % i,
                      "attrs": {"n": str(i)}}))
PY
}

# check_arrivals EXPECTED_IDS_FILE: exactly these ids, once each, none early.
check_arrivals() {
  python3 - "$WATCH_OUT" "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
want = set(l.strip() for l in open(sys.argv[2]) if l.strip())
ids = [r["id"] for r in rows]
dups = len(ids) - len(set(ids))
early = [r for r in rows if r["late_ms"] is None or r["late_ms"] < 0]
missing = want - set(ids)
extra = set(ids) - want
late = sorted(r["late_ms"] for r in rows if r["late_ms"] is not None)
p = lambda q: late[min(len(late) - 1, int(q * len(late)))] if late else None
print("arrived %d, duplicates %d, early %d, missing %d, unexpected %d, lateness ms p50 %s p99 %s max %s"
      % (len(rows), dups, len(early), len(missing), len(extra), p(.5), p(.99), late[-1] if late else None))
sys.exit(0 if not (dups or early or missing or extra) else 1)
PY
}

# counted STATE N: `list --state` (a GSI, eventually consistent) and `stats`
# (state-update's counters, flushed every --flush) both say N.
counted() { [ "$(D list --state "$1" --count)" = "$2" ] && [ "$(stats_of "$1")" = "$2" ]; }

stats_of() { D stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); s=d.get("states", d); print(s.get(sys.argv[1], 0) if isinstance(s, dict) else [x for x in s if x.get("state")==sys.argv[1]][0]["count"])' "$1"; }

# run_thousand SPREAD: 1,020 schedules: 20 fast-tracked, 1,000 spread over
# SPREAD seconds (make sanitize shortens it with PIPELINE_SPREAD).
run_thousand() {
  watch_start 1020 150s
  # 20 due within the window (fast track: straight into the SQS delay queue),
  # then 1000 spread over SPREAD s (the state table and the scanner)
  python3 -c 'import json,time
now=time.time()*1000
for i in range(20): print(json.dumps({"id":"fast-%02d"%i,"at":int(now+3000+100*i),"topic":"t","payload":"fast %d"%i}))' >"$WORK/in.ndjson"
  make_schedules 1000 10 $((10 + ${PIPELINE_SPREAD:-$1})) >>"$WORK/in.ndjson"
  D import --ids <"$WORK/in.ndjson" >"$WORK/import.out" || fail "import"
  grep -P "\t" "$WORK/import.out" | cut -f2 >"$WORK/ids"
  assertEquals "imported" 1020 "$(wc -l <"$WORK/ids")"
  wait "$WATCH_PID"
  assertEquals "watch saw all 1020 before its timeout" 0 $?
  wait_until 30 counted PUBLISHED 1020   # the index and the last counter flush
  local out
  out=$(check_arrivals "$WORK/ids")
  assertEquals "arrivals: $out" 0 $?
  echo "  $out"
  assertEquals "PUBLISHED in list" 1020 "$(D list --state PUBLISHED --count)"
  assertEquals "PUBLISHED in stats" 1020 "$(stats_of PUBLISHED)"
  assertEquals "nothing left waiting" 0 "$(( $(stats_of NEW) + $(stats_of ENQUEUED) ))"
}

test_thousand_schedules_spread_over_60s_one_instance_each() {
  pipeline_up
  run_thousand 60
  pipeline_down
}

test_thousand_schedules_two_instances_of_every_stage() {
  pipeline_up 's/instances=1/instances=2/'
  local n
  n=$("$SUP" -c "$CONF" -d "$RUN" status | grep -c ' ready')
  assertEquals "12 instances ready" 12 "$n"
  run_thousand 30   # twice the rate of the one-instance run
  pipeline_down
}

test_cancelled_schedules_never_arrive() {
  # a 20 s window leaves time for 150 cancels even on a loaded machine
  pipeline_up "" 20s
  # 50 fast-tracked (ENQUEUED in SQS), 50 claimed by the scanner (ENQUEUED),
  # 50 still NEW, and 50 kept: only the kept ones may arrive.
  python3 -c 'import json,time
now=time.time()*1000
for i in range(50): print(json.dumps({"id":"fast-%02d"%i,"at":int(now+15000+20*i),"topic":"t","payload":"x"}))
for i in range(50): print(json.dumps({"id":"scan-%02d"%i,"at":int(now+26000+20*i),"topic":"t","payload":"x"}))
for i in range(50): print(json.dumps({"id":"new-%02d"%i,"at":int(now+90000+20*i),"topic":"t","payload":"x"}))
for i in range(50): print(json.dumps({"id":"keep-%02d"%i,"at":int(now+30000+20*i),"topic":"t","payload":"x"}))
print(json.dumps({"id":"sentinel","at":int(now+33000),"topic":"t","payload":"x"}))' >"$WORK/c.ndjson"
  # 51 arrivals: the kept ones and a sentinel due after every cancelled one
  # that could have slipped through (fast-*, scan-*): any of those arriving
  # would take one of the 51 places
  watch_start 51 60s
  D import <"$WORK/c.ndjson" >/dev/null || fail "import"
  local id st ok=0
  for i in $(seq -f %02g 0 49); do D cancel "fast-$i" >/dev/null && ok=$((ok + 1)); done
  for i in $(seq -f %02g 0 49); do D cancel "new-$i" >/dev/null && ok=$((ok + 1)); done
  # wait until the scanner has claimed the scan-* ones, then cancel them
  for _ in $(seq 80); do
    st=$(json_field "$(D get scan-49)" state)
    [ "$st" = ENQUEUED ] && break
    sleep 0.25
  done
  assertEquals "scan-49 was claimed by the scanner before the cancel" ENQUEUED "$st"
  for i in $(seq -f %02g 0 49); do D cancel "scan-$i" >/dev/null && ok=$((ok + 1)); done
  assertEquals "150 cancels succeeded" 150 "$ok"
  wait "$WATCH_PID"
  { printf 'keep-%02d\n' $(seq 0 49); echo sentinel; } >"$WORK/keep"
  local out
  out=$(check_arrivals "$WORK/keep")
  assertEquals "only the kept ones (and the sentinel) arrived: $out" 0 $?
  wait_until 30 counted CANCELLED 150   # the index and the last counter flush
  assertEquals "CANCELLED" 150 "$(D list --state CANCELLED --count)"
  assertEquals "CANCELLED in stats" 150 "$(stats_of CANCELLED)"
  for id in fast-00 scan-00 new-00; do
    assertEquals "$id state" CANCELLED "$(json_field "$(D get "$id")" state)"
  done
  pipeline_down
}

test_publish_that_keeps_failing_ends_failed_via_the_dead_letter_queue() {
  pipeline_up '/^stage sns-publish/s|--in|--retry-backoff 100ms --in|'
  D init --topic doomed >/dev/null
  local arn id st
  arn=$("$BIN/aws-call" sns CreateTopic "Name=$PFX-doomed" | sed -n 's:.*<TopicArn>\(.*\)</TopicArn>.*:\1:p')
  assertNotNull "topic arn" "$arn"
  id=$(D schedule --in 2s --topic doomed --payload 'never delivered')
  "$BIN/aws-call" sns DeleteTopic "TopicArn=$arn" >/dev/null || fail "delete topic"
  for _ in $(seq 120); do
    st=$(json_field "$(D get "$id")" state)
    [ "$st" = FAILED ] && break
    sleep 0.5
  done
  assertEquals "state after repeated publish failures" FAILED "$st"
  local rec
  rec=$(D get "$id")
  assertNotEquals "last_error recorded: $rec" "None" "$(json_field "$rec" last_error)"
  assertTrue "attempts > 1: $rec" "[ $(json_field "$rec" attempts) -gt 1 ]"
  assertEquals "FAILED in list" 1 "$(D list --state FAILED --count)"
  pipeline_down
}

# Another team's service writes a schedule with the aws CLI, in the item format
# of docs/schema.md ("Writing schedules from another service"), and the
# pipeline fires it.
test_schedule_written_by_the_aws_cli_is_fired() {
  pipeline_up
  local arn item
  arn=$("$BIN/aws-call" sns CreateTopic "Name=$PFX-t" | sed -n 's:.*<TopicArn>\(.*\)</TopicArn>.*:\1:p')
  item="$WORK/item.json"
  python3 - "$arn" "$item" <<'PY'
import hashlib, json, struct, sys, time
arn, out = sys.argv[1], sys.argv[2]
id_, payload, attrs = "from-aws-cli-1", "written by another service", {"team": "billing"}
now = int(time.time() * 1000)
due = now + 12000                      # beyond the 5 s window: the scanner claims it
shards = 8                             # the deployment's config item says so
h = 0x811c9dc5                         # FNV-1a 32-bit of the id bytes
for b in id_.encode():
    h = ((h ^ b) * 0x01000193) & 0xffffffff
def field(x):
    x = x.encode() if isinstance(x, str) else x
    return struct.pack(">Q", len(x)) + x
enc = field("delayer-chash-v1") + field(str(due)) + field(arn) + field(payload) + field(str(len(attrs)))
for k in sorted(attrs):
    enc += field(k) + field(attrs[k])
iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)
item = {
    "id": {"S": id_}, "state": {"S": "NEW"}, "due": {"N": str(due)}, "topic": {"S": arn},
    "payload": {"S": payload}, "psize": {"N": str(len(payload.encode()))},
    "attrs": {"M": {k: {"S": v} for k, v in attrs.items()}},
    "chash": {"S": hashlib.sha256(enc).hexdigest()},
    "created": {"N": str(now)}, "updated": {"N": str(now)}, "attempts": {"N": "0"},
    "due_pk": {"S": "%d#%d" % (due // 60000, h % shards)}, "due_sk": {"S": "%013d#%s" % (due, id_)},
    "st_pk": {"S": "NEW#" + iso(now)[:7]}, "st_sk": {"S": iso(now) + "#" + id_},
}
json.dump(item, open(out, "w"))
PY
  watch_start 1 40s
  aws --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" dynamodb put-item --table-name "$PFX-schedules" \
    --item "file://$item" --condition-expression 'attribute_not_exists(id)' || fail "aws put-item"
  wait "$WATCH_PID"
  assertEquals "watch saw it" 0 $?
  assertEquals "the aws-written schedule arrived" from-aws-cli-1 "$(json_field "$(head -1 "$WATCH_OUT")" id)"
  assertTrue "not early" "[ $(json_field "$(head -1 "$WATCH_OUT")" late_ms) -ge 0 ]"
  assertEquals "its state" PUBLISHED "$(json_field "$(D get from-aws-cli-1)" state)"
  pipeline_down
}

# The README's shell-pipeline example, run exactly as written there.
test_readme_shell_pipeline_example() {
  local script="$WORK/readme-example.sh"
  sed -n '/<!-- shell-pipeline-example -->/,/<!-- \/shell-pipeline-example -->/p' "$REPO/README.md" |
    sed -n '/^```sh$/,/^```$/p' | sed '1d;$d' >"$script"
  assertTrue "README has the example" "[ -s $script ]"
  local out
  out=$(cd "$REPO" && PATH="$BIN:$PATH" DELAYER_PREFIX=$(new_prefix) bash -e "$script" 2>"$WORK/readme.err")
  assertEquals "example exit status (stderr: $(tail -3 "$WORK/readme.err"))" 0 $?
  echo "$out" | grep -q '"report":"pushed"\|"pushed"' || fail "no pushed report in: $out"
  echo "$out" | grep -q '"state":"PUBLISHED"' || fail "the example's schedule was not PUBLISHED: $out"
}

. /usr/share/shunit2/shunit2
