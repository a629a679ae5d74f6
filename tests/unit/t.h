/* t.h: the tiny C test harness. One binary per lib module; each TEST is a
 * function registered by tests_main's table. Output is TAP-like:
 *   ok - name
 *   not ok - name (file:line: expression)
 * and a last line "# N passed, N failed" that tests/run adds up. */
#ifndef DELAYER_T_H
#define DELAYER_T_H
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static int t_failed_now;
static const char *t_name;

#define CHECK(cond) do { if (!(cond)) { \
    if (!t_failed_now) printf("not ok - %s (%s:%d: %s)\n", t_name, __FILE__, __LINE__, #cond); \
    t_failed_now = 1; } } while (0)
#define CHECK_STR(a, b) do { const char *t_a = (a), *t_b = (b); \
    if (!t_a || !t_b || strcmp(t_a, t_b) != 0) { \
    if (!t_failed_now) printf("not ok - %s (%s:%d: \"%s\" != \"%s\")\n", t_name, __FILE__, __LINE__, \
        t_a ? t_a : "(null)", t_b ? t_b : "(null)"); \
    t_failed_now = 1; } } while (0)
#define CHECK_INT(a, b) do { long long t_a = (long long)(a), t_b = (long long)(b); \
    if (t_a != t_b) { \
    if (!t_failed_now) printf("not ok - %s (%s:%d: %s == %lld, expected %lld)\n", t_name, __FILE__, __LINE__, #a, t_a, t_b); \
    t_failed_now = 1; } } while (0)

typedef struct { const char *name; void (*fn)(void); } t_case;
#define T(fn) { #fn, fn }

static int t_run(const t_case *cases, int n)
{
    int pass = 0, fail = 0;
    const char *only = getenv("T_ONLY");
    for (int i = 0; i < n; i++) {
        if (only && !strstr(cases[i].name, only)) continue;
        t_failed_now = 0;
        t_name = cases[i].name;
        cases[i].fn();
        if (t_failed_now) fail++;
        else { pass++; printf("ok - %s\n", cases[i].name); }
        fflush(stdout);
    }
    printf("# %d passed, %d failed\n", pass, fail);
    return fail ? 1 : 0;
}
#define T_MAIN(...) int main(void) { static const t_case t_cases[] = { __VA_ARGS__ }; \
    return t_run(t_cases, (int)(sizeof t_cases / sizeof t_cases[0])); }
#endif
