#include "t.h"
#include "timeutil.h"

static int64_t at(const char *s)
{
    int64_t ms = -42;
    char err[128];
    if (time_parse_at(s, &ms, err, sizeof err) != 0) return -1;
    return ms;
}

static int64_t dur(const char *s)
{
    int64_t ms = -42;
    char err[128];
    if (time_parse_duration(s, &ms, err, sizeof err) != 0) return -1;
    return ms;
}

static void rfc3339_utc(void)
{
    CHECK_INT(at("1970-01-01T00:00:00Z"), 0);
    CHECK_INT(at("2026-11-21T14:03:07.250Z"), 1795269787250LL);
    CHECK_INT(at("2026-11-21t14:03:07.25z"), 1795269787250LL);
    CHECK_INT(at("2026-11-21 14:03:07Z"), 1795269787000LL);
    CHECK_INT(at("2000-02-29T00:00:00Z"), 951782400000LL);
}

static void rfc3339_offsets(void)
{
    CHECK_INT(at("2026-11-21T15:03:07.250+01:00"), 1795269787250LL);
    CHECK_INT(at("2026-11-21T09:03:07.250-05:00"), 1795269787250LL);
    CHECK_INT(at("2026-11-21T14:03:07.250+00:00"), 1795269787250LL);
}

static void fractions_round_up(void)
{
    /* never early: 1 ns past a millisecond rounds to the next one */
    CHECK_INT(at("2026-11-21T14:03:07.250000001Z"), 1795269787251LL);
    CHECK_INT(at("2026-11-21T14:03:07.2500Z"), 1795269787250LL);
    CHECK_INT(at("1795269787.2501"), 1795269787251LL);
}

static void epoch_forms(void)
{
    CHECK_INT(at("1795269787"), 1795269787000LL);
    CHECK_INT(at("1795269787250"), 1795269787250LL);
    CHECK_INT(at("1795269787.25"), 1795269787250LL);
}

static void refused(void)
{
    const char *bad[] = {"", "tomorrow", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
        "2026-11-21T24:00:00Z", "2026-11-21T14:03:07", "2026-11-21", "2026-11-21T14:03Z",
        "2026-11-21T14:03:07+1:00", "2026-11-21T14:03:07Zjunk", "-5", "12a", "1.", ".5",
        "99999999999999999999", "2026-11-21T14:03:07.Z", NULL};
    for (int i = 0; bad[i]; i++) {
        int64_t ms;
        char err[128] = "";
        int rc = time_parse_at(bad[i], &ms, err, sizeof err);
        CHECK(rc == -1);
        CHECK(err[0] != '\0');
    }
}

static void format_roundtrip(void)
{
    char out[32];
    time_fmt(1795269787250LL, out);
    CHECK_STR(out, "2026-11-21T14:03:07.250Z");
    time_fmt(0, out);
    CHECK_STR(out, "1970-01-01T00:00:00.000Z");
    for (int64_t ms = -86400000LL * 800; ms < 86400000LL * 365 * 300; ms += 86400000LL * 37 + 12345) {
        time_fmt(ms, out);
        if (ms >= 0) CHECK_INT(at(out), ms);
    }
}

static void durations(void)
{
    CHECK_INT(dur("90s"), 90000);
    CHECK_INT(dur("15m"), 900000);
    CHECK_INT(dur("2h"), 7200000);
    CHECK_INT(dur("3d"), 259200000);
    CHECK_INT(dur("1h30m"), 5400000);
    CHECK_INT(dur("1d2h3m4s5ms"), 93784005);
    CHECK_INT(dur("500ms"), 500);
    CHECK_INT(dur("1w"), 604800000);
    CHECK_INT(dur("45"), 45000);
    CHECK_INT(dur(""), -1);
    CHECK_INT(dur("-5s"), -1);
    CHECK_INT(dur("5x"), -1);
    CHECK_INT(dur("s"), -1);
    CHECK_INT(dur("10 s"), -1);
    CHECK_INT(dur("99999999999999999d"), -1);
    CHECK_INT(dur("5s5"), -1);
}

/* Issue 10, finding 9: second 60 is a leap second only at 23:59:60 UTC on
 * June 30 or December 31; it maps to the next day's 00:00:00 plus the
 * fraction (never earlier than written), and is refused anywhere else. */
static void leap_second(void)
{
    int64_t next = at("2017-01-01T00:00:00Z");
    CHECK_INT(at("2016-12-31T23:59:60Z"), next);
    CHECK_INT(at("2016-12-31T23:59:60.250Z"), next + 250);
    CHECK_INT(at("2016-12-31T23:59:60.2501Z"), next + 251);
    CHECK(at("2016-12-31T23:59:60.999Z") > at("2016-12-31T23:59:59.999Z"));
    CHECK_INT(at("2015-06-30T23:59:60Z"), at("2015-07-01T00:00:00Z"));
    /* the same instant written with an offset */
    CHECK_INT(at("2017-01-01T08:59:60.5+09:00"), next + 500);
    CHECK_INT(at("2016-12-31T18:59:60-05:00"), next);
    CHECK_INT(at("2015-06-30T19:29:60-04:30"), at("2015-07-01T00:00:00Z"));
    const char *bad[] = {"2026-11-21T14:03:60Z", "2016-12-31T23:58:60Z", "2016-12-30T23:59:60Z",
        "2016-12-31T23:59:60+01:00", "2017-01-01T00:59:60Z", "2016-06-30T22:59:60Z",
        "2016-12-31T23:59:61Z", NULL};
    for (int i = 0; bad[i]; i++) {
        int64_t ms = -42;
        char err[128] = "";
        CHECK(time_parse_at(bad[i], &ms, err, sizeof err) == -1);
        CHECK(err[0] != '\0');
        CHECK_INT(ms, -42);
    }
    char err[128] = "";
    int64_t ms;
    time_parse_at("2026-11-21T14:03:60Z", &ms, err, sizeof err);
    CHECK(strstr(err, "leap second") != NULL);
}

T_MAIN(T(rfc3339_utc), T(rfc3339_offsets), T(fractions_round_up), T(epoch_forms), T(refused),
       T(format_roundtrip), T(durations), T(leap_second))
