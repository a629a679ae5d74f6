#!/usr/bin/env bash
# Server faults: DynamoDB Local restarted mid-run; the stages cut off from
# both servers for a while (a proxy between them, stopped and started
# again); a proxy answering a share of requests with AWS-shaped throttling
# errors and 500/503s, and delaying others. Everything is still delivered,
# never early, and the stages do not busy-loop while the servers are gone.
# Runs its own private stack (it restarts a server).
#   FAULTS_N        schedules per test (200; soak: 2000)
#   FAULTS_OUTAGE   seconds of the outage (15; soak: 30)
#   FAULTS_P        share of requests answered with a fault (0.2)
. "$(dirname "$0")/../lib/chaos.sh"

N=${FAULTS_N:-200}
OUTAGE=${FAULTS_OUTAGE:-15}
PF=${FAULTS_P:-0.2}

oneTimeSetUp() {
  unset DELAYER_STACK_READY # a private stack: this suite restarts its servers
  work_up faults
  DDB_URL=$AWS_ENDPOINT_URL_DYNAMODB
  SQS_URL=$AWS_ENDPOINT_URL_SQS
  PPORT=$(free_port)
  PROXY="http://127.0.0.1:$PPORT"
}

oneTimeTearDown() {
  [ -n "${WATCH_PID:-}" ] && kill "$WATCH_PID" 2>/dev/null
  rel_down
  proxy_stop
  work_down
}

# proxy_start ARGS: the fault proxy on $PPORT (tests/lib/faultproxy.py)
proxy_start() {
  PSTATS="$WORK/proxy-stats.json"
  python3 "$REPO/tests/lib/faultproxy.py" "$PPORT" "$DDB_URL" "$SQS_URL" "$PSTATS" "$@" >"$WORK/proxy.out" 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 50); do grep -q listening "$WORK/proxy.out" && return 0; sleep 0.1; done
  fail "proxy did not start"; cat "$WORK/proxy.out"
}
proxy_stop() {
  [ -n "${PROXY_PID:-}" ] || return 0
  kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; PROXY_PID=
}
VIA_PROXY=()
via_proxy() { VIA_PROXY=(AWS_ENDPOINT_URL_DYNAMODB="$PROXY" AWS_ENDPOINT_URL_SQS="$PROXY" AWS_ENDPOINT_URL_SNS="$PROXY"); }

# deliver_and_check TAG: wait for every id, then the invariants
deliver_and_check() {
  rel_wait_arrivals "$WORK/$1.ndjson.ids" $(( $(date +%s) + ${2:-90} )) || echo "  not everything arrived in time"
  sleep 2
  rel_watch_stop
  rel_check "$WORK/$1.ndjson.ids"
  assertEquals "lost" 0 "$LOST"
  assertEquals "published before due" 0 "$EARLY"
  assertEquals "unexpected" 0 "$UNEXPECTED"
  rel_states_agree
  assertEquals "every schedule PUBLISHED" "$N" "$STATE_PUBLISHED"
}

test_dynamodb_restart_mid_run() {
  rel_up 's/^//' || return
  rel_watch
  rel_schedules "$N" 4 16 ddbr >"$WORK/ddbr.ndjson"
  rel_import "$WORK/ddbr.ndjson"
  sleep 6
  local pid t0 t1
  pid=$(cat "$STACK_DIR/ddb.pid")
  t0=$(date +%s%N)
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sleep 2
  stack_local_aws start >/dev/null || fail "DynamoDB Local did not start again"
  t1=$(date +%s%N)
  echo "  DynamoDB Local down for $(( (t1 - t0) / 1000000 )) ms (pid $pid -> $(cat "$STACK_DIR/ddb.pid"))"
  deliver_and_check ddbr
  echo "  $N schedules, DynamoDB restarted: $RESULT, stage restarts $(rel_restarts)"
  echo "faults_ddb_restart schedules=$N dups=$DUPS lost=$LOST early=$EARLY max_late_ms=$MAX" >>"${CHAOS_REPORT:-/dev/null}"
  rel_down; RUN=
}

test_cut_off_from_the_servers() {
  proxy_start
  via_proxy
  rel_up 's/^//' "${VIA_PROXY[@]}" || return
  rel_watch
  rel_schedules "$N" 4 $((OUTAGE + 15)) cut >"$WORK/cut.ndjson"
  rel_import "$WORK/cut.ndjson"
  sleep 5
  local c0 c1 r0 r1 hz ms
  proxy_stop # connection refused from now on
  sleep 1
  c0=$(rel_cpu_ticks); r0=$(rel_restarts)
  sleep "$OUTAGE"
  c1=$(rel_cpu_ticks); r1=$(rel_restarts)
  proxy_start
  hz=$(getconf CLK_TCK)
  ms=$(( (c1 - c0) * 1000 / hz ))
  echo "  outage ${OUTAGE}s: stage CPU ${ms} ms in total ($(( ms / OUTAGE / 10 ))% of one CPU), restarts during it $((r1 - r0))"
  # a busy loop would burn about OUTAGE s of CPU; allow 25 % of one CPU over
  # all the instances (sanitizer builds are slower)
  assertTrue "no busy loop during the outage (${ms} ms CPU)" "[ $ms -lt $(( OUTAGE * 250 )) ]"
  deliver_and_check cut 120
  echo "  $N schedules, cut off ${OUTAGE}s: $RESULT"
  echo "faults_outage schedules=$N outage_s=$OUTAGE cpu_ms=$ms dups=$DUPS lost=$LOST early=$EARLY max_late_ms=$MAX" >>"${CHAOS_REPORT:-/dev/null}"
  rel_down; RUN=
  proxy_stop
}

test_throttling_and_5xx_proxy() {
  proxy_start --fault "$PF" --delay 0.1
  via_proxy
  # every stage serves its metrics (docs/metrics.md) on a port of its own
  local st sx="" mports=()
  for st in ddb-scan-due sqs-push sqs-drain sns-publish state-update; do
    mports+=("$(free_port)")
    sx="$sx/^stage $st /s|\(cmd=[^ ]*\)|\1 --metrics 127.0.0.1:${mports[-1]}|
"
  done
  rel_up "$sx" "${VIA_PROXY[@]}" || return
  rel_watch
  rel_schedules "$N" 4 15 thr >"$WORK/thr.ndjson"
  rel_import "$WORK/thr.ndjson"
  local t0 c0 c1 secs ms
  t0=$(date +%s); c0=$(rel_cpu_ticks)
  deliver_and_check thr 120
  c1=$(rel_cpu_ticks); secs=$(( $(date +%s) - t0 ))
  ms=$(( (c1 - c0) * 1000 / $(getconf CLK_TCK) ))
  local faults logged m retries=0 throttled=0 v
  for m in "${mports[@]}"; do
    v=$(curl -s --max-time 2 "http://127.0.0.1:$m/metrics")
    retries=$((retries + $(printf '%s\n' "$v" | awk '/^delayer_aws_retries_total/ { s += $NF } END { print s + 0 }')))
    throttled=$((throttled + $(printf '%s\n' "$v" | awk '/^delayer_aws_requests_total.*outcome="(throttled|server_error)"/ { s += $NF } END { print s + 0 }')))
  done
  st=$(cat "$PSTATS")
  faults=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["faults"])' "$PSTATS")
  logged=$(cat "$RUN"/*.log | grep -cE 'Throttling|ProvisionedThroughput|HTTP 50[03]|status=50[03]|503|500')
  echo "  $N schedules through a proxy faulting ${PF}: $RESULT"
  echo "  proxy: $st"
  echo "  stage log lines naming a fault: $logged; stage CPU ${ms} ms over ${secs}s"
  echo "  stage metrics: AWS requests throttled or 5xx $throttled, client retries $retries"
  assertTrue "the proxy injected faults" "[ $faults -gt 20 ]"
  assertTrue "the stages counted the faults ($throttled)" "[ $throttled -gt 0 ]"
  assertTrue "the stages retried ($retries)" "[ $retries -gt 0 ]"
  # faults cost retries, not minutes: a throttled catch-up must not starve
  # the claims (ddb-scan-due's recovery budget)
  assertTrue "p99 lateness under 45 s ($P99 ms)" "[ $P99 -lt 45000 ]"
  assertTrue "no busy loop (${ms} ms CPU in ${secs}s)" "[ $ms -lt $(( secs * 500 )) ]"
  echo "faults_proxy schedules=$N p=$PF injected=$faults retries=$retries dups=$DUPS lost=$LOST early=$EARLY max_late_ms=$MAX" >>"${CHAOS_REPORT:-/dev/null}"
  rel_down; RUN=
  proxy_stop
}

. /usr/share/shunit2/shunit2
