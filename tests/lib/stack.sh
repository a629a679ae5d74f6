# shellcheck shell=bash
# tests/lib/stack.sh: the local AWS stack (DynamoDB Local + fauxqs) for shunit2
# suites. Source it from a bash suite; it defines functions only and installs
# no traps (shunit2 owns EXIT/INT/TERM).
#
#   free_port            print a TCP port that is free on all interfaces
#                        (random in 20000-32767, below Linux's ephemeral range)
#   stack_start          make a stack available and export its AWS_* variables:
#                        - if DELAYER_STACK_READY=1 and AWS_ENDPOINT_URL_DYNAMODB,
#                          _SQS and _SNS are set (a runner started a shared stack),
#                          reuse it and change nothing;
#                        - else start a private one (scripts/local-aws) on two
#                          free ports with a mktemp -d state folder, then eval
#                          `local-aws env` (endpoints, region, dummy keys).
#                        Returns 0 when ready, non-zero (with the reason on
#                        stderr) otherwise. Quiet on success.
#   stack_stop           stop the stack only if stack_start started it, remove
#                        its state folder, unset the AWS_ENDPOINT_URL_* it set;
#                        a no-op otherwise (safe to repeat).
#   stack_local_aws ARGS run scripts/local-aws against this suite's private
#                        stack (e.g. `stack_local_aws status`).
#   new_prefix           a fresh random deployment prefix (the names a suite
#                        creates on the shared stack start with it)
#
# Variables set by stack_start: STACK_OWNED (1 if this suite started the
# stack, else 0), STACK_DIR, STACK_DDB_PORT, STACK_SQS_PORT (empty when
# reused). STACK_REPO is the repository root (override it before sourcing
# if this file is not at <repo>/tests/lib/stack.sh).

if [ -z "${STACK_REPO:-}" ]; then
  STACK_REPO=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]:-$0}")/../.." && pwd -P)
fi
STACK_OWNED=${STACK_OWNED:-0}
STACK_DIR=${STACK_DIR:-}
STACK_DDB_PORT=${STACK_DDB_PORT:-}
STACK_SQS_PORT=${STACK_SQS_PORT:-}

# _stack_port_is_free PORT: nothing is bound to PORT (checked by binding it
# on 0.0.0.0 when python3 works, else by a connect probe on 127.0.0.1).
_stack_port_is_free() {
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$1" <<'EOF' >/dev/null 2>&1
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("0.0.0.0", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
    case $? in
      0) return 0 ;;
      1) return 1 ;;
    esac
  fi
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  local _ port
  for _ in $(seq 1 200); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
    if _stack_port_is_free "$port"; then
      echo "$port"
      return 0
    fi
  done
  echo "free_port: no free port found" >&2
  return 1
}

new_prefix() { printf 't%s%05d' "$(date +%s | tail -c 6)" "$((RANDOM % 100000))"; }

stack_local_aws() {
  if [ -z "$STACK_DIR" ]; then
    echo "stack_local_aws: no private stack (stack_start did not start one)" >&2
    return 100
  fi
  LOCAL_AWS_DIR=$STACK_DIR LOCAL_AWS_DDB_PORT=$STACK_DDB_PORT \
    LOCAL_AWS_SQS_PORT=$STACK_SQS_PORT "$STACK_REPO/scripts/local-aws" "$@"
}

stack_start() {
  local _ rc out
  if [ "${DELAYER_STACK_READY:-}" = 1 ] && [ -n "${AWS_ENDPOINT_URL_DYNAMODB:-}" ] &&
    [ -n "${AWS_ENDPOINT_URL_SQS:-}" ] && [ -n "${AWS_ENDPOINT_URL_SNS:-}" ]; then
    STACK_OWNED=0
    return 0
  fi
  if [ "$STACK_OWNED" = 1 ]; then
    return 0 # already started by this suite
  fi
  STACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/delayer-stack.XXXXXX") || return 111
  for _ in 1 2 3; do
    STACK_DDB_PORT=$(free_port) || break
    STACK_SQS_PORT=$(free_port) || break
    [ "$STACK_DDB_PORT" != "$STACK_SQS_PORT" ] || continue
    out=$(stack_local_aws start 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ]; then
      eval "$(stack_local_aws env)" || break
      STACK_OWNED=1
      return 0
    fi
    # Another program took a port between the probe and the start: retry.
    case $out in
      *"already in use"*) continue ;;
      *) break ;;
    esac
  done
  echo "stack_start: local-aws start failed:" >&2
  [ -n "${out:-}" ] && printf '%s\n' "$out" >&2
  stack_local_aws stop >/dev/null 2>&1
  rm -rf -- "$STACK_DIR"
  STACK_DIR=
  STACK_DDB_PORT=
  STACK_SQS_PORT=
  return 111
}

stack_stop() {
  local rc=0
  if [ "$STACK_OWNED" = 1 ] && [ -n "$STACK_DIR" ]; then
    stack_local_aws stop >/dev/null || rc=$?
    # Keep the folder (pid files, logs) if a server refused to die.
    [ "$rc" -eq 0 ] && rm -rf -- "$STACK_DIR"
    unset AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_SNS
    STACK_DIR=
    STACK_DDB_PORT=
    STACK_SQS_PORT=
  fi
  STACK_OWNED=0
  return "$rc"
}

# Debian's grep warns that egrep (used by shunit2 2.1.8) is obsolescent; every
# suite sources this file before shunit2, so the shim lives here once.
egrep() { grep -E "$@"; }
