/* regex.c - see regex.h: parse to a tree, compile to a Thompson program, run as a Pike VM. */
#include "regex.h"

#include <stdlib.h>
#include <string.h>

enum { RE_CHAR, RE_SET, RE_SPLIT, RE_JMP, RE_BOL, RE_EOL, RE_MATCH };
enum { N_CHAR, N_SET, N_BOL, N_EOL, N_CAT, N_ALT, N_REPEAT };

#define MAX_PATTERN 256
#define MAX_NODES 1024
#define MAX_INST 4096 /* {n,m} copies its operand; this bounds the blow-up */
#define MAX_REPEAT 100

/* Tree node. CAT: children a, a->next, ...; ALT: a | b; REPEAT: a{lo,hi}, hi < 0 = unbounded. */
typedef struct node {
    uint8_t t, c;
    uint16_t set;
    int16_t a, b, next, lo, hi;
} node;

typedef struct parser {
    const char *p;
    size_t len, pos;
    node nodes[MAX_NODES];
    size_t nn;
    uint8_t (*sets)[32];
    size_t nsets;
    char *err;
    size_t errcap;
} parser;

/* "<msg> at offset <n>" into ps->err, without printf (it would triple the module's size). */
static bool fail(parser *ps, const char *msg) {
    char text[96], digits[24];
    size_t n = 0, d = 0, pos = ps->pos;
    if (!ps->err || !ps->errcap) return false;
    while (*msg && n < 60) text[n++] = *msg++;
    memcpy(text + n, " at offset ", 11);
    n += 11;
    do digits[d++] = (char)('0' + pos % 10); while ((pos /= 10) && d < sizeof digits);
    while (d) text[n++] = digits[--d];
    if (n >= ps->errcap) n = ps->errcap - 1;
    memcpy(ps->err, text, n);
    ps->err[n] = 0;
    return false;
}

static int peek(const parser *ps) { return ps->pos < ps->len ? (unsigned char)ps->p[ps->pos] : -1; }

static int new_node(parser *ps, uint8_t t) {
    if (ps->nn >= MAX_NODES) return -1;
    node *n = &ps->nodes[ps->nn];
    memset(n, 0, sizeof *n);
    n->t = t;
    n->a = n->b = n->next = -1;
    return (int)ps->nn++;
}

static void bit_set(uint8_t *bm, int b) { bm[b >> 3] |= (uint8_t)(1u << (b & 7)); }
static bool bit_has(const uint8_t *bm, int b) { return bm[b >> 3] & (1u << (b & 7)); }

/* \d \w \s into bm (negated for \D \W \S); false if c names no class. */
static bool class_escape(int c, uint8_t bm[32]) {
    int lower = c | 0x20;
    if (lower != 'd' && lower != 'w' && lower != 's') return false;
    uint8_t tmp[32] = {0};
    for (int b = 0; b < 256; b++) {
        bool in = lower == 'd' ? (b >= '0' && b <= '9')
                : lower == 's' ? (b == ' ' || (b >= '\t' && b <= '\r'))
                : ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b == '_');
        if (in) bit_set(tmp, b);
    }
    for (int i = 0; i < 32; i++) bm[i] |= (c == lower) ? tmp[i] : (uint8_t)~tmp[i];
    return true;
}

/* After a backslash: 1 and *byte for a literal, 2 with bm filled for a class, 0 on error. */
static int escape(parser *ps, int *byte, uint8_t bm[32]) {
    int c = peek(ps);
    if (c < 0) return fail(ps, "trailing backslash"), 0;
    ps->pos++;
    if (class_escape(c, bm)) return 2;
    switch (c) {
    case 'n': *byte = '\n'; return 1;
    case 't': *byte = '\t'; return 1;
    case 'r': *byte = '\r'; return 1;
    case 'f': *byte = '\f'; return 1;
    case 'v': *byte = '\v'; return 1;
    }
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) {
        ps->pos--;
        return fail(ps, "unsupported escape"), 0;
    }
    *byte = c;
    return 1;
}

static int add_set(parser *ps, const uint8_t bm[32]) {
    if (ps->nsets >= MAX_PATTERN) return -1;
    memcpy(ps->sets[ps->nsets], bm, 32);
    return (int)ps->nsets++;
}

static int parse_class(parser *ps) {
    uint8_t bm[32] = {0};
    bool negated = false;
    if (peek(ps) == '^') { negated = true; ps->pos++; }
    bool first = true;
    while (first || peek(ps) != ']') {
        first = false;
        int lo = peek(ps), hi, kind = 1;
        if (lo < 0) return fail(ps, "missing ]"), -1;
        ps->pos++;
        if (lo == '\\' && !(kind = escape(ps, &lo, bm))) return -1;
        if (kind == 2) continue;
        if (peek(ps) == '-' && ps->pos + 1 < ps->len && ps->p[ps->pos + 1] != ']') {
            ps->pos++;
            hi = peek(ps);
            ps->pos++;
            if (hi == '\\' && escape(ps, &hi, bm) != 1) return fail(ps, "bad range"), -1;
            if (hi < lo) return fail(ps, "bad range"), -1;
            for (int b = lo; b <= hi; b++) bit_set(bm, b);
        } else {
            bit_set(bm, lo);
        }
    }
    ps->pos++;
    if (negated) for (int i = 0; i < 32; i++) bm[i] = (uint8_t)~bm[i];
    int n = new_node(ps, N_SET), s = add_set(ps, bm);
    if (n < 0 || s < 0) return fail(ps, "pattern too large"), -1;
    ps->nodes[n].set = (uint16_t)s;
    return n;
}

static int parse_alt(parser *ps);

static int parse_atom(parser *ps) {
    int c = peek(ps), n;
    ps->pos++;
    switch (c) {
    case '(':
        if (peek(ps) == '?') {
            if (ps->pos + 1 < ps->len && ps->p[ps->pos + 1] == ':') ps->pos += 2;
            else return fail(ps, "unsupported group flag"), -1;
        }
        n = parse_alt(ps);
        if (n < 0) return -1;
        if (peek(ps) != ')') return fail(ps, "missing )"), -1;
        ps->pos++;
        return n;
    case '[':
        return parse_class(ps);
    case '.': {
        uint8_t bm[32];
        memset(bm, 0xff, sizeof bm);
        bm['\n' >> 3] &= (uint8_t)~(1u << ('\n' & 7)); /* RE2: '.' is any byte but newline */
        int s = add_set(ps, bm);
        n = new_node(ps, N_SET);
        if (n < 0 || s < 0) return fail(ps, "pattern too large"), -1;
        ps->nodes[n].set = (uint16_t)s;
        return n;
    }
    case '^': return new_node(ps, N_BOL);
    case '$': return new_node(ps, N_EOL);
    case '*': case '+': case '?': case '{':
        ps->pos--;
        return fail(ps, "nothing to repeat"), -1;
    case '\\': {
        uint8_t bm[32] = {0};
        int byte = 0, kind = escape(ps, &byte, bm);
        if (!kind) return -1;
        if (kind == 2) {
            int s = add_set(ps, bm);
            n = new_node(ps, N_SET);
            if (n < 0 || s < 0) return fail(ps, "pattern too large"), -1;
            ps->nodes[n].set = (uint16_t)s;
            return n;
        }
        c = byte;
        break;
    }
    }
    n = new_node(ps, N_CHAR);
    if (n < 0) return fail(ps, "pattern too large"), -1;
    ps->nodes[n].c = (uint8_t)c;
    return n;
}

static bool parse_number(parser *ps, int *out) {
    int v = 0, digits = 0;
    while (peek(ps) >= '0' && peek(ps) <= '9' && digits < 4) { v = v * 10 + (peek(ps) - '0'); ps->pos++; digits++; }
    *out = v;
    return digits > 0;
}

static int parse_repeat(parser *ps) {
    int n = parse_atom(ps);
    while (n >= 0) {
        int c = peek(ps), lo, hi;
        if (c == '*') { lo = 0; hi = -1; ps->pos++; }
        else if (c == '+') { lo = 1; hi = -1; ps->pos++; }
        else if (c == '?') { lo = 0; hi = 1; ps->pos++; }
        else if (c == '{') {
            ps->pos++;
            if (!parse_number(ps, &lo)) return fail(ps, "bad repetition"), -1;
            hi = lo;
            if (peek(ps) == ',') {
                ps->pos++;
                if (!parse_number(ps, &hi)) hi = -1;
            }
            if (peek(ps) != '}') return fail(ps, "bad repetition"), -1;
            ps->pos++;
            if (lo > MAX_REPEAT || hi > MAX_REPEAT || (hi >= 0 && hi < lo)) return fail(ps, "repetition out of range"), -1;
        } else {
            return n;
        }
        if (peek(ps) == '?') ps->pos++; /* lazy: same answer for a whole-string match */
        c = peek(ps);
        if (c == '*' || c == '+' || c == '?' || c == '{') return fail(ps, "bad repetition operator"), -1;
        int r = new_node(ps, N_REPEAT);
        if (r < 0) return fail(ps, "pattern too large"), -1;
        ps->nodes[r].a = (int16_t)n;
        ps->nodes[r].lo = (int16_t)lo;
        ps->nodes[r].hi = (int16_t)hi;
        n = r;
    }
    return n;
}

static int parse_seq(parser *ps) {
    int cat = new_node(ps, N_CAT), last = -1;
    if (cat < 0) return fail(ps, "pattern too large"), -1;
    while (peek(ps) >= 0 && peek(ps) != '|' && peek(ps) != ')') {
        int n = parse_repeat(ps);
        if (n < 0) return -1;
        if (last < 0) ps->nodes[cat].a = (int16_t)n;
        else ps->nodes[last].next = (int16_t)n;
        last = n;
    }
    return cat;
}

static int parse_alt(parser *ps) {
    int n = parse_seq(ps);
    while (n >= 0 && peek(ps) == '|') {
        ps->pos++;
        int b = parse_seq(ps);
        if (b < 0) return -1;
        int alt = new_node(ps, N_ALT);
        if (alt < 0) return fail(ps, "pattern too large"), -1;
        ps->nodes[alt].a = (int16_t)n;
        ps->nodes[alt].b = (int16_t)b;
        n = alt;
    }
    return n;
}

/* ---- compile ---------------------------------------------------------------------------- */

typedef struct gen {
    re_inst *inst;
    size_t n;
    const parser *ps;
    bool overflow;
} gen;

static size_t emit(gen *g, uint8_t op) {
    if (g->n >= MAX_INST) { g->overflow = true; return MAX_INST - 1; }
    memset(&g->inst[g->n], 0, sizeof g->inst[0]);
    g->inst[g->n].op = op;
    return g->n++;
}

static void gen_node(gen *g, int i) {
    const node *n = &g->ps->nodes[i];
    size_t split, jmp;
    if (g->overflow) return;
    switch (n->t) {
    case N_CHAR: g->inst[emit(g, RE_CHAR)].c = n->c; break;
    case N_SET: g->inst[emit(g, RE_SET)].x = n->set; break;
    case N_BOL: emit(g, RE_BOL); break;
    case N_EOL: emit(g, RE_EOL); break;
    case N_CAT:
        for (int c = n->a; c >= 0; c = g->ps->nodes[c].next) gen_node(g, c);
        break;
    case N_ALT: /* split L1 L2; L1: a; jmp L3; L2: b; L3: */
        split = emit(g, RE_SPLIT);
        g->inst[split].x = (uint16_t)g->n;
        gen_node(g, n->a);
        jmp = emit(g, RE_JMP);
        g->inst[split].y = (uint16_t)g->n;
        gen_node(g, n->b);
        g->inst[jmp].x = (uint16_t)g->n;
        break;
    case N_REPEAT:
        for (int k = 0; k < n->lo; k++) gen_node(g, n->a);
        if (n->hi < 0) { /* L: split body out; body; jmp L; out: */
            split = emit(g, RE_SPLIT);
            g->inst[split].x = (uint16_t)g->n;
            gen_node(g, n->a);
            g->inst[emit(g, RE_JMP)].x = (uint16_t)split;
            g->inst[split].y = (uint16_t)g->n;
        } else {
            for (int k = n->lo; k < n->hi; k++) { /* split body out; body; out: */
                split = emit(g, RE_SPLIT);
                g->inst[split].x = (uint16_t)g->n;
                gen_node(g, n->a);
                g->inst[split].y = (uint16_t)g->n;
            }
        }
        break;
    }
}

bool re_compile(const char *pattern, size_t len, re_prog *out, char *err, size_t errcap) {
    memset(out, 0, sizeof *out);
    parser *ps = calloc(1, sizeof *ps);
    gen g = {0};
    bool ok = false;
    if (!ps) return false;
    ps->p = pattern;
    ps->len = len;
    ps->err = err;
    ps->errcap = errcap;
    ps->sets = malloc(sizeof(*ps->sets) * MAX_PATTERN);
    g.inst = malloc(sizeof(re_inst) * MAX_INST);
    g.ps = ps;
    if (!ps->sets || !g.inst) goto done;
    if (len > MAX_PATTERN) { fail(ps, "pattern longer than 256 bytes"); goto done; }
    int root = parse_alt(ps);
    if (root < 0) goto done;
    if (ps->pos < len) { fail(ps, "unbalanced )"); goto done; }
    gen_node(&g, root);
    emit(&g, RE_MATCH);
    if (g.overflow) { fail(ps, "pattern expands to too many states"); goto done; }

    out->n = g.n;
    out->inst = realloc(g.inst, sizeof(re_inst) * g.n);
    g.inst = NULL;
    out->nsets = ps->nsets;
    out->sets = ps->sets;
    ps->sets = NULL;
    out->cur = malloc(sizeof(uint16_t) * out->n);
    out->next = malloc(sizeof(uint16_t) * out->n);
    out->stack = malloc(sizeof(uint16_t) * (2 * out->n + 1));
    out->mark = calloc(out->n, sizeof(uint32_t));
    ok = out->inst && out->cur && out->next && out->stack && out->mark;
    if (!ok) re_free(out);
done:
    free(g.inst);
    if (ps) free(ps->sets);
    free(ps);
    return ok;
}

void re_free(re_prog *p) {
    free(p->inst);
    free(p->sets);
    free(p->cur);
    free(p->next);
    free(p->stack);
    free(p->mark);
    memset(p, 0, sizeof *p);
}

/* ---- match ------------------------------------------------------------------------------ */

static void next_generation(re_prog *p) {
    if (++p->gen == 0) { /* wrapped: forget every old mark */
        memset(p->mark, 0, sizeof(uint32_t) * p->n);
        p->gen = 1;
    }
}

/* Add pc and everything reachable from it without consuming input (the epsilon closure). */
static void add_thread(re_prog *p, uint16_t *list, size_t *count, uint16_t pc0, size_t pos, size_t len) {
    size_t sp = 0;
    p->stack[sp++] = pc0;
    while (sp) {
        uint16_t pc = p->stack[--sp];
        if (p->mark[pc] == p->gen) continue;
        p->mark[pc] = p->gen;
        const re_inst *in = &p->inst[pc];
        switch (in->op) {
        case RE_JMP: p->stack[sp++] = in->x; break;
        case RE_SPLIT: p->stack[sp++] = in->y; p->stack[sp++] = in->x; break;
        case RE_BOL: if (pos == 0) p->stack[sp++] = (uint16_t)(pc + 1); break;
        case RE_EOL: if (pos == len) p->stack[sp++] = (uint16_t)(pc + 1); break;
        default: list[(*count)++] = pc;
        }
    }
}

bool re_full_match(re_prog *p, const char *s, size_t len) {
    size_t nc = 0;
    if (!p->inst) return false;
    next_generation(p);
    add_thread(p, p->cur, &nc, 0, 0, len);
    for (size_t pos = 0;; pos++) {
        if (pos == len) {
            for (size_t i = 0; i < nc; i++)
                if (p->inst[p->cur[i]].op == RE_MATCH) return true;
            return false;
        }
        if (nc == 0) return false;
        size_t nn = 0;
        int b = (unsigned char)s[pos];
        next_generation(p);
        for (size_t i = 0; i < nc; i++) {
            const re_inst *in = &p->inst[p->cur[i]];
            if ((in->op == RE_CHAR && in->c == b) || (in->op == RE_SET && bit_has(p->sets[in->x], b)))
                add_thread(p, p->next, &nn, (uint16_t)(p->cur[i] + 1), pos + 1, len);
        }
        uint16_t *t = p->cur;
        p->cur = p->next;
        p->next = t;
        nc = nn;
    }
}
