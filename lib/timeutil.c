#include "timeutil.h"
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int time_cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0) return -1;
    int rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC) == 0 && pthread_cond_init(c, &a) == 0 ? 0 : -1;
    pthread_condattr_destroy(&a);
    return rc;
}

int64_t time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t time_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Howard Hinnant's civil-date algorithms: exact for any year, no TZ state. */
int64_t time_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void time_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void time_fmt(int64_t ms, char out[32])
{
    int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    int64_t rem = ms - days * 86400000;
    int64_t y;
    unsigned mo, d;
    time_civil_from_days(days, &y, &mo, &d);
    snprintf(out, 32, "%04lld-%02u-%02uT%02d:%02d:%02d.%03dZ", (long long)y, mo, d,
             (int)(rem / 3600000), (int)(rem / 60000 % 60), (int)(rem / 1000 % 60), (int)(rem % 1000));
}

static int fail(char *err, size_t n, const char *msg)
{
    if (err && n) snprintf(err, n, "%s", msg);
    return -1;
}

/* Reads exactly `n` digits. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int parse_epoch(const char *s, int64_t *ms, char *err, size_t errlen)
{
    const char *p = s;
    int64_t whole = 0;
    int nd = 0;
    while (isdigit((unsigned char)*p)) {
        if (nd >= 16) return fail(err, errlen, "epoch time too large");
        whole = whole * 10 + (*p++ - '0');
        nd++;
    }
    if (nd == 0) return fail(err, errlen, "not a time: expected RFC 3339 or epoch seconds/milliseconds");
    if (*p == '\0') {
        /* 13+ digits is milliseconds (year 2001 onwards); fewer is seconds. */
        *ms = nd >= 13 ? whole : whole * 1000;
        return 0;
    }
    if (*p != '.' || nd >= 13) return fail(err, errlen, "not a time: expected RFC 3339 or epoch seconds/milliseconds");
    p++;
    int64_t frac_ms = 0, scale = 100;
    int fd = 0, round_up = 0;
    while (isdigit((unsigned char)*p)) {
        if (fd < 3) frac_ms += (*p - '0') * scale, scale /= 10;
        else if (*p != '0') round_up = 1;
        p++, fd++;
    }
    if (fd == 0 || *p) return fail(err, errlen, "not a time: bad fractional epoch seconds");
    *ms = whole * 1000 + frac_ms + round_up;
    return 0;
}

int time_parse_at(const char *s, int64_t *ms, char *err, size_t errlen)
{
    if (!s || !*s) return fail(err, errlen, "empty time");
    size_t len = strlen(s);
    if (len > 64) return fail(err, errlen, "time too long");
    if (strchr(s, '-') == NULL || (s[0] != '-' && strchr(s, '-') - s != 4))
        return parse_epoch(s, ms, err, errlen);
    const char *p = s;
    int Y, M, D, h, mi, sec;
    if (digits(&p, 4, &Y) || *p++ != '-' || digits(&p, 2, &M) || *p++ != '-' || digits(&p, 2, &D))
        return fail(err, errlen, "bad date: expected YYYY-MM-DD");
    if (*p != 'T' && *p != 't' && *p != ' ')
        return fail(err, errlen, "bad time: expected 'T' then hh:mm:ss and a zone (Z or +hh:mm)");
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &sec))
        return fail(err, errlen, "bad time of day: expected hh:mm:ss");
    if (M < 1 || M > 12 || D < 1 || h > 23 || mi > 59 || sec > 60)
        return fail(err, errlen, "date or time field out of range");
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (D > mdays[M - 1] || (M == 2 && D == 29 && !leap))
        return fail(err, errlen, "day out of range for the month");
    int64_t frac_ms = 0;
    int round_up = 0;
    if (*p == '.' || *p == ',') {
        p++;
        int fd = 0, scale = 100;
        while (isdigit((unsigned char)*p)) {
            if (fd < 3) frac_ms += (*p - '0') * scale, scale /= 10;
            else if (*p != '0') round_up = 1;
            p++, fd++;
        }
        if (fd == 0) return fail(err, errlen, "bad fractional seconds");
    }
    int64_t off_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return fail(err, errlen, "bad zone offset: expected +hh:mm or -hh:mm");
        off_min = sign * (oh * 60 + om);
    } else {
        return fail(err, errlen, "missing time zone: add Z or an offset like +01:00");
    }
    if (*p) return fail(err, errlen, "trailing characters after the time");
    int64_t days = time_days_from_civil(Y, (unsigned)M, (unsigned)D);
    int64_t minute_ms = ((days * 24 + h) * 60 + mi - off_min) * 60000; /* the minute's start, UTC */
    if (sec == 60) {
        /* A leap second exists only as the last second of a UTC day, and
         * only June 30 or December 31 have ever carried one (the IERS may
         * announce one there; nothing is checked against past bulletins).
         * 23:59:60.fff maps to the next day's 00:00:00.fff: epoch time
         * has no 61st second, and that instant is never earlier than the
         * one written, whether the clock steps (it repeats 23:59:59, so
         * this fires up to 1 s late) or smears the leap second (the AWS
         * and Google clocks, about 0.5 s behind at that moment). Mapping
         * to 23:59:59.999, as before, fired up to 1 s early. */
        int64_t md = minute_ms >= 0 ? minute_ms / 86400000 : -((-minute_ms + 86399999) / 86400000);
        int64_t uy;
        unsigned um, ud;
        time_civil_from_days(md, &uy, &um, &ud);
        if (minute_ms - md * 86400000 != 86340000 || !((um == 6 && ud == 30) || (um == 12 && ud == 31)))
            return fail(err, errlen, "second 60 (a leap second) exists only at 23:59:60 UTC on June 30 or "
                                     "December 31");
    }
    *ms = minute_ms + (int64_t)sec * 1000 + frac_ms + round_up;
    return 0;
}

int time_parse_duration(const char *s, int64_t *ms, char *err, size_t errlen)
{
    if (!s || !*s) return fail(err, errlen, "empty duration");
    const char *p = s;
    int64_t total = 0;
    int parts = 0;
    while (*p) {
        if (!isdigit((unsigned char)*p)) return fail(err, errlen, "bad duration: expected e.g. 90s, 15m, 2h, 3d, 1h30m");
        int64_t n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n > 100000000000LL) return fail(err, errlen, "duration too large");
            n = n * 10 + (*p++ - '0');
        }
        int64_t unit;
        if (p[0] == 'm' && p[1] == 's') unit = 1, p += 2;
        else if (*p == 's') unit = 1000, p++;
        else if (*p == 'm') unit = 60000, p++;
        else if (*p == 'h') unit = 3600000, p++;
        else if (*p == 'd') unit = 86400000, p++;
        else if (*p == 'w') unit = 7 * 86400000LL, p++;
        else if (*p == '\0' && parts == 0) unit = 1000;
        else return fail(err, errlen, "bad duration unit: use ms, s, m, h, d or w");
        if (n > (INT64_MAX / 4) / unit) return fail(err, errlen, "duration too large");
        total += n * unit;
        if (total > 100LL * 365 * 86400000) return fail(err, errlen, "duration too large");
        parts++;
    }
    *ms = total;
    return 0;
}
