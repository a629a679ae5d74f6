/* bench-loadgen: the bench's load generator (bench/run). Creates schedules
 * the way a client of lib/store does (`delayer schedule` does the same, one
 * process per schedule): a conditional PutItem per schedule (store_create);
 * fast-track ones (due within the deployment's window) are then sent to the
 * delay queue (store_send_batch, up to 10 per SendMessageBatch, held at most
 * --send-linger); the state counters are flushed once a second; one
 * "schedule.created" lifecycle event per schedule (batched 10 per
 * PublishBatch) unless DELAYER_EVENTS=0.
 *
 *   bench-loadgen --topic NAME --steps RATE:SECONDS[,RATE:SECONDS...]
 *                 [--ahead MIN_MS:MAX_MS] [--threads N] [--tag T]
 *   bench-loadgen --topic NAME --bulk N --ahead MIN_MS:MAX_MS [--threads N] [--tag T]
 *
 * Steps: open loop, schedule i of a step is due to be created at
 * step_start + i / RATE; due = creation time + uniform(MIN, MAX) ms. Ids are
 * "<tag>s<step>-<f|t>-<n>" (f: fast track, t: state table) so lateness can
 * be split by step and path. One JSON line per step on stdout:
 *   {"step":0,"rate":200,"secs":60,"created":12000,"fast":..,"table":..,
 *    "errors":0,"achieved":199.9,"lag_max_ms":12}
 * --bulk: N schedules written with BatchWriteItem (25 per request, like
 * `delayer import`), no fast track, for the scan-cost-at-scale measurement.
 * Exit 0, or 1 if any creation failed. */
#include "log.h"
#include "sched.h"
#include "store.h"
#include "timeutil.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    double rate;
    int secs;
} step_t;

static struct {
    const char *topic_name;
    char *topic;              /* ARN */
    step_t steps[32];
    int nsteps;
    int64_t amin, amax;
    int threads;
    const char *tag;
    long bulk;
    int64_t send_linger_ms;
    /* the current step */
    pthread_mutex_t mu;
    int cur;                  /* step index, -1 before, nsteps after */
    int64_t t0_ms;            /* wall ms of the step's start */
    long total;               /* schedules in this step */
    long next;                /* next sequence number to take */
    long created, fast, table, errors;
    int64_t lag_max;
    int64_t last_ms;
} G;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static void sleep_until_ms(int64_t wall_ms)
{
    for (;;) {
        int64_t left = wall_ms - time_now_ms();
        if (left <= 0) return;
        struct timespec ts = {left / 1000, (left % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static const char payload[] =
    "{\"order\":12345,\"action\":\"remind\",\"text\":\"a bench message of about one hundred bytes\"}";

typedef struct {
    pthread_t th;
    int idx;
    store *s;
    store_counts *c;
    int64_t flushed;
    uint64_t rng;
} worker;

/* Fast-track records waiting for a SendMessageBatch, shared by every
 * worker (per-thread batches stayed nearly empty at a few hundred per s). */
static struct {
    pthread_mutex_t mu;
    sched_rec *v[10];
    size_t n;
    int64_t since;
} PQ = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0};

/* Takes the shared batch when full, or when force/lingered; returns how many. */
static size_t take_pending(sched_rec **out, int force)
{
    size_t n = 0;
    pthread_mutex_lock(&PQ.mu);
    if (PQ.n && (force || PQ.n == 10 || time_mono_ms() - PQ.since >= G.send_linger_ms)) {
        n = PQ.n;
        memcpy(out, PQ.v, n * sizeof *out);
        PQ.n = 0;
    }
    pthread_mutex_unlock(&PQ.mu);
    return n;
}

static void send_pending(worker *w, sched_rec **b, size_t n)
{
    if (!n) return;
    int ok[10] = {0};
    store_send_batch(w->s, b, n, ok);
    for (size_t i = 0; i < n; i++) {
        sched_rec *r = b[i];
        if (!ok[i]) {
            /* as `delayer schedule`: back to NEW for the scanner */
            if (store_unclaim(w->s, r->id, r->due, r->lease, NULL) == STORE_OK) {
                store_counts_move(w->c, SCHED_ENQUEUED, SCHED_NEW, r->topic);
            }
            pthread_mutex_lock(&G.mu);
            G.errors++;
            pthread_mutex_unlock(&G.mu);
        }
        sched_rec_free(r);
        free(r);
    }
}

static void housekeeping(worker *w, int force)
{
    int64_t now = time_mono_ms();
    sched_rec *b[10];
    send_pending(w, b, take_pending(b, force));
    if (force || now - w->flushed >= 1000) {
        store_counts_flush(w->s, w->c);
        store_events_flush(w->s);
        w->flushed = now;
    }
}

/* One schedule: 0 ok, -1 failed. */
static int create_one(worker *w, int step, long seq)
{
    int64_t now = time_now_ms();
    int64_t ahead = G.amin + (int64_t)(rng_next(&w->rng) % (uint64_t)(G.amax - G.amin + 1));
    sched_rec *r = xcalloc(1, sizeof *r);
    sched_rec_init(r);
    r->due = now + ahead;
    r->topic = xstrdup(G.topic);
    sched_set_payload(r, payload, sizeof payload - 1);
    sched_attr_add(r, "source", "bench");
    int fast = r->due - now <= w->s->conf.window_ms;
    char id[128];
    snprintf(id, sizeof id, "%ss%d-%c-%ld", G.tag, step, fast ? 'f' : 't', seq);
    r->id = xstrdup(id);
    char err[256];
    int rc = -1;
    if (sched_check_message(r, err, sizeof err) == 0 && store_prepare(w->s, r, now) == fast) {
        sched_rec old;
        sched_rec_init(&old);
        if (store_create(w->s, r, &old) == STORE_OK) {
            rc = 0;
            store_counts_add(w->c, r->state, r->topic, 1);
            store_event(w->s, "schedule.created", r, r->state, now, NULL);
        } else {
            log_ev(LOG_WARN, "create failed", "id", id, "error", w->s->err, NULL);
        }
        sched_rec_free(&old);
    }
    if (rc == 0 && fast) {
        sched_rec *b[10];
        size_t n = 0;
        pthread_mutex_lock(&PQ.mu);
        if (!PQ.n) PQ.since = time_mono_ms();
        PQ.v[PQ.n++] = r;
        if (PQ.n == 10) {
            n = PQ.n;
            memcpy(b, PQ.v, sizeof b);
            PQ.n = 0;
        }
        pthread_mutex_unlock(&PQ.mu);
        send_pending(w, b, n);
    } else {
        sched_rec_free(r);
        free(r);
    }
    pthread_mutex_lock(&G.mu);
    if (rc == 0) {
        G.created++;
        if (fast) G.fast++;
        else G.table++;
    } else {
        G.errors++;
    }
    G.last_ms = time_now_ms();
    pthread_mutex_unlock(&G.mu);
    return rc;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&G.mu);
        int step = G.cur;
        if (step >= G.nsteps) {
            pthread_mutex_unlock(&G.mu);
            break;
        }
        long seq = -1;
        int64_t at = 0;
        if (step >= 0 && G.next < G.total) {
            seq = G.next++;
            at = G.t0_ms + (int64_t)((double)seq * 1000.0 / G.steps[step].rate);
        }
        pthread_mutex_unlock(&G.mu);
        if (seq < 0) {
            housekeeping(w, 0);
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
            continue;
        }
        while (time_now_ms() < at) {
            housekeeping(w, 0);
            int64_t left = at - time_now_ms();
            if (left > 0) sleep_until_ms(time_now_ms() + (left < 5 ? left : 5));
        }
        int64_t lag = time_now_ms() - at;
        pthread_mutex_lock(&G.mu);
        if (lag > G.lag_max) G.lag_max = lag;
        pthread_mutex_unlock(&G.mu);
        create_one(w, step, seq);
        housekeeping(w, 0);
    }
    housekeeping(w, 1);
    return NULL;
}

static int parse_pair(const char *s, int64_t *a, int64_t *b)
{
    char *e;
    *a = strtoll(s, &e, 10);
    if (*e != ':') return -1;
    *b = strtoll(e + 1, &e, 10);
    return *e || *a < 0 || *b < *a ? -1 : 0;
}

static int parse_steps(const char *s)
{
    char *copy = xstrdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        double r;
        int secs;
        if (G.nsteps == 32 || sscanf(t, "%lf:%d", &r, &secs) != 2 || r <= 0 || secs <= 0) {
            free(copy);
            return -1;
        }
        G.steps[G.nsteps++] = (step_t){r, secs};
    }
    free(copy);
    return G.nsteps ? 0 : -1;
}

static store *open_store(void)
{
    store_conf c;
    char err[512];
    if (store_conf_env(&c, err, sizeof err) < 0) {
        fprintf(stderr, "bench-loadgen: %s\n", err);
        return NULL;
    }
    store *s = store_open(&c, err, sizeof err);
    if (!s) {
        fprintf(stderr, "bench-loadgen: %s\n", err);
        return NULL;
    }
    if (store_load(s) != STORE_OK) {
        fprintf(stderr, "bench-loadgen: %s\n", s->err);
        store_close(s);
        return NULL;
    }
    return s;
}

/* --bulk: BatchWriteItem of far-future schedules. */
typedef struct {
    pthread_t th;
    long from, to;
    long failed;
} bulker;

static void *bulk_main(void *arg)
{
    bulker *b = arg;
    store *s = open_store();
    if (!s) {
        b->failed = b->to - b->from;
        return NULL;
    }
    uint64_t rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)b->from;
    sched_rec recs[25], *ptr[25];
    int ok[25];
    for (long i = b->from; i < b->to;) {
        size_t n = 0;
        int64_t now = time_now_ms();
        for (; n < 25 && i < b->to; n++, i++) {
            sched_rec *r = &recs[n];
            sched_rec_init(r);
            r->due = now + G.amin + (int64_t)(rng_next(&rng) % (uint64_t)(G.amax - G.amin + 1));
            r->topic = xstrdup(G.topic);
            sched_set_payload(r, payload, sizeof payload - 1);
            sched_attr_add(r, "source", "bench");
            char id[96];
            snprintf(id, sizeof id, "%sbulk-%ld", G.tag, i);
            r->id = xstrdup(id);
            char err[256];
            sched_check_message(r, err, sizeof err);
            store_prepare(s, r, now);
            ptr[n] = r;
        }
        memset(ok, 0, sizeof ok);
        store_put_batch(s, ptr, n, ok);
        for (size_t k = 0; k < n; k++) {
            if (!ok[k]) b->failed++;
            sched_rec_free(&recs[k]);
        }
    }
    store_close(s);
    return NULL;
}

static int run_bulk(store *s)
{
    bulker *b = xcalloc((size_t)G.threads, sizeof *b);
    int64_t t0 = time_mono_ms();
    for (int i = 0; i < G.threads; i++) {
        b[i].from = G.bulk * i / G.threads;
        b[i].to = G.bulk * (i + 1) / G.threads;
        pthread_create(&b[i].th, NULL, bulk_main, &b[i]);
    }
    long failed = 0;
    for (int i = 0; i < G.threads; i++) {
        pthread_join(b[i].th, NULL);
        failed += b[i].failed;
    }
    store_counts *c = store_counts_new();
    store_counts_add(c, SCHED_NEW, G.topic, G.bulk - failed);
    store_counts_flush(s, c);
    store_counts_free(c);
    double secs = (double)(time_mono_ms() - t0) / 1000.0;
    printf("{\"bulk\":%ld,\"failed\":%ld,\"secs\":%.1f,\"per_s\":%.0f}\n", G.bulk, failed, secs,
           (double)(G.bulk - failed) / (secs > 0 ? secs : 1));
    free(b);
    return failed ? 1 : 0;
}

int main(int argc, char **argv)
{
    G.amin = 2000, G.amax = 30000, G.threads = 4, G.tag = "", G.send_linger_ms = 50;
    const char *steps = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(a, "--topic")) G.topic_name = v;
        else if (!strcmp(a, "--steps")) steps = v;
        else if (!strcmp(a, "--ahead")) {
            if (parse_pair(v, &G.amin, &G.amax) < 0) goto usage;
        } else if (!strcmp(a, "--threads")) G.threads = atoi(v);
        else if (!strcmp(a, "--tag")) G.tag = v;
        else if (!strcmp(a, "--bulk")) G.bulk = atol(v);
        else if (!strcmp(a, "--send-linger")) G.send_linger_ms = atoll(v);
        else goto usage;
        i++;
    }
    if (!G.topic_name || (!steps && G.bulk <= 0) || G.threads < 1 || G.threads > 64) goto usage;
    if (steps && parse_steps(steps) < 0) goto usage;
    log_set_level(LOG_WARN);
    store *s = open_store();
    if (!s) return 111;
    buf_t arn = BUF_INIT;
    if (store_topic_resolve(s, G.topic_name, &arn) != STORE_OK) {
        fprintf(stderr, "bench-loadgen: %s\n", s->err);
        return 111;
    }
    G.topic = xstrdup(arn.p);
    buf_free(&arn);
    if (G.bulk > 0) {
        int rc = run_bulk(s);
        store_close(s);
        return rc;
    }
    pthread_mutex_init(&G.mu, NULL);
    G.cur = -1;
    worker *w = xcalloc((size_t)G.threads, sizeof *w);
    for (int i = 0; i < G.threads; i++) {
        w[i].idx = i;
        w[i].rng = 0x2545F4914F6CDD1DULL * (uint64_t)(i + 1) ^ (uint64_t)time_now_ms();
        w[i].flushed = time_mono_ms();
        if (!(w[i].s = open_store())) return 111;
        w[i].c = store_counts_new();
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
    }
    long errors = 0;
    for (int k = 0; k < G.nsteps; k++) {
        pthread_mutex_lock(&G.mu);
        G.t0_ms = time_now_ms() + 1;
        G.total = (long)(G.steps[k].rate * G.steps[k].secs + 0.5);
        G.next = 0;
        G.created = G.fast = G.table = G.errors = 0;
        G.lag_max = 0;
        G.cur = k;
        int64_t t0 = G.t0_ms;
        pthread_mutex_unlock(&G.mu);
        sleep_until_ms(t0 + (int64_t)G.steps[k].secs * 1000);
        /* wait for this step's last creations (a step that fell behind runs over) */
        for (;;) {
            pthread_mutex_lock(&G.mu);
            int done = G.next >= G.total && G.created + G.errors >= G.total;
            pthread_mutex_unlock(&G.mu);
            if (done) break;
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&G.mu);
        double secs = (double)(G.last_ms - t0) / 1000.0;
        printf("{\"step\":%d,\"rate\":%g,\"secs\":%d,\"created\":%ld,\"fast\":%ld,\"table\":%ld,\"errors\":%ld,"
               "\"achieved\":%.1f,\"lag_max_ms\":%" PRId64 ",\"t0_ms\":%" PRId64 ",\"t1_ms\":%" PRId64 "}\n",
               k, G.steps[k].rate, G.steps[k].secs, G.created, G.fast, G.table, G.errors,
               secs > 0 ? (double)G.created / (secs > G.steps[k].secs ? secs : G.steps[k].secs) : 0, G.lag_max, t0,
               G.last_ms);
        fflush(stdout);
        errors += G.errors;
        if (k + 1 == G.nsteps) G.cur = G.nsteps;
        pthread_mutex_unlock(&G.mu);
    }
    for (int i = 0; i < G.threads; i++) {
        pthread_join(w[i].th, NULL);
        store_counts_free(w[i].c);
        store_close(w[i].s);
    }
    free(w);
    store_close(s);
    return errors ? 1 : 0;
usage:
    fprintf(stderr, "usage: bench-loadgen --topic NAME (--steps RATE:SECS[,...] | --bulk N) [--ahead MIN_MS:MAX_MS]\n"
                    "                     [--threads N] [--tag T] [--send-linger MS]\n");
    return 100;
}
