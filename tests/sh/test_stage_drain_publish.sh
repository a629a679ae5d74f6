#!/usr/bin/env bash
# test_stage_drain_publish: the stages sqs-drain and sns-publish against the
# local stack. Schedules are created with `delayer schedule --in Ns` (under
# the window, so the CLI itself puts them into the delay queue: fast track);
# the two stages run as `sqs-drain | sns-publish` or over ipc:// endpoints;
# an SQS queue subscribed (raw delivery) to the topic receives what is
# published. Checked: every message arrives exactly once and never before
# its due time, state PUBLISHED, the delay queue empty afterwards;
# cancelled schedules and duplicate copies are dropped; a publish to a
# deleted topic goes back to ENQUEUED with last_error and ends in the
# dead-letter queue, where `sqs-drain --queue dead` reports it; a crash
# between commit and publish is repaired by the redelivery; SIGTERM hands
# held messages back, and a new instance publishes them; a message held by a
# SIGKILLed sns-publish is back within seconds (its short visibility), not
# after the queue's visibility timeout.
. "$(dirname "$0")/../lib/suite.sh"
PFX=$(new_prefix)
TDIR=$(mktemp -d "${TMPDIR:-/tmp}/delayer-dp.XXXXXX")
EP="ipc://$TDIR/publish.sock"
DRAIN_PID=
PUB_PID=

oneTimeSetUp() {
  suite_up t gone || return 1
  DELAY_URL=$(queue_url "$PFX-delay") || return 1
  DEAD_URL=$(queue_url "$PFX-dead") || return 1
  # A short visibility timeout keeps the redelivery tests quick (and makes
  # sns-publish extend the visibility of what it holds longer than 3 s).
  sqs SetQueueAttributes "{\"QueueUrl\":\"$DELAY_URL\",\"Attributes\":{\"VisibilityTimeout\":\"6\"}}" >/dev/null || return 1
  TOPIC=$(topic_arn t) || return 1
  SUB_URL=$(sub_queue "$PFX-sub" "$TOPIC") || return 1
}

oneTimeTearDown() {
  stop_stages
  [ -n "${KEEP_TDIR:-}" ] || rm -rf -- "$TDIR"
  suite_down
}

setUp() {
  : >"$TDIR/delivered"
  : >"$TDIR/reports"
}

# Every stage's stderr is checked for sanitizer reports (DELAYER_BIN may
# point at an ASan/UBSan build), then kept aside.
tearDown() {
  stop_stages
  check_stage_logs "$TDIR" keep
}

# ------------------------------------------------------------ helpers

# visible URL: messages in the queue, visible + in flight + delayed.
queue_depth() {
  sqs GetQueueAttributes "{\"QueueUrl\":\"$1\",\"AttributeNames\":[\"All\"]}" | python3 -c '
import json, sys
a = json.load(sys.stdin)["Attributes"]
print(sum(int(a.get(k, 0)) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")))'
}

queue_visible() {
  sqs GetQueueAttributes "{\"QueueUrl\":\"$1\",\"AttributeNames\":[\"ApproximateNumberOfMessages\"]}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Attributes"]["ApproximateNumberOfMessages"])'
}

state() { json_field "$(D get "$1")" state; }
field() { json_field "$(D get "$1")" "$2"; }

sched() { # sched ID IN [TOPIC]
  D schedule --id "$1" --in "$2" --topic "${3:-t}" --payload "payload of $1" --attr "k=$1" >/dev/null
}

# wire_body ID: the schedule's wire record as an SQS body (what the CLI
# sent), rebuilt from its DynamoDB item: for duplicate copies.
wire_body() {
  "$BIN/aws-call" dynamodb GetItem "{\"TableName\":\"$PFX-schedules\",\"Key\":{\"id\":{\"S\":\"$1\"}},\"ConsistentRead\":true}" |
    python3 -c '
import json, sys
i = json.load(sys.stdin)["Item"]
print(json.dumps({"id": i["id"]["S"], "due": int(i["due"]["N"]), "topic": i["topic"]["S"],
                  "payload": i["payload"]["S"], "attrs": {k: v["S"] for k, v in i.get("attrs", {}).get("M", {}).items()},
                  "chash": i["chash"]["S"], "lease": int(i.get("lease", {"N": "0"})["N"])}))'
}

send_body() { # send_body BODY DELAY
  python3 -c 'import json,sys; print(json.dumps({"QueueUrl": sys.argv[1], "MessageBody": sys.argv[2], "DelaySeconds": int(sys.argv[3])}))' \
    "$DELAY_URL" "$1" "$2" | sqs SendMessage - >/dev/null
}

# collect: moves what the subscribed queue holds into $TDIR/delivered, one
# line per message: id, due (ms, from delayer.due), SentTimestamp (when SNS
# delivered it), delayer.attempt, body.
collect() {
  python3 - "$BIN/aws-call" "$SUB_URL" >>"$TDIR/delivered" <<'EOF'
import datetime, json, subprocess, sys
call, url = sys.argv[1], sys.argv[2]
def aws(op, body):
    r = subprocess.run([call, "sqs", op, json.dumps(body)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)
while True:
    msgs = aws("ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0,
                                  "MessageAttributeNames": ["All"], "AttributeNames": ["All"]}).get("Messages", [])
    if not msgs:
        break
    for m in msgs:
        a = {k: v.get("StringValue", "") for k, v in m.get("MessageAttributes", {}).items()}
        due = a.get("delayer.due", "")
        due_ms = 0
        if due:
            t = datetime.datetime.strptime(due, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
            due_ms = round(t.timestamp() * 1000)
        print("\t".join([a.get("delayer.id", ""), str(due_ms), m["Attributes"]["SentTimestamp"],
                         a.get("delayer.attempt", ""), m["Body"]]))
    aws("DeleteMessageBatch", {"QueueUrl": url, "Entries": [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                          for i, m in enumerate(msgs)]})
EOF
}

delivered_count() { collect; grep -c '' "$TDIR/delivered"; }
delivered_ids() { cut -f1 "$TDIR/delivered" | sort; }

# wait_delivered N SECONDS: until N messages arrived (1 if reached).
wait_delivered() {
  local i
  for i in $(seq 1 $(($2 * 5))); do
    [ "$(delivered_count)" -ge "$1" ] && return 0
    sleep 0.2
  done
  return 1
}

queue_empty() { [ "$(queue_depth "$DELAY_URL")" = 0 ]; }
dead_letters() { [ "$(queue_depth "$DEAD_URL")" = "$1" ]; }

# Lines delivered before their due time (must be none).
early_lines() { awk -F'\t' '$3 < $2' "$TDIR/delivered"; }

start_drain() {
  "$BIN/sqs-drain" --prefix "$PFX" --out "$EP" --wait 2 "$@" 2>>"$TDIR/drain.log" &
  DRAIN_PID=$!
}

# sns-publish (at --log-level debug) extended held visibility twice or more
extended_twice() {
  [ "$(grep -c 'msg="extending the visibility of held messages"' "$TDIR/publish.log")" -ge 2 ]
}

start_publish() {
  "$BIN/sns-publish" --prefix "$PFX" --in "$EP" --out - "$@" >>"$TDIR/reports" 2>>"$TDIR/publish.log" &
  PUB_PID=$!
}

# stop PID: SIGTERM, then the exit status (or 999 if it outlived 5 s and
# had to be killed).
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      return $?
    fi
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 999
}

stop_stages() {
  [ -n "$DRAIN_PID" ] && stop "$DRAIN_PID"
  [ -n "$PUB_PID" ] && stop "$PUB_PID"
  DRAIN_PID=
  PUB_PID=
}

report_count() { grep -c "\"report\":\"$1\"" "$TDIR/reports"; }

# ------------------------------------------------------------ tests

test_help_and_usage() {
  run "$BIN/sqs-drain" --help
  assertEquals 0 "$RC"
  for o in --queue --concurrency --wait --hold --in --out --log-level --ready-fd --metrics --version; do
    case $o in --in) continue ;; esac
    assertContains "sqs-drain --help lists $o" "$OUT" "$o"
  done
  run "$BIN/sns-publish" --help
  assertEquals 0 "$RC"
  for o in --commit-lead --linger --max-hold --retry-backoff --delete-flush --commit-threads --publish-threads --in --out; do
    assertContains "sns-publish --help lists $o" "$OUT" "$o"
  done
  run "$BIN/sqs-drain" --concurrency 0
  assertEquals 100 "$RC"
  run "$BIN/sns-publish" --linger soon
  assertEquals 100 "$RC"
  run "$BIN/sns-publish" --prefix "nope$RANDOM" --in -
  assertEquals "an uninitialised deployment is a configuration error" 100 "$RC"
}

# The shell pipeline: every message once, never early, all PUBLISHED, the
# delay queue empty; the reports say how late each one was.
test_pipeline_delivers_each_once_on_time() {
  local n=30 i ids=()
  for i in $(seq 1 $n); do
    sched "ok-$i" "$((2000 + i * 97 % 2500))ms" || fail "schedule ok-$i"
    ids+=("ok-$i")
  done
  # An id with spaces, quotes, a backslash and non-ASCII travels verbatim.
  sched 'odd "id" \ é' 3s || fail "schedule odd id"
  ids+=('odd "id" \ é')
  n=$((n + 1))
  sh -c 'echo $$ >"$1"; exec "$2" --prefix "$3" --out - --wait 2' _ "$TDIR/drain.pid" "$BIN/sqs-drain" "$PFX" 2>>"$TDIR/drain.log" |
    "$BIN/sns-publish" --prefix "$PFX" --in - --out - >>"$TDIR/reports" 2>>"$TDIR/publish.log" &
  PUB_PID=$!
  wait_delivered $n 20 || fail "only $(grep -c '' "$TDIR/delivered") of $n delivered"
  wait_until 10 queue_empty   # every copy deleted: none left to deliver twice
  assertEquals "delivered exactly once each" "$(printf '%s\n' "${ids[@]}" | sort)" "$(delivered_ids)"
  assertEquals "delivered before due" "" "$(early_lines)"
  for i in "${ids[@]}"; do assertEquals "state of $i" PUBLISHED "$(state "$i")"; done
  assertEquals "body" "payload of ok-7" "$(awk -F'\t' '$1 == "ok-7" {print $5}' "$TDIR/delivered")"
  assertEquals "attempt" 1 "$(awk -F'\t' '$1 == "ok-7" {print $4}' "$TDIR/delivered")"
  wait_until 5 queue_empty || fail "delay queue not empty: $(queue_depth "$DELAY_URL")"
  # The drain stops on SIGTERM; sns-publish then sees the end of its input
  # and exits 0 once everything is done.
  stop "$(cat "$TDIR/drain.pid")"
  assertEquals "sqs-drain exit" 0 $?
  wait "$PUB_PID"
  assertEquals "sns-publish exit" 0 $?
  PUB_PID=
  assertEquals "published reports" $n "$(report_count published)"
  python3 - "$TDIR/reports" <<'EOF'
import json, sys
late = sorted(r["late_us"] / 1000 for r in map(json.loads, open(sys.argv[1])) if r.get("report") == "published")
print("lateness at SNS (ms): p50 %.2f  p90 %.2f  max %.2f  (n=%d)" % (late[len(late) // 2], late[int(len(late) * .9)], late[-1], len(late)))
EOF
}

# --linger 50ms: five schedules due 10 ms apart go in one PublishBatch,
# when the last is due; none early.
test_linger_batches_what_comes_due_together() {
  local t i
  t=$(($(date +%s%3N) + 3000))
  for i in 0 1 2 3 4; do
    D schedule --id "lg-$i" --at "$((t + i * 10))" --topic t --payload "lg-$i" >/dev/null || fail "schedule lg-$i"
  done
  start_publish --linger 50ms --commit-lead 1s   # commits long done: a slow server cannot split the batch
  start_drain
  wait_delivered 5 15 || fail "not all delivered"
  stop_stages
  assertEquals "delivered before due" "" "$(early_lines)"
  assertContains "one request" "$(cat "$TDIR/publish.log")" 'published=5 '
  assertContains "one request" "$(cat "$TDIR/publish.log")" 'publish_requests=1 '
  assertEquals "published together" 1 "$(grep -o '"at":[0-9]*' "$TDIR/reports" | sort -u | grep -c '')"
}

test_cancelled_is_not_delivered_and_deleted() {
  sched can-1 3s
  sched can-keep 3200ms
  D cancel can-1 >/dev/null || fail "cancel"
  start_publish
  start_drain
  wait_delivered 1 15 || fail "can-keep not delivered"
  wait_until 10 queue_empty   # every copy deleted: none left to deliver twice
  collect
  assertEquals "only the schedule not cancelled" "can-keep" "$(delivered_ids)"
  assertEquals CANCELLED "$(state can-1)"
  assertContains "$(cat "$TDIR/publish.log")" 'msg=dropped id=can-1'
  wait_until 5 queue_empty || fail "the cancelled schedule's message is still in the delay queue"
}

test_duplicate_copy_is_dropped() {
  sched dup-1 4s
  send_body "$(wire_body dup-1)" 2   # a second copy, another MessageId
  start_publish
  start_drain
  wait_delivered 1 15 || fail "dup-1 not delivered"
  wait_until 10 queue_empty   # every copy deleted: none left to deliver twice
  collect
  assertEquals "delivered once" "dup-1" "$(delivered_ids)"
  assertEquals PUBLISHED "$(state dup-1)"
  assertContains "$(cat "$TDIR/publish.log")" 'why="duplicate copy'
  wait_until 5 queue_empty || fail "the duplicate is still in the delay queue"
}

test_failed_publish_goes_back_then_dead_letter() {
  local arn out
  sched fail-1 2s gone
  arn=$(field fail-1 topic)
  "$BIN/aws-call" sns DeleteTopic TopicArn="$arn" >/dev/null || fail "DeleteTopic"
  start_publish --retry-backoff 0
  start_drain
  wait_until 30 dead_letters 1 || fail "not in the dead-letter queue"
  stop_stages
  assertEquals "state after the failures" ENQUEUED "$(state fail-1)"
  assertNotNull "last_error" "$(field fail-1 last_error)"
  assertEquals "one publish_failed report per receive (maxReceiveCount 5)" 5 "$(report_count publish_failed)"
  assertEquals "attempts" 5 "$(field fail-1 attempts)"
  assertEquals "nothing delivered" 0 "$(delivered_count)"
  out=$(timeout --preserve-status -s TERM 4 "$BIN/sqs-drain" --prefix "$PFX" --queue dead --out - --wait 1 2>>"$TDIR/drain.log")
  assertEquals "dead drain exit" 0 $?
  assertContains "$out" '"id":"fail-1"'
  assertContains "$out" '"report":"dead"'
  assertContains "dead report carries the last error" "$out" "\"error\":$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$(field fail-1 last_error)")"
  # state-update deletes it once FAILED is written (its "rh"): until then
  # it stays, hidden for 5 minutes.
  assertEquals "dead-letter message kept for state-update" 1 "$(queue_depth "$DEAD_URL")"
  assertEquals "and hidden" 0 "$(queue_visible "$DEAD_URL")"
  assertContains "$out" '"rh":"'
  assertContains "$out" '"rc":'
  assertContains "$out" '"mid":"'
  assertContains "$out" '"nopayload":true'
  local mid
  mid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["mid"])' "$out")
  assertContains "$(grep '"report":"publish_failed"' "$TDIR/reports" | head -1)" "\"mid\":\"$mid\""
}

test_crash_between_commit_and_publish_is_repaired() {
  sched crash-1 3s
  start_drain
  DELAYER_TEST_CRASH_AFTER_COMMIT=1 "$BIN/sns-publish" --prefix "$PFX" --in "$EP" --out - \
    >>"$TDIR/reports" 2>>"$TDIR/publish.log" &
  PUB_PID=$!
  wait "$PUB_PID"
  assertEquals "crash hook exit" 137 $?
  PUB_PID=
  assertEquals "committed before the crash" PUBLISHED "$(state crash-1)"
  assertEquals "not published by the crashed instance" 0 "$(delivered_count)"
  start_publish
  wait_delivered 1 20 || fail "not published after the crash"
  wait_until 10 queue_empty   # every copy deleted: none left to deliver twice
  collect
  assertEquals "delivered once" "crash-1" "$(delivered_ids)"
  assertEquals "second attempt" 2 "$(awk -F'\t' '{print $4}' "$TDIR/delivered")"
  assertContains "a replay of the same delivery" "$(cat "$TDIR/reports")" '"from":"PUBLISHED"'
  assertEquals "delivered before due" "" "$(early_lines)"
  wait_until 5 queue_empty || fail "delay queue not empty"
}

test_sigterm_hands_back_and_a_new_instance_publishes() {
  local t0 rc
  sched term-1 12s
  send_body "$(wire_body term-1)" 0   # a copy that arrives now: held ~12 s
  start_publish --max-hold 30s --log-level debug
  start_drain
  wait_until 10 grep -q 'msg=ready' "$TDIR/publish.log"
  # Held longer than the visibility it was received with (2 s,
  # sqs-drain --visibility): extended, so SQS does not deliver it a second
  # time meanwhile (sns-publish runs with --log-level debug to show it).
  wait_until 15 extended_twice
  assertTrue "extended at least twice while held" extended_twice
  # sqs-drain goes first: a running drain would long-poll the handed-back
  # message straight away and hide it again for a visibility timeout.
  stop "$DRAIN_PID"
  assertEquals "sqs-drain exit on SIGTERM" 0 $?
  DRAIN_PID=
  t0=$(date +%s%N)
  stop "$PUB_PID"
  rc=$?
  PUB_PID=
  assertEquals "sns-publish exit on SIGTERM" 0 "$rc"
  assertTrue "stopped within 5 s" "[ $((($(date +%s%N) - t0) / 1000000)) -lt 5000 ]"
  assertContains "$(cat "$TDIR/publish.log")" 'received=1 '
  assertContains "$(cat "$TDIR/publish.log")" 'handed_back=1'
  local vr
  vr=$(grep -o 'visibility_requests=[0-9]*' "$TDIR/publish.log" | tail -1 | cut -d= -f2)
  assertTrue "extended at least twice, then handed back ($vr requests)" "[ ${vr:-0} -ge 3 ]"
  assertEquals "handed back: visible again at once" 1 "$(queue_visible "$DELAY_URL")"
  assertEquals "still waiting" ENQUEUED "$(state term-1)"
  start_publish
  start_drain
  wait_delivered 1 30 || fail "not published by the new instance"
  wait_until 10 queue_empty   # every copy deleted: none left to deliver twice
  collect
  assertEquals "delivered once" "term-1" "$(delivered_ids)"
  assertEquals "delivered before due" "" "$(early_lines)"
  assertEquals PUBLISHED "$(state term-1)"
  wait_until 5 queue_empty || fail "delay queue not empty"
}

# A paused sns-publish (SIGSTOP: a frozen VM or container) that wakes after
# the visibility of a message it holds ran out must not publish it: sqs-drain
# received the message again meanwhile, and that copy is published. Once.
test_paused_past_visibility_publishes_once() {
  local due now
  sched pz-1 3800ms
  due=$(field pz-1 due_ms)
  start_publish --log-level debug
  start_drain
  wait_until 10 grep -q 'msg="held until due" id=pz-1' "$TDIR/publish.log" || fail "pz-1 never held"
  now=$(now_ms)
  [ $((due - now)) -gt 300 ] && sleep "$(printf '0.%03d' $((due - now - 300)))"
  kill -STOP "$PUB_PID"
  sleep 9   # > the 6 s visibility: sqs-drain receives the message again
  kill -CONT "$PUB_PID"
  wait_delivered 1 20 || fail "pz-1 not delivered"
  wait_until 10 queue_empty   # every copy deleted: none left to deliver twice
  collect
  assertEquals "delivered once" "pz-1" "$(delivered_ids)"
  assertContains "$(cat "$TDIR/publish.log")" 'msg="visibility ran out while the message was held'
  assertEquals PUBLISHED "$(state pz-1)"
  wait_until 10 queue_empty || fail "delay queue not empty"
}

# Fast recovery: a message held by an sns-publish that is SIGKILLed comes
# back within seconds (sqs-drain receives with a 2 s visibility, which
# sns-publish extends only while it holds the message), not after the
# queue's visibility timeout (30 s here, as in production).
set_queue_visibility() {
  sqs SetQueueAttributes "{\"QueueUrl\":\"$DELAY_URL\",\"Attributes\":{\"VisibilityTimeout\":\"$1\"}}" >/dev/null
}
test_sigkill_of_the_holder_recovers_in_seconds() {
  local mid t0 dt
  set_queue_visibility 30
  start_publish --max-hold 60s --log-level debug
  start_drain
  wait_until 20 grep -q 'msg=ready' "$TDIR/publish.log"
  sched kill-1 30s
  send_body "$(wire_body kill-1)" 0   # a copy that arrives now: held until due
  wait_until 20 grep -q 'msg="held until due" id=kill-1' "$TDIR/publish.log" || fail "kill-1 never held"
  mid=$(grep -o 'msg="held until due" id=kill-1 mid=[^ ]*' "$TDIR/publish.log" | head -1 | sed 's/.*mid=//')
  sleep 2.5   # held past its first visibility: extended meanwhile
  kill -KILL "$PUB_PID"
  wait "$PUB_PID" 2>/dev/null
  t0=$(date +%s%N)
  : >"$TDIR/publish2.log"
  "$BIN/sns-publish" --prefix "$PFX" --in "$EP" --out - --max-hold 60s --log-level debug \
    >>"$TDIR/reports" 2>>"$TDIR/publish2.log" &
  PUB_PID=$!
  wait_until 40 grep -q "msg=\"held until due\" id=kill-1 mid=$mid" "$TDIR/publish2.log" || fail "the copy did not come back"
  dt=$((($(date +%s%N) - t0) / 1000000))
  echo "  the killed holder's message was back in ${dt} ms (with the new instance's start)"
  assertTrue "back within 15 s, not after the 30 s visibility (${dt} ms)" "[ $dt -lt 15000 ]"
  wait_delivered 1 40 || fail "kill-1 not delivered"
  sleep 2
  collect
  cat "$TDIR/publish2.log" >>"$TDIR/publish.log"; rm -f "$TDIR/publish2.log"
  set_queue_visibility 6
  assertEquals "delivered once" "kill-1" "$(delivered_ids)"
  assertEquals "delivered before due" "" "$(early_lines)"
  wait_until 5 queue_empty || fail "delay queue not empty"
}

# No downstream: sqs-drain holds what it received, hands it back after
# --hold, probes, and sends it once sns-publish is there.
test_drain_holds_while_no_downstream() {
  sched hold-1 2s
  start_drain --hold 1s
  wait_until 10 grep -q 'msg="downstream does not take records' "$TDIR/drain.log" || fail "drain did not hold"
  wait_until 5 grep -q 'msg="handing held messages back' "$TDIR/drain.log" || fail "drain did not hand back"
  start_publish
  wait_delivered 1 20 || fail "hold-1 not delivered"
  wait_until 10 queue_empty   # every copy deleted: none left to deliver twice
  collect
  assertEquals "delivered once" "hold-1" "$(delivered_ids)"
  assertContains "$(cat "$TDIR/drain.log")" 'msg="downstream takes records again"'
  assertEquals PUBLISHED "$(state hold-1)"
  wait_until 5 queue_empty || fail "delay queue not empty"
}

# pace_round PACE: 8 wire records sent one by one ~0.1 s apart, all
# due 4 s ahead, read by a lone sqs-drain --pace PACE; prints how many
# receives brought messages (its delayer_batch_size count).
lines_at_least() { [ "$(grep -c '' "$1")" -ge "$2" ]; }

pace_round() {
  local log="$TDIR/pace-$1.log" out="$TDIR/pace-$1.out" addr n i pid arn
  : >"$out"
  "$BIN/sqs-drain" --prefix "$PFX" --out - --wait 1 --pace "$1" --metrics 127.0.0.1:0 >"$out" 2>"$log" &
  pid=$!
  wait_until 10 grep -q 'msg=draining' "$log" || fail "pace $1: drain not ready"
  addr=$(sed -n 's/.*msg="metrics listening" addr=\([0-9.:]*\).*/\1/p' "$log" | tail -1)
  arn=$(topic_arn t)
  for i in 1 2 3 4 5 6 7 8; do   # aws-call directly: each send must be quick
    sqs SendMessage "{\"QueueUrl\":\"$DELAY_URL\",\"MessageBody\":\"{\\\"id\\\":\\\"pace-$i\\\",\\\"due\\\":$(($(date +%s%3N) + 4000)),\\\"topic\\\":\\\"$arn\\\",\\\"payload\\\":\\\"p\\\",\\\"attrs\\\":{},\\\"chash\\\":\\\"$(printf '0%.0s' $(seq 64))\\\",\\\"lease\\\":0}\"}" >/dev/null
    sleep 0.1
  done
  wait_until 10 lines_at_least "$out" 8 || fail "pace $1: not all received"
  n=$(curl -s "http://$addr/metrics" | sed -n 's/^delayer_batch_size_count{api="ReceiveMessage"} //p')
  stop "$pid" >/dev/null
  # sqs-drain handed them back at its stop: clear them for the next tests
  sqs PurgeQueue "{\"QueueUrl\":\"$DELAY_URL\"}" >/dev/null
  echo "${n:-0}"
}

# --pace: after a short receive, sqs-drain waits before the next one, so one
# request takes what became visible meanwhile: fewer receives for the same
# messages, each still received well before its due time.
test_pace_takes_more_per_receive() {
  local paced unpaced
  # A count that depends on timing: under the sanitizers (make sanitize,
  # build-san) the slowed process took as many receives either way (8 and 8)
  # once; make test checks it with the optimised build.
  if [[ "$BIN" == *build-san* ]]; then
    startSkipping; assertTrue "pace under the sanitizers" false; endSkipping; return 0
  fi
  unpaced=$(pace_round 0)
  paced=$(pace_round 200ms)
  echo "receives with messages for 8 spread over ~1 s: --pace 0: $unpaced, --pace 200ms: $paced"
  assertTrue "fewer receives with --pace ($paced) than without ($unpaced)" "[ $paced -lt $unpaced ]"
}

# Last: the bad message stays in the delay queue (for the dead-letter
# queue), which would disturb the "queue empty" checks of the others.
test_invalid_body_is_reported_and_left() {
  local out
  send_body '{"id":"bad-1","due":"soon"}' 0
  out=$(timeout --preserve-status -s TERM 3 "$BIN/sqs-drain" --prefix "$PFX" --out - --wait 1 2>"$TDIR/drain-bad.log")
  assertContains "$out" '"id":"bad-1"'
  assertContains "$out" '"report":"invalid"'
  assertContains "$(cat "$TDIR/drain-bad.log")" 'msg="message body is not a schedule record"'
  assertEquals "left in the queue, not deleted" 1 "$(queue_depth "$DELAY_URL")"
}

. /usr/share/shunit2/shunit2
