# shellcheck shell=bash
# tests/lib/suite.sh: the common start of a suite that runs delayer against
# the local AWS stack. Source it first thing:
#   . "$(dirname "$0")/../lib/suite.sh"
# It sources stack.sh, cli.sh and aws.sh (functions only, no traps) and
# changes to the repository root ($REPO).
#
#   suite_up TOPIC...    for oneTimeSetUp: stack_start, DELAYER_EVENTS=0 (the
#                        CLI's own lifecycle events stay off), then
#                        `delayer init` of "$PFX" with these topics; non-zero
#                        if any step failed
#   suite_down           for oneTimeTearDown: cli_cleanup and stack_stop
#   work_up NAME         for oneTimeSetUp of the suites that run the pipeline
#                        under the supervisor: stack_start (the test fails if
#                        it did not start), WORK a fresh scratch folder
#                        delayer-NAME.XXXXXX, DELAYER_BIN exported (the
#                        supervisor finds the tools by it)
#   work_down            for their oneTimeTearDown: suite_down, then removes
#                        WORK unless KEEP_WORK is set
#   now_ms               the time, ms since the epoch
#   wait_until S CMD...  runs CMD every 0.2 s until it succeeds (0) or S
#                        seconds passed (1)
#   until_ms MS          waits until the clock reaches MS (ms since the
#                        epoch): for a due time or an expiry to pass, no
#                        longer than needed (1 if MS is over 10 min away)
#   until_within MS ID...
#                        waits until every ID (its `due`) is due within MS
#                        (a scanner's window, less a margin)
#   attr ID NAME         the S/N value of attribute NAME in schedule ID's raw
#                        item ("" if absent), read through the store hook
#   check_stage_logs DIR [keep]
#                        for tearDown: fails the test for each DIR/*.log that
#                        holds a sanitizer report (DELAYER_BIN may point at an
#                        ASan/UBSan build) and prints the report; with "keep",
#                        then appends each log to LOG.all and removes it (so
#                        the next test starts with empty logs)
_SUITE_LIB=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
. "$_SUITE_LIB/stack.sh"
. "$_SUITE_LIB/cli.sh"
. "$_SUITE_LIB/aws.sh"
cd "$REPO" || exit 1

suite_up() {
  local t topics=()
  for t in "$@"; do topics+=(--topic "$t"); done
  stack_start || return 1
  export DELAYER_EVENTS=0
  D init "${topics[@]}" >/dev/null
}

suite_down() {
  cli_cleanup
  stack_stop
}

work_up() {
  stack_start || fail "stack"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/delayer-$1.XXXXXX")
  export DELAYER_BIN=$BIN
}

work_down() {
  suite_down
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

wait_until() {
  local t=$1 i
  shift
  for i in $(seq 1 $((t * 5))); do
    "$@" && return 0
    sleep 0.2
  done
  return 1
}

until_ms() {
  local t=$1
  [ $((t - $(now_ms))) -le 600000 ] || return 1
  while [ "$(now_ms)" -lt "$t" ]; do sleep 0.05; done
}

until_within() {
  local w=$1 id d m=0
  shift
  for id in "$@"; do
    d=$(attr "$id" due)
    [ "${d:-0}" -gt "$m" ] && m=$d
  done
  until_ms $((m - w))
}

attr() {
  HOOK item "$1" | python3 -c '
import json, sys
v = json.load(sys.stdin).get(sys.argv[1])
print("" if v is None else v.get("S", v.get("N", json.dumps(v))))' "$2"
}

check_stage_logs() {
  local f
  for f in "$1"/*.log; do
    [ -f "$f" ] || continue
    if grep -qE 'Sanitizer|runtime error:' "$f"; then
      fail "sanitizer report in $(basename "$f")"
      grep -E -A12 'Sanitizer|runtime error:' "$f" | head -40
    fi
    if [ "${2:-}" = keep ]; then
      cat "$f" >>"$f.all"
      rm -f "$f"
    fi
  done
}
