/*
 * pw_match.h - Envoy's StringMatcher and a linear-time regex engine, for every C filter.
 *
 * Envoy matches `safe_regex` with RE2, whose promise is time linear in the input: a hostile
 * header can never make a match blow up. A Wasm filter has no RE2, so this is the one engine
 * every library filter (and every project: `envoyext build` links pw_match.c into each module)
 * uses for attacker-controlled input. It is a Pike VM, a breadth-first simulation of the
 * pattern's Thompson NFA: each input byte advances every live thread once, and a state is
 * never held by two threads, so a match costs at most (input length + 1) x (program size)
 * steps, whatever the pattern. Never a backtracking matcher.
 *
 * The RE2 subset it accepts, always matched against the whole string (Envoy's full match):
 *   literals; `.` (any byte but newline); `[...]` classes with ranges, `^` negation and the
 *   escapes below; `\d \w \s` and `\D \W \S` (RE2's ASCII classes: \s is [\t\n\f\r ]);
 *   `\n \t \r \f \v`; escaped punctuation; `( )` and `(?: )` groups; `|`; `* + ?`;
 *   `{n}` `{n,}` `{n,m}` (n, m <= 1000, a lazy `?` after any of them is accepted: it cannot
 *   change a full-match result); `^` and `$` (start and end of the input).
 * Anything else (`\b`, `\x41`, `\pL`, `(?i)`, `(?P<name>)`, backreferences, `a**`, `{,3}`) is a
 * compile error with the offset, never silently read as something else. Bytes are matched, not
 * code points: `.` and a negated class match one byte of a multi-byte UTF-8 sequence, as Envoy
 * 1.40's safe_regex does on header values (measured: filters/cors/scenarios/regex_bytes.yaml).
 *
 * This header needs only the C library: pw_match.c builds natively too (the suite does, to
 * compare it with Python's `re` and to count its steps). Reading a matcher from a filter's JSON
 * configuration is pw_json_string_matcher() in proxy_wasm.h.
 */
#ifndef ENVOYEXT_PW_MATCH_H
#define ENVOYEXT_PW_MATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PW_REGEX_MAX_PATTERN 1024 /* bytes of pattern */
#define PW_REGEX_MAX_PROGRAM 8192 /* instructions once {n,m} copies are expanded */
#define PW_REGEX_MAX_REPEAT 1000  /* RE2's own limit for {n,m} */

typedef struct pw_regex_inst {
    uint8_t op;    /* see pw_match.c */
    uint8_t byte;  /* BYTE: the byte */
    uint16_t set;  /* SET: index into sets */
    uint32_t x, y; /* SPLIT: both targets; JMP: x */
} pw_regex_inst;

typedef struct pw_regex {
    pw_regex_inst *prog;
    uint32_t n;
    uint8_t (*sets)[32]; /* 256-bit byte sets */
    /* Pike VM scratch, sized once at compile time: two thread lists, the closure stack and a
     * per-instruction mark of the input position it was last added for. */
    uint32_t *cur, *next, *stack;
    size_t *mark;
    /* Work done by every match so far (threads examined): what the suite counts to show the
     * cost is linear in the input. Never reset by the engine. */
    uint64_t steps;
} pw_regex;

/* Compile `pattern` (len bytes). On failure return false with "<what> at offset <n>" in err
 * (NUL-terminated, truncated to errcap) and leave *re empty (pw_regex_free is still safe). */
bool pw_regex_compile(pw_regex *re, const char *pattern, size_t len, char *err, size_t errcap);
/* True if all of s[0..len) matches. */
bool pw_regex_full_match(pw_regex *re, const char *s, size_t len);
void pw_regex_free(pw_regex *re);

/* Envoy's StringMatcher (envoy.type.matcher.v3.StringMatcher). */
typedef enum {
    PW_MATCH_EXACT,
    PW_MATCH_PREFIX,
    PW_MATCH_SUFFIX,
    PW_MATCH_CONTAINS,
    PW_MATCH_REGEX,
} pw_match_kind;

typedef struct pw_string_matcher {
    pw_match_kind kind;
    bool ignore_case; /* ASCII case folding for exact/prefix/suffix/contains; Envoy ignores it for regex */
    char *text;       /* the value, lower-cased when ignore_case (regex: the pattern) */
    size_t len;
    pw_regex re;      /* PW_MATCH_REGEX */
} pw_string_matcher;

/* A matcher of `kind` for value[0..len). False (with the reason in err) if the regex does not
 * compile or memory runs out; *m is then empty and pw_string_matcher_free is still safe. */
bool pw_string_matcher_init(pw_string_matcher *m, pw_match_kind kind, const char *value, size_t len,
                            bool ignore_case, char *err, size_t errcap);
bool pw_string_matcher_matches(pw_string_matcher *m, const char *s, size_t len);
void pw_string_matcher_free(pw_string_matcher *m);

#ifdef __cplusplus
}
#endif

#endif /* ENVOYEXT_PW_MATCH_H */
