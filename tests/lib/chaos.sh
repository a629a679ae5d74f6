# shellcheck shell=bash
# tests/lib/chaos.sh: shared helpers of the reliability suites (test_chaos,
# test_faults): a pipeline of the real stages under the supervisor, arrivals
# read with `delayer watch --json`, and the invariants checked from outside.
# Sources suite.sh (stack, CLI and AWS helpers). Needs WORK (a scratch
# folder: work_up).
. "$(dirname "${BASH_SOURCE[0]}")/suite.sh"
SUP="$REPO/scripts/delayer-supervise"

# rel_up SED [ENV=VALUE...]: init a fresh deployment (5 s window and grace,
# SQS visibility 5 s; REL_WINDOW, REL_GRACE and REL_VISIBILITY (seconds)
# override them) and start local.conf edited by SED, under the extra
# environment given (e.g. endpoints of a fault proxy).
rel_up() {
  local sedx=$1; shift
  PFX=$(new_prefix)
  export DELAYER_PREFIX=$PFX DELAYER_WINDOW=${REL_WINDOW:-5s} DELAYER_GRACE=${REL_GRACE:-5s}
  D init --topic t >/dev/null || { fail "init"; return 1; }
  local url
  url=$("$BIN/aws-call" sqs GetQueueUrl "{\"QueueName\":\"$PFX-delay\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["QueueUrl"])')
  "$BIN/aws-call" sqs SetQueueAttributes \
    "{\"QueueUrl\":\"$url\",\"Attributes\":{\"VisibilityTimeout\":\"${REL_VISIBILITY:-5}\"}}" >/dev/null ||
    fail "visibility ${REL_VISIBILITY:-5} s"
  CONF="$WORK/$PFX.conf"
  RUN="$WORK/run-$PFX"
  # never give up on an instance killed on purpose; restart quickly
  sed -e "$sedx" -e 's/^set give_up=.*/set give_up=9999/' -e 's/^set backoff_max=.*/set backoff_max=2/' \
    "$REPO/pipelines/local.conf" >"$CONF"
  env "$@" "$SUP" -c "$CONF" -d "$RUN" start >/dev/null || { fail "pipeline start"; tail -5 "$RUN"/*.log; return 1; }
}

rel_down() {
  [ -n "${RUN:-}" ] || return 0
  "$SUP" -c "$CONF" -d "$RUN" stop >/dev/null || fail "pipeline stop"
}

# rel_watch: a subscribed queue printing arrivals (NDJSON) until stopped.
rel_watch() {
  WATCH_OUT="$WORK/watch-$PFX.ndjson"
  D watch --topic t --json --timeout 1h >"$WATCH_OUT" 2>"$WORK/watch-$PFX.err" &
  WATCH_PID=$!
  for _ in $(seq 100); do grep -q watching "$WORK/watch-$PFX.err" && return 0; sleep 0.1; done
  fail "watch did not subscribe"
}

rel_watch_stop() {
  kill -TERM "$WATCH_PID" 2>/dev/null
  wait "$WATCH_PID" 2>/dev/null
}

# rel_schedules N FROM_S TO_S TAG: N lines due evenly between now+FROM and now+TO.
rel_schedules() {
  python3 - "$@" <<'PY'
import json, sys, time
n, lo, hi, tag = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
now = time.time() * 1000
for i in range(n):
    at = int(now + (lo + (hi - lo) * i / max(n - 1, 1)) * 1000)
    print(json.dumps({"id": "%s-%05d" % (tag, i), "at": at, "topic": "t", "payload": "p %d" % i}))
PY
}

# rel_import FILE: import by 4 processes at once (a loaded machine imports
# slower than the schedules come due), the ids to FILE.ids
rel_import() {
  local k pids=() rc=0
  split -n l/4 -d "$1" "$1.part"
  for k in 0 1 2 3; do D import --ids <"$1.part0$k" >"$1.part0$k.out" & pids+=($!); done
  for k in "${pids[@]}"; do wait "$k" || rc=1; done
  [ "$rc" = 0 ] || fail "import"
  cat "$1".part0?.out >"$1.out"
  grep -P "\t" "$1.out" | cut -f2 >"$1.ids"
  rm -f "$1".part0?
}

# rel_wait_arrivals IDS_FILE DEADLINE_EPOCH_S: until every id arrived or the deadline
rel_wait_arrivals() {
  while [ "$(date +%s)" -lt "$2" ]; do
    python3 - "$WATCH_OUT" "$1" <<'PY' && return 0
import json, sys
got = set()
for l in open(sys.argv[1]):
    try: got.add(json.loads(l)["id"])
    except Exception: pass
want = set(l.strip() for l in open(sys.argv[2]) if l.strip())
sys.exit(0 if want <= got else 1)
PY
    sleep 1
  done
  return 1
}

# rel_check WANT_IDS [FORBIDDEN_IDS]: prints a summary; sets LOST EARLY DUPS
# FORBIDDEN (arrivals of forbidden ids) UNEXPECTED, and RESULT (the summary line).
rel_check() {
  local out
  out=$(python3 - "$WATCH_OUT" "$1" "${2:-/dev/null}" <<'PY'
import json, sys
rows = []
for l in open(sys.argv[1]):
    try: rows.append(json.loads(l))
    except Exception: pass
want = set(l.strip() for l in open(sys.argv[2]) if l.strip())
forb = set(l.strip() for l in open(sys.argv[3]) if l.strip())
ids = [r["id"] for r in rows]
dups = len(ids) - len(set(ids))
early = [r["id"] for r in rows if r.get("late_ms") is None or r["late_ms"] < 0]
lost = want - set(ids)
bad = forb & set(ids)
unexp = set(ids) - want - forb
late = sorted(r["late_ms"] for r in rows if r.get("late_ms") is not None)
p = lambda q: late[min(len(late) - 1, int(q * len(late)))] if late else None
print("LOST=%d EARLY=%d DUPS=%d FORBIDDEN=%d UNEXPECTED=%d ARRIVED=%d P50=%s P99=%s MAX=%s"
      % (len(lost), len(early), dups, len(bad), len(unexp), len(rows), p(.5), p(.99), late[-1] if late else None))
for i in sorted(lost)[:5]: print("# lost", i, file=sys.stderr)
for i in sorted(bad)[:5]: print("# forbidden arrived", i, file=sys.stderr)
for i in early[:5]: print("# early", i, file=sys.stderr)
PY
)
  eval "$out"
  RESULT=$out
}

# rel_state_counts: "STATE=n ..." from `list --count` (the by_state index),
# then checks `stats --recount` agrees with it.
rel_states_agree() {
  local s n m
  D stats --recount >/dev/null || fail "stats --recount"
  for s in NEW ENQUEUED PUBLISHED CANCELLED FAILED INVALID; do
    n=$(D list --state "$s" --count)
    m=$(D stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); s=d.get("states", d); print(s.get(sys.argv[1], 0) if isinstance(s, dict) else ([x["count"] for x in s if x.get("state")==sys.argv[1]] or [0])[0])' "$s")
    assertEquals "stats after --recount agree with the table for $s" "$n" "$m"
    eval "STATE_$s=$n"
  done
}

# rel_pids: "STAGE.I PID" of every live instance (pid files: "PID STARTTIME",
# checked against /proc so a reused pid is never signalled).
rel_pids() {
  local f pid st cur
  for f in "$RUN"/*.pid; do [ -e "$f" ] || continue
    case $f in */supervise.pid) continue ;; esac
    read -r pid st <"$f" 2>/dev/null || continue
    cur=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $20}') || continue
    [ "$cur" = "$st" ] || continue
    echo "$(basename "$f" .pid) $pid"
  done
}

# rel_cpu_ticks: utime+stime (clock ticks) summed over the live instances.
rel_cpu_ticks() {
  local pid t=0 v
  while read -r _ pid; do
    v=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
    t=$((t + ${v:-0}))
  done < <(rel_pids)
  echo "$t"
}

# rel_restarts: the total restarts in the supervisor's status table
rel_restarts() { awk '$1 == "instance" { s += $6 } END { print s + 0 }' "$RUN/status"; }
