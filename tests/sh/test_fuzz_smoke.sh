#!/usr/bin/env bash
# tests/sh/test_fuzz_smoke.sh: every libFuzzer target (tests/fuzz/fuzz_*.c)
# runs briefly (FUZZ_SMOKE_SECONDS, default 3 s, -max_len=65536) from its seed
# corpus and must not crash; every saved regression input
# (tests/fuzz/regress/<target>/*) must replay cleanly. The targets are built
# with clang (-fsanitize=fuzzer,address,undefined) by `make fuzz-build`.
# Without clang or its libFuzzer runtime (Debian: clang, libclang-rt-14-dev)
# the tests are SKIPPED with a message, never passed silently.
export SHUNIT_COLOR=none
REPO=$(cd -P -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/../.." && pwd -P)
cd "$REPO" || exit 1
SECS=${FUZZ_SMOKE_SECONDS:-3}
FB=build-fuzz
SKIP_WHY=

oneTimeSetUp() {
  local probe
  if ! command -v "${FUZZ_CC:-clang}" >/dev/null; then
    SKIP_WHY="clang not installed (apt-get install clang libclang-rt-14-dev)"
    return 0
  fi
  probe=$(mktemp -d)
  printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
  if ! "${FUZZ_CC:-clang}" -fsanitize=fuzzer,address,undefined -o "$probe/p" "$probe/p.c" >"$probe/log" 2>&1; then
    SKIP_WHY="clang cannot link -fsanitize=fuzzer (libFuzzer runtime missing: apt-get install libclang-rt-14-dev): $(head -1 "$probe/log")"
  fi
  rm -rf "$probe"
  [ -n "$SKIP_WHY" ] && return 0
  if ! make -s fuzz-build >"$SHUNIT_TMPDIR/build.log" 2>&1; then
    echo "make fuzz-build failed:" >&2
    tail -20 "$SHUNIT_TMPDIR/build.log" >&2
    return 1
  fi
}

setUp() {
  if [ -n "$SKIP_WHY" ]; then
    echo "SKIP: $SKIP_WHY"
    startSkipping
    fail "skipped: $SKIP_WHY"   # counted by shunit2 as skipped
  fi
}

targets() { for f in tests/fuzz/fuzz_*.c; do basename "$f" .c; done; }

test_every_target_has_seeds() {
  [ -n "$SKIP_WHY" ] && return 0
  local t n
  for t in $(targets); do
    n=$(find "tests/fuzz/corpus/$t" -type f 2>/dev/null | wc -l)
    assertTrue "$t has a seed corpus (tests/fuzz/corpus/$t)" "[ $n -ge 1 ]"
  done
}

test_targets_run_without_crash() {
  [ -n "$SKIP_WHY" ] && return 0
  local t out rc
  for t in $(targets); do
    assertTrue "$t built" "[ -x $FB/$t ]" || continue
    out=$SHUNIT_TMPDIR/$t.log
    # A private corpus copy, so the smoke run never writes into the repository.
    rm -rf "$SHUNIT_TMPDIR/c-$t" && mkdir -p "$SHUNIT_TMPDIR/c-$t" "$SHUNIT_TMPDIR/a-$t"
    cp tests/fuzz/corpus/"$t"/* "$SHUNIT_TMPDIR/c-$t/"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$FB/$t" -max_total_time="$SECS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$SHUNIT_TMPDIR/a-$t/" "$SHUNIT_TMPDIR/c-$t" >"$out" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
      grep -E 'ERROR|SUMMARY|runtime error' "$out" | head -5
      ls "$SHUNIT_TMPDIR/a-$t/"
    fi
    assertEquals "$t exit status (0 = no crash in ${SECS}s)" 0 "$rc"
    grep -q 'Done [0-9]* runs' "$out"
    assertTrue "$t ran to its time limit" $?
  done
}

test_regression_inputs_replay() {
  [ -n "$SKIP_WHY" ] && return 0
  local t d n=0
  for d in tests/fuzz/regress/*/; do
    [ -d "$d" ] || continue
    t=$(basename "$d")
    [ -n "$(ls -A "$d")" ] || continue
    assertTrue "regress dir $t names a target" "[ -x $FB/$t ]" || continue
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$FB/$t" -runs=1 "$d"* >"$SHUNIT_TMPDIR/r-$t.log" 2>&1
    assertEquals "regression inputs of $t replay without crash" 0 $?
    n=$((n + $(ls "$d" | wc -l)))
  done
  echo "replayed $n regression inputs"
}

# The harness itself must notice a crash: a deliberately crashing input
# (a target built from a one-line program) must make libFuzzer exit non-zero.
test_harness_detects_a_crash() {
  [ -n "$SKIP_WHY" ] && return 0
  local d
  d=$(mktemp -d)
  printf '#include <stdint.h>\n#include <stddef.h>\n#include <string.h>\nint LLVMFuzzerTestOneInput(const uint8_t *p, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *p, size_t n) { char b[4] = {0}; if (n >= 4 && !memcmp(p, "boom", 4)) memcpy(b, p, n); return b[0] == 1; }\n' >"$d/c.c"
  "${FUZZ_CC:-clang}" -fsanitize=fuzzer,address -o "$d/c" "$d/c.c" 2>/dev/null
  mkdir "$d/in" && printf 'boom and more bytes' >"$d/in/x"
  "$d/c" -runs=1 "$d/in/x" >"$d/log" 2>&1
  assertNotEquals "a crashing input is reported" 0 $?
  rm -rf "$d"
}

. /usr/share/shunit2/shunit2
