#!/usr/bin/env bash
# The README's first command (`scripts/setup && make demo`) from a fresh clone: installs what
# is missing, builds, starts its own local stack and the pipeline, and shows
# the demo schedules arriving on time. Then `scripts/demo stop`.
. "$(dirname "$0")/../lib/stack.sh"
. "$(dirname "$0")/../lib/cli.sh"

oneTimeSetUp() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/delayer-main.XXXXXX")
}

oneTimeTearDown() {
  if [ -d "$WORK/clone" ]; then
    (cd "$WORK/clone" && env LOCAL_AWS_DIR="$WORK/la" DELAYER_RUN_DIR="$WORK/run" scripts/demo stop >/dev/null 2>&1)
  fi
  cli_cleanup
  rm -rf "$WORK"
}

test_make_demo_from_a_fresh_clone() {
  case $BIN in *build-san*)
    startSkipping
    echo "the sanitizer run skips this (it builds its own plain clone; the plain run covers it)" ;;
  esac
  isSkipping && { assertTrue true; return; }
  git clone -q "$REPO" "$WORK/clone" || fail "clone"
  local out rc
  out=$(cd "$WORK/clone" && env -u AWS_ENDPOINT_URL_DYNAMODB -u AWS_ENDPOINT_URL_SQS -u AWS_ENDPOINT_URL_SNS \
        -u DELAYER_BIN -u DELAYER_STACK_READY \
        LOCAL_AWS_DIR="$WORK/la" LOCAL_AWS_DDB_PORT="$(free_port)" LOCAL_AWS_SQS_PORT="$(free_port)" \
        DELAYER_RUN_DIR="$WORK/run" DELAYER_PREFIX="$(new_prefix)" bash -c "scripts/setup && make demo" 2>&1)
  rc=$?
  assertEquals "make demo exit status; output tail: $(echo "$out" | tail -5)" 0 "$rc"
  local arrivals
  arrivals=$(echo "$out" | grep -cE '  due .*  late +\+[0-9]+ ms  ')
  assertEquals "six demo schedules arrived, none early; output: $(echo "$out" | tail -25)" 6 "$arrivals"
  echo "$out" | grep -q 'stored NEW: the scanner will claim it' || fail "no schedule went through the state table"
  echo "$out" | grep -q 'fast track' || fail "no schedule was fast-tracked"
  echo "$out" | grep -q 'scripts/demo stop' || fail "the demo does not say how to stop"
  (cd "$WORK/clone" && env LOCAL_AWS_DIR="$WORK/la" DELAYER_RUN_DIR="$WORK/run" scripts/demo stop >/dev/null 2>&1)
  assertEquals "demo stop leaves no stage running" 0 "$(pgrep -f "$WORK/clone/bin/" | wc -l)"
}

. /usr/share/shunit2/shunit2
