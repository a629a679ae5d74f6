#!/usr/bin/env bash
# tests/sh/test_security.sh: the security promises of docs/security.md.
#   TLS      an https endpoint with an untrusted (self-signed) certificate on
#            a non-loopback address is refused (openssl s_server in a network
#            namespace on 10.231.8.1, the client in a second one); plain
#            http:// to a non-loopback host is refused; no code path, option
#            or environment variable turns certificate verification off.
#   Secrets  distinctive AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN values (and a
#            credentials-file secret) never appear in anything any tool prints:
#            --help/--version of every bin/* tool, a real flow at log level
#            debug (init, schedule, import, get, list, stats, cancel, errors,
#            every stage in a short pipeline run, aws-call).
#   Injection ids, attribute values and payloads with quotes, #, :, newlines,
#            ${}, $(), backslashes and unicode are stored and returned
#            verbatim by schedule/get/list, only touch their own record, and
#            reach SNS verbatim (message attributes and body) through the real
#            publish path (fast track -> sqs-drain | sns-publish -> a queue
#            subscribed to the topic).
# The namespace test needs root (CAP_NET_ADMIN) and openssl; without them it
# is SKIPPED with the reason.
. "$(dirname "$0")/../lib/suite.sh"
. tests/lib/netns.sh
PFX=$(new_prefix)
NSS=dlyS$$ NSC=dlyC$$ VS=vdS$$ VC=vdC$$
ADDR_S=10.231.8.1 ADDR_C=10.231.8.2
SECRET=ZZsecretKEYnotForLogs$$x9Q
TOKEN=ZZsessionTOKENneverLogged$$q7W
FILESECRET=ZZfileSECRETneverShown$$k4P
AKID=AKIDSECURITYTEST$$
PIDS=()

oneTimeSetUp() {
  W=$(mktemp -d "${TMPDIR:-/tmp}/delayer-sec.XXXXXX") || return 1
  suite_up t || return 1
  TOPIC=$(topic_arn t) || return 1
  SUB_URL=$(sub_queue "$PFX-sub" "$TOPIC") || return 1
}

oneTimeTearDown() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  netns_del "$NSS" "$NSC" "$VS"
  [ -n "${W:-}" ] && [ -z "${KEEP_TDIR:-}" ] && rm -rf -- "$W"
  suite_down
}

# ------------------------------------------------------------ helpers

skip_because() {
  echo "SKIP: $1"
  startSkipping
  fail "skipped: $1"   # counted by shunit2 as skipped
  endSkipping
}

# ------------------------------------------------------------ TLS

tls_netns_up() {
  command -v openssl >/dev/null || { TLS_WHY="openssl not installed"; return 1; }
  netns_pair "$NSS" "$NSC" "$VS" "$VC" "$ADDR_S" "$ADDR_C" || { TLS_WHY=$NETNS_ERR; return 1; }
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=$ADDR_S" \
    -addext "subjectAltName=IP:$ADDR_S" -keyout "$W/tls.key" -out "$W/tls.crt" >/dev/null 2>&1 || {
    TLS_WHY="openssl could not make a certificate"
    return 1
  }
  ip netns exec "$NSS" openssl s_server -accept "$ADDR_S:8443" -cert "$W/tls.crt" -key "$W/tls.key" \
    -www -quiet >"$W/s_server.log" 2>&1 &
  PIDS+=($!)
  local _
  for _ in $(seq 1 50); do
    ip netns exec "$NSC" timeout 1 bash -c "exec 3<>/dev/tcp/$ADDR_S/8443" 2>/dev/null && return 0
    sleep 0.1
  done
  TLS_WHY="openssl s_server did not come up in the namespace"
  return 1
}

# in_client CMD...: runs CMD in the client namespace with the DynamoDB
# endpoint on the TLS server; OUT, ERR, RC.
in_client() {
  OUT=$(ip netns exec "$NSC" env AWS_ENDPOINT_URL_DYNAMODB="https://$ADDR_S:8443" \
    AWS_ENDPOINT_URL_SQS="https://$ADDR_S:8443" AWS_ENDPOINT_URL_SNS="https://$ADDR_S:8443" \
    DELAYER_AWS_MAX_ATTEMPTS=1 "$@" 2>"$W/err")
  RC=$?
  ERR=$(cat "$W/err")
}

test_tls_untrusted_certificate_refused() {
  TLS_WHY=
  if ! tls_netns_up; then skip_because "$TLS_WHY"; return 0; fi
  # control: the server is reachable and speaks TLS (curl without verification)
  if command -v curl >/dev/null; then
    ip netns exec "$NSC" curl -sk --max-time 5 -o /dev/null "https://$ADDR_S:8443/"
    assertEquals "control: TLS server reachable from the client namespace" 0 $?
  fi
  in_client "$BIN/aws-call" dynamodb ListTables
  assertNotEquals "aws-call to a self-signed endpoint fails" 0 "$RC"
  assertContains "fails on certificate verification: $ERR" "$ERR" "certificate"
  assertEquals "no response body" "" "$OUT"
  # the common "turn it off" knobs of other tools change nothing here
  in_client env AWS_NO_VERIFY_SSL=1 AWS_CLI_SSL_NO_VERIFY=1 NODE_TLS_REJECT_UNAUTHORIZED=0 \
    PYTHONHTTPSVERIFY=0 CURL_INSECURE=1 DELAYER_INSECURE=1 DELAYER_TLS_VERIFY=0 \
    GIT_SSL_NO_VERIFY=1 "$BIN/aws-call" dynamodb ListTables
  assertNotEquals "still refused with insecure-looking variables set" 0 "$RC"
  assertContains "still a certificate error: $ERR" "$ERR" "certificate"
  # the CLI and a stage go through the same client
  in_client "$BIN/delayer" --prefix "$PFX" get some-id
  assertEquals "delayer get: system failure" 111 "$RC"
  assertContains "delayer reports the certificate: $ERR" "$ERR" "certificate"
  in_client "$BIN/ddb-scan-due" --prefix "$PFX" --once --out -
  assertNotEquals "ddb-scan-due refuses the endpoint" 0 "$RC"
  assertContains "ddb-scan-due reports the certificate: $ERR" "$ERR" "certificate"
}

test_plain_http_to_non_loopback_refused() {
  local ep
  for ep in "http://10.231.8.1:8080" "http://192.0.2.10" "http://127.0.0.1.example.com:80" "http://[2001:db8::1]:80" \
            "HTTP://10.0.0.1" "ftp://10.0.0.1"; do
    run env AWS_ENDPOINT_URL_DYNAMODB="$ep" DELAYER_AWS_MAX_ATTEMPTS=1 "$BIN/aws-call" dynamodb ListTables
    assertEquals "aws-call refuses $ep (exit 111, before connecting)" 111 "$RC"
    case $ERR in
      *"refusing plain http://"* | *"must be https://"*) ;;
      *) fail "$ep: unexpected error: $ERR" ;;
    esac
    run env AWS_ENDPOINT_URL_DYNAMODB="$ep" "$BIN/delayer" --prefix "$PFX" get x
    assertEquals "delayer refuses $ep" 111 "$RC"
  done
  run env AWS_ENDPOINT_URL_SQS="http://192.0.2.10" "$BIN/sqs-drain" --prefix "$PFX" --out -
  assertNotEquals "sqs-drain refuses a plain http SQS endpoint" 0 "$RC"
  assertContains "sqs-drain says why: $ERR" "$ERR" "refusing plain http://"
}

# Certificate checks cannot be switched off: every libcurl handle keeps
# verification on, and no option or variable of the code base names a way out.
test_no_code_path_disables_verification() {
  local hits
  hits=$(grep -rnE 'CURLOPT_(PROXY_)?SSL_VERIFY(PEER|HOST|STATUS)[[:space:]]*,[[:space:]]*(0|0L|false|[a-z_]+)[[:space:]]*\)' lib tools |
         grep -vE 'VERIFYPEER[[:space:]]*,[[:space:]]*1L|VERIFYHOST[[:space:]]*,[[:space:]]*2L')
  assertEquals "no CURLOPT_SSL_VERIFYPEER/VERIFYHOST other than 1L/2L: $hits" "" "$hits"
  hits=$(grep -rnE 'CURLSSLOPT_(ALLOW_BEAST|NO_REVOKE|NO_PARTIALCHAIN)|CURLOPT_SSL_OPTIONS|CURLOPT_PINNEDPUBLICKEY|SSL_CTX_set_verify|CURLOPT_SSL_CTX_FUNCTION' lib tools)
  assertEquals "no TLS relaxation: $hits" "" "$hits"
  hits=$(grep -rniE 'insecure|no[-_]?verify|verify[-_]?ssl|skip[-_]?verify|tls[-_]?verify' lib tools | grep -v 'never turns')
  assertEquals "no option or variable to turn verification off: $hits" "" "$hits"
  # the explicit settings are there (the library default could change)
  grep -q 'CURLOPT_SSL_VERIFYPEER, 1L' lib/aws.c
  assertTrue "lib/aws.c sets VERIFYPEER 1" $?
  grep -q 'CURLOPT_SSL_VERIFYHOST, 2L' lib/aws.c
  assertTrue "lib/aws.c sets VERIFYHOST 2" $?
  # no tool offers such a flag either
  local t h
  for t in "$BIN"/*; do
    [ -x "$t" ] || continue
    h=$("$t" --help 2>&1)
    case $h in *insecure* | *no-verify* | *verify-ssl*) fail "$(basename "$t") --help offers a way to skip TLS checks" ;; esac
  done
}

# ------------------------------------------------------------ secrets

# secret_env CMD...: runs CMD with the distinctive credentials and debug logs,
# appending stdout and stderr to $W/all.txt. RC set.
secret_env() {
  AWS_ACCESS_KEY_ID=$AKID AWS_SECRET_ACCESS_KEY=$SECRET AWS_SESSION_TOKEN=$TOKEN \
    DELAYER_LOG_LEVEL=debug "$@" >>"$W/all.txt" 2>&1
  RC=$?
  echo >>"$W/all.txt"
}

test_secrets_never_printed() {
  : >"$W/all.txt"
  local t s now id
  # --help / --version / bad usage of every tool
  for t in "$BIN"/*; do
    [ -x "$t" ] || continue
    secret_env "$t" --help
    secret_env "$t" --version
    secret_env "$t" --no-such-option
  done
  secret_env "$BIN/delayer" help schedule
  # a real flow at debug level: the CLI
  secret_env D init --topic t
  assertEquals "init works with the test credentials" 0 "$RC"
  secret_env D schedule --id sec-far --in 2h --topic t --payload far --attr k=v --json
  local near_due=$(( $(now_ms) + 2000 ))
  secret_env D schedule --id sec-near --in 2s --topic t --payload near --attr k=v
  assertEquals "schedule (fast track)" 0 "$RC"
  secret_env D schedule --id sec-bad --in 2h --topic no-such-topic --payload x
  secret_env D schedule --id sec-far --in 3h --topic t --payload other
  printf '%s\n' '{"id":"sec-imp","in":"2h","topic":"t","payload":"i"}' '{bad json' |
    secret_env D import
  secret_env D get sec-far
  secret_env D get no-such-id
  secret_env D list --state NEW,ENQUEUED --since 1h
  secret_env D stats
  secret_env D cancel sec-far
  secret_env D retry sec-far
  # an AWS error body and a connection failure
  secret_env "$BIN/aws-call" dynamodb DescribeTable '{"TableName":"no-such-table"}'
  secret_env "$BIN/aws-call" sns Publish TopicArn=arn:aws:sns:us-east-1:000000000000:none Message=x
  secret_env env AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:9 DELAYER_AWS_MAX_ATTEMPTS=2 "$BIN/aws-call" dynamodb ListTables
  # the stages: one pass of the scanner into the pusher into state-update,
  # and a few seconds of drain | publish | state-update, once sec-near is due
  until_ms $((near_due + 1000))
  (AWS_ACCESS_KEY_ID=$AKID AWS_SECRET_ACCESS_KEY=$SECRET AWS_SESSION_TOKEN=$TOKEN DELAYER_LOG_LEVEL=debug
   "$BIN/ddb-scan-due" --prefix "$PFX" --once --window 15m --out - 2>>"$W/all.txt" |
     "$BIN/sqs-push" --prefix "$PFX" --in - --out - --log-level debug 2>>"$W/all.txt" |
     "$BIN/state-update" --prefix "$PFX" --in - --log-level debug >>"$W/all.txt" 2>&1)
  (AWS_ACCESS_KEY_ID=$AKID AWS_SECRET_ACCESS_KEY=$SECRET AWS_SESSION_TOKEN=$TOKEN DELAYER_LOG_LEVEL=debug
   timeout -s TERM 5 "$BIN/sqs-drain" --prefix "$PFX" --wait 1 --out - 2>>"$W/all.txt" |
     "$BIN/sns-publish" --prefix "$PFX" --in - --out - --log-level debug 2>>"$W/all.txt" |
     "$BIN/state-update" --prefix "$PFX" --in - --log-level debug >>"$W/all.txt" 2>&1)
  grep -q 'stage=sns-publish' "$W/all.txt"
  assertTrue "the stages ran and logged" $?
  # credentials from a shared credentials file (no env keys)
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$AKID" "$FILESECRET" >"$W/credentials"
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN AWS_SHARED_CREDENTIALS_FILE="$W/credentials" \
    DELAYER_LOG_LEVEL=debug "$BIN/delayer" --prefix "$PFX" get sec-far >>"$W/all.txt" 2>&1
  assertEquals "a credentials-file profile works" 0 $?
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE="$W/credentials" AWS_PROFILE=missing \
    "$BIN/aws-call" dynamodb ListTables >>"$W/all.txt" 2>&1
  if grep -qE 'Sanitizer|runtime error:' "$W/all.txt"; then
    fail "sanitizer report: $(grep -E -A5 'Sanitizer|runtime error:' "$W/all.txt" | head -20)"
  fi
  local lines
  lines=$(wc -l <"$W/all.txt")
  assertTrue "a real amount of output was checked ($lines lines)" "[ $lines -gt 100 ]"
  for s in "$SECRET" "$TOKEN" "$FILESECRET"; do
    if grep -qF "$s" "$W/all.txt"; then
      fail "a secret value was printed: $(grep -nF "$s" "$W/all.txt" | head -3)"
    fi
    # nor a recognisable half of it
    if grep -qF "${s:0:14}" "$W/all.txt"; then fail "part of a secret was printed: ${s:0:14}"; fi
  done
}

# ------------------------------------------------------------ injection

# ids and values meant to break out of expressions, quoting, logs and lines
INJ_IDS=(
  $'q"uo\'te #h :c ${x} $(id) `id` \\ back'
  $'line1\nline2\r\tend'
  ':v0'
  '#id'
  'id = :v1 OR attribute_exists(id)'
  $'\xc3\xa9t\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80 \xe4\xb8\xad'
  '{"S":"x"}'
  '<Message>x</Message>&amp;'
)
INJ_VAL=$'v"#:${HOME} $(id) \n\\ \xe2\x98\x83 <a>&amp; %20 +'
INJ_PAYLOAD=$'{"x":"${HOME}"}\n#:\' \\" \xf0\x9f\x98\x80 &lt;'
# fauxqs 1.9.2 refuses characters beyond U+FFFF in SQS messages (real SQS
# takes #x10000-#x10FFFF): the publish path below uses BMP characters only.
PUB_IDS=("${INJ_IDS[@]}")
PUB_IDS[5]=$'\xc3\xa9t\xc3\xa9 \xe2\x98\x83 \xe4\xb8\xad \xef\xbf\xbd'
PUB_PAYLOAD=$'{"x":"${HOME}"}\n#:\' \\" \xe2\x98\x83 &lt;'

test_injection_stored_and_returned_verbatim() {
  local id i got
  for i in "${!INJ_IDS[@]}"; do
    id=${INJ_IDS[$i]}
    run D schedule --id "$id" --in 2h --topic t --payload "$INJ_PAYLOAD" --attr "k_$i=$INJ_VAL" --attr 'a.b-c=:v0'
    assertEquals "schedule accepts id #$i" 0 "$RC"
    run D get "$id"
    assertEquals "get id #$i" 0 "$RC"
    got=$(printf '%s' "$OUT" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.stdout.write(r["id"])')
    assertEquals "id #$i returned verbatim" "$id" "$got"
    got=$(printf '%s' "$OUT" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.stdout.write(r["attrs"]["k_'"$i"'"])')
    assertEquals "attribute value of #$i verbatim" "$INJ_VAL" "$got"
    got=$(printf '%s' "$OUT" | python3 -c 'import json,sys; r=json.load(sys.stdin); sys.stdout.write(r["attrs"]["a.b-c"])')
    assertEquals "attribute ':v0' of #$i verbatim" ":v0" "$got"
    # the stored item holds exactly these bytes (read by another client)
    got=$("$BIN/aws-call" dynamodb GetItem "$(python3 -c 'import json,sys; print(json.dumps({"TableName":sys.argv[1],"Key":{"id":{"S":sys.argv[2]}}}))' "$PFX-schedules" "$id")" |
          python3 -c 'import json,sys; i=json.load(sys.stdin)["Item"]; sys.stdout.write(i["id"]["S"]+"|"+i["payload"]["S"])')
    assertEquals "DynamoDB item of #$i" "$id|$INJ_PAYLOAD" "$got"
    # the same id again with the same content: idempotent, not a second record
    run D schedule --id "$id" --in 2h --topic t --payload "other" --attr "k_$i=$INJ_VAL"
    assertEquals "same id, other content: refused" 1 "$RC"
  done
  # list returns each id verbatim, once
  run D list --state NEW --since 1h --limit 1000
  got=$(printf '%s\n' "$OUT" | python3 -c '
import json, sys
ids = [json.loads(l)["id"] for l in sys.stdin if l.strip()]
want = sys.argv[1:]
print(sum(ids.count(w) == 1 for w in want))' "${INJ_IDS[@]}")
  assertEquals "list returns every hostile id exactly once" "${#INJ_IDS[@]}" "$got"
  # a cancel touches exactly its own record: ":v0" and "#id" are ids, not expression names
  run D cancel ':v0'
  assertEquals "cancel :v0" 0 "$RC"
  assertEquals "':v0' cancelled" CANCELLED "$(json_field "$(D get ':v0')" state)"
  assertEquals "'#id' untouched" NEW "$(json_field "$(D get '#id')" state)"
  assertEquals "'id = :v1 OR ...' untouched" NEW "$(json_field "$(D get 'id = :v1 OR attribute_exists(id)')" state)"
  # attribute NAMES that SNS would refuse (quotes, #, :, newline, braces) are
  # refused cleanly: exit 1, one line, nothing written
  local n
  for n in 'k"q' 'k#1' 'k:1' $'k\n1' 'k${x}' 'AWS.x' ''; do
    assert_refused 1 attr D schedule --id "bad-attr-$RANDOM" --in 2h --topic t --payload x --attr "$n=v"
  done
}

test_injection_reaches_sns_verbatim() {
  local i id pids
  [ -x "$BIN/sqs-drain" ] && [ -x "$BIN/sns-publish" ] || {
    skip_because "sqs-drain / sns-publish not built"
    return 0
  }
  # fast track (due in 2 s: the CLI itself sends them to the delay queue)
  for i in "${!PUB_IDS[@]}"; do
    id="pub-${PUB_IDS[$i]}"
    run D schedule --id "$id" --in 2s --topic t --payload "$PUB_PAYLOAD" --attr "k_$i=$INJ_VAL"
    assertEquals "fast-track schedule #$i" 0 "$RC"
    assertEquals "fast-track #$i went to the delay queue" ENQUEUED "$(json_field "$(D get "$id")" state)"
  done
  # the drain stops by itself (SIGTERM after 15 s); the rest end at EOF
  timeout -s TERM 15 "$BIN/sqs-drain" --prefix "$PFX" --wait 1 --out - 2>"$W/drain.log" |
    "$BIN/sns-publish" --prefix "$PFX" --in - --out - 2>"$W/publish.log" |
    "$BIN/state-update" --prefix "$PFX" --in - 2>"$W/state.log" &
  pids=$!
  local n=${#PUB_IDS[@]} got
  got=$(python3 - "$BIN/aws-call" "$SUB_URL" "$n" <<'PY'
import json, subprocess, sys, time
call, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
out, end = {}, time.time() + 25
while sum(1 for k in out if k and k.startswith("pub-")) < n and time.time() < end:
    r = subprocess.run([call, "sqs", "ReceiveMessage", json.dumps({"QueueUrl": url, "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": 1, "MessageAttributeNames": ["All"]})], capture_output=True, text=True, check=True)
    msgs = json.loads(r.stdout).get("Messages", [])
    for m in msgs:
        a = {k: v.get("StringValue") for k, v in m.get("MessageAttributes", {}).items()}
        out[a.get("delayer.id")] = {"body": m["Body"], "attrs": a}
    if msgs:
        subprocess.run([call, "sqs", "DeleteMessageBatch", json.dumps({"QueueUrl": url, "Entries": [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]})], capture_output=True, check=True)
json.dump(out, sys.stdout)
PY
)
  wait "$pids" 2>/dev/null
  if grep -qE 'Sanitizer|runtime error:' "$W"/drain.log "$W"/publish.log "$W"/state.log; then
    fail "sanitizer report in the publish path: $(grep -hE -A5 'Sanitizer|runtime error:' "$W"/*.log | head -20)"
  fi
  for i in "${!PUB_IDS[@]}"; do
    id="pub-${PUB_IDS[$i]}"
    local r
    r=$(printf '%s' "$got" | python3 -c '
import json, sys
d = json.load(sys.stdin); m = d.get(sys.argv[1])
if m is None: print("missing"); sys.exit()
ok = m["body"] == sys.argv[2] and m["attrs"].get("k_" + sys.argv[4]) == sys.argv[3]
print("ok" if ok else "differs: " + json.dumps(m, ensure_ascii=False))' "$id" "$PUB_PAYLOAD" "$INJ_VAL" "$i")
    assertEquals "SNS delivery of #$i: delayer.id, body and attribute verbatim" ok "$r"
  done
}

. /usr/share/shunit2/shunit2
