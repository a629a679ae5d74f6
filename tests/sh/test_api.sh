#!/usr/bin/env bash
# test_api: delayer-api against the real local stack, with curl as the
# client: every endpoint and its errors, odd ids in paths, bad bodies and
# protocol errors; every response received is validated against
# docs/api.yaml (tests/lib/apicheck.py, in test_zz_*). Hostile clients and
# authentication are in test_api_hostile.sh. Helpers: tests/lib/api.sh.
. "$(dirname "$0")/../lib/suite.sh"
. "$(dirname "$0")/../lib/api.sh"
PFX=$(new_prefix)
API_STATUSES="200 201 400 403 404 405 409 411 415"   # each is met at least once
API_MIN_RESPONSES=60

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
  assertEquals '{"kind":"t"}' "$(jf attrs)"
  assertContains "$(jf history)" '"state":"NEW"'
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
    seen=$((seen + $(printf '%s' "$BODY" | jq '.items | length')))
    cur=$(jf cursor)
    [ "$cur" = null ] && break
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

test_odd_ids_in_paths_are_percent_decoded() {
  local id e
  for id in 'a/b' 'x:retry' 'sp ace' 'ü€𝄞' '..' '%41' 'q?x=1#f' "$(printf 'a%.0s' $(seq 512))"; do
    post_json "$TW" /v1/schedules "$(jq -nc --arg id "$id" '{id: $id, in: "1h", topic: "orders", payload: "x"}')"
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

# Last: every response above matches docs/api.yaml; a clean stop.
test_zz_every_response_matches_docs_api_yaml() { api_contract_check; }
test_zzz_clean_stop_and_no_sanitizer_report() { api_clean_stop_check; }

. shunit2
