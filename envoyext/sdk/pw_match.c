/* pw_match.c - see pw_match.h: the pattern is parsed to a tree, the tree is compiled to a
 * Thompson program, the program is run as a Pike VM. Only the C library is used. */
#include "pw_match.h"

#include <stdlib.h>
#include <string.h>

enum { OP_BYTE, OP_SET, OP_SPLIT, OP_JMP, OP_BOL, OP_EOL, OP_MATCH };
enum { N_BYTE, N_SET, N_BOL, N_EOL, N_CAT, N_ALT, N_REPEAT };

#define NO_NODE (-1)

/* CAT: children a, then each child's `next`; ALT: a | b; REPEAT: a{lo,hi}, hi < 0 unbounded. */
typedef struct node {
    uint8_t type, byte;
    uint16_t set;
    int32_t a, b, next, lo, hi;
} node;

typedef struct parser {
    const char *p;
    size_t len, pos;
    node *nodes;
    size_t n_nodes, cap_nodes;
    uint8_t (*sets)[32];
    size_t n_sets, cap_sets;
    char *err;
    size_t errcap;
    bool failed;
} parser;

/* ---- errors: "<what> at offset <n>", without printf (it would triple a module's size) -------- */

static size_t append(char *buf, size_t n, size_t cap, const char *s) {
    while (*s && n + 1 < cap) buf[n++] = *s++;
    return n;
}

static bool fail_at(parser *ps, const char *what, size_t offset) {
    char digits[24];
    size_t d = 0, n = 0;
    if (ps->failed) return false; /* the first, innermost reason is the one to show */
    ps->failed = true;
    if (!ps->err || !ps->errcap) return false;
    do digits[d++] = (char)('0' + offset % 10); while ((offset /= 10) && d < sizeof digits - 1);
    n = append(ps->err, n, ps->errcap, what);
    n = append(ps->err, n, ps->errcap, " at offset ");
    while (d && n + 1 < ps->errcap) ps->err[n++] = digits[--d];
    ps->err[n] = 0;
    return false;
}

static bool fail(parser *ps, const char *what) { return fail_at(ps, what, ps->pos); }

/* ---- parsing -------------------------------------------------------------------------------- */

static int peek(const parser *ps) { return ps->pos < ps->len ? (unsigned char)ps->p[ps->pos] : -1; }
static int peek_at(const parser *ps, size_t ahead) {
    return ps->pos + ahead < ps->len ? (unsigned char)ps->p[ps->pos + ahead] : -1;
}
static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_word(int c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_quantifier(int c) { return c == '*' || c == '+' || c == '?' || c == '{'; }

static int new_node(parser *ps, uint8_t type) {
    if (ps->n_nodes == ps->cap_nodes) {
        size_t cap = ps->cap_nodes ? ps->cap_nodes * 2 : 16;
        node *nodes = realloc(ps->nodes, cap * sizeof *nodes);
        if (!nodes) return fail(ps, "out of memory"), NO_NODE;
        ps->nodes = nodes;
        ps->cap_nodes = cap;
    }
    node *n = &ps->nodes[ps->n_nodes];
    memset(n, 0, sizeof *n);
    n->type = type;
    n->a = n->b = n->next = NO_NODE;
    return (int)ps->n_nodes++;
}

static void set_add(uint8_t *set, int b) { set[b >> 3] |= (uint8_t)(1u << (b & 7)); }
static bool set_has(const uint8_t *set, int b) { return set[b >> 3] & (1u << (b & 7)); }

static int set_node(parser *ps, const uint8_t set[32]) {
    if (ps->n_sets == ps->cap_sets) {
        size_t cap = ps->cap_sets ? ps->cap_sets * 2 : 4;
        uint8_t(*sets)[32] = realloc(ps->sets, cap * sizeof *sets);
        if (!sets) return fail(ps, "out of memory"), NO_NODE;
        ps->sets = sets;
        ps->cap_sets = cap;
    }
    int n = new_node(ps, N_SET);
    if (n == NO_NODE) return NO_NODE;
    memcpy(ps->sets[ps->n_sets], set, 32);
    ps->nodes[n].set = (uint16_t)ps->n_sets++;
    return n;
}

/* \d \w \s (RE2's Perl classes, ASCII) into set, or their complements for \D \W \S. */
static bool class_escape(int c, uint8_t set[32]) {
    int lower = c | 0x20;
    if (lower != 'd' && lower != 'w' && lower != 's') return false;
    for (int b = 0; b < 256; b++) {
        bool in = lower == 'd' ? is_digit(b)
                : lower == 'w' ? is_word(b)
                : (b == ' ' || b == '\t' || b == '\n' || b == '\f' || b == '\r'); /* RE2: no \v */
        if (in == (c == lower)) set_add(set, b);
    }
    return true;
}

/* After a backslash: 1 with *byte for a literal, 2 with `set` extended for a class, 0 on error. */
static int escape(parser *ps, int *byte, uint8_t set[32]) {
    int c = peek(ps);
    if (c < 0) return fail_at(ps, "trailing backslash", ps->pos - 1), 0;
    ps->pos++;
    if (class_escape(c, set)) return 2;
    static const char named[] = "ntrfv", bytes[] = "\n\t\r\f\v";
    const char *k = c ? strchr(named, c) : NULL;
    if (k) {
        *byte = (unsigned char)bytes[k - named];
        return 1;
    }
    if (is_word(c) || c >= 0x80) {
        char what[] = "unsupported escape \\?";
        if (c < 0x80) what[sizeof what - 2] = (char)c;
        return fail_at(ps, what, ps->pos - 2), 0;
    }
    *byte = c;
    return 1;
}

/* One class member (a byte, or a \d-style set merged into `set`): 1 byte, 2 set, 0 error. */
static int class_member(parser *ps, int *byte, uint8_t set[32]) {
    int c = peek(ps);
    if (c < 0) return fail(ps, "missing ]"), 0;
    ps->pos++;
    if (c == '\\') return escape(ps, byte, set);
    *byte = c;
    return 1;
}

static int parse_class(parser *ps) {
    size_t start = ps->pos - 1;
    uint8_t set[32] = {0};
    bool negated = peek(ps) == '^';
    if (negated) ps->pos++;
    for (bool first = true; first || peek(ps) != ']'; first = false) {
        int lo, hi, kind = class_member(ps, &lo, set);
        if (!kind) return NO_NODE;
        bool range = peek(ps) == '-' && peek_at(ps, 1) != ']' && peek_at(ps, 1) >= 0;
        if (range && kind == 2) return fail(ps, "bad range in class"), NO_NODE;
        if (kind == 2) continue;
        if (!range) {
            set_add(set, lo);
            continue;
        }
        ps->pos++;
        if (class_member(ps, &hi, set) != 1) return fail(ps, "bad range in class"), NO_NODE;
        if (hi < lo) return fail_at(ps, "bad range in class", start), NO_NODE;
        for (int b = lo; b <= hi; b++) set_add(set, b);
    }
    ps->pos++;
    if (negated)
        for (int i = 0; i < 32; i++) set[i] = (uint8_t)~set[i];
    return set_node(ps, set);
}

static int parse_alt(parser *ps, int depth);

static int parse_group(parser *ps, int depth) {
    size_t open = ps->pos - 1;
    if (peek(ps) == '?') {
        if (peek_at(ps, 1) != ':') return fail(ps, "unsupported group syntax (only ( ) and (?: ))"), NO_NODE;
        ps->pos += 2;
    }
    int n = parse_alt(ps, depth + 1);
    if (n == NO_NODE) return NO_NODE;
    if (peek(ps) != ')') return fail_at(ps, "missing )", open), NO_NODE;
    ps->pos++;
    return n;
}

static int parse_atom(parser *ps, int depth) {
    int c = peek(ps), n;
    uint8_t set[32] = {0};
    ps->pos++;
    switch (c) {
    case '(': return parse_group(ps, depth);
    case '[': return parse_class(ps);
    case '^': return new_node(ps, N_BOL);
    case '$': return new_node(ps, N_EOL);
    case '.':
        memset(set, 0xff, sizeof set);
        set['\n' >> 3] &= (uint8_t) ~(1u << ('\n' & 7)); /* RE2: any character but newline */
        return set_node(ps, set);
    case '*': case '+': case '?': case '{':
        ps->pos--;
        return fail(ps, "nothing to repeat"), NO_NODE;
    case '\\': {
        int kind = escape(ps, &c, set);
        if (kind == 0) return NO_NODE;
        if (kind == 2) return set_node(ps, set);
        break;
    }
    }
    n = new_node(ps, N_BYTE);
    if (n != NO_NODE) ps->nodes[n].byte = (uint8_t)c;
    return n;
}

static bool parse_count(parser *ps, int *out) {
    int v = 0;
    if (!is_digit(peek(ps))) return false;
    while (is_digit(peek(ps))) {
        v = v * 10 + (peek(ps) - '0');
        ps->pos++;
        if (v > PW_REGEX_MAX_REPEAT) return false;
    }
    *out = v;
    return true;
}

/* {n} {n,} {n,m} after '{'; hi < 0 is unbounded. A '{' that starts none of them is refused, not
 * read as a literal (RE2 would take it literally, Python reads {,m} as {0,m}): say \{. */
static bool parse_braces(parser *ps, int *lo, int *hi) {
    size_t open = ps->pos - 1;
    if (!parse_count(ps, lo)) goto bad;
    *hi = *lo;
    if (peek(ps) == ',') {
        ps->pos++;
        *hi = -1;
        if (peek(ps) != '}' && (!parse_count(ps, hi) || *hi < *lo)) goto bad;
    }
    if (peek(ps) == '}') {
        ps->pos++;
        return true;
    }
bad:
    return fail_at(ps, "bad {n,m} repeat (at most 1000; a literal { is written \\{)", open);
}

static int parse_repeat(parser *ps, int depth) {
    int n = parse_atom(ps, depth), c = peek(ps), lo, hi;
    if (n == NO_NODE || !is_quantifier(c)) return n;
    ps->pos++;
    if (c == '*') lo = 0, hi = -1;
    else if (c == '+') lo = 1, hi = -1;
    else if (c == '?') lo = 0, hi = 1;
    else if (!parse_braces(ps, &lo, &hi)) return NO_NODE;
    if (ps->nodes[n].type == N_BOL || ps->nodes[n].type == N_EOL) return fail(ps, "nothing to repeat"), NO_NODE;
    if (peek(ps) == '?') ps->pos++; /* lazy: the same answer for a whole-string match */
    if (is_quantifier(peek(ps))) return fail(ps, "bad repetition operator"), NO_NODE; /* as RE2: a** */
    int r = new_node(ps, N_REPEAT);
    if (r == NO_NODE) return NO_NODE;
    ps->nodes[r].a = n;
    ps->nodes[r].lo = lo;
    ps->nodes[r].hi = hi;
    return r;
}

static int parse_seq(parser *ps, int depth) {
    int cat = new_node(ps, N_CAT), last = NO_NODE;
    while (cat != NO_NODE && peek(ps) >= 0 && peek(ps) != '|' && peek(ps) != ')') {
        int n = parse_repeat(ps, depth);
        if (n == NO_NODE) return NO_NODE;
        if (last == NO_NODE) ps->nodes[cat].a = n;
        else ps->nodes[last].next = n;
        last = n;
    }
    return cat;
}

static int parse_alt(parser *ps, int depth) {
    if (depth > 100) return fail(ps, "groups nested too deep"), NO_NODE;
    int n = parse_seq(ps, depth);
    while (n != NO_NODE && peek(ps) == '|') {
        ps->pos++;
        int b = parse_seq(ps, depth), alt = b == NO_NODE ? NO_NODE : new_node(ps, N_ALT);
        if (alt == NO_NODE) return NO_NODE;
        ps->nodes[alt].a = n;
        ps->nodes[alt].b = b;
        n = alt;
    }
    return n;
}

/* ---- compiling: the classic Thompson layout ------------------------------------------------ */

typedef struct gen {
    pw_regex_inst *prog;
    uint32_t n;
    const parser *ps;
    bool overflow;
} gen;

static void gen_node(gen *g, int i);

static uint32_t emit(gen *g, uint8_t op) {
    if (g->n >= PW_REGEX_MAX_PROGRAM) {
        g->overflow = true;
        return PW_REGEX_MAX_PROGRAM - 1; /* a scratch slot: the program is thrown away */
    }
    memset(&g->prog[g->n], 0, sizeof g->prog[0]);
    g->prog[g->n].op = op;
    return g->n++;
}

/* split L1 L2; L1: body; ... L2: -- returns the split, whose y the caller sets. */
static uint32_t emit_split_then(gen *g, int body) {
    uint32_t split = emit(g, OP_SPLIT);
    g->prog[split].x = g->n;
    gen_node(g, body);
    return split;
}

static void gen_node(gen *g, int i) {
    const node *n = &g->ps->nodes[i];
    if (g->overflow) return;
    switch (n->type) {
    case N_BYTE: g->prog[emit(g, OP_BYTE)].byte = n->byte; break;
    case N_SET: g->prog[emit(g, OP_SET)].set = n->set; break;
    case N_BOL: emit(g, OP_BOL); break;
    case N_EOL: emit(g, OP_EOL); break;
    case N_CAT:
        for (int c = n->a; c != NO_NODE; c = g->ps->nodes[c].next) gen_node(g, c);
        break;
    case N_ALT: { /* split L1 L2; L1: a; jmp L3; L2: b; L3: */
        uint32_t split = emit_split_then(g, n->a), jmp = emit(g, OP_JMP);
        g->prog[split].y = g->n;
        gen_node(g, n->b);
        g->prog[jmp].x = g->n;
        break;
    }
    case N_REPEAT:
        for (int k = 0; k < n->lo; k++) gen_node(g, n->a);
        if (n->hi < 0) { /* L: split body out; body; jmp L; out: */
            uint32_t split = emit_split_then(g, n->a);
            g->prog[emit(g, OP_JMP)].x = split;
            g->prog[split].y = g->n;
        } else {
            for (int k = n->lo; k < n->hi; k++) { /* split body out; body; out: */
                uint32_t split = emit_split_then(g, n->a);
                g->prog[split].y = g->n;
            }
        }
        break;
    }
}

static bool alloc_vm(pw_regex *re) {
    re->cur = malloc(sizeof(uint32_t) * re->n);
    re->next = malloc(sizeof(uint32_t) * re->n);
    re->stack = malloc(sizeof(uint32_t) * re->n);
    re->mark = malloc(sizeof(size_t) * re->n);
    return re->cur && re->next && re->stack && re->mark;
}

bool pw_regex_compile(pw_regex *re, const char *pattern, size_t len, char *err, size_t errcap) {
    parser ps = {.p = pattern, .len = len, .err = err, .errcap = errcap};
    gen g = {.ps = &ps};
    bool ok = false;
    memset(re, 0, sizeof *re);
    if (err && errcap) err[0] = 0;
    if (len > PW_REGEX_MAX_PATTERN) {
        fail_at(&ps, "pattern longer than 1024 bytes", PW_REGEX_MAX_PATTERN);
        goto done;
    }
    int root = parse_alt(&ps, 0);
    if (root == NO_NODE) goto done;
    if (ps.pos < len) { /* parse_alt stops only at the end or at a ')' it did not open */
        fail(&ps, "unmatched )");
        goto done;
    }
    g.prog = malloc(sizeof(pw_regex_inst) * PW_REGEX_MAX_PROGRAM);
    if (!g.prog) {
        fail(&ps, "out of memory");
        goto done;
    }
    gen_node(&g, root);
    emit(&g, OP_MATCH);
    if (g.overflow) {
        fail_at(&ps, "pattern too large once its repeats are expanded", 0);
        goto done;
    }
    re->n = g.n;
    re->prog = realloc(g.prog, sizeof(pw_regex_inst) * g.n);
    if (re->prog) g.prog = NULL;
    re->sets = ps.sets;
    ps.sets = NULL;
    ok = re->prog && alloc_vm(re);
    if (!ok) fail_at(&ps, "out of memory", 0);
done:
    if (!ok) pw_regex_free(re);
    free(g.prog);
    free(ps.sets);
    free(ps.nodes);
    return ok;
}

void pw_regex_free(pw_regex *re) {
    free(re->prog);
    free(re->sets);
    free(re->cur);
    free(re->next);
    free(re->stack);
    free(re->mark);
    memset(re, 0, sizeof *re);
}

/* ---- matching: the Pike VM ------------------------------------------------------------------ */

/* Add pc, and everything it reaches without consuming input, to the list for position `pos`.
 * mark[pc] == pos + 1 means "already in this list": no state is ever held twice. */
static void add_thread(pw_regex *re, uint32_t *list, uint32_t *count, uint32_t pc0, size_t pos, size_t len) {
    uint32_t sp = 0;
    if (re->mark[pc0] == pos + 1) return;
    re->mark[pc0] = pos + 1;
    re->stack[sp++] = pc0;
    while (sp) {
        uint32_t pc = re->stack[--sp], to[2];
        int n_to = 0;
        const pw_regex_inst *in = &re->prog[pc];
        re->steps++;
        switch (in->op) {
        case OP_JMP: to[n_to++] = in->x; break;
        case OP_SPLIT: to[n_to++] = in->y; to[n_to++] = in->x; break;
        case OP_BOL: if (pos == 0) to[n_to++] = pc + 1; break;
        case OP_EOL: if (pos == len) to[n_to++] = pc + 1; break;
        default: list[(*count)++] = pc; /* consumes a byte, or MATCH */
        }
        for (int k = 0; k < n_to; k++) {
            if (re->mark[to[k]] == pos + 1) continue;
            re->mark[to[k]] = pos + 1;
            re->stack[sp++] = to[k];
        }
    }
}

bool pw_regex_full_match(pw_regex *re, const char *s, size_t len) {
    uint32_t n_cur = 0;
    if (!re->prog) return false;
    memset(re->mark, 0, sizeof(size_t) * re->n);
    add_thread(re, re->cur, &n_cur, 0, 0, len);
    for (size_t pos = 0; pos < len && n_cur; pos++) {
        uint32_t n_next = 0;
        int b = (unsigned char)s[pos];
        for (uint32_t i = 0; i < n_cur; i++) {
            const pw_regex_inst *in = &re->prog[re->cur[i]];
            re->steps++;
            if ((in->op == OP_BYTE && in->byte == b) || (in->op == OP_SET && set_has(re->sets[in->set], b)))
                add_thread(re, re->next, &n_next, re->cur[i] + 1, pos + 1, len);
        }
        uint32_t *t = re->cur;
        re->cur = re->next;
        re->next = t;
        n_cur = n_next;
    }
    for (uint32_t i = 0; i < n_cur; i++)
        if (re->prog[re->cur[i]].op == OP_MATCH) return true;
    return false;
}

/* ---- Envoy's StringMatcher ------------------------------------------------------------------ */

static char fold(char c, bool ignore_case) { return ignore_case && c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

/* s[0..n) equals text[0..n); text is already lower-case when ignore_case. */
static bool same_bytes(const char *s, const char *text, size_t n, bool ignore_case) {
    for (size_t i = 0; i < n; i++)
        if (fold(s[i], ignore_case) != text[i]) return false;
    return true;
}

bool pw_string_matcher_init(pw_string_matcher *m, pw_match_kind kind, const char *value, size_t len,
                            bool ignore_case, char *err, size_t errcap) {
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->ignore_case = ignore_case && kind != PW_MATCH_REGEX;
    m->text = malloc(len + 1);
    if (!m->text) {
        if (err && errcap) err[append(err, 0, errcap, "out of memory")] = 0;
        return false;
    }
    for (size_t i = 0; i < len; i++) m->text[i] = fold(value[i], m->ignore_case);
    m->text[len] = 0;
    m->len = len;
    if (kind == PW_MATCH_REGEX && !pw_regex_compile(&m->re, value, len, err, errcap)) {
        pw_string_matcher_free(m);
        return false;
    }
    return true;
}

bool pw_string_matcher_matches(pw_string_matcher *m, const char *s, size_t n) {
    bool ic = m->ignore_case;
    switch (m->kind) {
    case PW_MATCH_EXACT: return n == m->len && same_bytes(s, m->text, n, ic);
    case PW_MATCH_PREFIX: return n >= m->len && same_bytes(s, m->text, m->len, ic);
    case PW_MATCH_SUFFIX: return n >= m->len && same_bytes(s + n - m->len, m->text, m->len, ic);
    case PW_MATCH_CONTAINS:
        for (size_t i = 0; i + m->len <= n; i++)
            if (same_bytes(s + i, m->text, m->len, ic)) return true;
        return false;
    case PW_MATCH_REGEX: return pw_regex_full_match(&m->re, s, n);
    }
    return false;
}

void pw_string_matcher_free(pw_string_matcher *m) {
    free(m->text);
    pw_regex_free(&m->re);
    memset(m, 0, sizeof *m);
}
