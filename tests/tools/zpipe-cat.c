/* zpipe-cat: a pure pipe endpoint for tests, built on lib/stage + lib/zpipe
 * exactly as the pipeline stages are (same options, CURVE, ipc checks,
 * signals, readiness): copies every record from --in to --out.
 *   zpipe-cat --in @tcp://10.0.0.1:7000 --curve-secret s --curve-allow dir --out -
 *   zpipe-cat --in - --out '>tcp://10.0.0.1:7000' --curve-secret c --curve-server-key s.pub
 * --count N stops after N records; --idle DURATION stops when no record came
 * for that long (from the start too);
 * --send-timeout DURATION bounds each send (a record that cannot be sent is
 * reported and counted, exit 1). Built by `make` into build/tests/. */
#include "log.h"
#include "stage.h"
#include "timeutil.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    static const stage_opt opts[] = {
        {"count", "N", "stop after N records [no limit]"},
        {"idle", "DURATION", "stop after this long without a record [no limit]"},
        {"send-timeout", "DURATION", "give up on a record not sent within this time [no limit]"},
        {NULL, NULL, NULL}};
    static const stage_spec spec = {"zpipe-cat", "Copies records from --in to --out (test helper).", 1, 1, opts, NULL};
    stage_opts o;
    int rc = stage_init(argc, argv, &spec, &o);
    if (rc != STAGE_RUN) return rc;
    long count = stage_opt_get(&o, "count") ? atol(stage_opt_get(&o, "count")) : -1;
    int64_t idle = -1, sto = -1;
    char err[160];
    if (stage_opt_get(&o, "idle") && time_parse_duration(stage_opt_get(&o, "idle"), &idle, err, sizeof err) != 0) {
        log_ev(LOG_ERROR, "--idle", "error", err, NULL);
        return STAGE_EXIT_USAGE;
    }
    if (stage_opt_get(&o, "send-timeout") &&
        time_parse_duration(stage_opt_get(&o, "send-timeout"), &sto, err, sizeof err) != 0) {
        log_ev(LOG_ERROR, "--send-timeout", "error", err, NULL);
        return STAGE_EXIT_USAGE;
    }
    zpipe_in *in;
    zpipe_out *out;
    if ((rc = stage_open(&o, &in, &out)) != 0) return rc;
    stage_ready(&o);
    buf_t m = BUF_INIT;
    long n = 0, failed = 0;
    rc = STAGE_EXIT_OK;
    while (count < 0 || n < count) {
        int r = zpipe_in_recv(in, &m, idle >= 0 ? (int)idle : -1);
        if (r == ZPIPE_TIMEOUT || r == ZPIPE_EOF || r == ZPIPE_INTR) break;
        if (r == ZPIPE_ERR) {
            log_ev(LOG_ERROR, "input error", "error", strerror(errno), NULL);
            rc = STAGE_EXIT_SYSTEM;
            break;
        }
        n++;
        if (zpipe_out_send(out, m.p, m.len, sto >= 0 ? (int)sto : -1) != 0) {
            failed++;
            log_ev(LOG_ERROR, "record not sent", "error", strerror(errno), NULL);
        }
    }
    log_ev(LOG_INFO, "done", "records", log_i64(n), "not_sent", log_i64(failed), NULL);
    buf_free(&m);
    zpipe_in_close(in);
    zpipe_out_close(out);
    if (rc == STAGE_EXIT_OK && failed) rc = STAGE_EXIT_REJECTED;
    return rc;
}
