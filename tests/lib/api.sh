# shellcheck shell=bash
# tests/lib/api.sh: helpers of the delayer-api suites (test_api,
# test_api_hostile). Source after suite.sh; define PFX first.
#
#   api_start NAME ARGS   delayer-api on a free loopback port (NAME_URL, NAME_PID)
#   req TOKEN METHOD PATH [CURL ARGS]   one request: ST, BODY, HDRS; recorded
#                         for the contract check (tests/lib/apicheck.py)
#   post_json TOKEN PATH JSON, jf KEY, err KEY, enc ID, header NAME,
#   assert_error STATUS CODE FIELD
#   oneTimeSetUp / oneTimeTearDown: the stack, tokens TA (admin), TW (write),
#   TR, TF, TX (read) in $TOK, server A (URL)
#   api_contract_check    every recorded response matches docs/api.yaml (and
#                         the check can fail); each of $API_STATUSES was seen
#   api_clean_stop_check  server A stops on SIGTERM with 0; no sanitizer
#                         report in any server log
# (shunit2 finds tests only in the suite file: suites call these two from
# their last tests, test_zz_* and test_zzz_*.)
# api_start NAME ARGS...: delayer-api on a free loopback port, plain HTTP;
# sets NAME_URL and NAME_PID; its log is $WORK/NAME.log
api_start() {
  local name=$1 port pid
  shift
  port=$(free_port) || return 1
  "$BIN/delayer-api" --prefix "$PFX" --listen "127.0.0.1:$port" --plain-http "$@" >"$WORK/$name.log" 2>&1 &
  pid=$!
  if ! wait_until 20 curl -sf -o /dev/null "http://127.0.0.1:$port/healthz"; then
    cat "$WORK/$name.log" >&2
    return 1
  fi
  printf -v "${name}_URL" '%s' "http://127.0.0.1:$port"
  printf -v "${name}_PID" '%s' "$pid"
}

api_stop() { kill "$1" 2>/dev/null && wait "$1" 2>/dev/null; }

# req TOKEN METHOD PATH [CURL ARGS...]: one request to $URL (or $REQ_URL);
# sets ST (status), BODY, HDRS and records the response for the contract check
NREQ=0
req() {
  local tok=$1 m=$2 p=$3 n auth=()
  shift 3
  NREQ=$((NREQ + 1))
  n=$NREQ
  [ -n "$tok" ] && auth=(-H "Authorization: Bearer $tok")
  ST=$(curl -s -g --path-as-is -o "$WORK/r$n.body" -D "$WORK/r$n.hdr" -w '%{http_code}' -X "$m" "${auth[@]}" "$@" "${REQ_URL:-$URL}$p")
  BODY=$(cat "$WORK/r$n.body")
  HDRS=$(cat "$WORK/r$n.hdr")
  case $ST in 000 | 1??) return ;; esac   # no final answer
  printf '%s\t%s\t%s\t%s\t%s\n' "$m" "$p" "$ST" "$WORK/r$n.body" "$WORK/r$n.hdr" >>"$WORK/responses.tsv"
}
post_json() { req "$1" POST "$2" -H 'Content-Type: application/json' --data-binary "$3"; }
# jf KEY: a top-level field of the body (jq -c: objects compact; null as "null")
jf() { printf '%s' "$BODY" | jq -rc --arg k "$1" '.[$k]'; }
# err KEY: code, field or message of the error body ("null" for null)
err() {
  printf '%s' "$BODY" | jq -r --arg k "$1" '.error[$k]' 2>/dev/null
}
enc() { jq -rn --arg v "$1" '$v | @uri'; }
header() { printf '%s\n' "$HDRS" | tr -d '\r' | sed -n "s/^$1: //Ip" | head -1; }

# assert_error STATUS CODE FIELD: the last response is that error
assert_error() {
  assertEquals "status of: $BODY" "$1" "$ST"
  assertEquals "code and field of: $BODY" "$2 $3" "$(printf '%s' "$BODY" | jq -r '"\(.error.code) \(.error.field)"' 2>/dev/null)"
}

oneTimeSetUp() {
  suite_up orders other || return 1
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/delayer-api.XXXXXX")
  TOK=$WORK/tokens
  TA=$("$BIN/delayer-api" --tokens "$TOK" --new-token admin:admin) || return 1
  TW=$("$BIN/delayer-api" --tokens "$TOK" --new-token writer:write)
  TR=$("$BIN/delayer-api" --tokens "$TOK" --new-token reader:read)
  TF=$("$BIN/delayer-api" --tokens "$TOK" --new-token flood:read)
  TX=$("$BIN/delayer-api" --tokens "$TOK" --new-token revokee:read)
  api_start A --tokens "$TOK" --rate 100 --burst 100 --request-timeout 3s --idle-timeout 2s --threads 4 || return 1
  URL=$A_URL
}

oneTimeTearDown() {
  [ -z "$A_PID" ] || api_stop "$A_PID"
  [ -n "${KEEP_WORK:-}" ] || rm -rf -- "$WORK"
  suite_down
}

api_contract_check() {
  local out n
  n=$(wc -l <"$WORK/responses.tsv")
  assertTrue "responses recorded: $n" "[ $n -ge $API_MIN_RESPONSES ]"
  out=$(python3 "$REPO/tests/lib/apicheck.py" "$REPO/docs/api.yaml" "$WORK/responses.tsv" 2>&1)
  assertTrue "$out" $?
  # the check can fail: a record without its state, an undocumented status
  local b
  b=$(grep -P '^POST\t/v1/schedules\t201\t' "$WORK/responses.tsv" | head -1 | cut -f4)
  sed 's/"state":"[A-Z]*",//' "$b" >"$WORK/doctored.body"
  printf 'POST\t/v1/schedules\t201\t%s\t%s\nGET\t/v1/stats\t418\t%s\t%s\n' "$WORK/doctored.body" "${b%.body}.hdr" \
    "$WORK/doctored.body" "${b%.body}.hdr" >"$WORK/doctored.tsv"
  out=$(python3 "$REPO/tests/lib/apicheck.py" "$REPO/docs/api.yaml" "$WORK/doctored.tsv" 2>&1)
  assertFalse "a doctored response passes" $?
  assertContains "$out" "'state' is a required property"
  assertContains "$out" "status 418 is not documented"
  # every documented status was met at least once
  local st
  for st in $API_STATUSES; do
    cut -f3 "$WORK/responses.tsv" | grep -qx "$st"
    assertTrue "no response with status $st" $?
  done
}

api_clean_stop_check() {
  kill "$A_PID"
  wait "$A_PID"
  assertEquals "exit status after SIGTERM" 0 $?
  A_PID=
  local f bad=
  for f in "$WORK"/*.log; do
    grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$f" && bad="$bad ${f##*/}"
  done
  assertEquals "sanitizer reports in:$bad" "" "$bad"
  [ -z "$bad" ] || cat "$WORK"/*.log
}

