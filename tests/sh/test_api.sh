#!/usr/bin/env bash
# test_api: delayer-api against the real local stack, with curl as the
# client: every endpoint, every error status, hostile input (malformed JSON,
# wrong types, unknown fields, huge bodies and headers, slow clients, odd
# ids, missing/wrong/revoked tokens, a flood from one token, a token file
# others can read), and every response received is validated against
# docs/api.yaml (tests/lib/apicheck.py, the last test).
. "$(dirname "$0")/../lib/suite.sh"
PFX=$(new_prefix)

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
jf() { json_field "$BODY" "$1"; }
# err KEY: code, field or message of the error body ("null" for null)
err() {
  python3 -c 'import json,sys; v=json.loads(sys.argv[1])["error"][sys.argv[2]]; print("null" if v is None else v)' "$BODY" "$1"
}
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
header() { printf '%s\n' "$HDRS" | tr -d '\r' | sed -n "s/^$1: //Ip" | head -1; }

# assert_error STATUS CODE FIELD: the last response is that error
assert_error() {
  assertEquals "status of: $BODY" "$1" "$ST"
  assertEquals "code of: $BODY" "$2" "$(err code)"
  assertEquals "field of: $BODY" "$3" "$(err field)"
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

# ------------------------------------------------------------ endpoints

test_create_returns_201_with_location_and_get_returns_the_record() {
  post_json "$TW" /v1/schedules '{"in":"1h","topic":"orders","payload":"hello \"api\"","attrs":{"kind":"t"}}'
  assertEquals "$BODY" 201 "$ST"
  local id loc
  id=$(jf id)
  assertEquals "a ULID" 26 "${#id}"
  loc=$(header Location)
  assertEquals "/v1/schedules/$id" "$loc"
  assertEquals NEW "$(jf state)"
  req "$TR" GET "$loc"
  assertEquals 200 "$ST"
  assertEquals 'hello "api"' "$(jf payload)"
  assertEquals '{"kind": "t"}' "$(jf attrs)"
  assertContains "$(jf history)" '"state": "NEW"'
  # the CLI sees the same record
  assertEquals NEW "$(json_field "$(D get "$id")" state)"
  # at: RFC 3339 with milliseconds; a due time within the window is fast-tracked
  post_json "$TW" /v1/schedules "{\"at\":\"$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%S.123Z)\",\"topic\":\"orders\",\"payload\":\"soon\"}"
  assertEquals 201 "$ST"
  assertEquals ENQUEUED "$(jf state)"
}

test_same_id_same_content_is_200_other_content_is_409() {
  local at body
  at=$(date -u -d '+2 hours' +%Y-%m-%dT%H:%M:%S.000Z)
  body="{\"id\":\"idem-1\",\"at\":\"$at\",\"topic\":\"orders\",\"payload\":\"p\"}"
  post_json "$TW" /v1/schedules "$body"
  assertEquals 201 "$ST"
  post_json "$TW" /v1/schedules "$body"
  assertEquals "a retry: $BODY" 200 "$ST"
  assertEquals idem-1 "$(jf id)"
  assertEquals "" "$(header Location)"
  post_json "$TW" /v1/schedules "{\"id\":\"idem-1\",\"at\":\"$at\",\"topic\":\"orders\",\"payload\":\"other\"}"
  assert_error 409 id_conflict id
  assertEquals p "$(json_field "$(D get idem-1 --payload)" payload)"
}

test_cancel_then_409_naming_the_state() {
  post_json "$TW" /v1/schedules '{"id":"c-1","in":"1h","topic":"orders","payload":"x"}'
  req "$TW" DELETE /v1/schedules/c-1
  assertEquals "$BODY" 200 "$ST"
  assertEquals CANCELLED "$(jf state)"
  req "$TW" DELETE /v1/schedules/c-1
  assert_error 409 state_conflict state
  assertContains "$(err message)" "CANCELLED"
  req "$TW" DELETE /v1/schedules/no-such
  assert_error 404 not_found id
  req "$TR" DELETE /v1/schedules/c-1
  assert_error 403 forbidden null
}

test_retry_a_failed_schedule() {
  post_json "$TW" /v1/schedules '{"id":"r-1","in":"20s","topic":"orders","payload":"x"}'
  assertEquals "OK ENQUEUED" "$(HOOK fail r-1 'KMS.Throttled: slow down')"
  req "$TW" POST /v1/schedules/r-1:retry
  assertEquals "$BODY" 200 "$ST"
  assertEquals ENQUEUED "$(jf state)"
  assertEquals 'KMS.Throttled: slow down' "$(jf last_error)"
  req "$TW" POST /v1/schedules/r-1:retry
  assert_error 409 state_conflict state
  assertContains "$(err message)" "ENQUEUED"
  req "$TW" POST /v1/schedules/nope:retry
  assert_error 404 not_found id
}

test_record_deletion_needs_admin() {
  post_json "$TW" /v1/schedules '{"id":"d-1","in":"1h","topic":"orders","payload":"x"}'
  req "$TW" POST /v1/schedules/d-1:delete
  assert_error 403 forbidden null
  req "$TA" POST /v1/schedules/d-1:delete
  assertEquals "$BODY" 200 "$ST"
  assertEquals d-1 "$(jf id)"
  req "$TA" POST /v1/schedules/d-1:delete
  assert_error 404 not_found id
  req "$TA" GET /v1/schedules/d-1:delete
  assertEquals 405 "$ST"
  assertEquals POST "$(header Allow)"
}

test_list_pages_with_a_cursor_and_streams_ndjson() {
  local i ids=() cur seen=0 pages=0
  for i in 1 2 3 4 5; do
    post_json "$TW" /v1/schedules "{\"id\":\"l-$i\",\"in\":\"3h\",\"topic\":\"other\",\"payload\":\"x\"}"
  done
  cur=
  while :; do
    req "$TR" GET "/v1/schedules?topic=other&state=NEW&limit=2${cur:+&cursor=$(enc "$cur")}"
    assertEquals "$BODY" 200 "$ST"
    pages=$((pages + 1))
    seen=$((seen + $(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["items"]))' "$BODY")))
    cur=$(jf cursor)
    [ "$cur" = None ] && break
    [ "$pages" -lt 10 ] || break
  done
  assertEquals "records over the pages" 5 "$seen"
  assertTrue "more than one page ($pages)" "[ $pages -ge 3 ]"
  req "$TR" GET "/v1/schedules?topic=other" -H 'Accept: application/x-ndjson'
  assertEquals 200 "$ST"
  assertEquals application/x-ndjson "$(header Content-Type)"
  assertEquals "every match streamed" 5 "$(printf '%s\n' "$BODY" | grep -c '"id":"l-')"
  req "$TR" GET "/v1/schedules?since=1h&until=$(date -u -d '+1 minute' +%Y-%m-%dT%H:%M:%S.000Z)&error_prefix=X&limit=3"
  assertEquals "$BODY" 200 "$ST"
  # refused parameters, named
  req "$TR" GET "/v1/schedules?state=DONE"
  assert_error 400 invalid state
  req "$TR" GET "/v1/schedules?limit=0"
  assert_error 400 invalid limit
  req "$TR" GET "/v1/schedules?cursor=garbage"
  assert_error 400 invalid cursor
  req "$TR" GET "/v1/schedules?colour=red"
  assert_error 400 invalid colour
  req "$TR" GET "/v1/schedules?topic=nope"
  assert_error 400 invalid topic
  req "$TR" GET "/v1/schedules?since=%ff"
  assert_error 400 invalid since
}

test_stats() {
  req "$TR" GET /v1/stats
  assertEquals "$BODY" 200 "$ST"
  assertContains "$BODY" '"states":{"NEW":'
  req "$TR" GET "/v1/stats?by=topic"
  assertEquals 200 "$ST"
  assertContains "$BODY" "\"topic\":\"arn:aws:sns:"
  req "$TR" GET "/v1/stats?by=state"
  assert_error 400 invalid by
  # counters are written within a second by the main thread
  post_json "$TW" /v1/schedules '{"id":"s-1","in":"1h","topic":"orders","payload":"x"}'
  wait_until 10 sh -c "'$BIN/delayer' --prefix '$PFX' stats --json | grep -q '\"NEW\":[1-9]'"
  assertTrue "counters flushed" $?
}

test_import_streams_one_result_per_line() {
  local at
  at=$(date -u -d '+2 hours' +%Y-%m-%dT%H:%M:%S.000Z)
  printf '%s\n' \
    '{"in":"1h","topic":"orders","payload":"a"}' \
    '' \
    'not json' \
    '{"id":"i-1","in":"2h","topic":"orders","payload":"b","colour":1}' \
    '{"id":"i-2","in":"2h","topic":"nope","payload":"b"}' \
    "{\"id\":\"i-3\",\"at\":\"$at\",\"topic\":\"orders\",\"payload\":\"c\"}" \
    "{\"id\":\"i-3\",\"at\":\"$at\",\"topic\":\"orders\",\"payload\":\"c\"}" \
    "{\"id\":\"i-3\",\"at\":\"$at\",\"topic\":\"orders\",\"payload\":\"d\"}" \
    '{"id":"i-4","in":"10s","topic":"orders","payload":"e"}' >"$WORK/import.ndjson"
  req "$TW" POST /v1/schedules:import -H 'Content-Type: application/x-ndjson' --data-binary @"$WORK/import.ndjson"
  assertEquals "$BODY" 200 "$ST"
  assertEquals "one line per non-blank input line" 8 "$(printf '%s\n' "$BODY" | grep -c '^{')"
  local got
  got=$(printf '%s\n' "$BODY" | python3 -c '
import json, sys
for l in sys.stdin:
    r = json.loads(l)
    print(r["line"], r["status"], (r.get("error") or {}).get("field") or r.get("state"))')
  assertEquals "1 201 NEW
3 400 None
4 400 colour
5 400 topic
6 201 NEW
7 200 NEW
8 409 id
9 201 ENQUEUED" "$got"
  # chunked (no Content-Length) works too
  req "$TW" POST /v1/schedules:import -H 'Content-Type: application/x-ndjson' -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/import.ndjson"
  assertEquals 200 "$ST"
  assertContains "$BODY" '{"line":6,"status":200,"id":"i-3","state":"NEW"}'
  req "$TR" POST /v1/schedules:import -H 'Content-Type: application/x-ndjson' --data-binary @"$WORK/import.ndjson"
  assert_error 403 forbidden null
  req "$TW" POST /v1/schedules:import -H 'Content-Type: application/json' --data-binary @"$WORK/import.ndjson"
  assert_error 415 unsupported_media_type null
}

test_health_ready_and_metrics() {
  req "" GET /healthz
  assertEquals 200 "$ST"
  req "" GET /readyz
  assertEquals 200 "$ST"
  assertEquals ready "$(jf status)"
  req "" GET /metrics
  assertEquals 200 "$ST"
  assertContains "$BODY" 'delayer_api_requests_total{route="POST /v1/schedules",status="201"}'
  assertContains "$BODY" 'delayer_api_request_ms_bucket{route="GET /v1/schedules/{id}",status="200",le="'
  req "" POST /healthz
  assertEquals 405 "$ST"
}

# ------------------------------------------------------------ ids

test_odd_ids_in_paths_are_percent_decoded() {
  local id e
  for id in 'a/b' 'x:retry' 'sp ace' 'ü€𝄞' '..' '%41' 'q?x=1#f' "$(printf 'a%.0s' $(seq 512))"; do
    post_json "$TW" /v1/schedules "$(python3 -c 'import json,sys; print(json.dumps({"id":sys.argv[1],"in":"1h","topic":"orders","payload":"x"}))' "$id")"
    assertEquals "create $id: $BODY" 201 "$ST"
    e=$(enc "$id")
    assertEquals "Location of $id" "/v1/schedules/$e" "$(header Location)"
    req "$TR" GET "/v1/schedules/$e"
    assertEquals "get $id" 200 "$ST"
    assertEquals "id round trip" "$id" "$(jf id)"
    req "$TW" DELETE "/v1/schedules/$e"
    assertEquals "cancel $id" 200 "$ST"
  done
  # an id that looks like a custom method is an id when its ':' is encoded
  req "$TR" GET "/v1/schedules/x%3Aretry"
  assertEquals 200 "$ST"
  req "$TR" GET "/v1/schedules/$(printf 'a%.0s' $(seq 513))"
  assert_error 400 invalid id
  req "$TR" GET "/v1/schedules/%zz"
  assert_error 400 invalid id
  req "$TR" GET "/v1/schedules/a%00b"
  assert_error 400 invalid id
  req "$TR" GET "/v1/schedules/%ff%fe"
  assert_error 400 invalid id
  req "$TR" GET "/v1/schedules/a/b"
  assert_error 404 not_found null
  req "$TR" GET "/v1/schedules/a:frob"
  assert_error 404 not_found null
  req "$TR" GET "/v1/schedules/../stats"
  assertTrue "dot segments never reach another resource ($ST)" "[ $ST = 404 ] || [ $ST = 400 ]"
}

# ------------------------------------------------------------ bad requests

test_bad_bodies_are_refused_with_the_field_named() {
  post_json "$TW" /v1/schedules '{"in":"1h","topic":"orders",'
  assert_error 400 malformed_json null
  post_json "$TW" /v1/schedules '[1,2]'
  assert_error 400 malformed_json null
  post_json "$TW" /v1/schedules '{"in":"1h","topic":"orders","payload":"x","colour":"red"}'
  assert_error 400 invalid colour
  assertContains "$(err message)" "unknown field"
  post_json "$TW" /v1/schedules '{"in":true,"topic":"orders","payload":"x"}'
  assert_error 400 invalid in
  post_json "$TW" /v1/schedules '{"in":"1h","topic":7,"payload":"x"}'
  assert_error 400 invalid topic
  post_json "$TW" /v1/schedules '{"in":"1h","topic":"orders","payload":"x","attrs":{"k":1}}'
  assert_error 400 invalid attrs
  post_json "$TW" /v1/schedules '{"in":"1h","topic":"orders"}'
  assert_error 400 invalid payload
  post_json "$TW" /v1/schedules '{"at":"2020-01-01T00:00:00.000Z","topic":"orders","payload":"x"}'
  assert_error 400 invalid at
  post_json "$TW" /v1/schedules '{"at":"tomorrow","topic":"orders","payload":"x"}'
  assert_error 400 invalid at
  post_json "$TW" /v1/schedules '{"in":"1h","at":"2030-01-01T00:00:00Z","topic":"orders","payload":"x"}'
  assert_error 400 invalid at
  post_json "$TW" /v1/schedules '{"in":"1h","topic":"no-such-topic","payload":"x"}'
  assert_error 400 invalid topic
  post_json "$TW" /v1/schedules '{"in":"1h","topic":"orders","payload":""}'
  assert_error 400 invalid payload
  post_json "$TW" /v1/schedules '{"id":"","in":"1h","topic":"orders","payload":"x"}'
  assert_error 400 invalid id
  # a payload over SNS's 256 KiB (in a body under the limit)
  python3 -c 'import json; print(json.dumps({"in":"1h","topic":"orders","payload":"x"*262145}))' >"$WORK/big.json"
  req "$TW" POST /v1/schedules -H 'Content-Type: application/json' --data-binary @"$WORK/big.json"
  assert_error 400 invalid payload
}

test_protocol_errors() {
  req "$TW" POST /v1/schedules -H 'Content-Type: text/plain' --data-binary '{}'
  assert_error 415 unsupported_media_type null
  req "$TW" POST /v1/schedules -H 'Content-Type: application/json'
  assert_error 411 length_required null
  req "$TW" PUT /v1/schedules -H 'Content-Type: application/json' --data-binary '{}'
  assert_error 405 method_not_allowed null
  assertEquals "GET, HEAD, POST" "$(header Allow)"
  req "$TW" PATCH /v1/schedules/x
  assertEquals 405 "$ST"
  req "$TR" GET /v1/nothing
  assert_error 404 not_found null
  req "" GET /nothing
  assertEquals 404 "$ST"
}

test_huge_bodies_and_headers() {
  head -c 2000000 /dev/zero | tr '\0' a >"$WORK/huge"
  req "$TW" POST /v1/schedules -H 'Content-Type: application/json' --data-binary @"$WORK/huge"
  assert_error 413 too_large null
  # chunked: refused when the body ends (MHD cannot answer mid-body)
  req "$TW" POST /v1/schedules -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/huge"
  assert_error 413 too_large null
  # far beyond 4 times the limit: the connection is closed, no answer
  head -c 12000000 /dev/zero | tr '\0' a >"$WORK/huger"
  req "$TW" POST /v1/schedules -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/huger"
  assertTrue "closed without an answer ($ST)" "[ $ST = 000 ] || [ $ST = 100 ]"
  req "$TR" GET /v1/stats -H "X-Big: $(head -c 20000 /dev/zero | tr '\0' a)"
  assert_error 431 headers_too_large null
  # the server is still fine
  req "$TR" GET /v1/stats
  assertEquals 200 "$ST"
}

# A client that sends its body slowly, or stops, is cut off (request
# timeout 3 s, idle timeout 2 s) while another client is served.
test_slow_clients_are_cut_off() {
  local port=${URL##*:} py drip stall
  python3 - "$port" "$TW" >"$WORK/slow.out" <<'EOF' &
import socket, sys, time
port, tok = int(sys.argv[1]), sys.argv[2]
def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("POST /v1/schedules HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" % tok).encode())
    s.settimeout(0.2)
    return s
socks = {"drip": conn(), "stall": conn()}
t0 = time.time()
closed = {}
while len(closed) < 2 and time.time() - t0 < 15:
    for name, s in socks.items():
        if name in closed:
            continue
        try:
            if name == "drip":
                s.sendall(b" ")   # one byte every ~0.4 s: never idle
            if s.recv(100) == b"":
                closed[name] = time.time() - t0
        except socket.timeout:
            pass
        except OSError:
            closed[name] = time.time() - t0
for name in socks:
    print(name, "%.1f" % closed.get(name, 99))
EOF
  py=$!
  sleep 0.5
  req "$TR" GET /v1/stats
  assertEquals "another client is served meanwhile" 200 "$ST"
  wait "$py"
  drip=$(sed -n 's/^drip //p' "$WORK/slow.out")
  stall=$(sed -n 's/^stall //p' "$WORK/slow.out")
  assertTrue "a dripping client is cut off after the 3 s request timeout (at $drip s)" \
    "python3 -c 'import sys; sys.exit(not 2.9 <= $drip < 8)'"
  assertTrue "a stalled client is cut off after the 2 s idle timeout (at $stall s)" \
    "python3 -c 'import sys; sys.exit(not 1.5 <= $stall < 6)'"
}

# ------------------------------------------------------------ auth

test_missing_wrong_and_revoked_tokens() {
  req "" GET /v1/stats
  assert_error 401 unauthenticated null
  assertContains "$(header WWW-Authenticate)" Bearer
  req "not-a-token" GET /v1/stats
  assert_error 401 unauthenticated null
  req "$TX" GET /v1/stats
  assertEquals 200 "$ST"
  # revoke: drop its line, SIGHUP
  grep -v '^revokee ' "$TOK" >"$TOK.new" && chmod 600 "$TOK.new" && mv "$TOK.new" "$TOK"
  kill -HUP "$A_PID"
  wait_until 5 sh -c "curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer $TX' $URL/v1/stats | grep -q 401"
  assertTrue "revoked after SIGHUP" $?
  req "$TX" GET /v1/stats
  assert_error 401 unauthenticated null
  req "$TR" GET /v1/stats
  assertEquals "the others still work" 200 "$ST"
  # tokens are never logged
  assertFalse "a token in the log" "grep -qF -e '$TA' -e '$TW' -e '$TR' -e '$TX' '$WORK/A.log'"
  assertFalse "a token hash in the log" "grep -qF '$(cut -d' ' -f3 "$TOK" | head -1)' '$WORK/A.log'"
}

# A server whose tokens may make 1 request a second (after 3): one token
# floods it over a keep-alive connection; another token is served.
test_a_flood_from_one_token_gets_429_and_not_the_others() {
  local urls=() i flood
  api_start F --tokens "$TOK" --rate 1 --burst 3 || fail "start"
  for i in $(seq 2000); do urls+=("$F_URL/v1/schedules/%zz"); done
  curl -s -g -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $TF" "${urls[@]}" >"$WORK/flood.codes" &
  flood=$!
  wait_until 10 grep -q 429 "$WORK/flood.codes"
  assertTrue "the flood gets 429" $?
  REQ_URL=$F_URL req "$TF" GET /v1/stats
  assert_error 429 rate_limited null
  assertEquals 1 "$(header Retry-After)"
  REQ_URL=$F_URL req "$TR" GET /v1/stats
  assertEquals "another token is not limited" 200 "$ST"
  REQ_URL=$F_URL post_json "$TW" /v1/schedules '{"in":"1h","topic":"orders","payload":"during the flood"}'
  assertEquals 201 "$ST"
  kill "$flood" 2>/dev/null
  wait "$flood" 2>/dev/null
  assertContains "the first requests of the flood were served" "$(cat "$WORK/flood.codes")" 400
  api_stop "$F_PID"
}

test_token_file_and_start_options_are_checked() {
  local f=$WORK/open-tokens port
  cp "$TOK" "$f"
  chmod 644 "$f"
  run "$BIN/delayer-api" --prefix "$PFX" --tokens "$f" --plain-http --listen 127.0.0.1:0
  assertEquals 100 "$RC"
  assertContains "$ERR" "mode 0644"
  printf 'admin admin nothex\n' >"$f"
  chmod 600 "$f"
  run "$BIN/delayer-api" --prefix "$PFX" --tokens "$f" --plain-http --listen 127.0.0.1:0
  assertEquals 100 "$RC"
  assertContains "$ERR" "line 1"
  run "$BIN/delayer-api" --prefix "$PFX" --no-auth --plain-http --listen 0.0.0.0:0
  assertEquals 100 "$RC"
  assertContains "$ERR" "loopback"
  run "$BIN/delayer-api" --prefix "$PFX" --tokens "$TOK" --listen 127.0.0.1:0
  assertEquals "neither TLS nor --plain-http" 100 "$RC"
  run "$BIN/delayer-api" --prefix "$PFX" --tokens "$TOK" --new-token "x:root"
  assertEquals 100 "$RC"
  # --no-auth on loopback: no token needed
  api_start N --no-auth || fail "no-auth start"
  REQ_URL=$N_URL req "" GET /v1/stats
  assertEquals 200 "$ST"
  api_stop "$N_PID"
}

# HTTPS with a certificate and key (a throw-away self-signed pair).
test_https_with_a_certificate() {
  local port pid
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1 || fail "openssl"
  port=$(free_port)
  "$BIN/delayer-api" --prefix "$PFX" --listen "127.0.0.1:$port" --tokens "$TOK" \
    --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" >"$WORK/T.log" 2>&1 &
  pid=$!
  wait_until 20 curl -sf -o /dev/null --cacert "$WORK/tls.crt" "https://127.0.0.1:$port/healthz"
  assertTrue "https /healthz: $(cat "$WORK/T.log")" $?
  REQ_URL=https://127.0.0.1:$port req "$TR" GET /v1/stats --cacert "$WORK/tls.crt"
  assertEquals 200 "$ST"
  assertNotEquals "plain http is not served on a TLS port" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$port/healthz")"
  api_stop "$pid"
}

# AWS throttling past the retries: 503 with Retry-After. DynamoDB is
# reached through a proxy that forwards until told to throttle.
test_aws_throttling_is_503_with_retry_after() {
  local pport
  pport=$(free_port)
  python3 - "$pport" "$AWS_ENDPOINT_URL_DYNAMODB" "$WORK/throttle" <<'EOF' &
import http.client, json, os, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, up, flag = int(sys.argv[1]), urllib.parse.urlparse(sys.argv[2]), sys.argv[3]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if os.path.exists(flag):
            out = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "Rate exceeded"}).encode()
            code, ctype = 400, "application/x-amz-json-1.0"
        else:
            c = http.client.HTTPConnection(up.hostname, up.port)
            c.request("POST", self.path, body, dict(self.headers))
            r = c.getresponse()
            out, code, ctype = r.read(), r.status, r.getheader("Content-Type")
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
  local proxy=$!
  wait_until 10 curl -s -o /dev/null "http://127.0.0.1:$pport/"
  AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$pport DELAYER_AWS_MAX_ATTEMPTS=2 api_start P --tokens "$TOK" || fail "start behind the proxy"
  REQ_URL=$P_URL post_json "$TW" /v1/schedules '{"id":"t-1","in":"1h","topic":"orders","payload":"x"}'
  assertEquals "before throttling: $BODY" 201 "$ST"
  touch "$WORK/throttle"
  REQ_URL=$P_URL post_json "$TW" /v1/schedules '{"id":"t-2","in":"1h","topic":"orders","payload":"x"}'
  assert_error 503 throttled null
  assertEquals 1 "$(header Retry-After)"
  REQ_URL=$P_URL req "$TR" GET /v1/schedules/t-1
  assert_error 503 throttled null
  REQ_URL=$P_URL req "" GET /readyz
  assertEquals 503 "$ST"
  rm -f "$WORK/throttle"
  REQ_URL=$P_URL req "$TR" GET /v1/schedules/t-1
  assertEquals "recovers" 200 "$ST"
  api_stop "$P_PID"
  kill "$proxy"
  wait "$proxy" 2>/dev/null || :
}

# ------------------------------------------------------------ the contract

# Runs last: every response the tests above received matches docs/api.yaml.
test_zz_every_response_matches_docs_api_yaml() {
  local out n
  n=$(wc -l <"$WORK/responses.tsv")
  assertTrue "responses recorded: $n" "[ $n -ge 100 ]"
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
  for st in 200 201 400 401 403 404 405 409 411 413 415 429 431 503; do
    cut -f3 "$WORK/responses.tsv" | grep -qx "$st"
    assertTrue "no response with status $st" $?
  done
}

# Runs last: the server stops cleanly on SIGTERM, and no server of this
# suite logged a sanitizer report (DELAYER_BIN may be an ASan/UBSan build).
test_zzz_clean_stop_and_no_sanitizer_report() {
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

. shunit2
