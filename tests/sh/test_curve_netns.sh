#!/usr/bin/env bash
# tests/sh/test_curve_netns.sh: ZeroMQ pipes between hosts, authenticated and
# encrypted with CURVE (lib/zpipe.c, docs/security.md), shown with two network
# namespaces joined by a veth pair:
#   ns A (10.231.7.1/24): a CURVE server (binding PULL) whose allow-list holds
#                         only client A's public key
#   ns B (10.231.7.2/24): client A (allowed) -> records arrive verbatim;
#                         client B (valid keys, not allowed) -> refused, nothing
#                         arrives, the server logs the refused key;
#                         a client without CURVE -> refused, nothing arrives
# plus: a secret key file with mode 0644 makes the tools (zpipe-cat and the
# real stages) refuse to start with one error line (exit 100); the wire never
# carries a record in clear (a raw capture in ns A, with python3); an ipc:// socket in
# a directory others can enter is refused.
# Both ends are build/tests/zpipe-cat, a pipe endpoint built on lib/stage and
# lib/zpipe exactly as the stages are (the stages need AWS, which is not
# reachable inside the namespaces). Needs root (CAP_NET_ADMIN) for `ip netns`;
# without it the namespace tests are SKIPPED with the reason. Namespaces and
# links carry $$ in their names; they are removed in oneTimeTearDown.
export SHUNIT_COLOR=none
REPO=$(cd -P -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/../.." && pwd -P)
cd "$REPO" || exit 1
BIN=${DELAYER_BIN:-bin}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
UNIT=${DELAYER_UNIT:-build/tests}
case $UNIT in /*) ;; *) UNIT=$REPO/$UNIT ;; esac
. tests/lib/netns.sh
CAT=$UNIT/zpipe-cat
NSA=dlyA$$ NSB=dlyB$$ VA=vdA$$ VB=vdB$$
ADDR_A=10.231.7.1 ADDR_B=10.231.7.2
PORT=7701
NETNS_WHY=
PIDS=()

oneTimeSetUp() {
  [ -x "$CAT" ] || { echo "missing $CAT (run make)" >&2; return 1; }
  [ -x "$BIN/delayer-keygen" ] || { echo "missing $BIN/delayer-keygen (run make)" >&2; return 1; }
  W=$(mktemp -d "${TMPDIR:-/tmp}/delayer-curve.XXXXXX") || return 1
  chmod 700 "$W"
  "$BIN/delayer-keygen" "$W/server.key" "$W/server.pub" &&
    "$BIN/delayer-keygen" "$W/a.key" "$W/a.pub" &&
    "$BIN/delayer-keygen" "$W/b.key" "$W/b.pub" || return 1
  mkdir -m 0755 "$W/allow" && cp "$W/a.pub" "$W/allow/client-a.pub"
  netns_up
}

netns_up() {
  if ! command -v ip >/dev/null; then NETNS_WHY="iproute2 (ip) not installed"; return 0; fi
  netns_pair "$NSA" "$NSB" "$VA" "$VB" "$ADDR_A" "$ADDR_B" || { NETNS_WHY=$NETNS_ERR; return 0; }
  local _
  # up when a connect to a closed port is answered (refused), not timed out
  for _ in $(seq 1 50); do
    ip netns exec "$NSB" timeout 1 bash -c "exec 3<>/dev/tcp/$ADDR_A/9" 2>&1 | grep -q refused && return 0
    sleep 0.1
  done
  NETNS_WHY="veth link between the namespaces did not come up"
}

oneTimeTearDown() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  netns_del "$NSA" "$NSB" "$VA"
  [ -n "${W:-}" ] && rm -rf -- "$W"
}

need_netns() {
  if [ -n "$NETNS_WHY" ]; then
    echo "SKIP: $NETNS_WHY"
    startSkipping
    fail "skipped: $NETNS_WHY"   # counted by shunit2 as skipped
    return 1
  fi
  endSkipping
  return 0
}

# server NAME: starts the CURVE server in ns A (allow-list: client A only),
# writing what it receives to $W/NAME.out and its log to $W/NAME.log; waits
# until it is ready. SPID is its pid.
server() {
  local _
  : >"$W/$1.log"
  ip netns exec "$NSA" "$CAT" --in "@tcp://$ADDR_A:$PORT" --out - --idle 6s \
    --curve-secret "$W/server.key" --curve-allow "$W/allow" --log-level debug \
    >"$W/$1.out" 2>"$W/$1.log" &
  SPID=$!
  PIDS+=("$SPID")
  for _ in $(seq 1 50); do
    grep -q 'msg=ready' "$W/$1.log" && return 0
    sleep 0.1
  done
  fail "server did not get ready: $(cat "$W/$1.log")"
  return 1
}

stop_server() { kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }

# client ARGS...: sends three records from ns B; RC its exit status.
RECORDS='{"id":"r1","payload":"secret-payload-AAAA"}
{"id":"r2 \"quoted\" #x :y","payload":"é ☃"}
{"id":"r3","payload":"last"}'
client() {
  printf '%s\n' "$RECORDS" | ip netns exec "$NSB" "$CAT" --in - --out ">tcp://$ADDR_A:$PORT" \
    --send-timeout 3s "$@" >"$W/client.out" 2>"$W/client.log"
  RC=$?
}

test_allowed_client_delivers() {
  need_netns || return 0
  local cap= _
  # the system's python3 when there is one: a pyenv shim first on PATH takes
  # most of a second to start under load
  local py
  py=$(command -v /usr/bin/python3 python3 | head -1)
  if [ -n "$py" ]; then
    # a raw packet capture on ns A's interface: every frame's bytes to a file;
    # it creates $W/cap.ready once the socket is bound (nothing it misses after)
    ip netns exec "$NSA" "$py" -c '
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0)); s.settimeout(0.2)
out = open(sys.argv[2], "wb"); open(sys.argv[3], "w").close(); end = time.time() + 30
while time.time() < end:
    try: out.write(s.recv(65536)); out.flush()
    except socket.timeout: pass
' "$VA" "$W/wire.bin" "$W/cap.ready" 2>"$W/cap.log" &
    cap=$!
    PIDS+=("$cap")
    for _ in $(seq 1 100); do [ -e "$W/cap.ready" ] && break; kill -0 "$cap" 2>/dev/null || break; sleep 0.1; done
    [ -e "$W/cap.ready" ] || fail "the capture did not get ready in 10 s: $(cat "$W/cap.log")"
  fi
  server allowed || return   # after the capture is ready: the server's --idle runs from here
  client --curve-secret "$W/a.key" --curve-public "$W/a.pub" --curve-server-key "$W/server.pub"
  assertEquals "client A sent everything (log: $(cat "$W/client.log"))" 0 "$RC"
  local _
  for _ in $(seq 1 40); do [ "$(wc -l <"$W/allowed.out")" -ge 3 ] && break; sleep 0.1; done
  stop_server
  assertEquals "records from the allowed key arrive verbatim" "$RECORDS" "$(cat "$W/allowed.out")"
  grep -q 'msg="CURVE client accepted"' "$W/allowed.log"
  assertTrue "the ZAP handler accepted client A: $(cat "$W/allowed.log")" $?
  if [ -n "$cap" ]; then
    kill "$cap" 2>/dev/null; wait "$cap" 2>/dev/null
    assertTrue "packets were captured ($(cat "$W/cap.log"))" "[ -s $W/wire.bin ]"
    grep -aq 'CURVE' "$W/wire.bin"
    assertTrue "the capture holds the ZMTP CURVE greeting" $?
    if grep -aq 'secret-payload-AAAA' "$W/wire.bin"; then fail "a record crossed the wire in clear"; fi
  else
    echo "note: no python3, wire encryption not inspected"
  fi
}

test_unknown_client_refused() {
  need_netns || return 0
  server unknown || return
  client --curve-secret "$W/b.key" --curve-server-key "$W/server.pub"
  assertEquals "client B could not send (refused handshake): $(cat "$W/client.log")" 1 "$RC"
  grep -q 'record not sent' "$W/client.log"
  assertTrue "client B reports the unsent records" $?
  stop_server
  assertEquals "nothing from client B arrived" "" "$(cat "$W/unknown.out")"
  local bkey
  bkey=$(grep -v '^#' "$W/b.pub")
  grep -q "CURVE client refused" "$W/unknown.log"
  assertTrue "the server logs the refusal: $(cat "$W/unknown.log")" $?
  grep -qF "key=$bkey" "$W/unknown.log" || grep -qF "key=\"$bkey\"" "$W/unknown.log"
  assertTrue "the refusal names client B's public key" $?
}

test_client_without_curve_refused() {
  need_netns || return 0
  server plain || return
  client
  assertEquals "a client without CURVE cannot send: $(cat "$W/client.log")" 1 "$RC"
  stop_server
  assertEquals "nothing from the plain client arrived" "" "$(cat "$W/plain.out")"
}

test_client_with_wrong_server_key_refused() {
  need_netns || return 0
  server wrongsrv || return
  # client A's own key pair, but it expects another server (B's public key)
  client --curve-secret "$W/a.key" --curve-server-key "$W/b.pub"
  assertEquals "a client that expects another server cannot send" 1 "$RC"
  stop_server
  assertEquals "nothing arrived" "" "$(cat "$W/wrongsrv.out")"
}

# assert_key_refused CMD...: exit 100, one stderr line naming the mode.
assert_key_refused() {
  local err rc lines
  err=$("$@" </dev/null 2>&1 >/dev/null)
  rc=$?
  assertEquals "exit status of $1" 100 "$rc"
  lines=$(printf '%s\n' "$err" | grep -c .)
  assertEquals "one error line from $1: $err" 1 "$lines"
  case $err in
    *"accessible by group/other (mode 0644)"*) ;;
    *) fail "$1: the error should say the key is accessible by group/other: $err" ;;
  esac
}

test_world_readable_secret_key_refused() {
  cp "$W/a.key" "$W/open.key"
  chmod 644 "$W/open.key"
  assert_key_refused "$CAT" --in - --out ">tcp://127.0.0.1:$PORT" --curve-secret "$W/open.key" --curve-server-key "$W/server.pub"
  assert_key_refused "$CAT" --in "@tcp://127.0.0.1:$PORT" --out - --curve-secret "$W/open.key" --curve-allow "$W/allow"
  # the real stages refuse it the same way, before touching AWS or a socket
  local t
  for t in sqs-push sns-publish state-update; do
    [ -x "$BIN/$t" ] || continue
    assert_key_refused "$BIN/$t" --in "@tcp://127.0.0.1:$PORT" --curve-secret "$W/open.key" --curve-allow "$W/allow"
  done
  for t in ddb-scan-due sqs-drain; do
    [ -x "$BIN/$t" ] || continue
    assert_key_refused "$BIN/$t" --out ">tcp://127.0.0.1:$PORT" --curve-secret "$W/open.key" --curve-server-key "$W/server.pub"
  done
  chmod 640 "$W/open.key"
  "$CAT" --in - --out ">tcp://127.0.0.1:$PORT" --curve-secret "$W/open.key" --curve-server-key "$W/server.pub" </dev/null 2>/dev/null
  assertEquals "mode 0640 (group-readable) is refused too" 100 $?
}

test_every_stage_offers_curve_options() {
  local t h
  for t in ddb-scan-due sqs-push sqs-drain sns-publish state-update; do
    [ -x "$BIN/$t" ] || continue
    h=$("$BIN/$t" --help)
    for o in --curve-secret --curve-public --curve-server-key --curve-allow; do
      assertContains "$t --help lists $o" "$h" "$o"
    done
  done
}

test_keygen_modes() {
  local d=$W/kg
  mkdir -p "$d"
  (umask 000 && "$BIN/delayer-keygen" "$d/s" "$d/p")
  assertEquals "delayer-keygen works" 0 $?
  assertEquals "secret key mode, whatever the umask" 600 "$(stat -c %a "$d/s")"
  assertEquals "public key mode" 644 "$(stat -c %a "$d/p")"
  assertEquals "Z85 key line" 40 "$(grep -v '^#' "$d/p" | tr -d '\n' | wc -c)"
  "$BIN/delayer-keygen" "$d/s" "$d/p" 2>/dev/null
  assertEquals "no overwrite without --force" 111 $?
  "$BIN/delayer-keygen" --force "$d/s" "$d/p"
  assertEquals "--force replaces" 0 $?
}

test_ipc_directory_open_to_others_refused() {
  local d=$W/ipc-open err rc
  mkdir -m 0755 "$d"
  err=$("$CAT" --in "@ipc://$d/x.ipc" --out - </dev/null 2>&1)
  rc=$?
  assertNotEquals "bind in a 0755 directory refused" 0 "$rc"
  assertContains "reason given" "$err" "is accessible by others"
  chmod 0700 "$d"
  "$CAT" --in "@ipc://$d/x.ipc" --out - --idle 100ms </dev/null 2>/dev/null
  assertEquals "the same directory with mode 0700 is fine" 0 $?
  "$CAT" --in "@ipc://$W/fresh/x.ipc" --out - --idle 100ms </dev/null 2>/dev/null
  assertEquals "a missing directory is created" 0 $?
  assertEquals "...with mode 0700" 700 "$(stat -c %a "$W/fresh")"
}

. /usr/share/shunit2/shunit2
