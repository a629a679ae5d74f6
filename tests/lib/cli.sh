# shellcheck shell=bash
# tests/lib/cli.sh: helpers for the delayer CLI suites (source after stack.sh).
#
#   D ARGS...            bin/delayer --prefix "$PFX" ARGS...
#   HOOK OP ARGS...      the store hook (build/tests/test_store hook "$PFX" OP ...):
#                        runs one pipeline transition exactly as a stage would
#   run CMD...           runs CMD; sets RC, OUT (stdout), ERR (stderr)
#   table_count          items in "$PFX-schedules" (a Scan: tests only)
#   assert_refused CODE FIELD CMD...
#                        CMD exits CODE with exactly one stderr line starting
#                        "delayer: FIELD:", and the table is unchanged
#   json_field JSON KEY  prints a top-level field of a JSON object
#   (new_prefix, a fresh random deployment prefix, is in stack.sh)
REPO=${STACK_REPO:-$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)}
BIN=${DELAYER_BIN:-bin}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
UNIT=${DELAYER_UNIT:-build/tests}
case $UNIT in /*) ;; *) UNIT=$REPO/$UNIT ;; esac
export SHUNIT_COLOR=none
[ -x "$REPO/.tools/node/bin/node" ] && PATH="$REPO/.tools/node/bin:$PATH"

D() { "$BIN/delayer" --prefix "$PFX" "$@"; }
HOOK() { "$UNIT/test_store" hook "$PFX" "$@"; }

_CLI_ERRF=$(mktemp "${TMPDIR:-/tmp}/delayer-cli.XXXXXX")
run() {
  OUT=$("$@" 2>"$_CLI_ERRF")
  RC=$?
  ERR=$(cat "$_CLI_ERRF")
}

table_count() { HOOK count; }

assert_refused() {
  local code=$1 field=$2 before after lines
  shift 2
  before=$(table_count)
  run "$@"
  after=$(table_count)
  assertEquals "exit code of: $*" "$code" "$RC"
  lines=$(printf '%s' "$ERR" | grep -c '')
  assertEquals "one stderr line for: $* (got: $ERR)" 1 "$lines"
  case $ERR in
    "delayer: $field:"*) ;;
    *) fail "stderr of '$*' should start 'delayer: $field:', got: $ERR" ;;
  esac
  assertEquals "nothing written by: $*" "$before" "$after"
}

json_field() {
  python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print(v if not isinstance(v,(dict,list)) else json.dumps(v, sort_keys=True))' "$1" "$2"
}

cli_cleanup() { rm -f -- "$_CLI_ERRF"; }
