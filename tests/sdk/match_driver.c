/* The suite's window on envoyext/sdk/pw_match.c, compiled natively (tests/sdk/test_match.py).
 * One command per stdin line, arguments hex-encoded so any byte can pass; one answer per line:
 *   C <pattern>                  compile         -> "ok" | "err <message>"
 *   M <input>                    full match      -> "<0|1> <steps this match took>"
 *   S <kind 0-4> <0|1> <value>   string matcher  -> "ok" | "err <message>"   (kind: pw_match_kind)
 *   T <input>                    matcher matches -> "<0|1>" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pw_match.h"

static size_t unhex(const char *hex, char *out) {
    size_t n = 0;
    for (; hex[0] && hex[0] != '\n' && hex[1]; hex += 2) {
        unsigned b;
        sscanf(hex, "%2x", &b);
        out[n++] = (char)b;
    }
    return n;
}

int main(void) {
    static char line[1 << 20], arg[1 << 19];
    pw_regex re = {0};
    pw_string_matcher m = {0};
    char err[160];
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'C') {
            pw_regex_free(&re);
            size_t n = unhex(line + 2, arg);
            if (pw_regex_compile(&re, arg, n, err, sizeof err)) puts("ok");
            else printf("err %s\n", err);
        } else if (line[0] == 'M') {
            size_t n = unhex(line + 2, arg);
            uint64_t before = re.steps;
            bool hit = pw_regex_full_match(&re, arg, n);
            printf("%d %llu\n", hit, (unsigned long long)(re.steps - before));
        } else if (line[0] == 'S') {
            int kind = 0, ignore_case = 0, used = 0;
            sscanf(line + 2, "%d %d %n", &kind, &ignore_case, &used);
            pw_string_matcher_free(&m);
            size_t n = unhex(line + 2 + used, arg);
            if (pw_string_matcher_init(&m, (pw_match_kind)kind, arg, n, ignore_case, err, sizeof err)) puts("ok");
            else printf("err %s\n", err);
        } else if (line[0] == 'T') {
            size_t n = unhex(line + 2, arg);
            printf("%d\n", pw_string_matcher_matches(&m, arg, n));
        }
        fflush(stdout);
    }
    pw_regex_free(&re);
    pw_string_matcher_free(&m);
    return 0;
}
