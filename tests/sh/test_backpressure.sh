#!/usr/bin/env bash
# Backpressure: a backlog of large messages (payloads of BP_KB KB) coming
# due while DynamoDB is slow (every DynamoDB request of the stages held
# BP_LATENCY s by tests/lib/faultproxy.py), through the real pipeline under
# the supervisor, with sns-publish's memory bound and the ZeroMQ high-water
# marks set low so that they are really hit. Checked: sns-publish stopped
# reading at its bound, every stage's peak RSS (VmHWM) stays under its
# documented bound (docs/architecture.md, "Memory bounds"), nothing was
# restarted, and every schedule ends PUBLISHED.
#   BP_N        schedules (600; `make soak`: 2000)
#   BP_KB       payload size, KB (200)
#   BP_LATENCY  added to every DynamoDB request, s (0.1)
#   BP_PUBLISH_OPTS  sns-publish's bound options ("--max-held 40 --max-held-mb 8")
. "$(dirname "$0")/../lib/chaos.sh"

N=${BP_N:-600}
KB=${BP_KB:-200}
LAT=${BP_LATENCY:-0.1}
PUB_OPTS=${BP_PUBLISH_OPTS---max-held 40 --max-held-mb 8}
HWM=8
# Peak RSS bounds, MB, for these options (docs/architecture.md): a stage's
# own footprint (about 15 MB: libcurl, OpenSSL, libzmq) plus what it may
# hold: sns-publish --max-held-mb plus its input pipe (hwm records) and the
# requests in flight; sqs-drain 100 received messages waiting plus 10 per
# poller plus its output pipe (hwm), each up to twice (the body received
# and the record built from it; measured 53-64 MB for 200 KB); the others
# hold no payloads in bulk.
BOUND_PUBLISH=$((40 + 8 + HWM * KB / 1024 * 2))
BOUND_DRAIN=$((40 + (100 + 20 + HWM) * KB / 1024 * 2))
BOUND_OTHER=40

oneTimeSetUp() {
  work_up backpressure
  PPORT=$(free_port)
  PROXY="http://127.0.0.1:$PPORT"
}

oneTimeTearDown() {
  rel_down
  [ -n "${PROXY_PID:-}" ] && { kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; }
  work_down
}

# bp_lines N KB FROM_S TO_S: N schedules with KB-KB payloads due evenly
# between now+FROM and now+TO.
bp_lines() {
  python3 - "$@" <<'PY'
import json, random, sys, time
n, kb, lo, hi = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
now = time.time() * 1000
base = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(1024))
for i in range(n):
    at = int(now + (lo + (hi - lo) * i / max(n - 1, 1)) * 1000)
    payload = ("%06d " % i + base * kb)[:kb * 1000]
    print(json.dumps({"id": "bp-%06d" % i, "at": at, "topic": "t", "payload": payload}))
PY
}

# hwm_mb PID: peak RSS (VmHWM) in MB
hwm_mb() { awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$1/status" 2>/dev/null; }

test_large_backlog_with_slow_dynamodb_stays_within_bounds() {
  python3 "$REPO/tests/lib/faultproxy.py" "$PPORT" "$AWS_ENDPOINT_URL_DYNAMODB" "$AWS_ENDPOINT_URL_SQS" \
    "$WORK/proxy-stats.json" --ddb-latency "$LAT" >"$WORK/proxy.out" 2>&1 &
  PROXY_PID=$!
  wait_until 10 grep -q listening "$WORK/proxy.out" || { fail "proxy did not start"; return; }
  # A window long enough for the import to put everything in the queue
  # (fast track) before it comes due: the backlog is in SQS, not in the table;
  # a long grace, so that a slow import is never refused "in the past".
  REL_WINDOW=120s REL_GRACE=600s REL_VISIBILITY=30 rel_up "s|/sqs-drain --out|/sqs-drain --hwm $HWM --out|; s|/sns-publish --in|/sns-publish $PUB_OPTS --hwm $HWM --in|" \
    AWS_ENDPOINT_URL_DYNAMODB="$PROXY" || return
  local f="$WORK/bp.ndjson" k lead=$((20 + N / 100)) t0
  t0=$(date +%s)
  # The backlog: in the queue (fast track) before it comes due, within 5 s;
  # imported by 4 processes at once (about 25 s for 1,000 here)
  bp_lines "$N" "$KB" "$lead" $((lead + 5)) >"$f"
  split -n l/4 -d "$f" "$f."
  local pids=()
  for k in 0 1 2 3; do D import --ids <"$f.0$k" >"$f.0$k.out" & pids+=($!); done
  wait "${pids[@]}"
  cat "$f".0?.out | grep -P "\t" | cut -f2 >"$f.ids"
  assertEquals "imported" "$N" "$(wc -l <"$f.ids")"
  echo "  imported in $(( $(date +%s) - t0 )) s (due from ${lead} s)"
  local want=$N got=0 deadline=$(( $(date +%s) + 420 )) # under tests/run's 600 s
  while [ "$(date +%s)" -lt "$deadline" ]; do
    got=$(D list --state PUBLISHED --count)
    [ "$got" = "$want" ] && break
    sleep 2
  done
  local line name pid mb bound report="" over=0
  while read -r name pid; do
    mb=$(hwm_mb "$pid")
    case $name in
      sns-publish.*) bound=$BOUND_PUBLISH ;;
      sqs-drain.*) bound=$BOUND_DRAIN ;;
      *) bound=$BOUND_OTHER ;;
    esac
    report="$report $name=${mb}MB(<=$bound)"
    [ "${mb:-0}" -le "$bound" ] || { over=1; echo "  $name peak RSS ${mb} MB over its bound $bound MB"; }
  done < <(rel_pids | sort)
  echo "  $want schedules ($N of ${KB} KB as a backlog), DynamoDB +${LAT}s: PUBLISHED $got; peak RSS:$report; restarts $(rel_restarts)"
  echo "backpressure schedules=$want kb=$KB latency_s=$LAT published=$got rss_mb:$report" >>"${CHAOS_REPORT:-/dev/null}"
  assertEquals "every schedule PUBLISHED" "$want" "$got"
  assertEquals "every stage under its memory bound" 0 "$over"
  assertEquals "no stage restarted" 0 "$(rel_restarts)"
  [ -z "$PUB_OPTS" ] || assertTrue "sns-publish reached its bound and stopped reading" \
    "grep -q 'memory bound reached' $RUN/sns-publish.*.log"
  rel_down; RUN=
}

. /usr/share/shunit2/shunit2
