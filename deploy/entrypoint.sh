#!/bin/sh
# delayer-entrypoint: the container image's entrypoint (Dockerfile). It picks
# the tool to run and builds its options from the environment only, then
# execs it: the tool becomes PID 1 and receives SIGTERM itself (a stage
# stops taking input, hands back or finishes what it holds, exits 0).
#
#   delayer-entrypoint [TOOL] [ARGUMENT...]
#
# TOOL is $DELAYER_STAGE, else the first argument: one of ddb-scan-due,
# sqs-push, sqs-drain, sns-publish, state-update (the stages), delayer (the
# CLI: `delayer init`, `delayer schedule ...`) or delayer-keygen (CURVE
# keys), when the image has it. When DELAYER_STAGE is set and the first
# argument names the same tool, that argument is dropped.
#
# For a stage, each variable below that is set and not empty becomes one
# option (docs/deploy-aws.md has the table):
#   every stage   DELAYER_HWM --hwm, DELAYER_METRICS --metrics,
#                 DELAYER_CURVE_SECRET --curve-secret, DELAYER_CURVE_PUBLIC
#                 --curve-public, DELAYER_CURVE_SERVER_KEY --curve-server-key,
#                 DELAYER_CURVE_ALLOW --curve-allow
#   with input    DELAYER_IN --in          with output   DELAYER_OUT --out
#   ddb-scan-due  DELAYER_TICK --tick, DELAYER_SHARD --shard, DELAYER_ONCE=1 --once
#   sqs-push      DELAYER_LINGER --linger
#   sqs-drain     DELAYER_QUEUE --queue, DELAYER_CONCURRENCY --concurrency,
#                 DELAYER_WAIT --wait, DELAYER_HOLD --hold, DELAYER_PACE --pace,
#                 DELAYER_VISIBILITY --visibility
#   sns-publish   DELAYER_QUEUE --queue, DELAYER_COMMIT_LEAD --commit-lead,
#                 DELAYER_LINGER --linger, DELAYER_MAX_HOLD --max-hold,
#                 DELAYER_RETRY_BACKOFF --retry-backoff, DELAYER_DELETE_FLUSH
#                 --delete-flush, DELAYER_COMMIT_THREADS --commit-threads,
#                 DELAYER_PUBLISH_THREADS --publish-threads, DELAYER_MAX_HELD
#                 --max-held, DELAYER_MAX_HELD_MB --max-held-mb
#   state-update  DELAYER_FLUSH --flush
# CURVE keys as text (for secrets injected as environment variables: ECS
# task definition "secrets", Kubernetes secretKeyRef). Each is written to a
# new private directory (mktemp -d, mode 0700, under $DELAYER_KEY_DIR,
# default /dev/shm: memory, writable even with a read-only root file system)
# and passed as the file option; giving both forms of one key is an error:
#   DELAYER_CURVE_SECRET_Z85      own secret key  -> file 0600, --curve-secret
#   DELAYER_CURVE_PUBLIC_Z85      own public key  -> --curve-public
#   DELAYER_CURVE_SERVER_KEY_Z85  server's public key -> --curve-server-key
#   DELAYER_CURVE_ALLOW_Z85       client public keys, separated by commas or
#                                 blanks -> one file each in a directory,
#                                 --curve-allow
# The tools read the rest of their configuration from the environment
# themselves: DELAYER_PREFIX, DELAYER_LOG_LEVEL, DELAYER_EVENTS,
# DELAYER_WINDOW, DELAYER_GRACE, DELAYER_SHARDS, DELAYER_RETENTION,
# DELAYER_HORIZON, DELAYER_AWS_MAX_ATTEMPTS, AWS_REGION, AWS_ENDPOINT_URL*,
# and the AWS credential variables (container credentials, IMDSv2, ...).
# Values are passed as they are; the stage checks them (a bad one is a usage
# error, exit 100). Arguments after TOOL are appended after the generated
# options (e.g. `--help`).
#
# Exit status: that of the tool; 100 when no or an unknown tool is named.
set -euf   # -f: no pathname expansion anywhere (Z85 keys hold * ? [ ])

BIN=/usr/local/bin

usage() {
    echo "usage: delayer-entrypoint [ddb-scan-due|sqs-push|sqs-drain|sns-publish|state-update|delayer|delayer-keygen] [ARGUMENT...]" >&2
    echo "       (or set DELAYER_STAGE; see docs/deploy-aws.md)" >&2
    exit 100
}

tool=${DELAYER_STAGE:-}
if [ -z "$tool" ]; then
    [ $# -gt 0 ] || usage
    tool=$1
    shift
elif [ $# -gt 0 ] && [ "$1" = "$tool" ]; then
    shift
fi

# The caller's arguments go after the generated options: remember how many
# there are now, append the options, then rotate the arguments to the end.
nargs=$#

case $tool in
    ddb-scan-due) opts="DELAYER_OUT:--out DELAYER_TICK:--tick DELAYER_SHARD:--shard DELAYER_ONCE:--once?" ;;
    sqs-push) opts="DELAYER_IN:--in DELAYER_OUT:--out DELAYER_LINGER:--linger" ;;
    sqs-drain) opts="DELAYER_OUT:--out DELAYER_QUEUE:--queue DELAYER_CONCURRENCY:--concurrency DELAYER_WAIT:--wait DELAYER_HOLD:--hold DELAYER_PACE:--pace DELAYER_VISIBILITY:--visibility" ;;
    sns-publish) opts="DELAYER_IN:--in DELAYER_OUT:--out DELAYER_QUEUE:--queue DELAYER_COMMIT_LEAD:--commit-lead DELAYER_LINGER:--linger DELAYER_MAX_HOLD:--max-hold DELAYER_RETRY_BACKOFF:--retry-backoff DELAYER_DELETE_FLUSH:--delete-flush DELAYER_COMMIT_THREADS:--commit-threads DELAYER_PUBLISH_THREADS:--publish-threads DELAYER_MAX_HELD:--max-held DELAYER_MAX_HELD_MB:--max-held-mb" ;;
    state-update) opts="DELAYER_IN:--in DELAYER_OUT:--out DELAYER_FLUSH:--flush" ;;
    delayer | delayer-keygen) opts="" ;;
    *) echo "delayer-entrypoint: unknown tool \"$tool\"" >&2; usage ;;
esac
case $tool in
    delayer | delayer-keygen) ;;
    *) opts="$opts DELAYER_HWM:--hwm DELAYER_METRICS:--metrics DELAYER_CURVE_SECRET:--curve-secret DELAYER_CURVE_PUBLIC:--curve-public DELAYER_CURVE_SERVER_KEY:--curve-server-key DELAYER_CURVE_ALLOW:--curve-allow" ;;
esac
[ -x "$BIN/$tool" ] || { echo "delayer-entrypoint: $BIN/$tool is not in this image" >&2; exit 100; }

die() {
    echo "delayer-entrypoint: $*" >&2
    exit 100
}

# CURVE keys given as text: written to files only this user can read.
keydir=
mkkeydir() {
    [ -z "$keydir" ] || return 0
    keydir=$(umask 077 && mktemp -d "${DELAYER_KEY_DIR:-/dev/shm}/delayer-keys.XXXXXX") ||
        die "cannot create a key directory under ${DELAYER_KEY_DIR:-/dev/shm} (set DELAYER_KEY_DIR)"
}
keyfile() { # keyfile TEXT-VARIABLE FILE-VARIABLE NAME MODE
    eval "_text=\${$1:-} _file=\${$2:-}"
    [ -n "$_text" ] || return 0
    [ -z "$_file" ] || die "set $1 or $2, not both"
    mkkeydir
    (umask 077 && printf '%s\n' "$_text" >"$keydir/$3") || die "cannot write $keydir/$3"
    chmod "$4" "$keydir/$3" || die "cannot chmod $keydir/$3"
    eval "$2=\$keydir/\$3"
}
case $tool in
    delayer | delayer-keygen) ;;
    *)
        keyfile DELAYER_CURVE_SECRET_Z85 DELAYER_CURVE_SECRET secret.key 0600
        keyfile DELAYER_CURVE_PUBLIC_Z85 DELAYER_CURVE_PUBLIC public.key 0644
        keyfile DELAYER_CURVE_SERVER_KEY_Z85 DELAYER_CURVE_SERVER_KEY server.pub 0644
        if [ -n "${DELAYER_CURVE_ALLOW_Z85:-}" ]; then
            [ -z "${DELAYER_CURVE_ALLOW:-}" ] || die "set DELAYER_CURVE_ALLOW_Z85 or DELAYER_CURVE_ALLOW, not both"
            mkkeydir
            mkdir -m 0700 "$keydir/allow" || die "cannot create $keydir/allow"
            n=0
            saved_ifs=$IFS
            IFS=", $(printf '\t')
"
            for k in $DELAYER_CURVE_ALLOW_Z85; do
                n=$((n + 1))
                (umask 022 && printf '%s\n' "$k" >"$keydir/allow/client-$n.pub") || die "cannot write $keydir/allow"
            done
            IFS=$saved_ifs
            DELAYER_CURVE_ALLOW=$keydir/allow
        fi
        ;;
esac

for pair in $opts; do
    var=${pair%%:*}
    option=${pair#*:}
    eval "value=\${$var:-}"
    [ -n "$value" ] || continue
    case $option in
        *\?)
            # A flag: 1 turns it on, 0 leaves it off.
            case $value in
                1) set -- "$@" "${option%\?}" ;;
                0) ;;
                *) echo "delayer-entrypoint: $var must be 0 or 1, not \"$value\"" >&2; exit 100 ;;
            esac
            ;;
        *) set -- "$@" "$option" "$value" ;;
    esac
done

# Move the caller's arguments (the first $nargs) behind the options.
while [ "$nargs" -gt 0 ]; do
    set -- "$@" "$1"
    shift
    nargs=$((nargs - 1))
done

exec "$BIN/$tool" "$@"
