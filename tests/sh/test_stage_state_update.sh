#!/usr/bin/env bash
# test_stage_state_update: state-update against the local stack, fed report
# lines on stdin as the stages would send them: counters follow pushed and
# published exactly; push_failed puts a claim back to NEW; dead ends FAILED
# and deletes the dead-letter message; invalid ends INVALID; replays change
# nothing; lifecycle events reach a queue subscribed to the events topic,
# and none with --no-events / DELAYER_EVENTS=0.
. "$(dirname "$0")/../lib/suite.sh"
PFX=$(new_prefix)

oneTimeSetUp() {
  suite_up t || return 1   # DELAYER_EVENTS=0: the CLI's own events stay out of the events queue
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/delayer-update.XXXXXX")
  events_queue || return 1
}

oneTimeTearDown() {
  [ -n "${WORK:-}" ] && rm -rf -- "$WORK"
  suite_down
}

jget() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# A queue subscribed to the events topic (SNS envelope: the attributes are
# in the body's MessageAttributes).
events_queue() {
  local topic qarn
  topic=$("$BIN/aws-call" sns CreateTopic "Name=$PFX-events" | sed -n 's:.*<TopicArn>\(.*\)</TopicArn>.*:\1:p')
  EVQ=$("$BIN/aws-call" sqs CreateQueue "{\"QueueName\":\"$PFX-evq\"}" | jget QueueUrl) || return 1
  qarn=$("$BIN/aws-call" sqs GetQueueAttributes "{\"QueueUrl\":\"$EVQ\",\"AttributeNames\":[\"QueueArn\"]}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Attributes"]["QueueArn"])')
  [ -n "$topic" ] && [ -n "$qarn" ] &&
    "$BIN/aws-call" sns Subscribe "TopicArn=$topic" Protocol=sqs "Endpoint=$qarn" >/dev/null
}

# events MAX_S WANT: "ID EVENT_TYPE" of every event received within MAX_S
# seconds (stops early once WANT lines came).
events() {
  local end=$(($(date +%s) + $1)) got="" more
  while [ "$(date +%s)" -lt "$end" ] && [ "$(printf '%s' "$got" | grep -c .)" -lt "$2" ]; do
    more=$("$BIN/aws-call" sqs ReceiveMessage \
      "{\"QueueUrl\":\"$EVQ\",\"MaxNumberOfMessages\":10,\"WaitTimeSeconds\":1}" | python3 -c '
import json, sys
for m in json.load(sys.stdin).get("Messages", []):
    env = json.loads(m["Body"])
    body = json.loads(env["Message"])
    et = env.get("MessageAttributes", {}).get("event_type", {}).get("Value", "?")
    assert et == body["event"], (et, body)
    print(body["id"], et)')
    got=$(printf '%s\n%s' "$got" "$more" | grep .)
  done
  printf '%s\n' "$got" | grep . | sort
}

sched() { D schedule --in 2h --topic t --payload "payload of $1" --id "$1" >/dev/null || fail "schedule $1"; }

# rep ID REPORT [KEY=VALUE]...: the report line a stage would send for the
# record as it is in the table (numbers for lease/rc).
rep() {
  local id=$1
  shift
  HOOK item "$id" | python3 -c '
import json, sys
it = json.load(sys.stdin)
r = {"id": it["id"]["S"], "due": int(it["due"]["N"]), "topic": it["topic"]["S"], "nopayload": True,
     "attrs": {}, "chash": it["chash"]["S"], "lease": int(it.get("lease", {"N": "0"})["N"]),
     "report": sys.argv[1]}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    r[k] = int(v) if k in ("lease", "rc", "attempts") else v
print(json.dumps(r))' "$@"
}

# upd [ARGS]: state-update over stdin, outcomes on stdout.
upd() { "$BIN/state-update" --prefix "$PFX" --in - --out - "$@" 2>>"$WORK/upd.log"; }

# The counter of STATE (stats --json).
count() { D stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["states"][sys.argv[1]])' "$1"; }
counts() { echo "$(count NEW) $(count ENQUEUED) $(count PUBLISHED) $(count FAILED) $(count INVALID)"; }
# add "N E P F I" "dN dE dP dF dI"
add() { python3 -c 'import sys; a=sys.argv[1].split(); d=sys.argv[2].split(); print(" ".join(str(int(x)+int(y)) for x,y in zip(a,d)))' "$1" "$2"; }

results() { python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["id"], r["report"], r["result"])'; }

test_help_version_and_usage_errors() {
  local out o
  out=$("$BIN/state-update" --help)
  assertEquals 0 $?
  for o in --flush --no-events --prefix --in --out --log-level --ready-fd; do
    assertContains "state-update --help lists $o" "$out" "$o"
  done
  assertContains "$("$BIN/state-update" --version)" "state-update (delayer)"
  "$BIN/state-update" --flush never </dev/null 2>/dev/null
  assertEquals "bad --flush" 100 $?
}

test_pushed_and_published_update_counters_exactly() {
  local before lease out
  sched c1
  sched c2
  before=$(counts)
  lease=$(($(now_ms) + 60000))
  HOOK claim c1 $lease >/dev/null
  HOOK claim c2 $lease >/dev/null
  out=$({ rep c1 pushed from=NEW mid=m-c1; rep c2 pushed from=NEW mid=m-c2; } | upd)
  assertEquals "c1 pushed applied
c2 pushed applied" "$(printf '%s\n' "$out" | results)"
  assertEquals "NEW -2, ENQUEUED +2" "$(add "$before" "-2 2 0 0 0")" "$(counts)"
  HOOK commit c1 q-c1 >/dev/null
  HOOK commit c2 q-c2 >/dev/null
  out=$({ rep c1 published mid=q-c1 rc=1; rep c2 published mid=q-c2 rc=1; } | upd)
  assertEquals "c1 published applied
c2 published applied" "$(printf '%s\n' "$out" | results)"
  assertEquals "ENQUEUED -2, PUBLISHED +2" "$(add "$before" "-2 0 2 0 0")" "$(counts)"
  # A re-claim's report (from ENQUEUED) does not count NEW -> ENQUEUED again.
  sched c3
  HOOK claim c3 $lease >/dev/null
  before=$(counts)
  rep c3 pushed from=ENQUEUED mid=m-c3 | upd >/dev/null
  assertEquals "a re-claim moves no counter" "$before" "$(counts)"
}

test_push_failed_puts_the_claim_back_to_new() {
  local before lease out
  sched p1
  sched p2
  before=$(counts)
  lease=$(($(now_ms) + 60000))
  HOOK claim p1 $lease >/dev/null
  HOOK claim p2 $lease >/dev/null
  out=$({ rep p1 push_failed from=NEW "error=ServiceUnavailable: try later";
          rep p2 push_failed from=NEW lease=$((lease + 1)) "error=X: y"; } | upd)
  assertEquals "p1 push_failed applied
p2 push_failed unchanged" "$(printf '%s\n' "$out" | results)"
  assertEquals "back to NEW" NEW "$(attr p1 state)"
  assertEquals "lease removed" "" "$(attr p1 lease)"
  assertEquals "another claim's lease: untouched" ENQUEUED "$(attr p2 state)"
  assertEquals "a first claim was never counted: no counter moves" "$before" "$(counts)"
  # A counted claim (pushed from NEW) that then fails moves ENQUEUED -> NEW.
  rep p2 pushed from=NEW mid=m-p2 | upd >/dev/null
  assertEquals "$(add "$before" "-1 1 0 0 0")" "$(counts)"
  rep p2 push_failed from=ENQUEUED "error=X: y" | upd >/dev/null
  assertEquals NEW "$(attr p2 state)"
  assertEquals "$before" "$(counts)"
}

test_dead_marks_failed_and_deletes_the_dlq_message() {
  local lease dlq msg mid rh before line out n
  sched d1
  lease=$(($(now_ms) + 60000))
  HOOK claim d1 $lease >/dev/null
  # sns-publish committed, SNS refused, the message went round until the DLQ.
  HOOK commit d1 q-d1 >/dev/null
  HOOK unpublish d1 q-d1 "NotFound: Topic does not exist" $lease >/dev/null
  dlq=$(queue_url "$PFX-dead")
  "$BIN/aws-call" sqs SendMessage "$(python3 -c 'import json,sys; print(json.dumps({"QueueUrl": sys.argv[1], "MessageBody": sys.argv[2]}))' \
    "$dlq" "$(rep d1 x | python3 -c 'import json,sys; r=json.load(sys.stdin); del r["report"]; print(json.dumps(r))')")" >/dev/null
  msg=$("$BIN/aws-call" sqs ReceiveMessage "{\"QueueUrl\":\"$dlq\",\"WaitTimeSeconds\":2,\"VisibilityTimeout\":1}")
  mid=$(printf '%s' "$msg" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Messages"][0]["MessageId"])')
  rh=$(printf '%s' "$msg" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Messages"][0]["ReceiptHandle"])')
  before=$(counts)
  line=$(rep d1 dead "mid=$mid" "rh=$rh" rc=5)
  out=$(printf '%s\n' "$line" | upd)
  assertEquals "d1 dead applied" "$(printf '%s\n' "$out" | results)"
  assertEquals FAILED "$(attr d1 state)"
  assertEquals "the last publish error is kept" "NotFound: Topic does not exist" "$(attr d1 last_error)"
  assertEquals "ENQUEUED -> FAILED" "$(add "$before" "0 -1 0 1 0")" "$(counts)"
  # no wait: the count below includes in-flight messages (an undeleted one counts, visible or not)
  n=$("$BIN/aws-call" sqs GetQueueAttributes \
    "{\"QueueUrl\":\"$dlq\",\"AttributeNames\":[\"ApproximateNumberOfMessages\",\"ApproximateNumberOfMessagesNotVisible\"]}" |
    python3 -c 'import json,sys; a=json.load(sys.stdin)["Attributes"]; print(int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"]))')
  assertEquals "the DLQ message was deleted" 0 "$n"
  # A dead report for a schedule still waiting (the store says so) that
  # carries its own error.
  sched d2
  HOOK claim d2 $lease >/dev/null
  rep d2 dead "error=KMS.Disabled: key disabled" rc=5 | upd >/dev/null
  assertEquals FAILED "$(attr d2 state)"
  assertEquals "KMS.Disabled: key disabled" "$(attr d2 last_error)"
}

# dlq_put ID [KEY=VALUE]...: puts the record's wire body (as the table has
# it, with the overrides) into the dead-letter queue and receives it: sets
# DLQ_MID and DLQ_RH (visibility 1 s).
dlq_put() {
  local dlq msg
  dlq=$(queue_url "$PFX-dead")
  "$BIN/aws-call" sqs SendMessage "$(python3 -c 'import json,sys; print(json.dumps({"QueueUrl": sys.argv[1], "MessageBody": sys.argv[2]}))' \
    "$dlq" "$(rep "$@" | python3 -c 'import json,sys; r=json.load(sys.stdin); del r["report"]; print(json.dumps(r))')")" >/dev/null
  msg=$("$BIN/aws-call" sqs ReceiveMessage "{\"QueueUrl\":\"$dlq\",\"WaitTimeSeconds\":2,\"VisibilityTimeout\":1}")
  DLQ_MID=$(printf '%s' "$msg" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Messages"][0]["MessageId"])')
  DLQ_RH=$(printf '%s' "$msg" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Messages"][0]["ReceiptHandle"])')
}

# dlq_left: messages in the dead-letter queue, visible or not.
dlq_left() {
  "$BIN/aws-call" sqs GetQueueAttributes \
    "{\"QueueUrl\":\"$(queue_url "$PFX-dead")\",\"AttributeNames\":[\"ApproximateNumberOfMessages\",\"ApproximateNumberOfMessagesNotVisible\"]}" |
    python3 -c 'import json,sys; a=json.load(sys.stdin)["Attributes"]; print(int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"]))'
}

# A copy sent before a re-claim (its lease lapsed, the scanner claimed the
# schedule again and sent a new copy) that then went to the dead-letter
# queue must not end the live schedule FAILED: the DLQ message is deleted,
# the report is "unchanged" (stale). The current copy still fails it, also
# after an unpublish moved the lease on (matched by its MessageId).
test_dead_stale_copy_after_a_reclaim_changes_nothing() {
  local l1 l2 before out
  sched sc1
  l1=$(($(now_ms) - 1000))      # a claim whose lease has run out
  HOOK claim sc1 $l1 >/dev/null
  dlq_put sc1 x                 # the old copy, lease l1
  l2=$(($(now_ms) + 60000))
  HOOK reclaim sc1 $l1 $l2 >/dev/null
  before=$(counts)
  out=$(rep sc1 dead "mid=$DLQ_MID" "rh=$DLQ_RH" rc=5 lease=$l1 | upd)
  assertEquals "sc1 dead unchanged" "$(printf '%s\n' "$out" | results)"
  assertContains "reported as stale" "$out" "stale copy"
  assertEquals "the live schedule stays ENQUEUED" ENQUEUED "$(attr sc1 state)"
  assertEquals "its lease is the re-claim's" $l2 "$(attr sc1 lease)"
  assertEquals "no counter moves" "$before" "$(counts)"
  wait_until 5 [ "$(dlq_left)" = 0 ]
  assertEquals "the stale DLQ message was deleted" 0 "$(dlq_left)"
  # The current copy (lease l2) fails it.
  dlq_put sc1 x
  out=$(rep sc1 dead "mid=$DLQ_MID" "rh=$DLQ_RH" rc=5 | upd)
  assertEquals "sc1 dead applied" "$(printf '%s\n' "$out" | results)"
  assertEquals FAILED "$(attr sc1 state)"
  # Committed by a delivery, refused by SNS, put back with another lease:
  # the dead copy is that delivery (same MessageId in the DLQ).
  sched sc2
  HOOK claim sc2 $l2 >/dev/null
  dlq_put sc2 x
  HOOK commit sc2 "$DLQ_MID" >/dev/null
  HOOK unpublish sc2 "$DLQ_MID" "NotFound: Topic does not exist" $((l2 + 5000)) >/dev/null
  out=$(rep sc2 dead "mid=$DLQ_MID" "rh=$DLQ_RH" rc=5 lease=$l2 | upd)
  assertEquals "sc2 dead applied" "$(printf '%s\n' "$out" | results)"
  assertEquals FAILED "$(attr sc2 state)"
  # A re-claim after such an unpublish: the committed copy is stale too.
  sched sc3
  HOOK claim sc3 $l1 >/dev/null
  dlq_put sc3 x
  HOOK commit sc3 "$DLQ_MID" >/dev/null
  HOOK unpublish sc3 "$DLQ_MID" "Throttled: slow down" $((l1 + 1)) >/dev/null
  HOOK reclaim sc3 $((l1 + 1)) $l2 >/dev/null
  out=$(rep sc3 dead "mid=$DLQ_MID" "rh=$DLQ_RH" rc=5 lease=$l1 | upd)
  assertEquals "sc3 dead unchanged" "$(printf '%s\n' "$out" | results)"
  assertEquals ENQUEUED "$(attr sc3 state)"
}

test_invalid_marks_invalid() {
  local before out
  sched i1
  before=$(counts)
  # An "invalid" report may carry nothing but the id and the error.
  out=$(printf '%s\n' '{"id":"i1","report":"invalid","error":"payload: not valid UTF-8"}' | upd)
  assertEquals "i1 invalid applied" "$(printf '%s\n' "$out" | results)"
  assertEquals INVALID "$(attr i1 state)"
  assertEquals "payload: not valid UTF-8" "$(attr i1 last_error)"
  assertEquals "NEW -> INVALID" "$(add "$before" "-1 0 0 0 1")" "$(counts)"
}

# sqs-push refused a first claim's content (SQS InvalidMessageContents):
# its "invalid" report carries "from":"NEW". The claim was never counted
# (pushed counts it), so the counters move NEW -> INVALID, not ENQUEUED ->
# INVALID (which left NEW +1 and ENQUEUED -1 for ever). A re-claim's
# (from ENQUEUED, counted) moves ENQUEUED -> INVALID.
test_invalid_after_a_first_claim_moves_the_counters_from_new() {
  local before lease out
  sched i2
  sched i3
  lease=$(($(now_ms) + 60000))
  HOOK claim i2 $lease >/dev/null
  HOOK claim i3 $lease >/dev/null
  rep i3 pushed from=NEW mid=m-i3 | upd >/dev/null
  before=$(counts)
  out=$({ rep i2 invalid from=NEW "error=InvalidMessageContents: invalid characters";
          rep i3 invalid from=ENQUEUED "error=InvalidMessageContents: invalid characters"; } | upd)
  assertEquals "i2 invalid applied
i3 invalid applied" "$(printf '%s\n' "$out" | results)"
  assertEquals INVALID "$(attr i2 state)"
  assertEquals "i2: NEW -> INVALID, i3: ENQUEUED -> INVALID" "$(add "$before" "-1 -1 0 0 2")" "$(counts)"
}

test_replayed_reports_change_nothing() {
  local lease lines before items out
  for i in r1 r2 r3 r4; do sched $i; done
  lease=$(($(now_ms) + 60000))
  for i in r1 r2 r3; do HOOK claim $i $lease >/dev/null; done
  HOOK commit r2 q-r2 >/dev/null
  lines=$(rep r1 pushed from=NEW mid=m-r1; rep r2 published mid=q-r2 rc=1; rep r3 push_failed from=NEW "error=X: y";
          echo '{"id":"r4","report":"invalid","error":"attrs: bad"}')
  # The same reports twice in one stream: the second copy changes nothing.
  before=$(counts)
  out=$(printf '%s\n%s\n' "$lines" "$lines" | upd)
  assertEquals "r1 pushed applied
r2 published applied
r3 push_failed applied
r4 invalid applied
r1 pushed unchanged
r2 published unchanged
r3 push_failed unchanged
r4 invalid unchanged" "$(printf '%s\n' "$out" | results)"
  # (r1 NEW->ENQUEUED, r2 ENQUEUED->PUBLISHED (never counted ENQUEUED: it
  # had no pushed report), r4 NEW->INVALID)
  assertEquals "$(add "$before" "-2 0 1 0 1")" "$(counts)"
  # Again, by another process: the conditional transitions change nothing.
  before=$(counts)
  items=$(for i in r3 r4; do HOOK item $i; done)
  out=$(printf '%s\n' "$lines" | grep -v '"pushed"\|"published"' | upd)
  assertEquals "r3 push_failed unchanged
r4 invalid unchanged" "$(printf '%s\n' "$out" | results)"
  assertEquals "records unchanged" "$items" "$(for i in r3 r4; do HOOK item $i; done)"
  assertEquals "counters unchanged" "$before" "$(counts)"
}

test_publish_failed_changes_nothing_itself() {
  local before out
  sched f1
  HOOK claim f1 $(($(now_ms) + 60000)) >/dev/null
  before=$(counts)
  # sns-publish wrote the revert (state ENQUEUED), or could not (PUBLISHED).
  out=$({ rep f1 publish_failed mid=q-f1 attempts=2 state=ENQUEUED "error=Throttled: slow down";
          rep f1 publish_failed mid=q-f1 attempts=2 state=PUBLISHED "error=Throttled: slow down"; } | upd)
  assertEquals "f1 publish_failed applied
f1 publish_failed unchanged" "$(printf '%s\n' "$out" | results)"
  assertEquals ENQUEUED "$(attr f1 state)"
  assertEquals "no counter moves" "$before" "$(counts)"
}

test_bad_report_lines_are_skipped() {
  local out rc
  sched b1
  out=$(printf '%s\n' 'not json' '{"id":"b1"}' '{"report":"pushed"}' '{"id":"b1","report":"pushed"}' \
    '{"id":"b1","report":"invalid","error":"x: y"}' | upd)
  rc=$?
  assertEquals "exit 1: some lines rejected" 1 "$rc"
  assertEquals "the good line is applied" "b1 invalid applied" "$(printf '%s\n' "$out" | results)"
  assertEquals 4 "$(grep -c 'msg="bad report"' "$WORK/upd.log")"
}

test_events_reach_the_events_topic() {
  local lease out ev
  for i in e1 e2 e3 e4; do sched $i; done
  lease=$(($(now_ms) + 60000))
  HOOK claim e1 $lease >/dev/null
  HOOK claim e3 $lease >/dev/null
  HOOK claim e4 $lease >/dev/null
  out=$({ rep e1 pushed from=NEW mid=m-e1; } | DELAYER_EVENTS=1 upd)
  HOOK commit e1 q-e1 >/dev/null
  out=$({ rep e1 published mid=q-e1 rc=1; echo '{"id":"e2","report":"invalid","error":"x: y"}';
          rep e3 dead rc=5 "error=NotFound: gone";
          rep e4 publish_failed mid=q-e4 attempts=1 state=ENQUEUED "error=Throttled: slow down"; } | DELAYER_EVENTS=1 upd)
  ev=$(events 15 5)
  assertEquals "e1 schedule.enqueued
e1 schedule.published
e2 schedule.invalid
e3 schedule.failed
e4 schedule.enqueued" "$ev"
  : "$out"
}

test_no_events_when_switched_off() {
  local lease
  for i in n1 n2 n3; do sched $i; done
  lease=$(($(now_ms) + 60000))
  HOOK claim n1 $lease >/dev/null
  rep n1 pushed from=NEW mid=m-n1 | DELAYER_EVENTS=1 upd --no-events >/dev/null
  printf '%s\n' '{"id":"n2","report":"invalid","error":"x: y"}' | upd >/dev/null   # DELAYER_EVENTS=0
  assertEquals INVALID "$(attr n2 state)"
  assertEquals "no event" "" "$(events 3 1)"
}

. /usr/share/shunit2/shunit2
