#!/usr/bin/env bash
# tests/sh/test_valgrind.sh: the tools run clean under valgrind memcheck
# (--leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99):
# no invalid read/write, no use of uninitialised memory, no definite leak.
#   - the delayer CLI through a short flow (init, schedule both ways, import,
#     get, list, stats, cancel, delete, refused input)
#   - the stages in short shell pipelines on the local stack:
#       ddb-scan-due --once | sqs-push | state-update
#       sqs-drain (stopped by SIGTERM) | sns-publish | state-update
#   - a CURVE pipe over tcp (zpipe-cat server with its ZAP thread + client)
#   - aws-call and delayer-keygen
# Every valgrind log is checked ("ERROR SUMMARY: 0"); a failure prints the
# first error. Binaries built with AddressSanitizer (make sanitize) cannot
# run under valgrind: the suite is then skipped (the plain run covers it).
. "$(dirname "$0")/../lib/suite.sh"
PFX=$(new_prefix)
SKIP_WHY=
VG=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99
    --show-leak-kinds=definite --num-callers=20 --trace-children=no)

oneTimeSetUp() {
  if ! command -v valgrind >/dev/null; then SKIP_WHY="valgrind not installed"; return 0; fi
  if ldd "$BIN/delayer" 2>/dev/null | grep -qE 'lib(a|ub)san' || nm "$BIN/delayer" 2>/dev/null | grep -q '__asan_init'; then
    SKIP_WHY="$BIN holds sanitizer builds (valgrind cannot run them; the plain build's run covers this)"
    return 0
  fi
  W=$(mktemp -d "${TMPDIR:-/tmp}/delayer-vg.XXXXXX") || return 1
  suite_up t || return 1
}

oneTimeTearDown() {
  [ -n "${W:-}" ] && [ -z "${KEEP_TDIR:-}" ] && rm -rf -- "$W"
  suite_down
}

setUp() {
  if [ -n "$SKIP_WHY" ]; then
    echo "SKIP: $SKIP_WHY"
    startSkipping
    fail "skipped: $SKIP_WHY"   # counted by shunit2 as skipped
  fi
}

N=0
# vg NAME CMD...: runs CMD under valgrind with its log in $W/NAME.N.vg;
# VRC is the exit status (99 = valgrind found errors).
vg() {
  local name=$1
  shift
  N=$((N + 1))
  "${VG[@]}" --log-file="$W/$name.$N.vg" "$@"
  VRC=$?
}

# check_logs: every valgrind log of this test must be clean.
check_logs() {
  local f bad=0
  for f in "$W"/*.vg; do
    [ -f "$f" ] || continue
    # -q: a clean run leaves an empty log
    if grep -qE 'Invalid (read|write|free)|uninitialised|definitely lost|ERROR SUMMARY: [1-9]|Syscall param|Mismatched free|overlap|Process terminating' "$f"; then
      fail "valgrind errors in $(basename "$f"):"
      head -40 "$f"
      bad=1
    fi
    mv "$f" "$f.done"
  done
  return $bad
}

vcli() { vg cli "$BIN/delayer" --prefix "$PFX" "$@"; }

test_cli_flow() {
  [ -n "$SKIP_WHY" ] && return 0
  vcli schedule --id vg-far --in 2h --topic t --payload far --attr k=v >/dev/null
  assertEquals "schedule (stored)" 0 "$VRC"
  vcli schedule --id vg-near --in 2s --topic t --payload near --attr k=v --json >/dev/null
  assertEquals "schedule (fast track)" 0 "$VRC"
  printf '%s\n' '{"id":"vg-imp","in":"2h","topic":"t","payload":"i"}' '{bad' |
    vg cli "$BIN/delayer" --prefix "$PFX" import >/dev/null 2>&1
  assertNotEquals "import ran (one bad line)" 99 "$VRC"
  vcli get vg-far >/dev/null
  assertEquals "get" 0 "$VRC"
  vcli list --state NEW,ENQUEUED --since 1h >/dev/null 2>&1
  assertEquals "list" 0 "$VRC"
  vcli stats >/dev/null
  assertEquals "stats" 0 "$VRC"
  vcli cancel vg-far >/dev/null
  assertEquals "cancel" 0 "$VRC"
  vcli delete vg-imp >/dev/null
  assertEquals "delete" 0 "$VRC"
  vcli schedule --id vg-bad --in 2h --topic nope --payload x >/dev/null 2>&1
  assertEquals "refused input: exit 1, not a memory error" 1 "$VRC"
  vcli get no-such-id >/dev/null 2>&1
  assertEquals "not found" 3 "$VRC"
  vcli --help >/dev/null
  vg aws "$BIN/aws-call" dynamodb DescribeTable "{\"TableName\":\"$PFX-meta\"}" >/dev/null
  assertEquals "aws-call" 0 "$VRC"
  vg keygen "$BIN/delayer-keygen" "$W/k.sec" "$W/k.pub"
  assertEquals "delayer-keygen" 0 "$VRC"
  check_logs
}

test_stages_pipeline() {
  [ -n "$SKIP_WHY" ] && return 0
  local t
  for t in ddb-scan-due sqs-push state-update sqs-drain sns-publish; do
    [ -x "$BIN/$t" ] || { fail "missing $BIN/$t"; return; }
  done
  local s1_due=$(( $(now_ms) + 1000 ))
  D schedule --id vg-s1 --in 1s --topic t --payload one >/dev/null 2>&1
  D schedule --id vg-s2 --at "$(date -u -d '+70 seconds' +%Y-%m-%dT%H:%M:%SZ)" --topic t --payload two >/dev/null
  # scanner -> pusher -> state-update, each under valgrind
  "${VG[@]}" --log-file="$W/scan.vg" "$BIN/ddb-scan-due" --prefix "$PFX" --once --window 15m --out - 2>"$W/scan.log" |
    "${VG[@]}" --log-file="$W/push.vg" "$BIN/sqs-push" --prefix "$PFX" --in - --out - 2>"$W/push.log" |
    "${VG[@]}" --log-file="$W/upd1.vg" "$BIN/state-update" --prefix "$PFX" --in - >"$W/upd1.out" 2>"$W/upd1.log"
  local rcs=("${PIPESTATUS[@]}")
  assertEquals "ddb-scan-due | sqs-push | state-update exit statuses" "0 0 0" "${rcs[*]}"
  grep -q 'vg-s2' "$W/push.log" "$W/scan.log" "$W/upd1.log" 2>/dev/null ||
    assertEquals "vg-s2 was claimed and pushed" ENQUEUED "$(json_field "$(D get vg-s2)" state)"
  until_ms $((s1_due + 500))   # vg-s1 is due: the drain below receives it
  # drain -> publish -> state-update; the drain is stopped by SIGTERM, the rest end at EOF
  # (--visibility 0: the queue's timeout; under valgrind a record may take
  # longer than the default 2 s to reach sns-publish)
  timeout --preserve-status -s TERM 12 "${VG[@]}" --log-file="$W/drain.vg" "$BIN/sqs-drain" --prefix "$PFX" --wait 1 --visibility 0 --out - 2>"$W/drain.log" |
    "${VG[@]}" --log-file="$W/pub.vg" "$BIN/sns-publish" --prefix "$PFX" --in - --out - 2>"$W/pub.log" |
    "${VG[@]}" --log-file="$W/upd2.vg" "$BIN/state-update" --prefix "$PFX" --in - >"$W/upd2.out" 2>"$W/upd2.log"
  rcs=("${PIPESTATUS[@]}")
  assertEquals "sqs-drain | sns-publish | state-update exit statuses" "0 0 0" "${rcs[*]}"
  assertEquals "vg-s1 published through the valgrind pipeline" PUBLISHED "$(json_field "$(D get vg-s1)" state)"
  check_logs
}

test_curve_pipe() {
  [ -n "$SKIP_WHY" ] && return 0
  local cat=$UNIT/zpipe-cat port
  [ -x "$cat" ] || { fail "missing $cat"; return; }
  "$BIN/delayer-keygen" "$W/s.key" "$W/s.pub" && "$BIN/delayer-keygen" "$W/c.key" "$W/c.pub" || return
  mkdir -p "$W/allow" && cp "$W/c.pub" "$W/allow/"
  port=$(free_port)
  "${VG[@]}" --log-file="$W/zsrv.vg" "$cat" --in "@tcp://127.0.0.1:$port" --out - --count 2 --idle 30s \
    --curve-secret "$W/s.key" --curve-allow "$W/allow" >"$W/zsrv.out" 2>"$W/zsrv.log" &
  local srv=$! _
  for _ in $(seq 1 100); do grep -q msg=ready "$W/zsrv.log" && break; sleep 0.1; done
  printf '{"a":1}\n{"b":2}\n' | "${VG[@]}" --log-file="$W/zcli.vg" "$cat" --in - --out ">tcp://127.0.0.1:$port" \
    --send-timeout 10s --curve-secret "$W/c.key" --curve-server-key "$W/s.pub" 2>"$W/zcli.log"
  assertEquals "client" 0 $?
  wait "$srv"
  assertEquals "server" 0 $?
  assertEquals "records" 2 "$(wc -l <"$W/zsrv.out")"
  check_logs
}

. /usr/share/shunit2/shunit2
