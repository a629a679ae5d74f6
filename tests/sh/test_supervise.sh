#!/usr/bin/env bash
# test_supervise.sh: scripts/delayer-supervise against toy stages (small
# shell scripts written here): readiness, status, restarts with back-off,
# giving up, exit 100, scaling, restart, stop without leftovers.
export SHUNIT_COLOR=none
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SUP="$REPO/scripts/delayer-supervise"

# ---- helpers ----

# the daemon's view of one instance: "pid start restarts state info..."
inst() { sed -n "s/^instance $1 $2 //p" "$RUN/status" 2>/dev/null; }
inst_pid() { inst "$1" "$2" | cut -d' ' -f1; }
inst_restarts() { inst "$1" "$2" | cut -d' ' -f3; }
inst_state() { inst "$1" "$2" | cut -d' ' -f4; }

# wait_for SECONDS COMMAND...: polls until COMMAND succeeds
wait_for() {
    local n=$(($1 * 10)); shift
    while ! "$@"; do
        n=$((n - 1)); [ "$n" -gt 0 ] || return 1
        sleep 0.1
    done
}

# quiet_since MSG INST MS: the daemon answered a request made after MS past
# its last MSG line for INST, i.e. it kept running that long after it and
# would have logged a restart in the meantime (nothing to restart would come
# later than backoff_max, 1 s here)
quiet_since() {
    local last t
    last=$(grep "msg=\"$1\" inst=$2 " "$RUN/supervise.log" | tail -1 | sed 's/^ts=\([^ ]*\)Z .*/\1/')
    [ -n "$last" ] || return 1
    t=$(( $(date -u -d "$last" +%s%N) / 1000000 + $3 ))
    while [ "$(date +%s%3N)" -lt "$t" ]; do sleep 0.05; done
    sup scale stubborn 1 >/dev/null 2>&1   # a request the daemon answers: it is still looping
}

# ok.0 runs, ready, with a pid other than $1
restarted_ok0() { local p; p=$(inst_pid ok 0); [ -n "$p" ] && [ "$p" != "$1" ] && [ "$(inst_state ok 0)" = ready ]; }

# running: the process exists and is not a zombie (a zombie's parent may be
# a subreaper that reaps late)
running() { local st; st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }

# processes of the toy stages (and their children) still alive
toy_procs() { pgrep -f "^(bash $T/|sleep $MARK)" | wc -l; }
ok_children() { pgrep -fx "sleep $MARK" | wc -l; }
ok_procs() { pgrep -f "^bash $T/ok.sh" | wc -l; }

sup() { "$SUP" -c "$T/test.conf" "$@"; }

oneTimeSetUp() {
    T=$(mktemp -d /tmp/dsup.XXXXXX)
    RUN=$T/run
    export DELAYER_RUN_DIR=$RUN
    MARK=$((700000 + RANDOM))   # an odd sleep length marks our children
    # a well-behaved stage: ready after 0.5 s (on the fd given by --ready-fd),
    # has a child, stops on TERM
    cat >"$T/ok.sh" <<EOF
#!/usr/bin/env bash
fd=""
while [ \$# -gt 0 ]; do case \$1 in --ready-fd) fd=\$2; shift 2 ;; *) shift ;; esac; done
trap 'echo "got TERM" >&2; exit 0' TERM
sleep 0.5
[ -n "\$fd" ] && { echo >&"\$fd"; eval "exec \$fd>&-"; }
echo "ready \$DELAYER_STAGE.\$DELAYER_INSTANCE of \$DELAYER_INSTANCES in \$PWD" >&2
while :; do sleep $MARK & wait \$!; done
EOF
    # ready at once, ignores TERM: only SIGKILL stops it
    cat >"$T/stubborn.sh" <<EOF
#!/usr/bin/env bash
trap '' TERM
echo >&3
exec 3>&-
while :; do sleep 0.1; done
EOF
    printf '#!/bin/sh\necho crashing >&2\nexit 1\n' >"$T/crash.sh"
    printf '#!/bin/sh\necho "bad option" >&2\nexit 100\n' >"$T/perm.sh"
    chmod +x "$T"/*.sh
    cat >"$T/test.conf" <<EOF
# toy pipeline for test_supervise.sh
set backoff_min=0.1
set backoff_max=1
set give_up=3
set stop_timeout=2
set ready_timeout=10
env TOY_ENV=hello world
stage ok instances=2 cmd=$T/ok.sh --name 'two words'
stage stubborn cmd=$T/stubborn.sh
stage crash instances=0 cmd=$T/crash.sh
stage perm instances=0 cmd=$T/perm.sh
stage shard instances=0 cmd=$T/shard.sh --shard "\$DELAYER_INSTANCE/\$DELAYER_INSTANCES"
EOF
    # like ok.sh, with children of another length (ok_children counts ok's)
    sed "s/sleep $MARK/sleep $((MARK + 1))/" "$T/ok.sh" >"$T/shard.sh"
    chmod +x "$T/shard.sh"
}

oneTimeTearDown() {
    sup stop >/dev/null 2>&1
    local p
    for p in $(pgrep -f "^(bash $T/|sleep $MARK)"); do kill -KILL "$p" 2>/dev/null; done   # a failed test's leftovers
    rm -rf "$T"
}

# ---- tests (shunit2 runs them in this order) ----

test_bad_config_is_a_usage_error() {
    printf 'stage x instances=two cmd=/bin/true\n' >"$T/bad.conf"
    DELAYER_RUN_DIR=$T/run-bad "$SUP" -c "$T/bad.conf" start >"$T/out" 2>&1
    assertEquals "exit status" 100 $?
    assertTrue "names the line: $(cat "$T/out")" "grep -q 'bad.conf:1: instances' '$T/out'"
    "$SUP" -c "$T/nonexistent.conf" start >/dev/null 2>&1
    assertEquals "missing config" 100 $?
    sup frobnicate >/dev/null 2>&1
    assertEquals "unknown command" 100 $?
    sup check >/dev/null
    assertEquals "the test config checks" 0 $?
    "$SUP" -c "$REPO/pipelines/local.conf" check >"$T/out" 2>&1
    rc=$?
    assertEquals "pipelines/local.conf checks: $(cat "$T/out")" 0 "$rc"
}

test_start_fails_when_a_stage_exits_100() {
    printf 'stage ok cmd=%s\nstage perm cmd=%s\n' "$T/ok.sh" "$T/perm.sh" >"$T/perm.conf"
    DELAYER_RUN_DIR=$T/run-perm "$SUP" -c "$T/perm.conf" start >"$T/out" 2>&1
    rc=$?
    assertEquals "exit status: $(cat "$T/out")" 100 "$rc"
    assertTrue "says why" "grep -q 'perm.0: exit 100' '$T/out'"
    DELAYER_RUN_DIR=$T/run-perm "$SUP" -c "$T/perm.conf" status >/dev/null
    assertEquals "status: not running" 3 $?
    assertEquals "nothing left running" 0 "$(toy_procs)"
}

test_start_waits_for_readiness() {
    local t0=$EPOCHREALTIME rc
    sup start >"$T/out" 2>&1
    rc=$?
    local ms=$(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 ))
    assertEquals "start: $(cat "$T/out")" 0 "$rc"
    assertTrue "waited for the 0.5 s readiness (${ms} ms)" "[ $ms -ge 450 ]"
    assertEquals "ok.0 ready" ready "$(inst_state ok 0)"
    assertEquals "ok.1 ready" ready "$(inst_state ok 1)"
    assertEquals "stubborn.0 ready" ready "$(inst_state stubborn 0)"
    assertTrue "ok.0 notified" "[ -s '$RUN/ok.0.ready' ]"
    assertTrue "the supervisor has its pid file" "[ -s '$RUN/supervise.pid' ]"
    assertEquals "two ok instances" 2 "$(ok_procs)"
    # what an instance sees: arguments, environment, working directory
    wait_for 3 grep -q "ready ok.1 of 2 in $RUN" "$RUN/ok.1.log"
    assertTrue "instance env and cwd: $(cat "$RUN/ok.1.log")" "grep -q 'ready ok.1 of 2 in $RUN' '$RUN/ok.1.log'"
    local pid
    pid=$(inst_pid ok 0)
    assertTrue "quoted args and --ready-fd" "tr '\\0' ' ' </proc/$pid/cmdline | grep -q -- '--name two words --ready-fd 3'"
    assertTrue "env line" "tr '\\0' '\\n' </proc/$pid/environ | grep -qx 'TOY_ENV=hello world'"
    sup start >"$T/out" 2>&1
    assertEquals "a second start is harmless" 0 $?
    assertTrue "says so" "grep -q 'already running' '$T/out'"
}

test_status_lists_every_instance() {
    sup status >"$T/out"
    assertEquals "status exit: all ready" 0 $?
    assertTrue "header" "grep -q '^STAGE  *IDX  *PID  *UPTIME  *RESTARTS  *STATE' '$T/out'"
    local s i pid
    for s in ok.0 ok.1 stubborn.0; do
        i=${s#*.}; s=${s%.*}
        pid=$(inst_pid "$s" "$i")
        assertTrue "$s.$i alive ($pid)" "running $pid"
        assertTrue "$s.$i listed" "grep -Eq '^$s +$i +$pid +[0-9]+s +0 +ready' '$T/out'"
    done
    assertEquals "three instances" 3 "$(grep -cE '^(ok|stubborn) ' "$T/out")"
}

test_kill9_is_restarted() {
    local old new
    old=$(inst_pid ok 0)
    kill -9 "$old"
    wait_for 5 restarted_ok0 "$old"
    new=$(inst_pid ok 0)
    assertTrue "new pid ($old -> $new)" "[ '$new' != '$old' ] && running $new"
    assertFalse "old one gone" "running $old"
    assertEquals "restart count" 1 "$(inst_restarts ok 0)"
    assertTrue "logged" "grep -q 'msg=\"instance exited\" inst=ok.0 pid=$old status=\"killed by SIGKILL\"' '$RUN/supervise.log'"
    # the dead instance's child went with it (its process group was killed)
    wait_for 3 test "$(ok_children)" -eq 2
    assertEquals "children of live instances only" 2 "$(ok_children)"
    assertEquals "ok.1 untouched" 0 "$(inst_restarts ok 1)"
}

# An instance SIGKILLed while the supervisor waits for a command of its own
# (here its status file's `mv`, made slow and observable through PATH) was
# reaped by bash during that wait, and bash then printed its job report
# ("line N: PID Killed ...") into the log. Now each exit gives one structured
# line, with the signal and the restart, and nothing else.
in_mv() { [ -e "$T/in-mv" ]; }
new_pid() { local p; read -r p _ <"$1" 2>/dev/null && [ "$p" != "$2" ]; }
test_kill9_leaves_no_bash_noise() {
    local run=$T/run-noise i old
    mkdir -p "$T/slow"
    printf '#!/bin/sh\n: >"%s/in-mv"\nsleep 0.3\nrm -f "%s/in-mv"\nexec /bin/mv "$@"\n' "$T" "$T" >"$T/slow/mv"
    chmod +x "$T/slow/mv"
    printf 'set backoff_min=0.1\nset give_up=9\nstage ok cmd=%s\n' "$T/ok.sh" >"$T/noise.conf"
    PATH=$T/slow:$PATH DELAYER_RUN_DIR=$run "$SUP" -c "$T/noise.conf" start >"$T/out" 2>&1
    assertEquals "start: $(cat "$T/out")" 0 $?
    for i in 1 2; do
        old=$(cut -d' ' -f1 "$run/ok.0.pid")
        wait_for 5 in_mv
        kill -9 "$old"
        wait_for 10 new_pid "$run/ok.0.pid" "$old"
        assertTrue "ok.0 restarted after kill $i" "new_pid '$run/ok.0.pid' $old"
        assertTrue "structured line for $old: $(grep -F "pid=$old" "$run/supervise.log")" \
            "grep -q 'msg=\"instance exited\" inst=ok.0 pid=$old status=\"killed by SIGKILL\" signal=SIGKILL .*restart_in_ms=' '$run/supervise.log'"
    done
    DELAYER_RUN_DIR=$run "$SUP" -c "$T/noise.conf" stop >/dev/null 2>&1
    assertFalse "no bash job report in the log: $(grep -n Killed "$run/supervise.log")" \
        "grep -q 'Killed' '$run/supervise.log'"
}

test_crash_loop_is_given_up() {
    sup scale crash 1 >"$T/out" 2>&1
    assertEquals "scale reports the failure" 111 $?
    assertEquals "state" failed "$(inst_state crash 0)"
    assertTrue "info: $(inst crash 0)" "inst crash 0 | grep -q 'gave up after 3 quick failures in a row (last: exit 1)'"
    assertTrue "reason in the log" "grep -q 'msg=\"instance given up\" inst=crash.0 .*reason=\"failed 3 times in a row' '$RUN/supervise.log'"
    quiet_since "instance given up" crash.0 1100
    assertEquals "tried 3 times, then never again" 3 "$(grep -c crashing "$RUN/crash.0.log")"
    sup status >/dev/null
    assertEquals "status: degraded" 1 $?
    sup scale crash 0 >/dev/null 2>&1
    assertEquals "scaled away" "" "$(inst crash 0)"
}

test_exit_100_is_not_restarted() {
    sup scale perm 1 >"$T/out" 2>&1
    assertEquals "scale reports the failure" 111 $?
    assertEquals "state" failed "$(inst_state perm 0)"
    assertTrue "reason in the log" "grep -q 'msg=\"instance failed permanently\" inst=perm.0 .*status=\"exit 100\"' '$RUN/supervise.log'"
    quiet_since "instance failed permanently" perm.0 600
    assertEquals "ran once" 1 "$(grep -c 'bad option' "$RUN/perm.0.log")"
    assertEquals "no restart" 0 "$(inst_restarts perm 0)"
    sup scale perm 0 >/dev/null 2>&1
}

test_scale_up_and_down() {
    local keep
    keep=$(inst_pid ok 0)
    sup scale ok 4 >"$T/out" 2>&1
    rc=$?
    assertEquals "scale up: $(cat "$T/out")" 0 "$rc"
    assertEquals "four live" 4 "$(ok_procs)"
    assertEquals "ok.3 ready" ready "$(inst_state ok 3)"
    local p2 p3
    p2=$(inst_pid ok 2) p3=$(inst_pid ok 3)
    sup scale ok 1 >"$T/out" 2>&1
    rc=$?
    assertEquals "scale down: $(cat "$T/out")" 0 "$rc"
    wait_for 3 test "$(ok_procs)" -eq 1
    assertEquals "one live" 1 "$(ok_procs)"
    assertEquals "the lowest index stays" "$keep" "$(inst_pid ok 0)"
    assertEquals "ok.1 gone from status" "" "$(inst ok 1)"
    assertFalse "ok.3 gone" "running $p3"
    assertTrue "stopped gracefully (TERM)" "grep -q 'got TERM' '$RUN/ok.3.log'"
    assertTrue "logged" "grep -q 'msg=stopped inst=ok.2 pid=$p2 status=\"exit 0\"' '$RUN/supervise.log'"
    wait_for 3 test "$(ok_children)" -eq 1
    assertEquals "their children too" 1 "$(ok_children)"
    sup scale ok 2 >/dev/null 2>&1
    assertEquals "back to two" 2 "$(ok_procs)"
    sup scale nosuch 2 >"$T/out" 2>&1
    assertEquals "unknown stage" 100 $?
}

# A stage whose command uses the instance count (ddb-scan-due --shard I/N):
# scaling restarts the instances that stay, with the new count.
last_ready() { grep ready "$RUN/shard.$1.log" | tail -1 | cut -d' ' -f1-4; }
ready_is() { [ "$(last_ready "$1")" = "$2" ]; }
shard_procs() { pgrep -f "^bash $T/shard.sh" | wc -l; }
no_shards() { [ "$(shard_procs)" -eq 0 ]; }

test_scale_restarts_what_depends_on_the_count() {
    local p0
    sup scale shard 1 >"$T/out" 2>&1
    assertEquals "scale to 1: $(cat "$T/out")" 0 $?
    assertEquals "ready shard.0 of 1" "$(last_ready 0)"
    p0=$(inst_pid shard 0)
    sup scale shard 2 >"$T/out" 2>&1
    assertEquals "scale to 2: $(cat "$T/out")" 0 $?
    wait_for 5 ready_is 0 "ready shard.0 of 2"
    assertEquals "shard.0 restarted with the new count" "ready shard.0 of 2" "$(last_ready 0)"
    assertNotEquals "shard.0 is a new process" "$p0" "$(inst_pid shard 0)"
    assertEquals "ready shard.1 of 2" "$(last_ready 1)"
    sup scale shard 1 >/dev/null 2>&1
    wait_for 5 ready_is 0 "ready shard.0 of 1"
    assertEquals "back to one: shard.0 restarted again" "ready shard.0 of 1" "$(last_ready 0)"
    sup scale shard 0 >/dev/null 2>&1
    wait_for 5 no_shards
    assertEquals "none left" 0 "$(shard_procs)"
}

test_restart_a_stage() {
    local a b
    a=$(inst_pid ok 0) b=$(inst_pid ok 1)
    sup restart ok >"$T/out" 2>&1
    rc=$?
    assertEquals "restart: $(cat "$T/out")" 0 "$rc"
    assertNotEquals "ok.0 new pid" "$a" "$(inst_pid ok 0)"
    assertNotEquals "ok.1 new pid" "$b" "$(inst_pid ok 1)"
    assertEquals "both ready" "ready ready" "$(inst_state ok 0) $(inst_state ok 1)"
    assertEquals "two live" 2 "$(ok_procs)"
}

test_stop_leaves_nothing_behind() {
    local sp t0=$EPOCHREALTIME
    sp=$(cat "$RUN/supervise.pid")
    sup stop >"$T/out" 2>&1
    rc=$?
    assertEquals "stop: $(cat "$T/out")" 0 "$rc"
    local ms=$(( (${EPOCHREALTIME/./} - ${t0/./}) / 1000 ))
    assertTrue "stubborn waited for: stop_timeout 2 s then SIGKILL (${ms} ms)" "[ $ms -ge 1800 ] && [ $ms -lt 8000 ]"
    assertTrue "logged the kill" "grep -q 'msg=\"did not stop in time: killed\" inst=stubborn.0' '$RUN/supervise.log'"
    assertEquals "no toy process" 0 "$(toy_procs)"
    assertFalse "supervisor gone" "running $sp"
    assertFalse "no pid file" "ls '$RUN'/*.pid >/dev/null 2>&1"
    sup status >/dev/null
    assertEquals "status: not running" 3 $?
    sup stop >/dev/null
    assertEquals "stop again: fine" 0 $?
}

test_stop_after_the_supervisor_was_killed() {
    sup start >/dev/null 2>&1
    assertEquals "started" 0 $?
    local sp
    sp=$(cat "$RUN/supervise.pid")
    kill -9 "$sp"
    wait_for 5 eval '! running '"$sp"
    sup status >"$T/out"
    assertEquals "status: not running" 3 $?
    assertTrue "mentions the leftovers" "grep -q 'still alive' '$T/out'"
    sup start >"$T/out" 2>&1
    assertEquals "start refuses while leftovers live" 111 $?
    sup stop >"$T/out" 2>&1
    rc=$?
    assertEquals "stop cleans up: $(cat "$T/out")" 0 "$rc"
    assertEquals "no toy process" 0 "$(toy_procs)"
}

# shellcheck source=/dev/null
. /usr/share/shunit2/shunit2
