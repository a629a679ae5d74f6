#!/usr/bin/env bash
# Bad input everywhere: every stage that reads records (sqs-push,
# sns-publish, state-update) on stdin and on its ZeroMQ input, sqs-drain on
# its queue, and the CLI, given malformed, truncated and concatenated JSON,
# non-UTF-8, a 5 MB line, wrong types, missing fields, absurd times,
# duplicate ids, payloads at the size limit and one byte over. Each bad
# record: one logfmt error line naming the field, rejected (INVALID in the
# table when it names a schedule that exists), the process keeps running,
# and a good record sent after the bad ones is still processed.
. "$(dirname "$0")/../lib/stack.sh"
. "$(dirname "$0")/../lib/cli.sh"
. "$(dirname "$0")/../lib/aws.sh"

ZCAT="$UNIT/zpipe-cat"
MAX=262144 # SNS's limit: payload + attributes (lib/sched.h SCHED_MSG_MAX)
# atmax ID: the largest payload a schedule with this id and no attributes of
# its own may have: MAX less delayer's attributes, name + "String" + value:
# delayer.id (the id), delayer.due (24 bytes), delayer.attempt (19 digits).
atmax() { echo $((MAX - (10 + 6 + ${#1}) - (11 + 6 + 24) - (15 + 6 + 19))); }

oneTimeSetUp() {
  stack_start || fail "stack"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/delayer-bad.XXXXXX")
  chmod 700 "$WORK"
  PFX=$(new_prefix)
  export DELAYER_PREFIX=$PFX DELAYER_WINDOW=5s
  D init --topic t >/dev/null || fail "init"
  TOPIC=$(json_field "$(D schedule --id probe --in 10m --topic t --payload x --json)" topic)
}

oneTimeTearDown() {
  [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null
  stack_stop
  cli_cleanup
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}

# corpus TAG: the bad lines, for a stage whose existing schedules are TAG-ex*
# (they must end INVALID where the stage reports invalid records).
corpus() {
  python3 - "$1" "$TOPIC" "$MAX" <<'PY'
import json, sys
tag, topic, mx = sys.argv[1], sys.argv[2], int(sys.argv[3])
H = "0" * 64
def w(**k):
    r = {"id": tag + "-x", "due": 1795000000000, "topic": topic, "payload": "x", "attrs": {}, "chash": H, "lease": 1}
    r.update(k)
    return json.dumps({a: b for a, b in r.items() if b is not None}).encode()
L = [
    b'{"id":"' + tag.encode() + b'-t","due":',                      # truncated
    b'not json at all',                                              # malformed
    b'{"id":"c1"}{"id":"c2"}',                                       # concatenated
    b'{"id":"\xff\xfe","due":1}',                                    # non-UTF-8
    b'{"id":"' + tag.encode() + b'-huge","payload":"' + b'A' * (5 << 20) + b'"}',  # 5 MB line
    w(id=tag + "-ex1", due="soon", topic=5),                         # wrong types
    w(id=tag + "-ex2", due=None, chash=None),                        # missing fields
    w(id=tag + "-ex3", due=1e30),                                    # absurd time
    w(id=tag + "-ex4", chash="zz"),                                  # bad hash
    w(id=tag + "-ex5", payload="A" * (mx + 1)),                      # one byte over
    b'[1,2,3]', b'"str"', b'null', b'{}',
]
sys.stdout.buffer.write(b"\n".join(L) + b"\n")
PY
}

# existing TAG: schedules TAG-ex1..5 (NEW) the bad records name
existing() {
  local i
  for i in 1 2 3 4 5; do D schedule --id "$1-ex$i" --in 10m --topic t --payload x >/dev/null || fail "schedule $1-ex$i"; done
}

# expect_invalid TAG N: TAG-ex1..N are INVALID
expect_invalid() {
  local i st
  for i in $(seq "$2"); do
    st=$(json_field "$(D get "$1-ex$i")" state)
    assertEquals "$1-ex$i recorded INVALID" INVALID "$st"
  done
}

# check_log FILE STAGE: the errors name the problem, one line each
check_log() {
  local f=$1 s
  for s in 'truncated JSON' 'unexpected character' 'unexpected data after the value' \
    'due: expected an integer' 'chash: expected 64' 'not a JSON object'; do
    grep "level=error" "$f" | grep -q "stage=$2.*$s" || fail "$2: no error line with '$s' in $(grep -c level=error "$f") error lines"
  done
  # every error line is one logfmt line of this stage (no multi-line dumps)
  assertEquals "$2: non-logfmt lines on stderr" 0 "$(grep -cv '^ts=' "$f")"
}

# a genuine wire record for sqs-push: a claim made by the scanner
claim_of() { # claim_of ID
  D schedule --id "$1" --in 100s --topic t --payload "good $1" >/dev/null
  "$BIN/ddb-scan-due" --once --window 200s --out - 2>/dev/null | grep "\"id\":\"$1\""
}

# a genuine record for sns-publish: a fast-tracked schedule as sqs-drain hands it on
drained_of() { # drained_of ID
  D schedule --id "$1" --in 2s --topic t --payload "good $1" >/dev/null
  # --visibility 0: the queue's timeout; the record is published a while
  # later, after the bad ones (the default 2 s would have run out)
  timeout -s TERM 5 "$BIN/sqs-drain" --wait 1 --visibility 0 --out - 2>/dev/null | grep -m1 "\"id\":\"$1\""
}

# zmq_run TOOL INPUT_FILE OUT ERR ARGS...: the tool on @ipc, the input sent
# by zpipe-cat, then the tool must still be alive; stopped with SIGTERM.
zmq_run() {
  local tool=$1 in=$2 out=$3 err=$4 ep="ipc://$WORK/in.ipc"
  shift 4
  rm -f "$WORK/in.ipc"
  "$BIN/$tool" --in "@$ep" --out - "$@" >"$out" 2>"$err" &
  SPID=$!
  for _ in $(seq 50); do grep -q 'msg=ready' "$err" && break; sleep 0.1; done
  "$ZCAT" --in - --out ">$ep" --send-timeout 10s <"$in" 2>"$WORK/zcat.err" || fail "zpipe-cat: $(tail -2 "$WORK/zcat.err")"
}
zmq_wait() { # zmq_wait FILE PATTERN: the tool's output shows PATTERN within 20 s
  for _ in $(seq 200); do grep -q "$2" "$1" && return 0; sleep 0.1; done
  return 1
}
zmq_stop() {
  kill -0 "$SPID" 2>/dev/null
  assertTrue "still running after the bad input" $?
  kill -TERM "$SPID"; wait "$SPID"; SPID=
}

sqs_push_case() { # MODE
  local tag="sp$1" good
  existing "$tag"
  corpus "$tag" >"$WORK/$tag.in"
  good=$(claim_of "$tag-good")
  assertNotNull "a claim to push" "$good"
  # a payload exactly at the limit (a valid record, pushed) and the good one twice (a duplicate)
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["id"]=sys.argv[2]; r["payload"]="B"*int(sys.argv[3]); print(json.dumps(r))' \
    "$good" "$tag-atmax" "$(atmax "$tag-atmax")" >>"$WORK/$tag.in"
  printf '%s\n%s\n' "$good" "$good" >>"$WORK/$tag.in"
  if [ "$1" = stdin ]; then
    "$BIN/sqs-push" --in - --out - <"$WORK/$tag.in" >"$WORK/$tag.out" 2>"$WORK/$tag.err"
    assertEquals "sqs-push exit status: rejected input" 1 $?
    grep -q 'msg="input line too long, skipped"' "$WORK/$tag.err" || fail "sqs-push: no line-too-long error"
  else
    zmq_run sqs-push "$WORK/$tag.in" "$WORK/$tag.out" "$WORK/$tag.err"
    zmq_wait "$WORK/$tag.out" "\"id\":\"$tag-good\".*\"report\":\"pushed\"" || fail "good record not pushed"
    for _ in $(seq 200); do [ "$(grep -c "\"id\":\"$tag-good\".*\"report\":\"pushed\"" "$WORK/$tag.out")" -ge 2 ] && break; sleep 0.1; done   # the duplicate too
    zmq_stop
  fi
  check_log "$WORK/$tag.err" sqs-push
  grep -q "id=$tag-ex5 error=\"payload: $((MAX + 1)) bytes" "$WORK/$tag.err" || fail "sqs-push: over-limit payload not named"
  assertEquals "good record pushed twice (duplicate accepted)" 2 "$(grep -c "\"id\":\"$tag-good\".*\"report\":\"pushed\"" "$WORK/$tag.out")"
  assertEquals "at-limit payload pushed" 1 "$(grep -c "\"id\":\"$tag-atmax\".*\"report\":\"pushed\"" "$WORK/$tag.out")"
  assertEquals "invalid reports for the existing ids" 5 "$(grep -c "\"id\":\"$tag-ex.\",\"report\":\"invalid\"" "$WORK/$tag.out")"
  # the reports go to state-update, which records INVALID
  "$BIN/state-update" --in - --out - <"$WORK/$tag.out" >"$WORK/$tag.su" 2>"$WORK/$tag.su.err"
  expect_invalid "$tag" 5
}
test_sqs_push_stdin() { sqs_push_case stdin; }
test_sqs_push_zeromq() { sqs_push_case zmq; }

sns_publish_case() {
  local tag="pb$1" good
  corpus "$tag" >"$WORK/$tag.in"
  good=$(drained_of "$tag-good")
  assertNotNull "a drained record to publish" "$good"
  printf '%s\n' "$good" >>"$WORK/$tag.in"
  if [ "$1" = stdin ]; then
    "$BIN/sns-publish" --in - --out - <"$WORK/$tag.in" >"$WORK/$tag.out" 2>"$WORK/$tag.err"
    assertEquals "sns-publish exit status: rejected input" 1 $?
    grep -q 'msg="input line too long, skipped"' "$WORK/$tag.err" || fail "sns-publish: no line-too-long error"
  else
    zmq_run sns-publish "$WORK/$tag.in" "$WORK/$tag.out" "$WORK/$tag.err"
    zmq_wait "$WORK/$tag.out" "\"id\":\"$tag-good\".*\"report\":\"published\"" || fail "good record not published"
    zmq_stop
  fi
  check_log "$WORK/$tag.err" sns-publish
  # records without an SQS message (mid, rh) are refused whatever they hold
  grep -q 'no SQS message.*id='"$tag"'-ex5' "$WORK/$tag.err" || fail "sns-publish: record without mid/rh not refused by id"
  assertEquals "good record published" 1 "$(grep -c "\"id\":\"$tag-good\".*\"report\":\"published\"" "$WORK/$tag.out")"
  assertEquals "good record PUBLISHED" PUBLISHED "$(json_field "$(D get "$tag-good")" state)"
}
test_sns_publish_stdin() { sns_publish_case stdin; }
test_sns_publish_zeromq() { sns_publish_case zmq; }

state_update_case() {
  local tag="su$1"
  existing "$tag"
  D schedule --id "$tag-good" --in 10m --topic t --payload x >/dev/null
  {
    corpus "$tag"
    echo '{"id":"'"$tag"'-ex1","report":"bogus"}'
    echo '{"report":"invalid","error":"x"}'
    echo '{"id":"'"$tag"'-nosuch","report":"invalid","error":"x"}'
    echo '{"id":"'"$tag"'-good","report":"invalid","error":"payload: test"}'
    echo '{"id":"'"$tag"'-good","report":"invalid","error":"payload: test"}' # duplicate
  } >"$WORK/$tag.in"
  if [ "$1" = stdin ]; then
    "$BIN/state-update" --in - --out - --flush 100ms <"$WORK/$tag.in" >"$WORK/$tag.out" 2>"$WORK/$tag.err"
    assertEquals "state-update exit status: rejected input" 1 $?
    grep -q 'msg="input line too long, skipped"' "$WORK/$tag.err" || fail "state-update: no line-too-long error"
  else
    zmq_run state-update "$WORK/$tag.in" "$WORK/$tag.out" "$WORK/$tag.err" --flush 100ms
    zmq_wait "$WORK/$tag.out" "\"id\":\"$tag-good\".*\"result\":\"unchanged\"" || fail "duplicate report not answered"
    zmq_stop
  fi
  for s in 'truncated JSON' 'unexpected data after the value' 'report: missing' 'report: not one of' 'id: missing'; do
    grep level=error "$WORK/$tag.err" | grep -q "$s" || fail "state-update: no error line with '$s'"
  done
  assertEquals "state-update: non-logfmt lines on stderr" 0 "$(grep -cv '^ts=' "$WORK/$tag.err")"
  grep -q "\"id\":\"$tag-nosuch\".*\"result\":\"unchanged\"" "$WORK/$tag.out" || fail "unknown id not answered"
  assertEquals "good report applied once" 1 "$(grep -c "\"id\":\"$tag-good\".*\"result\":\"applied\"" "$WORK/$tag.out")"
  assertEquals "good report recorded" INVALID "$(json_field "$(D get "$tag-good")" state)"
  assertEquals "the ex ids untouched by bad reports" NEW "$(json_field "$(D get "$tag-ex1")" state)"
}
test_state_update_stdin() { state_update_case stdin; }
test_state_update_zeromq() { state_update_case zmq; }

# sqs-drain's input is the queue: bodies that are not schedule records
test_sqs_drain_bad_messages() {
  local url b
  url=$("$BIN/aws-call" sqs GetQueueUrl "{\"QueueName\":\"$PFX-delay\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["QueueUrl"])')
  D schedule --id dr-ex1 --in 10m --topic t --payload x >/dev/null
  for b in 'garbage' '{"id":"dr-ex1","due":"soon"}' '{"id":"dr-x"}{"id":"y"}' "$(printf '\xff\xfe')"; do
    python3 -c 'import json,sys; print(json.dumps({"QueueUrl":sys.argv[1],"MessageBody":sys.argv[2]}))' "$url" "$b" 2>/dev/null |
      "$BIN/aws-call" sqs SendMessage - >/dev/null 2>&1 # SQS itself refuses some bytes
  done
  D schedule --id dr-good --in 2s --topic t --payload x >/dev/null
  timeout -s TERM 5 "$BIN/sqs-drain" --wait 1 --out - >"$WORK/dr.out" 2>"$WORK/dr.err"
  assertEquals "sqs-drain ran until stopped" 124 $?
  grep -q '"id":"dr-good"' "$WORK/dr.out" || fail "good message not drained"
  assertTrue "bodies rejected with an error line" "[ $(grep -c 'level=error.*msg="message body is not a schedule record"' "$WORK/dr.err") -ge 3 ]"
  grep -q '"id":"dr-ex1".*"report":"invalid".*"error":"due: expected an integer"' "$WORK/dr.out" || fail "no invalid report for dr-ex1"
  grep '"report":"invalid"' "$WORK/dr.out" | "$BIN/state-update" --in - --out - >/dev/null 2>&1
  assertEquals "dr-ex1 recorded INVALID" INVALID "$(json_field "$(D get dr-ex1)" state)"
}

test_cli_size_limit_and_bad_values() {
  head -c "$(atmax cli-atmax)" /dev/zero | tr '\0' A >"$WORK/atmax"
  head -c "$(($(atmax cli-over) + 1))" /dev/zero | tr '\0' A >"$WORK/over"
  run D schedule --in 10m --topic t --payload "@$WORK/atmax" --id cli-atmax
  assertEquals "payload of exactly $(atmax cli-atmax) bytes accepted ($ERR)" 0 "$RC"
  assert_refused 1 payload D schedule --in 10m --topic t --payload "@$WORK/over" --id cli-over
  assert_refused 1 topic D schedule --in 10m --topic nope --payload x
  assert_refused 1 at D schedule --at 2026-13-45T00:00:00Z --topic t --payload x
  assert_refused 1 at D schedule --at 99999999999999999999 --topic t --payload x
  assert_refused 1 at D schedule --at 1 --topic t --payload x
  assert_refused 1 at D schedule --at 2030-01-01T12:00:60Z --topic t --payload x # not a leap second
  assert_refused 1 payload D schedule --in 10m --topic t --payload "$(printf 'a\xffb')"
  # import: one line at the limit, one over, broken lines; the good ones all imported
  python3 - "$(atmax imp-atmax)" "$(atmax imp-over)" >"$WORK/imp.ndjson" <<'PY'
import json, sys
m, o = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps({"id": "imp-atmax", "in": 600, "topic": "t", "payload": "A" * m}))
print(json.dumps({"id": "imp-over", "in": 600, "topic": "t", "payload": "A" * (o + 1)}))
print('{"id":"imp-trunc","in":')
print('{"id":"imp-c1","in":600,"topic":"t","payload":"x"}{"id":"imp-c2"}')
print(json.dumps({"id": "imp-type", "in": "soon", "topic": "t", "payload": "x"}))
print(json.dumps({"id": "imp-topic", "in": 600, "topic": "nope", "payload": "x"}))
print(json.dumps({"id": "imp-absurd", "at": 10**30, "topic": "t", "payload": "x"}))
print(json.dumps({"id": "imp-missing", "in": 600, "topic": "t"}))
print(json.dumps({"id": "imp-good", "in": 600, "topic": "t", "payload": "x"}))
print(json.dumps({"id": "imp-good", "in": 600, "topic": "t", "payload": "other"}))
PY
  printf '{"id":"imp-utf","in":600,"topic":"t","payload":"\xff"}\n' >>"$WORK/imp.ndjson"
  run D import <"$WORK/imp.ndjson"
  assertEquals "import exit: some lines bad" 1 "$RC"
  assertEquals "one stderr line per bad line ($ERR)" 9 "$(printf '%s\n' "$ERR" | grep -c '^line [0-9]*: ')"
  printf '%s\n' "$ERR" | grep -q '^line 2: payload:' || fail "over-limit line not named: $ERR"
  assertEquals "at-limit imported" NEW "$(json_field "$(D get imp-atmax)" state)"
  assertEquals "good imported" NEW "$(json_field "$(D get imp-good)" state)"
  run D get imp-over
  assertEquals "over-limit not imported" 3 "$RC"
}

# Issue 10: `delayer import` holds at most the longest valid line (about
# 1.6 MB: the SNS limit for payload and attributes, JSON-escaped at 6 bytes
# a byte, plus id, topic and time). A 100 MB line, piped, is refused by its
# number without being buffered (peak RSS stays small: it was 987 MB for a
# 1 GB line), and the lines after it are imported; a line at the limit
# with the worst escaping (every payload byte \u0001) is still imported.
test_import_long_line_bounded() {
  local rss
  {
    echo '{"id":"lg-1","in":600,"topic":"t","payload":"one"}'
    printf '{"id":"lg-big","in":600,"topic":"t","payload":"'
    head -c 104857600 /dev/zero | tr '\0' A
    printf '"}\n'
    echo '{"id":"lg-3","in":600,"topic":"t","payload":"three"}'
    python3 -c 'import sys; sys.stdout.write("{\"id\":\"lg-esc\",\"in\":600,\"topic\":\"t\",\"payload\":\"" + "\\u0001" * int(sys.argv[1]) + "\"}\n")' "$(atmax lg-esc)"
    echo '{"id":"lg-5","in":600,"topic":"t","payload":"five"}'
  } | /usr/bin/time -f %M -o "$WORK/lg.rss" "$BIN/delayer" --prefix "$PFX" import >"$WORK/lg.out" 2>"$WORK/lg.err"
  assertEquals "import exit: one bad line ($(cat "$WORK/lg.err"))" 1 "$(sed -n 's/^Command exited with non-zero status //p' "$WORK/lg.rss")"
  rss=$(tail -1 "$WORK/lg.rss")
  # the line alone is 100 MB; the import takes 18 MB (49 MB with ASan)
  assertTrue "peak RSS ${rss} kB stays under 64 MB" "[ $rss -lt 65536 ]"
  assertEquals "one error line" 1 "$(grep -c '' "$WORK/lg.err")"
  grep -q '^line 2: line longer than [0-9]* bytes' "$WORK/lg.err" || fail "long line not named by its number: $(cat "$WORK/lg.err")"
  grep -q '^imported 4 ' "$WORK/lg.out" || fail "summary: $(cat "$WORK/lg.out")"
  local i
  for i in lg-1 lg-3 lg-esc lg-5; do
    assertEquals "$i imported" NEW "$(json_field "$(D get "$i")" state)"
  done
  run D get lg-big
  assertEquals "the long line not imported" 3 "$RC"
}

# Issue 10 (fast-track lateness): rows read by `delayer import` wait for
# more input at most 100 ms (500 ms in all) before they are written and
# fast-tracked. They waited for 100 lines or the end of the input, so a row
# due in 3 s behind a paused producer was sent late (or never in time).
test_import_paused_input_not_held() {
  local ipid i
  rm -f "$WORK/st.go"
  {
    echo '{"id":"st-1","in":"600s","topic":"t","payload":"x"}'
    while [ ! -e "$WORK/st.go" ]; do sleep 0.1; done
    echo '{"id":"st-2","in":"600s","topic":"t","payload":"y"}'
  } | "$BIN/delayer" --prefix "$PFX" import >"$WORK/st.out" 2>"$WORK/st.err" &
  ipid=$!
  for i in $(seq 50); do D get st-1 >/dev/null 2>&1 && break; sleep 0.1; done
  D get st-1 >/dev/null 2>&1
  assertTrue "st-1 written while the input is paused" $?
  touch "$WORK/st.go"
  wait "$ipid"
  assertEquals "import exit ($(cat "$WORK/st.err"))" 0 $?
  grep -q '^imported 2 ' "$WORK/st.out" || fail "summary: $(cat "$WORK/st.out")"
  assertEquals "st-2 imported" NEW "$(json_field "$(D get st-2)" state)"
}

# Issue 10: characters above U+FFFF (emoji) in a payload. fauxqs refuses
# them in SQS bodies (AWS accepts them), so the wire form carries them as
# \uXXXX surrogate pairs; the message published to SNS must be byte for
# byte what was scheduled, by each way into the delay queue: `schedule`'s
# fast track (SendMessage), `import`'s (SendMessageBatch) and the scanner's
# claim through sqs-push. Each ends PUBLISHED (it ended INVALID, or NEW
# with a warning, before).
test_payload_above_bmp_published_intact() {
  local p url i st arr
  p=$(printf 'hi \xF0\x9F\x98\x80\xF0\x9F\x8E\x89 \xF0\x9D\x84\x9E caf\xC3\xA9 \xE2\x82\xAC \xF4\x8F\xBF\xBF')
  url=$(sub_queue "$PFX-emoji" "$TOPIC") || fail "subscribe a queue"
  run D schedule --id emo-fast --in 3s --topic t --payload "$p"
  assertEquals "schedule exit ($ERR)" 0 "$RC"
  assertEquals "schedule: no warning" "" "$ERR"
  python3 -c 'import json,sys; print(json.dumps({"id":"emo-imp","in":"3s","topic":"t","payload":sys.argv[1]}, ensure_ascii=False))' \
    "$p" >"$WORK/emo.ndjson"
  run D import <"$WORK/emo.ndjson"
  assertEquals "import exit ($ERR)" 0 "$RC"
  assertEquals "import: no warning" "" "$ERR"
  assertEquals "fast-tracked" ENQUEUED "$(json_field "$(D get emo-fast)" state)"
  assertEquals "fast-tracked (import)" ENQUEUED "$(json_field "$(D get emo-imp)" state)"
  # the scanner's way: NEW (beyond the 5 s window), claimed, pushed
  D schedule --id emo-scan --in 7s --topic t --payload "$p" >/dev/null || fail "schedule emo-scan"
  "$BIN/ddb-scan-due" --once --window 200s --out - 2>"$WORK/emo.scan" | grep '"id":"emo-scan"' |
    "$BIN/sqs-push" --in - --out - >"$WORK/emo.push" 2>"$WORK/emo.push.err"
  grep -q '"report":"pushed"' "$WORK/emo.push" || fail "sqs-push: $(cat "$WORK/emo.push" "$WORK/emo.push.err")"
  rm -f "$WORK/emo.ipc"
  "$BIN/sqs-drain" --wait 1 --out "@ipc://$WORK/emo.ipc" 2>"$WORK/emo.drain" &
  local dpid=$!
  "$BIN/sns-publish" --in ">ipc://$WORK/emo.ipc" --out - >"$WORK/emo.pub" 2>"$WORK/emo.perr" &
  local ppid=$!
  for i in emo-fast emo-imp emo-scan; do
    for _ in $(seq 300); do grep -q "\"id\":\"$i\".*\"report\":\"published\"" "$WORK/emo.pub" && break; sleep 0.1; done
    grep -q "\"id\":\"$i\".*\"report\":\"published\"" "$WORK/emo.pub" || fail "$i not published: $(tail -3 "$WORK/emo.perr")"
  done
  kill -TERM "$dpid" "$ppid"
  wait "$dpid" "$ppid"
  for i in emo-fast emo-imp emo-scan; do
    st=$(json_field "$(D get "$i")" state)
    assertEquals "$i state" PUBLISHED "$st"
  done
  # what the subscribed queue received: exactly the payload, for each
  arr=$(for _ in 1 2 3 4 5 6 7 8 9 10; do
    sqs ReceiveMessage "{\"QueueUrl\":\"$url\",\"MaxNumberOfMessages\":10,\"WaitTimeSeconds\":1,\"MessageAttributeNames\":[\"All\"]}"
  done | python3 -c '
import json, sys
want = sys.argv[1].encode("utf-8", "surrogateescape")
seen = {}
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    for m in json.loads(line).get("Messages", []):
        i = m.get("MessageAttributes", {}).get("delayer.id", {}).get("StringValue")
        seen[i] = m["Body"].encode("utf-8") == want
print(" ".join(sorted(k for k, v in seen.items() if v)))' "$p")
  assertEquals "payloads delivered byte for byte" "emo-fast emo-imp emo-scan" "$arr"
}

. /usr/share/shunit2/shunit2
