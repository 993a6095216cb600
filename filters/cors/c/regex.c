/* See regex.h. A pattern compiles to a tree: a GROUP node holds alternatives, each a sequence
 * of (node, min, max) items; every other node is a set of bytes (a literal is a set of one).
 * Matching is backtracking with explicit continuations, so the C stack only holds the
 * current path through the pattern. */
#include "regex.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RE_INF (-1)
#define RE_MAX_REPEAT 1000

typedef struct {
    re_node *node;
    int min, max; /* max RE_INF: unbounded */
} re_item;

typedef struct {
    re_item *items;
    int n;
} re_seq;

struct re_node {
    bool group;
    uint8_t set[32]; /* !group: the bytes this node accepts */
    re_seq *alts;    /* group: the alternatives */
    int n_alts;
};

typedef struct {
    const char *p;
    const char *err;
} parser;

static void set_add(uint8_t *set, unsigned c) { set[c >> 3] |= (uint8_t)(1u << (c & 7)); }
static bool set_has(const uint8_t *set, unsigned c) { return set[c >> 3] & (1u << (c & 7)); }

static bool is_digit(unsigned c) { return c >= '0' && c <= '9'; }
static bool is_word(unsigned c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_space(unsigned c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* \d \w \s and their negations into `set`; a punctuation escape is itself. */
static bool add_escape(parser *ps, uint8_t *set, unsigned e) {
    bool (*pred)(unsigned) = NULL;
    bool neg = false;
    switch (e) {
    case 'd': pred = is_digit; break;
    case 'D': pred = is_digit; neg = true; break;
    case 'w': pred = is_word; break;
    case 'W': pred = is_word; neg = true; break;
    case 's': pred = is_space; break;
    case 'S': pred = is_space; neg = true; break;
    default:
        if (e == 0 || is_word(e)) {
            ps->err = "unsupported escape";
            return false;
        }
        set_add(set, e);
        return true;
    }
    for (unsigned c = 0; c < 256; c++)
        if (pred(c) != neg) set_add(set, c);
    return true;
}

static re_node *new_node(bool group) {
    re_node *n = calloc(1, sizeof *n);
    if (n) n->group = group;
    return n;
}

static re_node *parse_alt(parser *ps);

static re_node *parse_class(parser *ps) {
    re_node *n = new_node(false);
    if (!n) return NULL;
    bool negate = *ps->p == '^';
    if (negate) ps->p++;
    bool first = true;
    while (*ps->p && (first || *ps->p != ']')) {
        first = false;
        unsigned c = (unsigned char)*ps->p++;
        if (c == '\\') {
            if (!add_escape(ps, n->set, (unsigned char)*ps->p++)) goto fail;
        } else if (ps->p[0] == '-' && ps->p[1] && ps->p[1] != ']') {
            unsigned hi = (unsigned char)ps->p[1];
            ps->p += 2;
            if (hi < c) {
                ps->err = "bad range";
                goto fail;
            }
            for (unsigned x = c; x <= hi; x++) set_add(n->set, x);
        } else {
            set_add(n->set, c);
        }
    }
    if (*ps->p != ']') {
        ps->err = "unterminated [";
        goto fail;
    }
    ps->p++;
    if (negate)
        for (int i = 0; i < 32; i++) n->set[i] = (uint8_t)~n->set[i];
    return n;
fail:
    free(n);
    return NULL;
}

static re_node *parse_atom(parser *ps) {
    unsigned c = (unsigned char)*ps->p++;
    re_node *n;
    switch (c) {
    case '(':
        if (ps->p[0] == '?' && ps->p[1] == ':') ps->p += 2;
        n = parse_alt(ps);
        if (n && *ps->p != ')') {
            ps->err = "missing )";
            re_free(n);
            return NULL;
        }
        ps->p++;
        return n;
    case '[': return parse_class(ps);
    case '*': case '+': case '?': case '{':
        ps->err = "nothing to repeat";
        return NULL;
    }
    n = new_node(false);
    if (!n) return NULL;
    if (c == '.') {
        for (unsigned x = 0; x < 256; x++)
            if (x != '\n') set_add(n->set, x);
    } else if (c == '\\') {
        if (!add_escape(ps, n->set, (unsigned char)*ps->p++)) {
            free(n);
            return NULL;
        }
    } else {
        set_add(n->set, c);
    }
    return n;
}

static bool parse_count(parser *ps, int *out) {
    if (!is_digit((unsigned char)*ps->p)) return false;
    int v = 0;
    while (is_digit((unsigned char)*ps->p)) {
        v = v * 10 + (*ps->p++ - '0');
        if (v > RE_MAX_REPEAT) return false;
    }
    *out = v;
    return true;
}

/* The quantifier after an atom, if any, into item->min/max. */
static bool parse_quantifier(parser *ps, re_item *item) {
    item->min = item->max = 1;
    switch (*ps->p) {
    case '*': item->min = 0; item->max = RE_INF; ps->p++; break;
    case '+': item->max = RE_INF; ps->p++; break;
    case '?': item->min = 0; ps->p++; break;
    case '{':
        ps->p++;
        if (!parse_count(ps, &item->min)) goto bad;
        item->max = item->min;
        if (*ps->p == ',') {
            ps->p++;
            item->max = RE_INF;
            if (*ps->p != '}' && (!parse_count(ps, &item->max) || item->max < item->min)) goto bad;
        }
        if (*ps->p++ != '}') goto bad;
        break;
    default: return true;
    }
    if (*ps->p == '?') ps->p++; /* lazy: the same full-match result */
    return true;
bad:
    ps->err = "bad {m,n}";
    return false;
}

static bool parse_seq(parser *ps, re_seq *seq, bool at_start) {
    int cap = 0;
    while (*ps->p && *ps->p != '|' && *ps->p != ')') {
        if (*ps->p == '^' && at_start && seq->n == 0) { ps->p++; continue; }
        if (*ps->p == '$' && ps->p[1] == 0) { ps->p++; continue; }
        if (*ps->p == '^' || *ps->p == '$') {
            ps->err = "^ and $ only at the ends";
            return false;
        }
        if (seq->n == cap) {
            cap = cap ? cap * 2 : 4;
            re_item *items = realloc(seq->items, (size_t)cap * sizeof *items);
            if (!items) return false;
            seq->items = items;
        }
        re_item *item = &seq->items[seq->n];
        item->node = parse_atom(ps);
        if (!item->node) return false;
        seq->n++;
        if (!parse_quantifier(ps, item)) return false;
    }
    return true;
}

static re_node *parse_alt(parser *ps) {
    re_node *g = new_node(true);
    bool at_start = true;
    for (;;) {
        if (!g) return NULL;
        re_seq *alts = realloc(g->alts, (size_t)(g->n_alts + 1) * sizeof *alts);
        if (!alts) break;
        g->alts = alts;
        memset(&g->alts[g->n_alts], 0, sizeof *alts);
        if (!parse_seq(ps, &g->alts[g->n_alts++], at_start)) break;
        at_start = false;
        if (*ps->p != '|') return g;
        ps->p++;
    }
    re_free(g);
    return NULL;
}

re_node *re_compile(const char *pattern, const char **err) {
    parser ps = {pattern, NULL};
    re_node *re = parse_alt(&ps);
    if (re && *ps.p) {
        ps.err = "unbalanced )";
        re_free(re);
        re = NULL;
    }
    if (!re && err) *err = ps.err ? ps.err : "out of memory";
    return re;
}

void re_free(re_node *re) {
    if (!re) return;
    for (int a = 0; a < re->n_alts; a++) {
        for (int i = 0; i < re->alts[a].n; i++) re_free(re->alts[a].items[i].node);
        free(re->alts[a].items);
    }
    free(re->alts);
    free(re);
}

/* ------------------------------------------------------------------------ */
/* Matching. A continuation says what must match after the current node: "one more round of
 * item i of seq (this was round `count`, begun at `start`)", then whatever follows it. NULL is
 * the end of the pattern, which must be the end of the input. */

typedef struct cont {
    const re_seq *seq;
    int i, count;
    size_t start;
    const struct cont *next;
} cont;

typedef struct {
    const unsigned char *s;
    size_t n;
} input;

static bool node_at(const re_node *nd, const input *in, size_t p, const cont *k);

static bool seq_at(const re_seq *seq, int i, const input *in, size_t p, const cont *k);

/* Item i of seq has matched `count` times, ending at p: try another round (greedy), else move on. */
static bool rep(const re_seq *seq, int i, int count, const input *in, size_t p, const cont *k) {
    const re_item *it = &seq->items[i];
    if (it->max == RE_INF || count < it->max) {
        cont c = {seq, i, count + 1, p, k};
        if (node_at(it->node, in, p, &c)) return true;
    }
    return count >= it->min && seq_at(seq, i + 1, in, p, k);
}

static bool seq_at(const re_seq *seq, int i, const input *in, size_t p, const cont *k) {
    if (i < seq->n) return rep(seq, i, 0, in, p, k);
    if (!k) return p == in->n;
    /* A round that consumed nothing ends the repetition, so (a*)* terminates. */
    if (p == k->start) return k->count >= k->seq->items[k->i].min && seq_at(k->seq, k->i + 1, in, p, k->next);
    return rep(k->seq, k->i, k->count, in, p, k->next);
}

static bool node_at(const re_node *nd, const input *in, size_t p, const cont *k) {
    if (nd->group) {
        for (int a = 0; a < nd->n_alts; a++)
            if (seq_at(&nd->alts[a], 0, in, p, k)) return true;
        return false;
    }
    if (p >= in->n || !set_has(nd->set, in->s[p])) return false;
    static const re_seq empty = {NULL, 0};
    return seq_at(&empty, 0, in, p + 1, k);
}

bool re_full_match(const re_node *re, const char *s, size_t len) {
    input in = {(const unsigned char *)s, len};
    return node_at(re, &in, 0, NULL);
}
