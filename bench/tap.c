/* bench-tap: sits between sns-publish and state-update in the bench's
 * pipeline (bench/run). Copies every record from --in to --out unchanged and,
 * for each "published" report, appends "ID<TAB>DUE<TAB>AT<TAB>LATE_US" to
 * --file (due and at in epoch ms: at is when PublishBatch returned; late_us
 * is sns-publish's own at - due in microseconds). Not part of delayer: its
 * CPU is reported separately, never counted as a stage's. */
#include "buf.h"
#include "json.h"
#include "log.h"
#include "stage.h"
#include "timeutil.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    static const stage_opt opts[] = {{"file", "PATH", "where published reports' lateness goes (appended)"},
                                     {NULL, NULL, NULL}};
    static const stage_spec spec = {"bench-tap", "Copies records from --in to --out; logs publish lateness (bench).",
                                    1, 1, opts, NULL};
    stage_opts o;
    int rc = stage_init(argc, argv, &spec, &o);
    if (rc != STAGE_RUN) return rc;
    const char *path = stage_opt_get(&o, "file");
    if (!path) {
        log_ev(LOG_ERROR, "--file is required", NULL);
        return STAGE_EXIT_USAGE;
    }
    FILE *f = fopen(path, "a");
    if (!f) {
        log_ev(LOG_ERROR, "cannot open --file", "error", strerror(errno), NULL);
        return STAGE_EXIT_SYSTEM;
    }
    zpipe_in *in;
    zpipe_out *out;
    if ((rc = stage_open(&o, &in, &out)) != 0) return rc;
    stage_ready(&o);
    buf_t m = BUF_INIT, id = BUF_INIT;
    long n = 0, pub = 0, failed = 0;
    int64_t flushed = time_mono_ms();
    rc = STAGE_EXIT_OK;
    for (;;) {
        int r = zpipe_in_recv(in, &m, 500);
        if (r == ZPIPE_EOF || r == ZPIPE_INTR) break;
        if (r == ZPIPE_ERR) {
            rc = STAGE_EXIT_SYSTEM;
            break;
        }
        if (r == ZPIPE_READY) {
            n++;
            if (memmem(m.p, m.len, "\"report\":\"published\"", 20)) {
                json_doc d;
                int64_t due, at, late;
                if (json_parse(&d, m.p, m.len) == 0 && json_str(&d, json_get(&d, 0, "id"), &id) == 0 &&
                    json_i64(&d, json_get(&d, 0, "due"), &due) == 0 && json_i64(&d, json_get(&d, 0, "at"), &at) == 0 &&
                    json_i64(&d, json_get(&d, 0, "late_us"), &late) == 0) {
                    fprintf(f, "%s\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\n", buf_str(&id), due, at, late);
                    pub++;
                }
                json_free(&d);
            }
            while (zpipe_out_send(out, m.p, m.len, 1000) != 0) {
                if (errno != EAGAIN || stage_should_stop()) {
                    failed++;
                    break;
                }
            }
        }
        if (time_mono_ms() - flushed >= 500) {
            fflush(f);
            flushed = time_mono_ms();
        }
    }
    fclose(f);
    log_ev(LOG_INFO, "stopped", "records", log_i64(n), "published", log_i64(pub), "not_sent", log_i64(failed), NULL);
    buf_free(&m);
    buf_free(&id);
    zpipe_in_close(in);
    zpipe_out_close(out);
    return rc;
}
