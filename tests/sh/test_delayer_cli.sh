#!/usr/bin/env bash
# test_delayer_cli: every delayer subcommand's normal use, and every refused
# input (one-line error naming the field, the documented exit code, nothing
# written to the table).
. "$(dirname "$0")/../lib/suite.sh"
PFX=$(new_prefix)

oneTimeSetUp() {
  suite_up orders other || return 1
  ARN=$(D schedule --in 1h --topic orders --payload probe --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["topic"])')
  TMPD=$(mktemp -d)
}

oneTimeTearDown() {
  rm -rf -- "$TMPD"
  suite_down
}

# ------------------------------------------------------------ normal use

test_help_and_version() {
  run "$BIN/delayer" --version
  assertEquals 0 "$RC"
  assertContains "$OUT" "delayer 0."
  run "$BIN/delayer" help
  assertEquals 0 "$RC"
  assertContains "$OUT" "Exit status: 0 ok; 1 refused"
  for c in init schedule import get cancel list stats delete retry; do
    run "$BIN/delayer" help "$c"
    assertEquals "help $c" 0 "$RC"
    assertContains "help $c" "$OUT" "usage: delayer $c"
    run "$BIN/delayer" "$c" --help
    assertContains "$c --help" "$OUT" "usage: delayer $c"
  done
  run "$BIN/delayer"
  assertEquals 100 "$RC"
}

test_init_is_idempotent() {
  run D init --topic orders
  assertEquals 0 "$RC"
  assertContains "$OUT" "exists table $PFX-schedules"
  assertContains "$OUT" "exists queue $PFX-delay"
  assertContains "$OUT" "exists topic $PFX-orders"
  assertContains "$OUT" "exists config"
  run D init --topic third
  assertContains "$OUT" "created topic $PFX-third"
}

test_schedule_new_and_get() {
  run D schedule --in 2h --topic orders --payload 'hello "world"' --attr kind=test --attr n=1
  assertEquals 0 "$RC"
  local id=$OUT
  assertEquals "a ULID" 26 "${#id}"
  run D get "$id" --payload
  assertEquals 0 "$RC"
  assertEquals NEW "$(json_field "$OUT" state)"
  assertEquals "$ARN" "$(json_field "$OUT" topic)"
  assertEquals 'hello "world"' "$(json_field "$OUT" payload)"
  assertEquals '{"kind": "test", "n": "1"}' "$(json_field "$OUT" attrs)"
  assertEquals 13 "$(json_field "$OUT" payload_size)"
  assertEquals 0 "$(json_field "$OUT" attempts)"
  assertEquals None "$(json_field "$OUT" last_error)"
  assertContains "$(json_field "$OUT" history)" '"state": "NEW"'
  run D get "$id"
  assertNotContains "$OUT" '"payload":'
}

test_schedule_time_forms() {
  local now at id due
  now=$(date +%s)
  at=$((now + 7200))
  id=$(D schedule --at "$at" --topic orders --payload a)
  assertEquals "epoch seconds" "${at}000" "$(json_field "$(D get "$id")" due_ms)"
  id=$(D schedule --at "${at}123" --topic orders --payload a)
  assertEquals "epoch ms" "${at}123" "$(json_field "$(D get "$id")" due_ms)"
  due=$(date -u -d "@$at" +%Y-%m-%dT%H:%M:%S)
  id=$(D schedule --at "${due}.5+00:00" --topic "$ARN" --payload a)
  assertEquals "RFC 3339" "${at}500" "$(json_field "$(D get "$id")" due_ms)"
  id=$(D schedule --in 1h30m --topic orders --payload a)
  due=$(json_field "$(D get "$id")" due_ms)
  assertTrue "in 1h30m" "[ $((due / 1000 - now)) -ge 5399 ] && [ $((due / 1000 - now)) -le 5405 ]"
}

test_schedule_payload_sources() {
  local id
  printf 'from a file\n' >"$TMPD/p.txt"
  id=$(D schedule --in 2h --topic orders --payload @"$TMPD/p.txt")
  assertEquals "from a file
" "$(json_field "$(D get "$id" --payload)" payload)
"
  id=$(printf 'from stdin' | D schedule --in 2h --topic orders --payload -)
  assertEquals "from stdin" "$(json_field "$(D get "$id" --payload)" payload)"
}

test_schedule_fast_track() {
  local id q n
  run D schedule --in 20s --topic orders --payload soon --json
  assertEquals 0 "$RC"
  assertEquals ENQUEUED "$(json_field "$OUT" state)"
  id=$(json_field "$OUT" id)
  assertNotNull "lease while ENQUEUED" "$(json_field "$OUT" lease)"
  # The message waits in the delay queue (delayed ~20 s).
  q=$(aws sqs get-queue-url --endpoint-url "$AWS_ENDPOINT_URL_SQS" --queue-name "$PFX-delay" --query QueueUrl --output text)
  n=$(aws sqs get-queue-attributes --endpoint-url "$AWS_ENDPOINT_URL_SQS" --queue-url "$q" \
      --attribute-names ApproximateNumberOfMessagesDelayed --query Attributes.ApproximateNumberOfMessagesDelayed --output text)
  assertTrue "a delayed message ($n)" "[ '$n' -ge 1 ]"
  assertEquals ENQUEUED "$(json_field "$(D get "$id")" state)"
}

test_fast_track_sqs_down_keeps_it_for_the_scanner() {
  # SQS unreachable: the schedule is still recorded (NEW, for the scanner)
  # and the command succeeds with a warning.
  run env AWS_ENDPOINT_URL_SQS=http://127.0.0.1:9 DELAYER_AWS_MAX_ATTEMPTS=1 \
    "$BIN/delayer" --prefix "$PFX" schedule --in 20s --topic orders --payload down --id sqs-down
  assertEquals 0 "$RC"
  assertEquals sqs-down "$OUT"
  assertContains "$ERR" "warning: sqs SendMessage"
  assertEquals NEW "$(json_field "$(D get sqs-down)" state)"
  assertEquals "no lease" None "$(json_field "$(D get sqs-down)" lease)"
  printf '%s\n' '{"id":"sqs-down-2","in":"20s","topic":"orders","payload":"x"}' >"$TMPD/down.ndjson"
  run env AWS_ENDPOINT_URL_SQS=http://127.0.0.1:9 DELAYER_AWS_MAX_ATTEMPTS=1 \
    "$BIN/delayer" --prefix "$PFX" import <"$TMPD/down.ndjson"
  assertEquals 0 "$RC"
  assertContains "$OUT" "imported 1 (0 fast-tracked)"
  assertEquals NEW "$(json_field "$(D get sqs-down-2)" state)"
}

test_schedule_idempotent_id() {
  local at id2
  at=$(($(date +%s) + 7200))
  run D schedule --at "$at" --topic orders --payload same --attr a=1 --id 'order-42'
  assertEquals 0 "$RC"
  assertEquals order-42 "$OUT"
  local before
  before=$(D get order-42)
  # Same content (attributes in another order too): the same record.
  run D schedule --at "$at" --topic "$ARN" --payload same --attr a=1 --id 'order-42' --json
  assertEquals 0 "$RC"
  assertEquals order-42 "$(json_field "$OUT" id)"
  assertEquals "$(json_field "$before" created)" "$(json_field "$OUT" created)"
  # Different content: refused, record unchanged.
  assert_refused 1 id D schedule --at "$at" --topic orders --payload other --id 'order-42'
  assert_refused 1 id D schedule --at "$((at + 1))" --topic orders --payload same --attr a=1 --id 'order-42'
  assert_refused 1 id D schedule --at "$at" --topic orders --payload same --attr a=2 --id 'order-42'
  assertEquals "$before" "$(D get order-42)"
  # Ids are verbatim: quotes, '#', ':' and a newline.
  id2=$'we"ird #id: x\nline2'
  run D schedule --in 2h --topic orders --payload x --id "$id2"
  assertEquals 0 "$RC"
  assertEquals "$id2" "$(json_field "$(D get "$id2")" id)"
}

# An identical re-submission of an explicit id is idempotent even after its
# due time has passed by more than the grace (the schedule exists, maybe
# published long ago): it returns the existing record. Anything else due
# that far in the past is still refused (schedule and import alike).
test_late_identical_resubmission_returns_the_existing_schedule() {
  local at out first
  export DELAYER_GRACE=1s
  at=$(($(date +%s) + 2))
  run D schedule --at "$at" --topic orders --payload late --attr k=v --id late-1 --json
  assertEquals "created" 0 "$RC"
  first=$OUT
  while [ "$(date +%s)" -le $((at + 2)) ]; do sleep 0.2; done   # due + grace has passed
  run D schedule --at "$at" --topic orders --payload late --attr k=v --id late-1
  assertEquals "identical, late: exit 0 ($ERR)" 0 "$RC"
  assertEquals late-1 "$OUT"
  run D schedule --at "$at" --topic "$ARN" --payload late --attr k=v --id late-1 --json
  assertEquals 0 "$RC"
  assertEquals "the existing record" "$(json_field "$first" created)" "$(json_field "$OUT" created)"
  assert_refused 1 at D schedule --at "$at" --topic orders --payload other --attr k=v --id late-1
  assert_refused 1 at D schedule --at "$at" --topic orders --payload late --id late-never-made
  assert_refused 1 at D schedule --at "$at" --topic orders --payload late --attr k=v
  # import: the identical row existed; another one is a bad line.
  out=$(printf '%s\n' "{\"id\":\"late-1\",\"at\":$at,\"topic\":\"orders\",\"payload\":\"late\",\"attrs\":{\"k\":\"v\"}}" \
    "{\"id\":\"late-2\",\"at\":$at,\"topic\":\"orders\",\"payload\":\"late\"}" | D import 2>"$TMPD/late.err")
  assertEquals "import exit: one bad line" 1 $?
  assertContains "$out" "imported 0 (0 fast-tracked), 1 existed, 1 failed"
  assertContains "$(cat "$TMPD/late.err")" "line 2: at:"
  assertContains "$(cat "$TMPD/late.err")" "in the past"
  assertEquals "late-2 was not written" "{}" "$(HOOK item late-2 2>/dev/null)"
  unset DELAYER_GRACE
}

test_list_and_cursor() {
  local ids=() i out c page2 all
  for i in 1 2 3; do ids+=("$(D schedule --in 3h --topic other --payload "l$i" --id "list-$i")"); done
  run D list --topic other --limit 2
  assertEquals 0 "$RC"
  assertEquals 2 "$(printf '%s\n' "$OUT" | grep -c '"id"')"
  assertContains "newest first" "$(printf '%s\n' "$OUT" | head -1)" '"id":"list-3"'
  c=$(printf '%s' "$ERR" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["cursor"])')
  assertNotNull "a cursor" "$c"
  run D list --topic other --limit 2 --cursor "$c"
  page2=$OUT
  assertContains "$page2" '"id":"list-1"'
  assertEquals 1 "$(printf '%s\n' "$page2" | grep -c '"id"')"
  assertEquals "no cursor after the last page" "" "$ERR"
  all=$(D list --topic other --state NEW --limit 10)
  assertEquals 3 "$(printf '%s\n' "$all" | grep -c '"id"')"
  assertEquals 3 "$(D list --topic other --count)"
  assertEquals 0 "$(D list --topic other --state CANCELLED --count)"
  assertEquals 3 "$(D list --topic "$PFX-other" --since 1h --count 2>/dev/null || D list --topic other --since 1h --count)"
  assertEquals 0 "$(D list --topic other --from 2020-01-01T00:00:00Z --to 2020-02-01T00:00:00Z --count)"
  D cancel list-2 >/dev/null
  assertEquals 1 "$(D list --topic other --state cancelled --count)"
  assertEquals 3 "$(D list --topic other --state NEW,CANCELLED --count)"
}

test_stats() {
  local before after
  before=$(D stats --json)
  D schedule --in 2h --topic orders --payload s >/dev/null
  after=$(D stats --json)
  assertEquals $(($(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["states"]["NEW"])' "$before") + 1)) \
    "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["states"]["NEW"])' "$after")"
  run D stats
  assertEquals 0 "$RC"
  assertContains "$OUT" "TOTAL"
  run D stats --by-topic --json
  assertContains "$OUT" "\"topic\":\"$ARN\""
  # The counters equal a recount from the table.
  local counted
  counted=$(D stats --json --by-topic --recount)
  norm() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["topics"].sort(key=lambda t: t["topic"]); print(json.dumps(d, sort_keys=True))' "$1"; }
  assertEquals "counters = recount" "$(norm "$(D stats --json --by-topic)")" "$(norm "$counted")"
  assertEquals "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["total"])' "$after")" "$(D list --count)"
}

test_cancel_delete() {
  local id
  id=$(D schedule --in 2h --topic orders --payload c)
  run D cancel "$id"
  assertEquals 0 "$RC"
  assertEquals "$id" "$OUT"
  assertEquals CANCELLED "$(json_field "$(D get "$id")" state)"
  assertNotNull "expires set" "$(json_field "$(D get "$id")" expires)"
  assert_refused 2 state D cancel "$id"
  assertContains "$ERR" "CANCELLED"
  run D delete "$id"
  assertEquals 0 "$RC"
  assert_refused 3 id D get "$id"
  assert_refused 3 id D delete "$id"
  assert_refused 3 id D cancel "$id"
}

test_retry_failed() {
  local id
  id=$(D schedule --in 20s --topic orders --payload r --id retry-1)
  assertEquals "OK ENQUEUED" "$(HOOK fail retry-1 'KMS.Throttled: slow down')"
  assertEquals FAILED "$(json_field "$(D get retry-1)" state)"
  run D list --state FAILED --error-prefix KMS.
  assertContains "$OUT" '"id":"retry-1"'
  run D retry retry-1
  assertEquals 0 "$RC"
  run D get retry-1
  assertEquals ENQUEUED "$(json_field "$OUT" state)"
  assertEquals 'KMS.Throttled: slow down' "$(json_field "$OUT" last_error)"
  assert_refused 2 state D retry retry-1
  # Bulk: --state FAILED --since
  HOOK fail retry-1 'X: again' >/dev/null
  run D retry --state FAILED --since 1h
  assertEquals 0 "$RC"
  assertContains "$OUT" "retried 1"
  assertEquals ENQUEUED "$(json_field "$(D get retry-1)" state)"
}

test_events_published() {
  local q qarn sub body
  q=$(aws sqs create-queue --endpoint-url "$AWS_ENDPOINT_URL_SQS" --queue-name "$PFX-evtap" --query QueueUrl --output text)
  qarn=$(aws sqs get-queue-attributes --endpoint-url "$AWS_ENDPOINT_URL_SQS" --queue-url "$q" --attribute-names QueueArn --query Attributes.QueueArn --output text)
  evarn=$(aws sns create-topic --endpoint-url "$AWS_ENDPOINT_URL_SNS" --name "$PFX-events" --query TopicArn --output text)
  aws sns subscribe --endpoint-url "$AWS_ENDPOINT_URL_SNS" --topic-arn "$evarn" --protocol sqs \
    --notification-endpoint "$qarn" --attributes RawMessageDelivery=true >/dev/null
  DELAYER_EVENTS=1 D schedule --in 2h --topic orders --payload ev --id ev-1 >/dev/null
  DELAYER_EVENTS=1 D cancel ev-1 >/dev/null
  D schedule --in 2h --topic orders --payload ev --id ev-2 >/dev/null  # events off
  body=$(aws sqs receive-message --endpoint-url "$AWS_ENDPOINT_URL_SQS" --queue-url "$q" --max-number-of-messages 10 \
    --wait-time-seconds 2 --message-attribute-names All --query 'Messages[].[Body,MessageAttributes.event_type.StringValue]' --output text)
  assertContains "$body" '"event":"schedule.created","id":"ev-1","state":"NEW"'
  assertContains "$body" '"event":"schedule.cancelled","id":"ev-1","state":"CANCELLED"'
  assertContains "$body" "schedule.cancelled"
  assertNotContains "$body" '"ev-2"'
  # An unreachable events topic never blocks or undoes the state change.
  run env AWS_ENDPOINT_URL_SNS=http://127.0.0.1:9 DELAYER_EVENTS=1 "$BIN/delayer" --prefix "$PFX" schedule --in 2h --topic orders --payload ev --id ev-3
  assertEquals 0 "$RC"
  assertContains "$ERR" "warning"
  assertEquals NEW "$(json_field "$(D get ev-3)" state)"
}

# ------------------------------------------------------------ refused input

test_schedule_refused() {
  local big
  big=$TMPD/big
  head -c 262145 /dev/zero | tr '\0' a >"$big"
  assert_refused 1 at D schedule --at 2020-01-01T00:00:00Z --topic orders --payload x
  assert_refused 1 at D schedule --at tomorrow --topic orders --payload x
  assert_refused 1 at D schedule --at 2026-13-01T00:00:00Z --topic orders --payload x
  assert_refused 1 in D schedule --in 400d --topic orders --payload x
  assert_refused 1 in D schedule --in 5x --topic orders --payload x
  assert_refused 1 topic D schedule --in 2h --topic nosuch --payload x
  assert_refused 1 topic D schedule --in 2h --topic 'bad name!' --payload x
  assert_refused 1 topic D schedule --in 2h --topic arn:aws:sns:us-east-1:000000000000:nosuch-topic --payload x
  assert_refused 1 topic D schedule --in 2h --topic arn:aws:sqs:us-east-1:000000000000:q --payload x
  assert_refused 1 payload D schedule --in 2h --topic orders --payload ''
  assert_refused 1 payload D schedule --in 2h --topic orders --payload @"$big"
  assert_refused 1 payload D schedule --in 2h --topic orders --payload @"$TMPD/missing"
  assert_refused 1 payload D schedule --in 2h --topic orders --payload $'bad\xff'
  assert_refused 1 attr D schedule --in 2h --topic orders --payload x --attr novalue
  assert_refused 1 attr D schedule --in 2h --topic orders --payload x --attr AWS.reserved=1
  assert_refused 1 attr D schedule --in 2h --topic orders --payload x --attr 'sp ace=1'
  assert_refused 1 attr D schedule --in 2h --topic orders --payload x --attr empty=
  assert_refused 1 attr D schedule --in 2h --topic orders --payload x --attr a=1 --attr a=2
  assert_refused 1 attr D schedule --in 2h --topic orders --payload x \
    --attr a=1 --attr b=1 --attr c=1 --attr d=1 --attr e=1 --attr f=1 --attr g=1 --attr h=1 --attr i=1 --attr j=1 --attr k=1
  assert_refused 1 id D schedule --in 2h --topic orders --payload x --id "$(head -c 513 /dev/zero | tr '\0' i)"
  assert_refused 1 id D schedule --in 2h --topic orders --payload x --id $'\xff'
  assert_refused 1 id D schedule --in 2h --topic orders --payload x --id ''
  # Usage errors: exit 100.
  assert_refused 100 topic D schedule --in 2h --payload x
  assert_refused 100 payload D schedule --in 2h --topic orders
  assert_refused 100 at D schedule --topic orders --payload x
  assert_refused 100 at D schedule --at 1 --in 1h --topic orders --payload x
  assert_refused 100 --bogus D schedule --in 2h --topic orders --payload x --bogus
  assert_refused 100 --in D schedule --topic orders --payload x --in
}

test_other_refused() {
  assert_refused 1 state D list --state BOGUS
  assert_refused 1 limit D list --limit 0
  assert_refused 1 since D list --since 5q
  assert_refused 1 from D list --from yesterday
  assert_refused 1 cursor D list --cursor 'not!a!cursor'
  assert_refused 1 topic D list --topic nosuch
  assert_refused 100 since D list --since 1d --from 2026-01-01T00:00:00Z
  assert_refused 100 --nope D stats --nope
  assert_refused 1 state D retry --state NEW
  assert_refused 100 id D retry
  assert_refused 3 id D retry no-such-id
  assert_refused 100 id D get
  assert_refused 100 extra D get a extra
  assert_refused 3 id D get no-such-id
  assert_refused 1 topic D init --topic 'bad name!'
  assert_refused 100 prefix "$BIN/delayer" --prefix 'bad prefix' list
  assert_refused 100 DELAYER_WINDOW env DELAYER_WINDOW=901s "$BIN/delayer" --prefix "$PFX" list
  assert_refused 111 prefix "$BIN/delayer" --prefix "${PFX}nope" list
  assert_refused 100 frobnicate D frobnicate
}

. /usr/share/shunit2/shunit2
