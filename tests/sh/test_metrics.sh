#!/usr/bin/env bash
# test_metrics: the --metrics endpoint (docs/metrics.md) during a pipeline
# run. N fast-track schedules (`delayer schedule --in`, straight into the
# delay queue) go through `sqs-drain | sns-publish | state-update`, each
# stage serving --metrics on 127.0.0.1:0 (the bound port is read from the
# "metrics listening" log line). Scraped with curl while running and after
# all were published, the numbers are checked against what happened:
# published == N, lateness histogram count == N, PublishBatch ok requests in
# 1..N, what sns-publish sent == what state-update received, /healthz and
# /readyz 200. An address already taken is exit 111 with a clear error.
. "$(dirname "$0")/../lib/suite.sh"
PFX=$(new_prefix)
TDIR=$(mktemp -d "${TMPDIR:-/tmp}/delayer-metrics.XXXXXX")
PIPE_PID=

oneTimeSetUp() {
  suite_up t || return 1
}

oneTimeTearDown() {
  stop_pipeline
  [ -n "${KEEP_TDIR:-}" ] || rm -rf -- "$TDIR"
  suite_down
}

# Every stage's stderr is checked for sanitizer reports.
tearDown() {
  stop_pipeline
  check_stage_logs "$TDIR"
}

# ------------------------------------------------------------ helpers

stop_pipeline() {
  local f pid
  for f in "$TDIR"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null
    rm -f "$f"
  done
  if [ -n "$PIPE_PID" ]; then
    wait "$PIPE_PID" 2>/dev/null
    PIPE_PID=
  fi
}

# addr_of LOG: the address from the "metrics listening" line (waits 10 s).
addr_of() {
  local i a
  for i in $(seq 1 50); do
    a=$(sed -n 's/.*msg="metrics listening" addr=\([0-9.:]*\).*/\1/p' "$1" 2>/dev/null | tail -1)
    [ -n "$a" ] && { echo "$a"; return 0; }
    sleep 0.2
  done
  return 1
}

# scrape ADDR: /metrics into stdout.
scrape() { curl -s --max-time 5 "http://$1/metrics"; }
# status ADDR PATH: the HTTP status code.
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$1$2"; }

# value FILE SERIES: the value of one exact series line (name{labels}), 0 if absent.
value() {
  awk -v s="$2" '$1 == s { v = $2 } END { print (v == "" ? 0 : v) }' "$1"
}

# sum FILE PREFIX: sum of every series whose name{labels} starts with PREFIX.
sum_of() {
  awk -v p="$2" 'index($1, p) == 1 { v += $2 } END { printf "%d\n", v }' "$1"
}

published_is() { scrape "$PUB" >"$TDIR/pub.prom" && [ "$(value "$TDIR/pub.prom" delayer_published_total)" -ge "$1" ]; }

# check_format FILE: every series has a # TYPE for its family; histogram
# buckets are cumulative and +Inf equals _count.
check_format() {
  python3 - "$1" <<'EOF'
import re, sys
types, bad = {}, []
hist = {}
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("# TYPE "):
        _, _, name, t = line.split(" ")
        types[name] = t
        continue
    if line.startswith("#") or not line:
        continue
    m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$', line)
    if not m:
        bad.append("unparsable: " + line); continue
    name, labels, v = m.group(1), m.group(2) or "", float(m.group(3))
    fam = re.sub(r'_(bucket|sum|count)$', '', name) if re.sub(r'_(bucket|sum|count)$', '', name) in types else name
    if fam not in types:
        bad.append("no TYPE: " + line)
    if name.endswith("_bucket"):
        key = (fam, re.sub(r',?le="[^"]*"', '', labels).replace("{,", "{").replace("{}", ""))
        prev = hist.setdefault(key, [])
        if prev and v < prev[-1]:
            bad.append("buckets not cumulative: " + line)
        prev.append(v)
    if name.endswith("_count") and types.get(fam) == "histogram":
        b = hist.get((fam, labels))
        if not b or b[-1] != v:
            bad.append("+Inf bucket %s != count %s for %s%s" % (b and b[-1], v, fam, labels))
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}

# ------------------------------------------------------------ tests

test_help_lists_metrics() {
  local t
  for t in ddb-scan-due sqs-push sqs-drain sns-publish state-update; do
    run "$BIN/$t" --help
    assertContains "$t --help" "$OUT" "--metrics ADDR"
  done
}

# su_caught_up N: state-update received every report sns-publish sent and
# applied N of them
su_caught_up() {
  scrape "$PUB" >"$TDIR/pub-wait.prom" && scrape "$SU" >"$TDIR/su-wait.prom" || return 1
  [ "$(value "$TDIR/su-wait.prom" 'delayer_updates_total{result="applied"}')" = "$1" ] &&
    [ "$(value "$TDIR/su-wait.prom" 'delayer_pipe_messages_total{side="in"}')" = \
      "$(value "$TDIR/pub-wait.prom" 'delayer_pipe_messages_total{side="out"}')" ]
}

test_pipeline_metrics_match_what_happened() {
  local n=12 i
  for i in $(seq 1 $n); do
    D schedule --id "m-$i" --in "$((3000 + i * 150))ms" --topic t --payload "p$i" >/dev/null || fail "schedule m-$i"
  done
  sh -c 'echo $$ >"$1"; exec "$2" --prefix "$3" --out - --wait 1 --metrics 127.0.0.1:0' _ \
      "$TDIR/drain.pid" "$BIN/sqs-drain" "$PFX" 2>"$TDIR/drain.log" |
    sh -c 'echo $$ >"$1"; exec "$2" --prefix "$3" --in - --out - --metrics 127.0.0.1:0' _ \
      "$TDIR/pub.pid" "$BIN/sns-publish" "$PFX" 2>"$TDIR/pub.log" |
    "$BIN/state-update" --prefix "$PFX" --in - --no-events --metrics 127.0.0.1:0 >/dev/null 2>"$TDIR/su.log" &
  PIPE_PID=$!
  DRAIN=$(addr_of "$TDIR/drain.log") || fail "sqs-drain never logged its metrics address"
  PUB=$(addr_of "$TDIR/pub.log") || fail "sns-publish never logged its metrics address"
  SU=$(addr_of "$TDIR/su.log") || fail "state-update never logged its metrics address"
  [ -n "$PUB" ] && [ -n "$SU" ] && [ -n "$DRAIN" ] || { cat "$TDIR"/*.log; return; }
  case $PUB in 127.0.0.1:0) fail "the logged address must be the bound port, not :0" ;; esac

  # During the run (the schedules are due in 3-5 s): live and ready.
  local a
  for a in "$DRAIN" "$PUB" "$SU"; do
    wait_until 10 eval '[ "$(status "$a" /readyz)" = 200 ]' || fail "/readyz of $a: $(curl -s "http://$a/readyz")"
    assertEquals "/healthz of $a" 200 "$(status "$a" /healthz)"
    assertEquals "unknown path of $a" 404 "$(status "$a" /nope)"
  done
  scrape "$PUB" >"$TDIR/pub-during.prom"
  assertContains "content: stage info" "$(cat "$TDIR/pub-during.prom")" 'delayer_stage_info{stage="sns-publish"'
  assertTrue "published during the run < N (scraped before all were due)" \
    "[ $(value "$TDIR/pub-during.prom" delayer_published_total) -lt $n ]"
  assertEquals "content type" "text/plain; version=0.0.4; charset=utf-8" \
    "$(curl -s -o /dev/null -w '%{content_type}' "http://$PUB/metrics")"

  # After all were published.
  wait_until 30 published_is $n || fail "published counter reached only $(value "$TDIR/pub.prom" delayer_published_total)"
  wait_until 10 su_caught_up "$n" || fail "state-update did not apply the last reports: $(cat "$TDIR/su-wait.prom")"
  scrape "$PUB" >"$TDIR/pub.prom"
  scrape "$SU" >"$TDIR/su.prom"
  scrape "$DRAIN" >"$TDIR/drain.prom"
  assertEquals "published == N" "$n" "$(value "$TDIR/pub.prom" delayer_published_total)"
  assertEquals "failed == 0" 0 "$(value "$TDIR/pub.prom" 'delayer_failed_total{op="publish"}')"
  assertEquals "lateness histogram count == N" "$n" "$(value "$TDIR/pub.prom" delayer_lateness_ms_count)"
  assertEquals "lateness +Inf bucket == N" "$n" "$(value "$TDIR/pub.prom" 'delayer_lateness_ms_bucket{le="+Inf"}')"
  local ok
  ok=$(value "$TDIR/pub.prom" 'delayer_aws_requests_total{service="sns",api="PublishBatch",outcome="ok"}')
  assertTrue "PublishBatch ok requests > 0 (got $ok)" "[ $ok -gt 0 ]"
  assertTrue "PublishBatch ok requests <= N (got $ok)" "[ $ok -le $n ]"
  assertEquals "batch-size histogram: one observation per PublishBatch call" "$ok" \
    "$(value "$TDIR/pub.prom" 'delayer_batch_size_count{api="PublishBatch"}')"
  assertEquals "batch sizes add up to N" "$n" "$(value "$TDIR/pub.prom" 'delayer_batch_size_sum{api="PublishBatch"}')"
  assertEquals "sns-publish received N records" "$n" "$(value "$TDIR/pub.prom" 'delayer_pipe_messages_total{side="in"}')"
  assertEquals "sqs-drain sent N records" "$n" "$(value "$TDIR/drain.prom" 'delayer_pipe_messages_total{side="out"}')"
  local sent got
  sent=$(value "$TDIR/pub.prom" 'delayer_pipe_messages_total{side="out"}')
  got=$(value "$TDIR/su.prom" 'delayer_pipe_messages_total{side="in"}')
  assertTrue "sns-publish sent reports (got $sent)" "[ $sent -ge $n ]"
  assertEquals "state-update received what sns-publish sent" "$sent" "$got"
  assertEquals "state-update applied N published reports" "$n" "$(value "$TDIR/su.prom" 'delayer_updates_total{result="applied"}')"
  assertTrue "sqs-drain made ReceiveMessage requests" \
    "[ $(sum_of "$TDIR/drain.prom" 'delayer_aws_requests_total{service="sqs",api="ReceiveMessage",outcome="ok"') -gt 0 ]"
  assertTrue "uptime > 0" "[ $(value "$TDIR/pub.prom" delayer_process_uptime_seconds | cut -d. -f1) -ge 1 ]"
  assertEquals "ready gauge" 1 "$(value "$TDIR/pub.prom" delayer_ready)"
  local f
  for f in pub su drain; do
    check_format "$TDIR/$f.prom" || fail "$f: not valid exposition format"
  done
  assertEquals "/healthz after the run" 200 "$(status "$PUB" /healthz)"
  assertEquals "/readyz after the run" 200 "$(status "$PUB" /readyz)"
}

test_address_taken_is_exit_111() {
  local port
  port=$(free_port)
  rm -f "$TDIR/held"
  python3 -c 'import socket,sys,time; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); open(sys.argv[2], "w").close(); time.sleep(30)' \
    "$port" "$TDIR/held" &
  local holder=$!
  wait_until 10 test -e "$TDIR/held" || fail "could not hold port $port"
  run "$BIN/sns-publish" --prefix "$PFX" --in - --metrics "127.0.0.1:$port" </dev/null
  kill "$holder" 2>/dev/null
  wait "$holder" 2>/dev/null
  assertEquals "exit status" 111 "$RC"
  assertContains "error" "$ERR" 'msg="cannot serve metrics"'
  assertContains "reason" "$ERR" "Address already in use"
  assertEquals "one line" 1 "$(printf '%s\n' "$ERR" | grep -c '')"
  run "$BIN/state-update" --prefix "$PFX" --metrics "nonsense" </dev/null
  assertEquals "a malformed address is exit 111 too" 111 "$RC"
  assertContains "$ERR" "bad address"
}

. /usr/share/shunit2/shunit2
