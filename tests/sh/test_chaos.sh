#!/usr/bin/env bash
# Crash chaos: the real pipeline (two instances of every stage) while a
# killer SIGKILLs a random stage instance every 2-3 s (the supervisor
# restarts it), then while instances are paused (SIGSTOP) longer than the
# lease grace and the SQS visibility timeout and cancels happen meanwhile.
# Checked from outside: what arrives on a queue subscribed to the topic
# (delayer watch --json) and what the table says.
#   CHAOS_N        schedules in the kill run (500; `make soak`: 5000)
#   CHAOS_SECONDS  the span of their due times, s (30; soak: 180)
#   CHAOS_PAUSES   pause rounds (1; soak: 3)
#   CHAOS_LEAD     the kill run's first due time, s ahead (6; more on a
#                  loaded machine, whose import is slower)
#   CHAOS_MAX_LATE_MS  the kill run's largest lateness allowed (20000)
# The kill run uses the production defaults for the lease grace and the
# queue's visibility timeout (30 s): after a SIGKILL no schedule may wait
# for either to run out (docs/architecture.md, "Durability"), so nothing
# may be 20 s late; the pause run shortens both to 5 s.
. "$(dirname "$0")/../lib/chaos.sh"

N=${CHAOS_N:-500}
SECS=${CHAOS_SECONDS:-30}
PAUSES=${CHAOS_PAUSES:-1}

oneTimeSetUp() {
  work_up chaos
}

oneTimeTearDown() {
  [ -n "${KILLER_PID:-}" ] && kill "$KILLER_PID" 2>/dev/null
  [ -n "${WATCH_PID:-}" ] && kill "$WATCH_PID" 2>/dev/null
  # a paused instance must not outlive the suite
  [ -n "${RUN:-}" ] && { rel_pids | while read -r _ p; do kill -CONT "$p" 2>/dev/null; done; rel_down; }
  work_down
}

# killer OUT: SIGKILL a random live instance every 2-3 s; one line per kill.
killer() {
  local line name pid
  while :; do
    sleep "$((2 + RANDOM % 2)).$((RANDOM % 10))"
    line=$(rel_pids | shuf -n 1)
    [ -n "$line" ] || continue
    read -r name pid <<<"$line"
    kill -KILL "$pid" 2>/dev/null && echo "$(date +%s.%N) $name $pid" >>"$1"
  done
}

test_sigkill_every_few_seconds() {
  REL_GRACE=30s REL_VISIBILITY=30 rel_up 's/instances=1/instances=2/' || return
  rel_watch
  # a few fast-tracked (due within the 5 s window) then N-20 through the table
  rel_schedules 20 2 4 fast >"$WORK/chaos.ndjson"
  rel_schedules "$((N - 20))" "${CHAOS_LEAD:-6}" "$SECS" chaos >>"$WORK/chaos.ndjson"
  local t0 kills
  t0=$(date +%s)
  : >"$WORK/kills"
  killer "$WORK/kills" &
  KILLER_PID=$!
  rel_import "$WORK/chaos.ndjson"
  assertEquals "imported" "$N" "$(wc -l <"$WORK/chaos.ndjson.ids")"
  # kill until the last one is due (plus the grace), then let it recover
  while [ "$(date +%s)" -lt $((t0 + SECS + 5)) ]; do sleep 1; done
  kill "$KILLER_PID"; wait "$KILLER_PID" 2>/dev/null; KILLER_PID=
  kills=$(wc -l <"$WORK/kills")
  rel_wait_arrivals "$WORK/chaos.ndjson.ids" $(( $(date +%s) + 90 )) || echo "  not all arrived within 90 s after the last kill"
  sleep 3 # late duplicates and a last counter flush
  rel_watch_stop
  rel_check "$WORK/chaos.ndjson.ids"
  echo "  $N schedules over ${SECS}s, $kills SIGKILLs ($(awk '{print $2}' "$WORK/kills" | sed 's/\.[0-9]*$//' | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')restarts $(rel_restarts)): $RESULT"
  assertTrue "at least one kill per 4 s" "[ $kills -ge $((SECS / 4)) ]"
  assertEquals "lost" 0 "$LOST"
  assertEquals "published before due" 0 "$EARLY"
  assertEquals "unexpected ids" 0 "$UNEXPECTED"
  assertTrue "no schedule waited for a lease or visibility timeout: max lateness $MAX ms <= ${CHAOS_MAX_LATE_MS:-20000}" \
    "[ ${MAX:-999999} -le ${CHAOS_MAX_LATE_MS:-20000} ]"
  assertTrue "duplicates $DUPS <= 1% of $N" "[ $((DUPS * 100)) -le $N ]"
  rel_states_agree
  assertEquals "every schedule PUBLISHED" "$N" "$STATE_PUBLISHED"
  assertEquals "nothing left waiting" 0 "$((STATE_NEW + STATE_ENQUEUED))"
  echo "chaos_kill schedules=$N kills=$kills dups=$DUPS lost=$LOST early=$EARLY p50_ms=$P50 p99_ms=$P99 max_late_ms=${MAX}" >>"${CHAOS_REPORT:-/dev/null}"
  rel_down; RUN=
}

# One pause round: pause one instance each of ddb-scan-due, sqs-push and
# sns-publish for 12 s (lease grace 5 s, visibility 5 s), cancel a third of
# the schedules that were in flight meanwhile, then SIGCONT.
pause_round() {
  local r=$1 tag="z$1" f="$WORK/pause$1.ndjson" p victims=() line name pid i id ok=0 tried=0
  rel_schedules 150 1 6 "$tag" >"$f" # fast track: in SQS / sns-publish now
  rel_schedules 150 6 20 "${tag}s" >>"$f" # through the scanner and sqs-push
  rel_import "$f"
  sleep 3
  for name in sns-publish ddb-scan-due sqs-push; do
    line=$(rel_pids | grep "^$name\." | shuf -n 1)
    read -r _ pid <<<"$line"
    [ -n "$pid" ] && kill -STOP "$pid" && victims+=("$pid") && echo "  round $r: paused $line"
  done
  # cancel every third schedule (whatever holds it: the paused ones included)
  : >"$f.cancelled"
  i=0
  while read -r id; do
    i=$((i + 1))
    [ $((i % 3)) = 0 ] || continue
    tried=$((tried + 1))
    D cancel "$id" >/dev/null 2>&1 && { echo "$id" >>"$f.cancelled"; ok=$((ok + 1)); }
  done <"$f.ids"
  sleep 12
  for p in "${victims[@]}"; do kill -CONT "$p"; done
  grep -vxF -f "$f.cancelled" "$f.ids" >"$f.keep"
  rel_wait_arrivals "$f.keep" $(( $(date +%s) + 60 )) || echo "  round $r: not all arrived within 60 s"
  sleep 8 # time for a zombie to (wrongly) publish something
  echo "  round $r: cancel tried $tried, succeeded $ok"
  cat "$f.keep" >>"$WORK/keep.all"
  cat "$f.cancelled" >>"$WORK/cancelled.all"
  CANCELLED=$((CANCELLED + ok))
}

test_sigstop_zombies_do_not_publish_cancelled() {
  rel_up 's/instances=1/instances=2/' || return
  rel_watch
  : >"$WORK/keep.all"; : >"$WORK/cancelled.all"
  CANCELLED=0
  local r
  for r in $(seq "$PAUSES"); do pause_round "$r"; done
  rel_watch_stop
  rel_check "$WORK/keep.all" "$WORK/cancelled.all"
  echo "  $PAUSES pause round(s), $CANCELLED cancelled while paused: $RESULT"
  assertTrue "some cancels succeeded" "[ $CANCELLED -gt 0 ]"
  assertEquals "cancelled schedules that arrived" 0 "$FORBIDDEN"
  assertEquals "lost" 0 "$LOST"
  assertEquals "published before due" 0 "$EARLY"
  assertEquals "unexpected ids" 0 "$UNEXPECTED"
  rel_states_agree
  assertEquals "CANCELLED in the table" "$CANCELLED" "$STATE_CANCELLED"
  assertEquals "PUBLISHED in the table" "$(wc -l <"$WORK/keep.all")" "$STATE_PUBLISHED"
  echo "chaos_pause rounds=$PAUSES cancelled=$CANCELLED dups=$DUPS forbidden=$FORBIDDEN lost=$LOST early=$EARLY" >>"${CHAOS_REPORT:-/dev/null}"
  rel_down; RUN=
}

. /usr/share/shunit2/shunit2
