#!/usr/bin/env bash
# test_stage_scan_push: ddb-scan-due and sqs-push against the local stack,
# as real processes: the shell pipeline `ddb-scan-due --once | sqs-push`,
# idempotent re-runs, shards, a lapsed claim taken over, catch-up after
# downtime, bad input lines, and a long-running pair over ipc:// stopped
# with SIGTERM. Each test uses its own deployment prefix (own table, queue).
. "$(dirname "$0")/../lib/suite.sh"

oneTimeSetUp() {
  stack_start || return 1
  export DELAYER_EVENTS=0
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/delayer-scanpush.XXXXXX")
  LOG=$WORK/stages.log
}

oneTimeTearDown() {
  # DELAYER_KEEP_LOGS=1 keeps the stages' logs for a look after a failure.
  if [ "${DELAYER_KEEP_LOGS:-}" = 1 ]; then echo "logs kept in $WORK" >&2; else rm -rf -- "$WORK"; fi
  suite_down
}

# A fresh deployment for the current test, with a 5 s window: schedules
# due later are written NEW, and the scanner claims them 5 s ahead. (The
# window lives in the deployment's config, so the CLI and the scanner agree:
# a scanner window larger than the creators' would let the main pass skip
# schedules created inside the difference; the recovery pass would find
# them only after the grace.)
# A first scanner run moves the checkpoints to about now (it reads the hour
# before init once), so the test's own runs are quick; `fresh cold` skips it.
fresh() {
  PFX=$(new_prefix)
  DELAYER_WINDOW=5s D init --topic t >/dev/null || fail "init $PFX"
  [ "${1:-}" = cold ] || "$BIN/ddb-scan-due" --prefix "$PFX" --once --out - 2>>"$LOG" >/dev/null
}

# sched ID IN: a schedule (written NEW when IN > 5 s).
sched() { D schedule --in "$2" --topic t --payload "payload of $1" --id "$1" >/dev/null || fail "schedule $1"; }

scan() { "$BIN/ddb-scan-due" --prefix "$PFX" --once "$@" 2>>"$LOG"; }
push() { "$BIN/sqs-push" --prefix "$PFX" "$@" 2>>"$LOG"; }
# The shell pipeline of the README; prints sqs-push's reports.
scan_push() { scan --out - "$@" | push --in - --out -; }

# "ID REPORT FROM" per report line (FROM "-" when absent).
reports() {
  python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["id"], r.get("report"), r.get("from", "-"))'
}

# receive URL WAIT_S: one ReceiveMessage; prints "ID RECEIVED_MS BODY_KEYS" per message.
receive() {
  "$BIN/aws-call" sqs ReceiveMessage \
    "{\"QueueUrl\":\"$1\",\"MaxNumberOfMessages\":10,\"WaitTimeSeconds\":$2,\"VisibilityTimeout\":600}" |
    python3 -c '
import json, sys, time
resp = json.load(sys.stdin)
now = int(time.time() * 1000)   # after the reply came (python starts before it)
for m in resp.get("Messages", []):
    b = json.loads(m["Body"])
    print(b["id"], now, ",".join(sorted(b)))'
}

# collect URL N MAX_S: receives until N messages came or MAX_S passed.
collect() {
  local url=$1 want=$2 end=$(($(date +%s) + $3)) got=""
  while [ "$(printf '%s' "$got" | grep -c .)" -lt "$want" ] && [ "$(date +%s)" -lt "$end" ]; do
    got=$(printf '%s\n%s' "$got" "$(receive "$url" 2)" | grep .)
  done
  printf '%s\n' "$got"
}

test_help_version_and_usage_errors() {
  local out o
  out=$("$BIN/ddb-scan-due" --help)
  assertEquals "ddb-scan-due --help exit" 0 $?
  for o in --tick --shard --window --prefix --once --out --log-level --ready-fd --metrics; do
    assertContains "ddb-scan-due --help lists $o" "$out" "$o"
  done
  out=$("$BIN/sqs-push" --help)
  for o in --linger --prefix --in --out --log-level --ready-fd; do
    assertContains "sqs-push --help lists $o" "$out" "$o"
  done
  assertContains "$("$BIN/ddb-scan-due" --version)" "ddb-scan-due (delayer)"
  assertContains "$("$BIN/sqs-push" --version)" "sqs-push (delayer)"
  "$BIN/ddb-scan-due" --bogus 2>/dev/null
  assertEquals "unknown option" 100 $?
  "$BIN/ddb-scan-due" --shard 3/3 2>/dev/null
  assertEquals "bad --shard" 100 $?
  "$BIN/ddb-scan-due" --tick soon 2>/dev/null
  assertEquals "bad --tick" 100 $?
  "$BIN/sqs-push" --linger -1 </dev/null 2>/dev/null
  assertEquals "bad --linger" 100 $?
}

test_scan_push_moves_exactly_the_due_ones() {
  fresh
  local out url got id recv due
  sched a1 6s
  sched a2 6500ms
  sched a3 20s
  sched far 2h
  assertEquals NEW "$(attr a1 state)"
  until_within 4500 a2   # a1 and a2 (the later) are now due within the window, a3 is not
  out=$(scan_push)
  assertEquals "pushed reports" "a1 pushed NEW
a2 pushed NEW" "$(printf '%s\n' "$out" | reports | sort)"
  assertEquals ENQUEUED "$(attr a1 state)"
  assertEquals ENQUEUED "$(attr a2 state)"
  assertEquals NEW "$(attr a3 state)"
  assertEquals NEW "$(attr far state)"
  assertEquals "a mid per report" 2 "$(printf '%s\n' "$out" | grep -c '"mid":"[^"]')"
  url=$(queue_url "$PFX-delay")
  # Delayed: nothing visible yet while a1 is more than 1.75 s from due (a
  # slow machine may have used that time up; the arrival check below holds).
  if [ $(($(attr a1 due) - $(now_ms))) -gt 1750 ]; then
    assertEquals "nothing visible before its time" "" "$(receive "$url" 0 | awk '{print $1}')"
  fi
  got=$(collect "$url" 2 20)
  assertEquals "both delivered to the delay queue" "a1 a2" "$(printf '%s\n' "$got" | awk '{print $1}' | sort | xargs)"
  while read -r id recv _; do
    due=$(attr "$id" due)
    # DelaySeconds is rounded down with a 500 ms margin: 0.5-1.5 s early (plus fauxqs' poll).
    assertTrue "$id arrived $((due - recv)) ms before due (< 1.6 s)" "[ $((due - recv)) -lt 1600 ]"
  done <<<"$got"
  assertEquals "the body is the wire record without stage fields" \
    "attrs,chash,due,id,lease,payload,topic" "$(printf '%s\n' "$got" | awk 'NR==1{print $3}')"
}

test_second_once_run_pushes_nothing() {
  fresh
  sched b1 6s
  until_within 4500 b1
  assertEquals "b1 pushed NEW" "$(scan_push | reports)"
  assertEquals "second run: leases held" "" "$(scan_push)"
  assertEquals "claimed once" 1 "$(attr b1 claims)"
}

test_shards_cover_all_without_overlap() {
  fresh
  local i a b shard
  for i in $(seq 1 24); do sched "sh-$i" 8s; done
  until_within 4500 sh-24
  a=$(scan --shard 0/2 --out - | reports | awk '{print $1}' | sort)
  b=$(scan --shard 1/2 --out - | reports | awk '{print $1}' | sort)
  assertEquals "all 24 claimed" 24 "$(printf '%s\n%s\n' "$a" "$b" | grep -c .)"
  assertEquals "no overlap" "" "$(comm -12 <(printf '%s\n' "$a") <(printf '%s\n' "$b"))"
  assertEquals "all distinct" 24 "$(printf '%s\n%s\n' "$a" "$b" | grep . | sort -u | wc -l)"
  for i in $a; do
    shard=$(attr "$i" due_pk | cut -d'#' -f2)
    assertEquals "$i (shard $shard) claimed by instance 0/2" 0 $((shard % 2))
  done
  for i in $b; do
    shard=$(attr "$i" due_pk | cut -d'#' -f2)
    assertEquals "$i (shard $shard) claimed by instance 1/2" 1 $((shard % 2))
  done
}

test_lapsed_claim_is_taken_over() {
  fresh
  local due lease url got
  export DELAYER_GRACE=2s
  sched r1 6s
  until_within 4500 r1
  # A claim whose sqs-push died: the record goes nowhere.
  scan --out - >/dev/null
  due=$(attr r1 due)
  lease=$(attr r1 lease)
  assertEquals ENQUEUED "$(attr r1 state)"
  assertEquals "lease = due + grace" $((due + 2000)) "$lease"
  if [ $((lease - $(now_ms))) -gt 2000 ]; then
    assertEquals "not taken over while the lease holds" "" "$(scan_push)"
  fi
  while [ "$(now_ms)" -le $((lease + 300)) ]; do sleep 0.2; done
  assertEquals "re-claimed and pushed" "r1 pushed ENQUEUED" "$(scan_push | reports)"
  assertEquals 2 "$(attr r1 claims)"
  url=$(queue_url "$PFX-delay")
  got=$(collect "$url" 1 10)
  assertEquals "delivered once" "r1" "$(printf '%s\n' "$got" | awk '{print $1}' | xargs)"
  unset DELAYER_GRACE
}

test_sqs_down_puts_the_claim_back_and_it_is_pushed_later() {
  fresh
  local out t0 ms
  sched f1 6s
  until_within 4500 f1
  t0=$(now_ms)
  # SQS unreachable: sqs-push retries (5 tries over ~8 s), then reports
  # push_failed, and state-update puts the schedule back to NEW.
  out=$(scan --out - |
    AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$(free_port) push --in - --out - |
    "$BIN/state-update" --prefix "$PFX" --in - --out - 2>>"$LOG")
  ms=$(($(now_ms) - t0))
  assertEquals "f1 push_failed applied ENQUEUED NEW error:yes" "$(printf '%s\n' "$out" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print(r["id"], r["report"], r["result"], r["from"], r["to"], "error:" + ("yes" if r.get("error") else "no"))')"
  assertTrue "gave up after the retries (${ms} ms)" "[ $ms -ge 7000 ] && [ $ms -lt 30000 ]"
  assertEquals NEW "$(attr f1 state)"
  assertEquals "" "$(attr f1 lease)"
  # Never lost: the next scan takes it again.
  assertEquals "f1 pushed NEW" "$(scan_push | reports)"
  assertEquals 2 "$(attr f1 claims)"
}

test_sigterm_during_retries_hands_the_claim_back() {
  fresh
  local d=$WORK/retry pid t0
  mkdir -m 700 -p "$d"
  sched s1 6s
  until_within 4500 s1
  scan --out - >"$d/claims"
  mkfifo "$d/in"
  AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$(free_port) "$BIN/sqs-push" --prefix "$PFX" --in - --out - \
    <"$d/in" >"$d/reports" 2>"$d/push.log" &
  pid=$!
  exec 7>"$d/in"          # keep the input open: no end of input, only SIGTERM
  cat "$d/claims" >&7
  wait_until 10 grep -q "msg=retrying" "$d/push.log"   # the first try failed; it is waiting to retry
  t0=$(now_ms)
  kill -TERM "$pid"
  wait_exit "$pid" 5 || fail "sqs-push still retrying 5 s after SIGTERM"; local t1; t1=$(now_ms)
  exec 7>&-
  assertEquals "exit 0" 0 "$WAIT_RC"
  assertEquals "handed back as push_failed" "s1 push_failed NEW" "$(reports <"$d/reports")"
  assertTrue "stopped quickly ($((t1 - t0)) ms)" "[ $((t1 - t0)) -lt 3000 ]"
}

# timetravel ID DUE_MS: moves a NEW record's due time (and its due index
# keys, same shard) as if it had been created to come due then.
timetravel() {
  local req
  req=$(HOOK item "$1" | python3 -c '
import json, sys
item = json.load(sys.stdin)
pfx, i, due = sys.argv[1], sys.argv[2], int(sys.argv[3])
shard = item["due_pk"]["S"].split("#")[1]
print(json.dumps({"TableName": pfx + "-schedules", "Key": {"id": {"S": i}},
  "UpdateExpression": "SET #d = :d, #pk = :pk, #sk = :sk",
  "ExpressionAttributeNames": {"#d": "due", "#pk": "due_pk", "#sk": "due_sk"},
  "ExpressionAttributeValues": {":d": {"N": str(due)}, ":pk": {"S": "%d#%s" % (due // 60000, shard)},
                                ":sk": {"S": "%013d#%s" % (due, i)}}}))' "$PFX" "$1" "$2")
  "$BIN/aws-call" dynamodb UpdateItem "$req" >/dev/null
}

test_catch_up_after_downtime() {
  fresh cold   # no scanner ever ran: its checkpoints start before init
  local now i out
  # Came due minutes ago while no scanner ran (older minutes: recovery pass)...
  for i in 1 2 3; do sched "old-$i" 2h; done
  now=$(now_ms)
  timetravel old-1 $((now - 170000))
  timetravel old-2 $((now - 110000))
  timetravel old-3 $((now - 50000))
  # ...and seconds ago (the main pass's range).
  sched new-1 6s
  sched new-2 7s
  until_ms $(( $(attr new-2 due) + 1000 ))   # both came due a second ago
  out=$(scan_push | reports | sort)
  assertEquals "every one claimed and pushed" "new-1 pushed NEW
new-2 pushed NEW
old-1 pushed NEW
old-2 pushed NEW
old-3 pushed NEW" "$out"
}

test_bad_input_lines_are_reported_and_skipped() {
  fresh
  local good out rc err
  sched g1 6s
  until_within 4500 g1
  good=$(scan --out -)
  assertEquals "g1 NEW" "$(printf '%s\n' "$good" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["id"], r["from"])')"
  out=$(printf '%s\n' 'not json at all' '{"id":"bad-1","due":1}' '{"due":5}' "$good" |
    "$BIN/sqs-push" --prefix "$PFX" --in - --out - 2>"$WORK/bad.err")
  rc=$?
  err=$(cat "$WORK/bad.err")
  assertEquals "exit 1: some input rejected" 1 "$rc"
  assertEquals "reports" "bad-1 invalid -
g1 pushed NEW" "$(printf '%s\n' "$out" | reports)"
  assertContains "the invalid report names the field" "$out" '"error":"topic: missing"'
  assertEquals "one error line per bad input" 3 "$(printf '%s\n' "$err" | grep -c 'level=error.*msg="invalid record"')"
  assertContains "$err" 'id=bad-1 error="topic: missing"'
  assertEquals ENQUEUED "$(attr g1 state)"
}

# wait_exit PID MAX_S: 0 and the exit status in WAIT_RC once PID ended.
wait_exit() {
  local end=$(($(date +%s%N) / 1000000 + $2 * 1000))
  while kill -0 "$1" 2>/dev/null; do
    [ "$(now_ms)" -gt "$end" ] && return 1
    sleep 0.05
  done
  wait "$1"
  WAIT_RC=$?
  return 0
}

wait_ready() { # wait_ready LOGFILE MAX_S
  local end=$(($(date +%s) + $2))
  until grep -q 'msg=ready' "$1" 2>/dev/null; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.05
  done
}

test_long_running_over_ipc_and_sigterm() {
  fresh
  local d=$WORK/ipc scan_pid push_pid upd_pid t0 ms
  mkdir -m 700 -p "$d"
  "$BIN/state-update" --prefix "$PFX" --in "@ipc://$d/state.ipc" --out - >"$d/upd.out" 2>"$d/upd.log" &
  upd_pid=$!
  "$BIN/ddb-scan-due" --prefix "$PFX" --tick 200ms --out "@ipc://$d/due.ipc" 2>"$d/scan.log" &
  scan_pid=$!
  "$BIN/sqs-push" --prefix "$PFX" --in ">ipc://$d/due.ipc" --out ">ipc://$d/state.ipc" 2>"$d/push.log" &
  push_pid=$!
  wait_ready "$d/upd.log" 10 && wait_ready "$d/scan.log" 10 && wait_ready "$d/push.log" 10 ||
    fail "stages not ready"
  sched l1 8s
  sched l2 9s
  local end=$(($(date +%s) + 15))
  until [ "$(attr l2 state)" = ENQUEUED ] && [ "$(attr l1 state)" = ENQUEUED ]; do
    [ "$(date +%s)" -ge "$end" ] && break
    sleep 0.2
  done
  assertEquals "l1 claimed by the running scanner" ENQUEUED "$(attr l1 state)"
  assertEquals "l2 claimed by the running scanner" ENQUEUED "$(attr l2 state)"
  end=$(($(date +%s) + 10))
  until [ "$(grep -c '"report":"pushed","result":"applied"' "$d/upd.out")" -ge 2 ] || [ "$(date +%s)" -ge "$end" ]; do sleep 0.2; done
  assertEquals "state-update applied both pushed reports" 2 "$(grep -c '"report":"pushed","result":"applied"' "$d/upd.out")"
  t0=$(now_ms)
  kill -TERM "$scan_pid" "$push_pid" "$upd_pid"
  wait_exit "$scan_pid" 5 || fail "ddb-scan-due still running 5 s after SIGTERM"
  assertEquals "ddb-scan-due exit status" 0 "$WAIT_RC"
  wait_exit "$push_pid" 5 || fail "sqs-push still running 5 s after SIGTERM"
  assertEquals "sqs-push exit status" 0 "$WAIT_RC"
  wait_exit "$upd_pid" 5 || fail "state-update still running 5 s after SIGTERM"
  assertEquals "state-update exit status" 0 "$WAIT_RC"
  ms=$(($(now_ms) - t0))
  assertTrue "all stopped within 5 s (took $ms ms)" "[ $ms -lt 5000 ]"
  # state-update counted both claims (NEW -> ENQUEUED) before it stopped.
  assertEquals "ENQUEUED counter" 2 "$(D stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["states"]["ENQUEUED"])')"
  for p in $scan_pid $push_pid $upd_pid; do kill -9 "$p" 2>/dev/null || true; done
}

test_absent_downstream_holds_one_claim_then_resumes() {
  fresh
  local d=$WORK/absent scan_pid push_pid end
  mkdir -m 700 -p "$d"
  sched h1 6s
  sched h2 6s
  "$BIN/ddb-scan-due" --prefix "$PFX" --tick 200ms --out "@ipc://$d/due.ipc" 2>"$d/scan.log" &
  scan_pid=$!
  until_within 3000 h2   # both due within the window for 2 s (10 scanner ticks); nobody takes records
  assertEquals "one record claimed and held" 1 "$( (attr h1 state; attr h2 state) | grep -c ENQUEUED)"
  assertEquals "held, not claimed again and again" 1 "$( (attr h1 claims; attr h2 claims) | awk '{n += $1} END {print n}')"
  "$BIN/sqs-push" --prefix "$PFX" --in ">ipc://$d/due.ipc" --out - >"$d/reports" 2>"$d/push.log" &
  push_pid=$!
  end=$(($(date +%s) + 10))
  until [ "$(grep -c '"pushed"' "$d/reports")" -ge 2 ] || [ "$(date +%s)" -ge "$end" ]; do sleep 0.2; done
  assertEquals "both pushed once sqs-push is there" "h1 pushed NEW
h2 pushed NEW" "$(reports <"$d/reports" | sort)"
  kill -TERM "$scan_pid" "$push_pid"
  wait_exit "$scan_pid" 5 || fail "ddb-scan-due did not stop"
  wait_exit "$push_pid" 5 || fail "sqs-push did not stop"
}

test_stop_while_holding_puts_the_claim_back() {
  fresh
  local d=$WORK/hold scan_pid
  mkdir -m 700 -p "$d"
  sched k1 6s
  "$BIN/ddb-scan-due" --prefix "$PFX" --tick 200ms --out "@ipc://$d/due.ipc" 2>"$d/scan.log" &
  scan_pid=$!
  local end=$(($(date +%s) + 10))
  until [ "$(attr k1 state)" = ENQUEUED ] || [ "$(date +%s)" -ge "$end" ]; do sleep 0.2; done
  assertEquals "claimed and held" ENQUEUED "$(attr k1 state)"
  kill -TERM "$scan_pid"
  wait_exit "$scan_pid" 5 || fail "ddb-scan-due did not stop"
  assertEquals "exit 0" 0 "$WAIT_RC"
  assertEquals "handed back at stop" NEW "$(attr k1 state)"
  assertEquals "no lease" "" "$(attr k1 lease)"
}

# A poison row (written by another tool with an attribute of the wrong
# type: every claim is refused with a ValidationException) used to park the
# main pass on it for ever, with a warning every tick, and nothing else in
# its shard was claimed. Now it is struck a few times, then set aside
# INVALID with the reason, and the shard goes on; no endless warnings.
# (Few python3 starts: under load each costs seconds.)
test_poison_row_is_set_aside_and_the_shard_goes_on() {
  DELAYER_SHARDS=1 fresh   # one shard: the poison rows and the good ones share it
  local d=$WORK/poison scan_pid warns got
  mkdir -m 700 -p "$d"
  sched bad-claims 6s
  sched bad-hist 6s
  sched g1 6500ms
  sched g2 7s
  # Written as another tool would (aws-call: any DynamoDB client does).
  "$BIN/aws-call" dynamodb UpdateItem '{"TableName":"'"$PFX"'-schedules","Key":{"id":{"S":"bad-claims"}},
    "UpdateExpression":"SET claims = :c","ExpressionAttributeValues":{":c":{"S":"three"}}}' >/dev/null || fail "UpdateItem"
  "$BIN/aws-call" dynamodb UpdateItem '{"TableName":"'"$PFX"'-schedules","Key":{"id":{"S":"bad-hist"}},
    "UpdateExpression":"SET hist = :h","ExpressionAttributeValues":{":h":{"S":"not a list"}}}' >/dev/null || fail "UpdateItem"
  "$BIN/ddb-scan-due" --prefix "$PFX" --tick 200ms --out - >"$d/out" 2>"$d/scan.log" &
  scan_pid=$!
  is() { HOOK item "$1" | grep -q "\"state\":{\"S\":\"$2\"}"; }
  wait_until 30 is g2 ENQUEUED
  wait_until 10 is bad-hist INVALID
  got=$(for i in bad-claims bad-hist g1 g2; do HOOK item "$i"; echo; done | python3 -c '
import json, sys
for line in sys.stdin:
    if line.strip():
        it = json.loads(line)
        print(it["id"]["S"], it["state"]["S"], "due_pk" in it, it.get("last_error", {}).get("S", "-"))')
  assertEquals "g1 claimed past the poison rows" "g1 ENQUEUED True -" "$(printf '%s\n' "$got" | grep '^g1 ')"
  assertEquals "g2 claimed past the poison rows" "g2 ENQUEUED True -" "$(printf '%s\n' "$got" | grep '^g2 ')"
  assertEquals "both sent downstream" '"id":"g1" "id":"g2"' "$(grep -o '"id":"[^"]*"' "$d/out" | sort -u | xargs -d '\n')"
  assertContains "bad-claims set aside, out of the due index" "$got" "bad-claims INVALID False PoisonRow"
  assertContains "its reason names the problem" "$got" "attribute 'claims' is not a number"
  assertContains "bad-hist set aside (without a hist entry)" "$got" "bad-hist INVALID False PoisonRow"
  assertEquals "counted" '"INVALID":2' "$(D stats --json | grep -o '"INVALID":[0-9]*' | head -1)"
  assertEquals "one line per row set aside" 2 "$(grep -c 'poison row set aside' "$d/scan.log")"
  warns=$(grep -c 'level=warn' "$d/scan.log")
  assertTrue "a bounded number of warnings ($warns)" "[ $warns -le 6 ]"
  # Later ticks: no more warnings (a new schedule is claimed meanwhile).
  sched g3 6s
  wait_until 30 is g3 ENQUEUED
  assertTrue "g3 claimed" "is g3 ENQUEUED"
  assertEquals "no new warnings" "$warns" "$(grep -c 'level=warn' "$d/scan.log")"
  kill -TERM "$scan_pid"
  wait_exit "$scan_pid" 5 || fail "ddb-scan-due did not stop"
  assertEquals "exit 0" 0 "$WAIT_RC"
}

. /usr/share/shunit2/shunit2
