#!/usr/bin/env bash
# test_api_hostile: delayer-api against hostile clients and bad
# credentials: huge bodies and headers, slow and stalled clients, missing,
# wrong and revoked tokens, a flood from one token, a token file others can
# read, HTTPS, and AWS throttling (503). Every response received is
# validated against docs/api.yaml. Helpers: tests/lib/api.sh.
. "$(dirname "$0")/../lib/suite.sh"
. "$(dirname "$0")/../lib/api.sh"
PFX=$(new_prefix)
API_STATUSES="200 201 401 413 429 431 503"   # each is met at least once
API_MIN_RESPONSES=20

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

# Last: every response above matches docs/api.yaml; a clean stop.
test_zz_every_response_matches_docs_api_yaml() { api_contract_check; }
test_zzz_clean_stop_and_no_sanitizer_report() { api_clean_stop_check; }

. shunit2
