/*
 * regex.h - a small whole-string regular-expression matcher for Envoy's `safe_regex`.
 *
 * Envoy matches safe_regex with RE2; a Wasm filter has no RE2, so this implements the subset
 * origin patterns need, with RE2's syntax and guarantees: literals, `.`, `[...]` classes with
 * ranges and negation, \d \w \s (and \D \W \S), escaped punctuation, `( )` and `(?: )` groups,
 * `|`, `* + ?` (a trailing `?` for laziness is accepted), `{n}` `{n,}` `{n,m}` (n, m <= 100),
 * `^` and `$`. Anything else is rejected at compile time, never silently misread.
 *
 * Matching is a Pike VM (a breadth-first simulation of the compiled NFA): time is linear in the
 * input and memory is fixed per pattern, so a hostile header cannot make it blow up (RE2's
 * promise). Bytes are matched, not code points: `.` matches one byte of a UTF-8 sequence.
 */
#ifndef CSRF_REGEX_H
#define CSRF_REGEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct re_inst {
    uint8_t op;      /* RE_* in regex.c */
    uint8_t c;       /* CHAR: the byte */
    uint16_t x, y;   /* SPLIT: both targets (x preferred); JMP: x; SET: x is the set index */
} re_inst;

typedef struct re_prog {
    re_inst *inst;
    size_t n;
    uint8_t (*sets)[32]; /* 256-bit byte sets for classes */
    size_t nsets;
    /* Pike VM scratch, sized once at compile time. */
    uint16_t *cur, *next, *stack;
    uint32_t *mark;
    uint32_t gen;
} re_prog;

/* Compile `pattern` (len bytes). On failure return false with a message in err. */
bool re_compile(const char *pattern, size_t len, re_prog *out, char *err, size_t errcap);
/* True if the whole of s[0..len) matches. */
bool re_full_match(re_prog *p, const char *s, size_t len);
void re_free(re_prog *p);

#endif
