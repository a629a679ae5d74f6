#!/usr/bin/env bash
# test_publish_limits: what SNS counts and allows, and the end of a
# published message's life.
#  - The size limit: SNS counts the body plus every message attribute's
#    name, DataType and value (delayer.id, delayer.due, delayer.attempt
#    included) in its 262,144 bytes. The CLI refuses the payload of the old
#    "documented limit" (262,144 bytes alone), and the largest payload it
#    accepts is published. fauxqs does not check this size, so the limit is
#    checked at the input, by arithmetic the unit tests pin down.
#  - Attributes: SNS delivers at most 10; delayer's own three always go, so
#    a schedule may carry 7; the 8th, and names starting "delayer.", are
#    refused; a schedule with 7 arrives with delayer.id and all of its own.
#  - A DeleteMessageBatch entry that fails (a fault proxy turns it into a
#    Failed entry) is retried with the same receipt handle, so the message
#    is published once; a permanent failure is logged and counted.
. "$(dirname "$0")/../lib/suite.sh"
PFX=$(new_prefix)
TDIR=$(mktemp -d "${TMPDIR:-/tmp}/delayer-pl.XXXXXX")
EP="ipc://$TDIR/publish.sock"
MAX=262144
DRAIN_PID=
PUB_PID=
PROXY_PID=

oneTimeSetUp() {
  suite_up t || return 1
  DELAY_URL=$(queue_url "$PFX-delay") || return 1
  # Short: without the fix, an undeleted message comes back within seconds.
  sqs SetQueueAttributes "{\"QueueUrl\":\"$DELAY_URL\",\"Attributes\":{\"VisibilityTimeout\":\"8\"}}" >/dev/null || return 1
  TOPIC=$(topic_arn t) || return 1
  SUB_URL=$(sub_queue "$PFX-sub" "$TOPIC") || return 1
}

oneTimeTearDown() {
  stop_all
  [ -n "${KEEP_TDIR:-}" ] || rm -rf -- "$TDIR"
  suite_down
}

setUp() {
  : >"$TDIR/delivered"
  : >"$TDIR/publish.log"
}

tearDown() {
  stop_all
  check_stage_logs "$TDIR" keep
}

# ------------------------------------------------------------ helpers

# wait_for S CMD...: runs CMD every 0.2 s until it succeeds (0) or S seconds
# of wall time passed (1): a deadline, however long each CMD takes.
wait_for() {
  local end=$((SECONDS + $1))
  shift
  while :; do
    "$@" && return 0
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.2
  done
}

# atmax ID NATTRBYTES: the largest payload of a schedule with this id and
# NATTRBYTES bytes of attributes of its own (name + "String" + value each):
# 262,144 less delayer's attributes: delayer.id (the id), delayer.due (24
# bytes), delayer.attempt (room for 19 digits).
atmax() { echo $((MAX - (10 + 6 + ${#1}) - (11 + 6 + 24) - (15 + 6 + 19) - ${2:-0})); }

# collect: what the subscribed queue holds, appended to $TDIR/delivered as
# one JSON object a line: {"attrs": {name: value}, "len": body bytes}.
collect() {
  python3 - "$BIN/aws-call" "$SUB_URL" >>"$TDIR/delivered" <<'EOF'
import json, subprocess, sys
call, url = sys.argv[1], sys.argv[2]
def aws(op, body):
    r = subprocess.run([call, "sqs", op, json.dumps(body)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)
while True:
    msgs = aws("ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0,
                                  "MessageAttributeNames": ["All"]}).get("Messages", [])
    if not msgs:
        break
    for m in msgs:
        a = {k: v.get("StringValue", "") for k, v in m.get("MessageAttributes", {}).items()}
        print(json.dumps({"attrs": a, "len": len(m["Body"].encode())}))
    aws("DeleteMessageBatch", {"QueueUrl": url, "Entries": [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                          for i, m in enumerate(msgs)]})
EOF
}
delivered_count() { collect; grep -c '' "$TDIR/delivered"; }
delivered_at_least() { [ "$(delivered_count)" -ge "$1" ]; }
# delivered_of ID: the deliveries of schedule ID (by delayer.id)
delivered_of() { grep -F "\"delayer.id\": \"$1\"" "$TDIR/delivered"; }
# first_of ID: its first delivery
first_of() { delivered_of "$1" | head -1; }

queue_depth() {
  sqs GetQueueAttributes "{\"QueueUrl\":\"$1\",\"AttributeNames\":[\"All\"]}" | python3 -c '
import json, sys
a = json.load(sys.stdin)["Attributes"]
print(sum(int(a.get(k, 0)) for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")))'
}
queue_empty() { [ "$(queue_depth "$DELAY_URL")" = 0 ]; }

start_drain() {
  "$BIN/sqs-drain" --prefix "$PFX" --out "$EP" --wait 1 2>>"$TDIR/drain.log" &
  DRAIN_PID=$!
}
# start_publish [ENV=VALUE...]: sns-publish, with these variables set
start_publish() {
  env "$@" "$BIN/sns-publish" --prefix "$PFX" --in "$EP" --out - >/dev/null 2>>"$TDIR/publish.log" &
  PUB_PID=$!
}

# proxy_start ARGS: tests/lib/faultproxy.py in front of the local servers
proxy_start() {
  PPORT=$(free_port)
  PROXY="http://127.0.0.1:$PPORT"
  PSTATS="$TDIR/proxy-stats.json"
  rm -f "$PSTATS"
  python3 "$REPO/tests/lib/faultproxy.py" "$PPORT" "$AWS_ENDPOINT_URL_DYNAMODB" "$AWS_ENDPOINT_URL_SQS" "$PSTATS" "$@" \
    >"$TDIR/proxy.out" 2>&1 &
  PROXY_PID=$!
  wait_for 60 grep -q listening "$TDIR/proxy.out" || fail "proxy did not start: $(cat "$TDIR/proxy.out")"
}
# pstat EXPR: a Python expression over the proxy's stats dict s
pstat() { python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$PSTATS" "$1" 2>/dev/null; }
pstat_at_least() { [ "$(pstat "$1")" -ge "$2" ] 2>/dev/null; }

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
stop_all() {
  [ -n "$DRAIN_PID" ] && stop "$DRAIN_PID"
  [ -n "$PUB_PID" ] && stop "$PUB_PID"
  [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
  DRAIN_PID= PUB_PID= PROXY_PID=
}

# ------------------------------------------------------------ tests

# The payload the docs once gave as the limit (256 KiB alone) was accepted,
# then refused by SNS five times: now the CLI and import refuse it at once,
# one line naming the payload and the limit for this schedule.
test_cli_refuses_the_old_documented_limit() {
  head -c "$MAX" /dev/zero | tr '\0' A >"$TDIR/old-max"
  assert_refused 1 payload D schedule --id old-max --in 2h --topic t --payload "@$TDIR/old-max"
  assertContains "the limit given" "$ERR" "at most $(atmax old-max) allowed"
  head -c "$(atmax new-max)" /dev/zero | tr '\0' A >"$TDIR/new-max"
  run D schedule --id new-max --in 2h --topic t --payload "@$TDIR/new-max"
  assertEquals "the largest payload accepted ($ERR)" 0 "$RC"
  python3 -c 'import json; print(json.dumps({"id": "imp-old-max", "in": 7200, "topic": "t", "payload": "A" * 262144}))' |
    D import >/dev/null 2>"$TDIR/imp.err"
  assertEquals "import: the old limit refused" 1 "$(grep -c '^line 1: payload: 262144 bytes, at most' "$TDIR/imp.err")"
}

# 7 attributes of one's own at most; the 8th is refused, as is a name of
# delayer's, on the command line and in an import.
test_attribute_count_and_names_refused() {
  local a=() i
  for i in 1 2 3 4 5 6 7 8; do a+=(--attr "k$i=v$i"); done
  assert_refused 1 attr D schedule --in 2h --topic t --payload x "${a[@]}"
  assertContains "the limit named" "$ERR" "8 attributes, at most 7 allowed"
  assert_refused 1 attr D schedule --in 2h --topic t --payload x --attr delayer.id=forged
  assertContains "the prefix named" "$ERR" "reserved for delayer's own attributes"
  python3 -c 'import json; print(json.dumps({"in": 7200, "topic": "t", "payload": "x", "attrs": {"k%d" % i: "v" for i in range(8)}}))' |
    D import >/dev/null 2>"$TDIR/imp.err"
  assertEquals "import: 8 attributes refused" 1 "$(grep -c '^line 1: attr: 8 attributes, at most 7' "$TDIR/imp.err")"
}

# The largest schedules accepted arrive whole: 7 attributes of its own plus
# delayer.id, delayer.due and delayer.attempt; and a payload filled up to
# the limit with those 7 attributes.
test_largest_schedules_arrive_with_delayer_id() {
  local a=() i ub=0
  for i in 1 2 3 4 5 6 7; do
    a+=(--attr "key$i=value$i")
    ub=$((ub + 4 + 6 + 6))
  done
  D schedule --id max-attrs --in 2s --topic t --payload "seven attributes" "${a[@]}" >/dev/null || fail "schedule max-attrs"
  head -c "$(atmax max-both "$ub")" /dev/zero | tr '\0' B >"$TDIR/max-both"
  run D schedule --id max-both --in 2s --topic t --payload "@$TDIR/max-both" "${a[@]}"
  assertEquals "largest payload with 7 attributes accepted ($ERR)" 0 "$RC"
  start_publish
  start_drain
  wait_for 60 delivered_at_least 2 || fail "delivered: $(grep -c '' "$TDIR/delivered") of 2"
  local m
  for id in max-attrs max-both; do
    m=$(first_of "$id")
    assertNotNull "$id delivered with delayer.id" "$m"
    python3 - "$m" "$id" <<'EOF' || fail "$id: attributes delivered: $m"
import json, sys
m, id = json.loads(sys.argv[1]), sys.argv[2]
a = m["attrs"]
want = {"key%d" % i: "value%d" % i for i in range(1, 8)}
assert len(a) == 10, len(a)
assert a["delayer.id"] == id and a["delayer.attempt"] == "1" and a["delayer.due"].endswith("Z")
assert all(a.get(k) == v for k, v in want.items())
EOF
  done
  assertEquals "max-both body length" "$(atmax max-both "$ub")" "$(first_of max-both | python3 -c 'import json,sys; print(json.load(sys.stdin)["len"])')"
  assertEquals "max-both PUBLISHED" PUBLISHED "$(json_field "$(D get max-both)" state)"
}

# A record created under the old limits (10 attributes of its own, written
# here straight into the table with its content hash, and its SQS message):
# sns-publish sends delayer.id, delayer.due, delayer.attempt and 7 of the
# record's, leaving out the excess with a warning, never delayer's own.
test_old_record_with_too_many_attributes_keeps_delayer_id() {
  D schedule --id legacy --in 3s --topic t --payload "old record" >/dev/null || fail "schedule legacy"
  "$BIN/aws-call" dynamodb GetItem "{\"TableName\":\"$PFX-schedules\",\"Key\":{\"id\":{\"S\":\"legacy\"}},\"ConsistentRead\":true}" |
    python3 -c '
import hashlib, json, struct, sys
table, url = sys.argv[1], sys.argv[2]
it = json.load(sys.stdin)["Item"]
attrs = {"k%02d" % i: "v%d" % i for i in range(1, 11)}
# the content hash, as docs/schema.md "Writing schedules from another service" gives it
h = hashlib.sha256()
for f in [b"delayer-chash-v1", it["due"]["N"].encode(), it["topic"]["S"].encode(), it["payload"]["S"].encode(),
          str(len(attrs)).encode()] + [x for k in sorted(attrs) for x in (k.encode(), attrs[k].encode())]:
    h.update(struct.pack(">Q", len(f)) + f)
chash = h.hexdigest()
upd = {"TableName": table, "Key": {"id": {"S": "legacy"}}, "UpdateExpression": "SET attrs = :a, chash = :c",
       "ExpressionAttributeValues": {":a": {"M": {k: {"S": v} for k, v in attrs.items()}}, ":c": {"S": chash}}}
body = {"id": "legacy", "due": int(it["due"]["N"]), "topic": it["topic"]["S"], "payload": it["payload"]["S"],
        "attrs": attrs, "chash": chash, "lease": int(it.get("lease", {"N": "0"})["N"])}
print(json.dumps(upd))
print(json.dumps({"QueueUrl": url, "MessageBody": json.dumps(body), "DelaySeconds": 0}))' "$PFX-schedules" "$DELAY_URL" >"$TDIR/legacy.json"
  sed -n 1p "$TDIR/legacy.json" | "$BIN/aws-call" dynamodb UpdateItem - >/dev/null || fail "update legacy"
  sed -n 2p "$TDIR/legacy.json" | sqs SendMessage - >/dev/null || fail "send legacy"
  start_publish
  start_drain
  wait_for 60 delivered_at_least 1 || fail "legacy not delivered"
  local m
  m=$(first_of legacy)
  assertNotNull "delivered with delayer.id" "$m"
  python3 -c '
import json, sys
a = json.loads(sys.argv[1])["attrs"]
assert len(a) == 10, len(a)
assert a["delayer.id"] == "legacy" and a["delayer.attempt"] == "1" and a["delayer.due"].endswith("Z")
assert sorted(k for k in a if not k.startswith("delayer.")) == ["k%02d" % i for i in range(1, 8)]' "$m" ||
    fail "attributes delivered: $m"
  grep -q 'level=warn.*msg="too many user attributes.*id=legacy dropped=3' "$TDIR/publish.log" || fail "no warning logged"
  assertEquals "PUBLISHED" PUBLISHED "$(json_field "$(D get legacy)" state)"
}

# A DeleteMessageBatch entry answered Failed (InternalError, SenderFault
# false) after the publish: sns-publish tries it again with the same
# receipt handle, so the message does not come back and is published once.
# (Before: logged and forgotten; 8 s later the message came back and was
# published a second time.)
test_failed_delete_entry_is_retried() {
  proxy_start --fail-delete 1
  D schedule --id del-retry --in 2s --topic t --payload "delete me once" >/dev/null || fail "schedule"
  start_publish AWS_ENDPOINT_URL_SQS="$PROXY" AWS_ENDPOINT_URL_SNS="$PROXY"
  start_drain
  wait_for 60 pstat_at_least 's["delete_failed"]' 1 || fail "no delete entry failed: $(cat "$PSTATS")"
  # Empty: deleted for good (nothing in flight could come back).
  wait_for 90 queue_empty || fail "delay queue not empty: $(queue_depth "$DELAY_URL")"
  wait_for 30 delivered_at_least 1 || fail "not delivered"
  assertEquals "published once" 1 "$(delivered_of del-retry | grep -c '')"
  assertEquals "one receipt handle, deleted twice (the retry)" "[2]" "$(pstat 'sorted(s["delete_tries"].values())')"
  grep -q 'msg="delete failed: trying again".*code=InternalError' "$TDIR/publish.log" || fail "no retry logged"
}

# A permanent failure (ReceiptHandleIsInvalid) is not retried: logged as
# such and counted.
test_permanent_delete_failure_is_logged() {
  proxy_start --fail-delete-permanent 1
  D schedule --id del-perm --in 2s --topic t --payload "delete me" >/dev/null || fail "schedule"
  start_publish AWS_ENDPOINT_URL_SQS="$PROXY" AWS_ENDPOINT_URL_SNS="$PROXY"
  start_drain
  wait_for 60 grep -q 'msg="delete failed permanently' "$TDIR/publish.log" || fail "no permanent failure logged"
  grep -q 'level=error.*msg="delete failed permanently.*code=ReceiptHandleIsInvalid' "$TDIR/publish.log" ||
    fail "the code is not in the log line"
  assertEquals "not retried" 0 "$(grep -c 'msg="delete failed: trying again"' "$TDIR/publish.log")"
  # The message comes back when its visibility runs out: published again
  # (what a consumer de-duplicates on delayer.id), then deleted.
  wait_for 90 queue_empty || fail "delay queue not empty: $(queue_depth "$DELAY_URL")"
}

. /usr/share/shunit2/shunit2
