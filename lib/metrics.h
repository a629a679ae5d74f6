/* metrics: a tiny process-wide registry of counters, gauges and histograms,
 * rendered in the Prometheus text exposition format 0.0.4, and an HTTP
 * endpoint (libmicrohttpd, its own polling thread) serving
 *   GET /metrics   the registry
 *   GET /healthz   200 "ok" while the process runs its loop, else 503
 *   GET /readyz    200 "ready" when the ready check says so, else 503 and why
 * (docs/metrics.md lists what the stages export).
 *
 * A metric is one series: a family name ("delayer_published_total"), its
 * help line, and a preformatted label string (`api="PublishBatch",outcome="ok"`,
 * or "" for none). Getting the same name + labels again returns the same
 * series; the first help and type given for a name win. Series live until
 * metrics_shutdown(). Every function here is thread-safe; updates of a
 * series you hold (metrics_inc, metrics_set, metrics_observe) are lock-free
 * atomics, except histograms (a short per-series mutex). Label values are
 * the caller's business: they must already be escaped (no '"', '\\', '\n').
 *
 * Until metrics_enable() (metrics_serve calls it), every constructor returns
 * NULL and every update is a no-op: unused, the module costs nothing. */
#ifndef DELAYER_METRICS_H
#define DELAYER_METRICS_H
#include <stddef.h>
#include <stdint.h>

typedef struct metrics_series metrics_series;

void metrics_enable(void);
int metrics_enabled(void);

/* Counters: monotonic totals. */
metrics_series *metrics_counter(const char *name, const char *help, const char *labels);
void metrics_inc(metrics_series *s, uint64_t n);           /* NULL s is a no-op */
/* Looks the series up (creating it) and adds n: for labels known only at
 * run time, e.g. the AWS API name. */
void metrics_count(const char *name, const char *help, const char *labels, uint64_t n);

/* Gauges: a value that goes up and down. */
metrics_series *metrics_gauge(const char *name, const char *help, const char *labels);
void metrics_set(metrics_series *s, double v);             /* NULL s is a no-op */

/* A counter or gauge whose value fn(ud) computes at scrape time (called from
 * the server's thread: it must be thread-safe). counter: 1 counter, 0 gauge. */
void metrics_callback(const char *name, const char *help, const char *labels, int counter,
                      double (*fn)(void *ud), void *ud);

/* Histograms: cumulative buckets with the given upper bounds (ascending;
 * +Inf is added), _sum and _count. */
metrics_series *metrics_histogram(const char *name, const char *help, const char *labels,
                                  const double *bounds, int nbounds);
void metrics_observe(metrics_series *s, double v);         /* NULL s is a no-op */
/* Looks the histogram up (creating it) and observes v. */
void metrics_hist(const char *name, const char *help, const char *labels,
                  const double *bounds, int nbounds, double v);
/* Bounds for latencies in milliseconds: 1 2 5 10 20 50 100 200 500 1000 5000. */
extern const double metrics_ms_bounds[];
extern const int metrics_ms_nbounds;
/* Bounds for batch sizes: 1 2 3 4 5 6 7 8 9 10 20 50 100. */
extern const double metrics_batch_bounds[];
extern const int metrics_batch_nbounds;

/* The whole registry in the text format; a malloc'ed string (*len its length). */
char *metrics_render(size_t *len);

/* Starts the HTTP server on addr: "HOST:PORT", ":PORT" (every interface),
 * "[V6]:PORT"; PORT 0 takes an ephemeral port. On success 0 and the bound
 * address ("127.0.0.1:40123") in bound; -1 with a one-line reason in err. */
int metrics_serve(const char *addr, char *bound, size_t boundlen, char *err, size_t errlen);
/* Health checks used by /healthz and /readyz (called from the server's
 * thread). NULL = always healthy / never ready. A check returns 1 for 200,
 * 0 for 503 with a short reason in why. */
void metrics_set_checks(int (*live)(char *why, size_t n), int (*ready)(char *why, size_t n));
/* Stops the server and frees every series (series pointers die with it). */
void metrics_shutdown(void);
#endif
