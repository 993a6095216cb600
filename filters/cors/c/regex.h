/* A small RE2-subset regex for origin matching, matched against the whole string as Envoy's
 * safe_regex does: literals, ., [...] classes with ranges and negation, \d \w \s (and \D \W
 * \S), escaped punctuation, ( ), (?: ), |, and the greedy quantifiers * + ? {m} {m,} {m,n}
 * (a lazy '?' suffix is accepted: it cannot change a full-match result). ^ and $ are allowed
 * at the ends only. Anything else is a compile error, so a policy never silently means less
 * than it says. Backtracking: meant for short inputs such as origins. */
#ifndef CORS_REGEX_H
#define CORS_REGEX_H

#include <stdbool.h>
#include <stddef.h>

typedef struct re_node re_node;

/* NULL on error, with *err set to a static message. */
re_node *re_compile(const char *pattern, const char **err);
bool re_full_match(const re_node *re, const char *s, size_t len);
void re_free(re_node *re);

#endif
