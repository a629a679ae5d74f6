#!/usr/bin/env bash
# shunit2 suite for scripts/local-aws and tests/lib/stack.sh.
# Starts its OWN stack (never the shared one) on free ports with a temporary
# state folder. Tests run in file order and build on each other.

# shellcheck disable=SC2034,SC2030,SC2031  # variables read by shunit2 / stack.sh; subshell-local on purpose
SHUNIT_COLOR=none
HERE=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd -P -- "$HERE/../.." && pwd -P)
LOCAL_AWS=$REPO/scripts/local-aws
# shellcheck source=tests/lib/stack.sh
. "$REPO/tests/lib/stack.sh"

# Debian's grep warns that egrep (used by shunit2 2.1.8) is obsolescent.
egrep() { grep -E "$@"; }

# la ARGS: local-aws against this suite's own stack.
la() {
  LOCAL_AWS_DIR=$T_DIR LOCAL_AWS_DDB_PORT=$T_DDB LOCAL_AWS_SQS_PORT=$T_SQS \
    LOCAL_AWS_TIMEOUT=30 "$LOCAL_AWS" "$@"
}

# ddb ARGS: the aws CLI (awscli 1.x, first on PATH) against our DynamoDB only.
ddb() {
  AWS_ACCESS_KEY_ID=localtestkey AWS_SECRET_ACCESS_KEY=local-test-secret \
    AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
    AWS_EC2_METADATA_DISABLED=true \
    aws --endpoint-url "http://127.0.0.1:$T_DDB" --output text dynamodb "$@"
}

# gone PID: the process has exited (a zombie waiting for its reaper counts).
gone() {
  local _ s
  for _ in $(seq 1 30); do
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    [ "${s%% *}" = Z ] && return 0
    sleep 0.1
  done
  return 1
}

sqs_list_queues() {
  curl -s --noproxy '*' --max-time 5 -X POST "http://127.0.0.1:$1/" \
    -H 'Content-Type: application/x-amz-json-1.0' \
    -H 'X-Amz-Target: AmazonSQS.ListQueues' -d '{}'
}

oneTimeSetUp() {
  T_DIR=$(mktemp -d "${TMPDIR:-/tmp}/local-aws-test.XXXXXX")
  T_DDB=$(free_port)
  T_SQS=$(free_port)
  while [ "$T_SQS" = "$T_DDB" ]; do T_SQS=$(free_port); done
  T_OUT=$T_DIR/out
  mkdir -p "$T_OUT"
}

oneTimeTearDown() {
  if [ -n "${T_DIR:-}" ] && [ -d "$T_DIR" ]; then
    la stop >/dev/null 2>&1
    rm -rf -- "$T_DIR"
  fi
}

test_start_waits_until_ready() {
  local t0 t1 rc
  t0=$(date +%s%N)
  la start >"$T_OUT/start" 2>&1
  rc=$?
  t1=$(date +%s%N)
  assertEquals "start exit status ($(cat "$T_OUT/start"))" 0 "$rc"
  echo "  (start took $(((t1 - t0) / 1000000)) ms)"
  # Both answer real requests right after start returns.
  assertContains "DynamoDB answers ListTables" "$(ddb list-tables --output json 2>&1)" '"TableNames"'
  assertContains "fauxqs answers ListQueues" "$(sqs_list_queues "$T_SQS")" '"QueueUrls"'
  assertTrue "ddb pid file" "[ -s '$T_DIR/ddb.pid' ]"
  assertTrue "sqs pid file" "[ -s '$T_DIR/sqs.pid' ]"
  assertTrue "logs in the state folder" "[ -f '$T_DIR/ddb.log' ] && [ -f '$T_DIR/sqs.log' ]"
}

test_fauxqs_is_loopback_only() {
  # ss lists listening sockets; fauxqs must be on 127.0.0.1 only.
  local lines
  if ! command -v ss >/dev/null; then
    startSkipping
    assertTrue true
    endSkipping
    return
  fi
  lines=$(ss -Hltn "sport = :$T_SQS" 2>/dev/null)
  assertContains "$lines" "127.0.0.1:$T_SQS"
  assertNotContains "$lines" "0.0.0.0:$T_SQS"
  assertNotContains "$lines" "*:$T_SQS"
}

test_start_again_is_idempotent() {
  local p1 p2 rc
  p1=$(cat "$T_DIR/ddb.pid" "$T_DIR/sqs.pid")
  la start >"$T_OUT/start2" 2>&1
  rc=$?
  assertEquals "second start exit status" 0 "$rc"
  assertContains "$(cat "$T_OUT/start2")" "already running"
  p2=$(cat "$T_DIR/ddb.pid" "$T_DIR/sqs.pid")
  assertEquals "same PIDs" "$p1" "$p2"
}

test_status_reports_both() {
  local out rc
  out=$(la status)
  rc=$?
  assertEquals 0 "$rc"
  assertContains "$out" "dynamodb: running pid $(cat "$T_DIR/ddb.pid") port $T_DDB"
  assertContains "$out" "fauxqs: running pid $(cat "$T_DIR/sqs.pid") port $T_SQS"
  assertEquals "one line per server" 2 "$(printf '%s\n' "$out" | wc -l)"
}

test_env_prints_expected_lines() {
  local out
  out=$(la env)
  assertEquals "env exit status" 0 $?
  assertContains "$out" "export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$T_DDB"
  assertContains "$out" "export AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$T_SQS"
  assertContains "$out" "export AWS_ENDPOINT_URL_SNS=http://127.0.0.1:$T_SQS"
  assertContains "$out" "export AWS_REGION=us-east-1"
  assertContains "$out" "export AWS_DEFAULT_REGION=us-east-1"
  assertContains "$out" "export AWS_ACCESS_KEY_ID=localtestkey"
  assertContains "$out" "export AWS_SECRET_ACCESS_KEY=local-test-secret"
  assertContains "$out" "export AWS_EC2_METADATA_DISABLED=true"
  assertContains "$out" "unset AWS_SESSION_TOKEN AWS_PROFILE"
  # It evaluates cleanly and the AWS CLI then reaches our DynamoDB.
  local tables
  tables=$(
    AWS_SESSION_TOKEN=stale AWS_PROFILE=nope
    eval "$out"
    [ -z "${AWS_SESSION_TOKEN+x}${AWS_PROFILE+x}" ] || echo "not unset"
    AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
      aws --endpoint-url "$AWS_ENDPOINT_URL_DYNAMODB" --output json dynamodb list-tables 2>&1
  )
  assertContains "$tables" '"TableNames"'
  assertNotContains "$tables" "not unset"
}

test_port_taken_fails_clearly() {
  local d rc out
  d=$(mktemp -d "${TMPDIR:-/tmp}/local-aws-test2.XXXXXX")
  out=$(LOCAL_AWS_DIR=$d LOCAL_AWS_DDB_PORT=$T_DDB LOCAL_AWS_SQS_PORT=$(free_port) \
    "$LOCAL_AWS" start 2>&1)
  rc=$?
  assertEquals 111 "$rc"
  assertContains "$out" "port $T_DDB"
  assertContains "$out" "already in use"
  assertFalse "no pid file left" "[ -e '$d/ddb.pid' ] || [ -e '$d/sqs.pid' ]"
  rm -rf -- "$d"
}

test_ddb_data_survives_stop_start() {
  ddb create-table --table-name survivor_t \
    --attribute-definitions AttributeName=pk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH \
    --billing-mode PAY_PER_REQUEST >"$T_OUT/create" 2>&1
  assertEquals "create-table ($(cat "$T_OUT/create"))" 0 $?
  ddb put-item --table-name survivor_t --item '{"pk":{"S":"k1"},"v":{"S":"hello"}}' >/dev/null 2>&1
  assertEquals "put-item" 0 $?
  la stop >/dev/null 2>&1
  assertEquals "stop" 0 $?
  la start >"$T_OUT/start3" 2>&1
  assertEquals "restart ($(cat "$T_OUT/start3"))" 0 $?
  assertContains "$(ddb list-tables 2>&1)" "survivor_t"
  assertContains "$(ddb get-item --table-name survivor_t --key '{"pk":{"S":"k1"}}' 2>&1)" "hello"
}

test_reset_wipes_data() {
  local old new
  old=$(cat "$T_DIR/ddb.pid")
  la reset >"$T_OUT/reset" 2>&1
  assertEquals "reset ($(cat "$T_OUT/reset"))" 0 $?
  new=$(cat "$T_DIR/ddb.pid" 2>/dev/null)
  assertNotEquals "restarted with a new pid" "$old" "$new"
  assertTrue "running again after reset" "la status >/dev/null"
  assertNotContains "$(ddb list-tables 2>&1)" "survivor_t"
}

test_stop_ends_exactly_its_pids() {
  local pd ps bystander rc
  pd=$(cat "$T_DIR/ddb.pid")
  ps=$(cat "$T_DIR/sqs.pid")
  sleep 300 &
  bystander=$!
  la stop >"$T_OUT/stop" 2>&1
  rc=$?
  assertEquals "stop ($(cat "$T_OUT/stop"))" 0 "$rc"
  assertTrue "dynamodb pid $pd is gone" "gone $pd"
  assertTrue "fauxqs pid $ps is gone" "gone $ps"
  assertTrue "an unrelated process survives" "kill -0 $bystander"
  assertFalse "pid files removed" "[ -e '$T_DIR/ddb.pid' ] || [ -e '$T_DIR/sqs.pid' ]"
  kill "$bystander" 2>/dev/null
  wait "$bystander" 2>/dev/null
  la status >/dev/null
  assertEquals "status after stop" 1 $?
}

test_second_stop_is_noop() {
  local out
  out=$(la stop 2>&1)
  assertEquals 0 $?
  assertEquals "" "$out"
}

test_stop_spares_a_foreign_pid() {
  # A stale pid file naming some other process: stop must not signal it.
  local victim
  sleep 300 &
  victim=$!
  echo "$victim" >"$T_DIR/ddb.pid"
  echo "$victim" >"$T_DIR/sqs.pid"
  la stop >/dev/null 2>&1
  assertEquals 0 $?
  assertTrue "foreign process still alive" "kill -0 $victim"
  assertFalse "stale pid files removed" "[ -e '$T_DIR/ddb.pid' ] || [ -e '$T_DIR/sqs.pid' ]"
  kill "$victim" 2>/dev/null
  wait "$victim" 2>/dev/null
  return 0
}

test_unknown_subcommand_exits_100() {
  local err
  err=$("$LOCAL_AWS" frobnicate 2>&1 >/dev/null)
  assertEquals 100 $?
  assertContains "$err" "usage: local-aws"
  assertEquals "one line" 1 "$(printf '%s\n' "$err" | wc -l)"
  "$LOCAL_AWS" >/dev/null 2>&1
  assertEquals "no subcommand" 100 $?
  "$LOCAL_AWS" --help >/dev/null 2>&1
  assertEquals "--help" 0 $?
}

test_stack_helper_reuses_a_shared_stack() {
  (
    DELAYER_STACK_READY=1
    AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:1
    AWS_ENDPOINT_URL_SQS=http://127.0.0.1:2
    AWS_ENDPOINT_URL_SNS=http://127.0.0.1:2
    STACK_OWNED=0 STACK_DIR=
    stack_start || exit 1
    [ "$STACK_OWNED" = 0 ] && [ -z "$STACK_DIR" ] || exit 2
    [ "$AWS_ENDPOINT_URL_DYNAMODB" = http://127.0.0.1:1 ] || exit 3
    stack_stop || exit 4
    [ "$AWS_ENDPOINT_URL_SQS" = http://127.0.0.1:2 ] || exit 5
  )
  assertEquals "reuse without starting anything" 0 $?
}

test_stack_helper_starts_and_stops_its_own() {
  local out
  out=$(
    unset DELAYER_STACK_READY AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_SNS
    STACK_OWNED=0 STACK_DIR=
    stack_start || { echo "start failed"; exit 1; }
    [ "$STACK_OWNED" = 1 ] && [ -d "$STACK_DIR" ] || echo "not owned"
    [ "$AWS_ENDPOINT_URL_DYNAMODB" = "http://127.0.0.1:$STACK_DDB_PORT" ] || echo "bad ddb endpoint"
    [ "$AWS_ENDPOINT_URL_SQS" = "http://127.0.0.1:$STACK_SQS_PORT" ] || echo "bad sqs endpoint"
    sqs_list_queues "$STACK_SQS_PORT" | grep -q QueueUrls || echo "fauxqs not answering"
    dir=$STACK_DIR
    pids=$(cat "$dir/ddb.pid" "$dir/sqs.pid")
    stack_stop || echo "stop failed"
    [ ! -e "$dir" ] || echo "state dir left"
    for p in $pids; do gone "$p" || echo "pid $p alive"; done
    [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ] || echo "endpoint still set"
    echo ok
  )
  assertEquals "ok" "$out"
}

# shellcheck source=/dev/null
. /usr/share/shunit2/shunit2
