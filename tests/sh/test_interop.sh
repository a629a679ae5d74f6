#!/usr/bin/env bash
# test_interop: what delayer writes is plain DynamoDB JSON (and plain SQS
# message bodies) that an independent client reads: the `aws` CLI (awscli
# 1.x, botocore) first on PATH, and boto3's TypeDeserializer. The reverse
# too: an item written by the aws CLI in the documented format is a
# schedule delayer reads and cancels.
. "$(dirname "$0")/../lib/suite.sh"
PFX=$(new_prefix)
ID=$'inter"op #1: \'x\'\nline2'
PAYLOAD=$'{"order": 42, "note": "caf\xc3\xa9 \\"quoted\\"\\n"}\nsecond line'

oneTimeSetUp() {
  suite_up orders || return 1
  D schedule --in 3h --topic orders --payload "$PAYLOAD" --attr kind=order --attr region=eu-west-1 --id "$ID" >/dev/null || return 1
  KEY=$(python3 -c 'import json,sys; print(json.dumps({"id": {"S": sys.argv[1]}}))' "$ID")
  ITEM=$(aws dynamodb get-item --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" --table-name "$PFX-schedules" \
         --key "$KEY" --consistent-read --output json)
}

oneTimeTearDown() {
  suite_down
}

# py EXPR: evaluates EXPR with it = the aws CLI's Item (DynamoDB JSON).
py() { python3 -c "import json,sys; it=json.loads(sys.argv[1])['Item']; print($1)" "$ITEM"; }

test_item_types_are_plain_dynamodb_json() {
  assertNotNull "aws CLI found the item" "$ITEM"
  local want='attempts:N attrs:M chash:S created:N due:N due_pk:S due_sk:S hist:L id:S payload:S psize:N st_pk:S st_sk:S state:S topic:S updated:N'
  assertEquals "attribute names and types" "$want" "$(py '" ".join(sorted(k+":"+list(v)[0] for k,v in it.items()))')"
  assertEquals "attrs are M of S" "kind:S region:S" "$(py '" ".join(sorted(k+":"+list(v)[0] for k,v in it["attrs"]["M"].items()))')"
  assertEquals "hist is L of M{s:S,t:N}" "s:S t:N" "$(py '" ".join(sorted(k+":"+list(v)[0] for k,v in it["hist"]["L"][0]["M"].items()))')"
}

test_values_match_delayer_get() {
  local got
  got=$(D get "$ID" --payload)
  assertEquals "id verbatim" "$ID" "$(py 'it["id"]["S"]')"
  assertEquals "payload verbatim" "$PAYLOAD" "$(py 'it["payload"]["S"]')"
  assertEquals "psize in bytes" "$(printf '%s' "$PAYLOAD" | wc -c)" "$(py 'it["psize"]["N"]')"
  assertEquals NEW "$(py 'it["state"]["S"]')"
  assertEquals "$(json_field "$got" due_ms)" "$(py 'it["due"]["N"]')"
  assertEquals "$(json_field "$got" topic)" "$(py 'it["topic"]["S"]')"
  assertEquals eu-west-1 "$(py 'it["attrs"]["M"]["region"]["S"]')"
  assertEquals "64 hex digits" 64 "$(py 'len(it["chash"]["S"])')"
  assertEquals "due_sk = 13-digit due # id" "True" "$(py 'it["due_sk"]["S"] == "%013d#%s" % (int(it["due"]["N"]), it["id"]["S"])')"
  assertEquals "due_pk = minute # shard" "True" "$(py 'it["due_pk"]["S"].split("#")[0] == str(int(it["due"]["N"]) // 60000)')"
}

test_boto3_deserializes_it() {
  local out
  out=$(python3 - "$ITEM" <<'PY'
import json, sys
from boto3.dynamodb.types import TypeDeserializer
it = json.loads(sys.argv[1])["Item"]
d = TypeDeserializer()
rec = {k: d.deserialize(v) for k, v in it.items()}
print(rec["state"], int(rec["due"]) > 0, sorted(rec["attrs"]), rec["hist"][0]["s"], type(rec["payload"]).__name__)
PY
)
  assertEquals "NEW True ['kind', 'region'] NEW str" "$out"
}

test_indexes_queryable_by_any_client() {
  local stpk n duepk
  stpk=$(py 'it["st_pk"]["S"]')
  n=$(aws dynamodb query --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" --table-name "$PFX-schedules" --index-name by_state \
      --key-condition-expression 'st_pk = :p' --expression-attribute-values "{\":p\":{\"S\":\"$stpk\"}}" \
      --query 'Items[].id.S' --output json)
  assertContains "by_state index" "$n" "inter"
  duepk=$(py 'it["due_pk"]["S"]')
  n=$(aws dynamodb query --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" --table-name "$PFX-schedules" --index-name due \
      --key-condition-expression 'due_pk = :p' --expression-attribute-values "{\":p\":{\"S\":\"$duepk\"}}" \
      --query 'Items[0].state.S' --output text)
  assertEquals "due index projects state" NEW "$n"
  n=$(aws dynamodb describe-time-to-live --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" --table-name "$PFX-schedules" \
      --query 'TimeToLiveDescription.[TimeToLiveStatus,AttributeName]' --output text)
  assertEquals "TTL on expires" "ENABLED	expires" "$n"
  n=$(aws dynamodb get-item --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" --table-name "$PFX-meta" \
      --key '{"k":{"S":"stat#NEW"}}' --query 'Item.n.N' --output text)
  assertEquals "counter item" 1 "$n"
}

test_item_written_by_aws_cli_is_a_schedule() {
  local now due arn item
  now=$(($(date +%s%N) / 1000000))
  due=$((now + 7200000))
  arn=$(py 'it["topic"]["S"]')
  item=$(python3 - "$now" "$due" "$arn" <<'PY'
import json, sys
now, due, arn = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
import datetime
iso = datetime.datetime.fromtimestamp(now / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (now % 1000)
print(json.dumps({
  "id": {"S": "from-cli"}, "state": {"S": "NEW"}, "due": {"N": str(due)}, "topic": {"S": arn},
  "payload": {"S": "hi"}, "psize": {"N": "2"}, "attrs": {"M": {}}, "chash": {"S": "0" * 64},
  "created": {"N": str(now)}, "updated": {"N": str(now)}, "attempts": {"N": "0"},
  "hist": {"L": [{"M": {"s": {"S": "NEW"}, "t": {"N": str(now)}}}]},
  "st_pk": {"S": "NEW#" + iso[:7]}, "st_sk": {"S": iso + "#from-cli"}}))
PY
)
  aws dynamodb put-item --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" --table-name "$PFX-schedules" --item "$item"
  run D get from-cli --payload
  assertEquals 0 "$RC"
  assertEquals hi "$(json_field "$OUT" payload)"
  assertContains "listed" "$(D list --state NEW)" '"id":"from-cli"'
  assertEquals from-cli "$(D cancel from-cli)"
  assertEquals CANCELLED "$(aws dynamodb get-item --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" --table-name "$PFX-schedules" \
    --key '{"id":{"S":"from-cli"}}' --query 'Item.state.S' --output text)"
}

test_sqs_body_is_the_wire_form() {
  local q body
  D schedule --in 0s --topic orders --payload "$PAYLOAD" --attr kind=now --id wire-1 >/dev/null
  q=$(aws sqs get-queue-url --endpoint-url "$AWS_ENDPOINT_URL_SQS" --queue-name "$PFX-delay" --query QueueUrl --output text)
  body=$(aws sqs receive-message --endpoint-url "$AWS_ENDPOINT_URL_SQS" --queue-url "$q" --wait-time-seconds 3 \
         --query 'Messages[0].Body' --output text)
  assertEquals "wire fields" "attrs chash due id lease payload topic" \
    "$(python3 -c 'import json,sys; print(" ".join(sorted(json.loads(sys.argv[1]))))' "$body")"
  assertEquals "$PAYLOAD" "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["payload"])' "$body")"
  assertEquals "$(D get wire-1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["due_ms"])')" \
    "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["due"])' "$body")"
}

. /usr/share/shunit2/shunit2
