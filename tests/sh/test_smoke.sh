#!/usr/bin/env bash
# tests/sh/test_smoke.sh: the smoke round trip against the local AWS stack,
# every call made by bin/aws-call (the project's own signed, retrying client):
#   DynamoDB  create a table, put an item, read it back
#   SQS       send with DelaySeconds=2: invisible at once, delivered after the
#             delay, gone once deleted
#   SNS       topic -> raw subscription -> queue: a published message arrives
# plus aws-call's error reporting and exit statuses.
# Names carry a per-run suffix, so a shared stack (tests/run) is never reused
# by accident.
export SHUNIT_COLOR=none
REPO=$(cd -P -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/../.." && pwd -P)
cd "$REPO" || exit 1
BIN=${DELAYER_BIN:-bin}
AWS_CALL=$BIN/aws-call
SUFFIX="$$-$RANDOM"
# shellcheck source=../lib/stack.sh
. "$REPO/tests/lib/stack.sh"

oneTimeSetUp() {
  [ -x "$AWS_CALL" ] || { echo "missing $AWS_CALL (run make)" >&2; return 1; }
  command -v jq >/dev/null || { echo "jq is needed (scripts/setup installs it)" >&2; return 1; }
  stack_start
}

oneTimeTearDown() {
  stack_stop
}

# call SERVICE OP ARGS...: runs aws-call; OUT, ERR and RC hold its stdout,
# stderr and exit status.
call() {
  OUT=$("$AWS_CALL" "$@" 2>"$SHUNIT_TMPDIR/err")
  RC=$?
  ERR=$(cat "$SHUNIT_TMPDIR/err")
}

# must SERVICE OP ARGS...: call, and fail the test (status 1) unless it worked.
must() {
  call "$@"
  if [ "$RC" -ne 0 ]; then
    fail "aws-call $1 $2 exited $RC: $ERR"
    return 1
  fi
}

# xml_text NAME: the text of the first <NAME> element in $OUT (SNS replies).
xml_text() {
  printf '%s' "$OUT" | tr -d '\n' | sed -n "s:.*<$1>\([^<]*\)</$1>.*:\1:p"
}

# A queue for the test; its URL (exactly as the server returned it) in QURL.
make_queue() {
  must sqs CreateQueue "$(jq -nc --arg n "$1" '{QueueName: $n}')" || return 1
  QURL=$(printf '%s' "$OUT" | jq -er .QueueUrl) || { fail "no QueueUrl in: $OUT"; return 1; }
}

# receive QURL WAIT: one ReceiveMessage (up to 10 messages, all attributes).
receive() {
  must sqs ReceiveMessage "$(jq -nc --arg u "$1" --argjson w "$2" \
    '{QueueUrl: $u, MaxNumberOfMessages: 10, WaitTimeSeconds: $w,
      AttributeNames: ["All"], MessageAttributeNames: ["All"]}')"
}

# Number of messages in the last ReceiveMessage reply.
received_count() {
  printf '%s' "$OUT" | jq -r '(.Messages // []) | length'
}

now_ms() { date +%s%3N; }

test_dynamodb_put_get() {
  local table="smoke-$SUFFIX"
  must dynamodb CreateTable "$(jq -nc --arg t "$table" '{TableName: $t,
      AttributeDefinitions: [{AttributeName: "pk", AttributeType: "S"}],
      KeySchema: [{AttributeName: "pk", KeyType: "HASH"}],
      BillingMode: "PAY_PER_REQUEST"}')" || return
  assertEquals "table status" "ACTIVE" "$(printf '%s' "$OUT" | jq -r .TableDescription.TableStatus)"

  must dynamodb PutItem "$(jq -nc --arg t "$table" '{TableName: $t,
      Item: {pk: {S: "k1"}, v: {S: "hello é \"quoted\""}, n: {N: "42"}}}')" || return
  must dynamodb GetItem "$(jq -nc --arg t "$table" \
      '{TableName: $t, Key: {pk: {S: "k1"}}, ConsistentRead: true}')" || return
  assertEquals "value read back" 'hello é "quoted"' "$(printf '%s' "$OUT" | jq -r .Item.v.S)"
  assertEquals "number read back" "42" "$(printf '%s' "$OUT" | jq -r .Item.n.N)"

  must dynamodb GetItem "$(jq -nc --arg t "$table" '{TableName: $t, Key: {pk: {S: "nope"}}}')" || return
  assertEquals "missing item" "null" "$(printf '%s' "$OUT" | jq -c .Item)"

  # A failed condition is an error with DynamoDB's code, exit status 1.
  call dynamodb PutItem "$(jq -nc --arg t "$table" '{TableName: $t, Item: {pk: {S: "k1"}},
      ConditionExpression: "attribute_not_exists(pk)"}')"
  assertEquals "conditional put status" 1 "$RC"
  assertContains "conditional put error" "$ERR" "aws-call: ConditionalCheckFailedException: "

  must dynamodb DeleteTable "$(jq -nc --arg t "$table" '{TableName: $t}')"
}

test_sqs_delay_seconds() {
  local body="smoke delayed $SUFFIX" t0 waited
  make_queue "smoke-delay-$SUFFIX" || return
  t0=$(now_ms)
  must sqs SendMessage "$(jq -nc --arg u "$QURL" --arg b "$body" \
      '{QueueUrl: $u, MessageBody: $b, DelaySeconds: 2}')" || return
  assertNotNull "MessageId" "$(printf '%s' "$OUT" | jq -r '.MessageId // empty')"

  receive "$QURL" 0 || return
  assertEquals "delayed message visible at once" 0 "$(received_count)"

  # Long poll: the message shows up when its delay is over, not before.
  receive "$QURL" 10 || return
  waited=$(( $(now_ms) - t0 ))
  assertEquals "messages after the delay" 1 "$(received_count)"
  assertEquals "body" "$body" "$(printf '%s' "$OUT" | jq -r '.Messages[0].Body')"
  assertTrue "delivered after ${waited} ms, expected >= 1900" "[ $waited -ge 1900 ]"
  assertEquals "receive count" 1 "$(printf '%s' "$OUT" | jq -r '.Messages[0].Attributes.ApproximateReceiveCount')"

  local rh
  rh=$(printf '%s' "$OUT" | jq -r '.Messages[0].ReceiptHandle')
  must sqs DeleteMessage "$(jq -nc --arg u "$QURL" --arg r "$rh" '{QueueUrl: $u, ReceiptHandle: $r}')" || return
  # Deleted: not redelivered even with a zero visibility timeout.
  must sqs ReceiveMessage "$(jq -nc --arg u "$QURL" \
      '{QueueUrl: $u, WaitTimeSeconds: 1, VisibilityTimeout: 0}')" || return
  assertEquals "messages after delete" 0 "$(received_count)"

  must sqs DeleteQueue "$(jq -nc --arg u "$QURL" '{QueueUrl: $u}')"
}

test_sns_to_sqs_raw_delivery() {
  local msg="smoke via sns $SUFFIX <&>" topic qarn sub
  must sns CreateTopic "Name=smoke-$SUFFIX" || return
  topic=$(xml_text TopicArn)
  assertContains "topic ARN" "$topic" ":smoke-$SUFFIX"

  make_queue "smoke-sub-$SUFFIX" || return
  must sqs GetQueueAttributes "$(jq -nc --arg u "$QURL" '{QueueUrl: $u, AttributeNames: ["QueueArn"]}')" || return
  qarn=$(printf '%s' "$OUT" | jq -r '.Attributes.QueueArn // empty')
  assertContains "queue ARN" "$qarn" "arn:aws:sqs:"

  must sns Subscribe "TopicArn=$topic" Protocol=sqs "Endpoint=$qarn" ReturnSubscriptionArn=true \
    Attributes.entry.1.key=RawMessageDelivery Attributes.entry.1.value=true || return
  sub=$(xml_text SubscriptionArn)
  assertContains "subscription ARN" "$sub" "$topic:"

  must sns Publish "TopicArn=$topic" "Message=$msg" \
    MessageAttributes.entry.1.Name=kind MessageAttributes.entry.1.Value.DataType=String \
    MessageAttributes.entry.1.Value.StringValue=smoke || return
  assertNotNull "MessageId" "$(xml_text MessageId)"

  receive "$QURL" 5 || return
  assertEquals "messages through the subscription" 1 "$(received_count)"
  assertEquals "raw body" "$msg" "$(printf '%s' "$OUT" | jq -r '.Messages[0].Body')"
  assertEquals "message attribute" "smoke" \
    "$(printf '%s' "$OUT" | jq -r '.Messages[0].MessageAttributes.kind.StringValue')"

  must sns Unsubscribe "SubscriptionArn=$sub"
  must sns DeleteTopic "TopicArn=$topic"
  must sqs DeleteQueue "$(jq -nc --arg u "$QURL" '{QueueUrl: $u}')"
}

test_aws_call_errors() {
  call sqs GetQueueUrl '{"QueueName":"smoke-missing-'"$SUFFIX"'"}'
  assertEquals "missing queue status" 1 "$RC"
  assertContains "missing queue error" "$ERR" "aws-call: QueueDoesNotExist: "
  assertEquals "nothing on stdout" "" "$OUT"

  call sns GetTopicAttributes "TopicArn=arn:aws:sns:us-east-1:000000000000:smoke-missing-$SUFFIX"
  assertEquals "missing topic status" 1 "$RC"
  assertContains "missing topic error" "$ERR" "aws-call: NotFound: "

  call sqs
  assertEquals "usage status" 100 "$RC"
  call s3 ListBuckets
  assertEquals "unknown service status" 100 "$RC"
  call sns Publish notakeyvalue
  assertEquals "bad sns parameter status" 100 "$RC"
  call --version
  assertEquals "version status" 0 "$RC"
  assertContains "version" "$OUT" "aws-call "

  OUT=$(AWS_ENDPOINT_URL_SQS=http://192.0.2.1:9 "$AWS_CALL" sqs ListQueues 2>&1)
  assertEquals "plain http to a remote host refused" 111 "$?"
  assertContains "refusal reason" "$OUT" "http://"

  # Body from stdin.
  OUT=$(printf '{}' | "$AWS_CALL" sqs ListQueues - 2>&1)
  assertEquals "stdin body status" 0 "$?"

  # Credentials never appear in any output.
  local all
  all=$(AWS_SESSION_TOKEN=smokeSessionToken0123456789 "$AWS_CALL" sqs GetQueueUrl '{"QueueName":"x-'"$SUFFIX"'"}' 2>&1)
  assertNotContains "secret key leaked" "$all" "$AWS_SECRET_ACCESS_KEY"
  assertNotContains "session token leaked" "$all" "smokeSessionToken0123456789"
}

. /usr/share/shunit2/shunit2
