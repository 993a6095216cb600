/* fault: inject delays and aborts, as Envoy's envoy.filters.http.fault and Istio's
 * VirtualService `fault` do. Configuration: ../schema.json.
 *
 * A delay pauses the stream in on_request_headers and remembers (stream id, due time) in the
 * plugin context. The plugin's tick, armed for the earliest due time, makes each due stream the
 * effective context again and either continues it or, if an abort is rolled then, answers it
 * locally (Envoy rolls the abort after the delay too). No helper cluster is needed. */
#include <stdio.h>
#include <string.h>

#include "proxy_wasm.h"

#define DELAY_HEADER "x-envoy-fault-delay-request"
#define DELAY_PERCENT_HEADER "x-envoy-fault-delay-request-percentage"
#define ABORT_HEADER "x-envoy-fault-abort-request"
#define ABORT_PERCENT_HEADER "x-envoy-fault-abort-request-percentage"
#define MAX_DELAY_MS 3600000 /* schema: fixed_delay_ms maximum */
#define ABORT_BODY "fault filter abort" /* Envoy's own local-reply body for an injected abort */

/* Envoy's HeaderMatcher: `present`, or a StringMatcher on the value (pw_match.h). */
typedef struct {
    char *name;
    bool is_present_match;
    bool present;
    pw_string_matcher value;
    bool invert;
} matcher;

typedef struct {
    bool on;
    bool from_header; /* header_delay / header_abort */
    uint32_t fixed;   /* fixed_delay_ms / http_status */
    double percent;   /* 0..100 */
} fault;

typedef struct {
    uint32_t stream; /* context id of the paused stream */
    uint32_t ms;     /* the delay, for the log */
    uint64_t due_ns;
} pending;

typedef struct {
    fault delay, abort;
    matcher *matchers;
    size_t n_matchers;
    uint32_t delays_injected, aborts_injected; /* metric ids */
    uint64_t rng;                              /* xorshift64 state */
    pending *pending;                          /* paused streams, unordered */
    size_t n_pending, cap_pending;
} config;

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */

/* `delay` or `abort`: exactly one of fixed_key (lo..hi) and header_key, an optional percentage
 * 0-100. False with the field named in the log. */
static bool read_fault(pw_json cfg, const char *key, const char *fixed_key, int64_t lo, int64_t hi,
                       const char *header_key, fault *f) {
    pw_json obj;
    if (!pw_json_get(cfg, key, &obj)) return true; /* not configured */
    int64_t fixed = 0;
    f->on = true;
    f->percent = 100; /* Istio's default: fault every matching request */
    pw_json_get_bool(obj, header_key, &f->from_header);
    bool has_fixed = pw_json_get_int(obj, fixed_key, &fixed);
    if (pw_json_typeof(obj) != PW_JSON_OBJECT || has_fixed == f->from_header) {
        pw_logf(PW_LOG_ERROR, "fault: %s needs exactly one of %s and %s: true", key, fixed_key, header_key);
        return false;
    }
    if (has_fixed && (fixed < lo || fixed > hi)) {
        pw_logf(PW_LOG_ERROR, "fault: %s.%s must be %lld-%lld", key, fixed_key, (long long)lo, (long long)hi);
        return false;
    }
    if (pw_json_get_number(obj, "percentage", &f->percent) && !(f->percent >= 0 && f->percent <= 100)) {
        pw_logf(PW_LOG_ERROR, "fault: %s.percentage must be 0-100", key);
        return false;
    }
    f->fixed = (uint32_t)fixed;
    return true;
}

/* headers[i]; false with the reason logged (the last error line is the one Envoy's rejection shows). */
static bool read_matcher(pw_json m, size_t i, matcher *out) {
    char field[48];
    snprintf(field, sizeof field, "fault: headers[%zu]", i);
    out->name = pw_json_get_string(m, "name");
    pw_json_get_bool(m, "invert_match", &out->invert);
    out->is_present_match = pw_json_get_bool(m, "present", &out->present);
    if (!out->name) pw_logf(PW_LOG_ERROR, "%s: needs a name", field);
    if (!out->name || out->is_present_match) return out->name != NULL;
    return pw_json_string_matcher(m, field, &out->value);
}

static void free_config(config *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n_matchers; i++) {
        free(c->matchers[i].name);
        pw_string_matcher_free(&c->matchers[i].value);
    }
    free(c->matchers);
    free(c->pending);
    free(c);
}

bool pw_on_configure(pw_root *root, const char *json, size_t len) {
    pw_json cfg, list, item;
    config *c = calloc(1, sizeof *c);
    if (!c || !pw_json_parse(json, len, &cfg) || pw_json_typeof(cfg) != PW_JSON_OBJECT) goto bad;
    if (!read_fault(cfg, "delay", "fixed_delay_ms", 1, MAX_DELAY_MS, "header_delay", &c->delay)) goto bad;
    if (!read_fault(cfg, "abort", "http_status", 200, 599, "header_abort", &c->abort)) goto bad;
    if (pw_json_get(cfg, "headers", &list)) {
        c->n_matchers = pw_json_count(list);
        c->matchers = calloc(c->n_matchers ? c->n_matchers : 1, sizeof *c->matchers);
        if (!c->matchers) goto bad;
        for (size_t i = 0; i < c->n_matchers; i++) {
            if (!pw_json_index(list, i, &item)) goto bad;
            if (!read_matcher(item, i, &c->matchers[i])) goto refuse;
        }
    }
    /* Named as Envoy's own fault stats (http.<prefix>.fault.*), in the Wasm stats namespace. */
    pw_define_metric(PW_METRIC_COUNTER, "fault.delays_injected", &c->delays_injected);
    pw_define_metric(PW_METRIC_COUNTER, "fault.aborts_injected", &c->aborts_injected);
    c->rng = (pw_now_ns() ^ ((uint64_t)root->id << 32)) | 1;
    free_config(root->data);
    root->data = c;
    return true;
bad:
    pw_log(PW_LOG_ERROR, "fault: invalid configuration (see schema.json)");
refuse: /* read_matcher logged the cause: keep it the last error line, the one Envoy's rejection shows */
    free_config(c);
    return false;
}

void pw_on_root_delete(pw_root *root) { free_config(root->data); }

/* ------------------------------------------------------------------------ */
/* Decisions                                                                 */

static bool selected(config *c, double percent) {
    c->rng ^= c->rng << 13;
    c->rng ^= c->rng >> 7;
    c->rng ^= c->rng << 17;
    return (double)(c->rng % 1000000) < percent * 10000.0; /* 1/10000 of a percent resolution */
}

/* A non-negative integer as absl::SimpleAtoi accepts it (blanks around allowed). */
static bool parse_uint(const char *s, uint64_t *out) {
    if (!s) return false;
    while (*s == ' ' || *s == '\t') s++;
    if (*s == '+') s++;
    if (*s < '0' || *s > '9') return false;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > 0xffffffffu) return false; /* Envoy parses these into uint32/uint64; be strict */
    }
    while (*s == ' ' || *s == '\t') s++;
    if (*s) return false;
    *out = v;
    return true;
}

/* The first value of an untrusted control header as a number (Envoy reads only that one). */
static bool header_uint(const char *name, uint64_t *out) {
    char *v = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, name);
    bool ok = parse_uint(v, out);
    free(v);
    return ok;
}

/* Envoy's HeaderMatcher: an absent header fails every value matcher, inverted or not; only
 * `present` (and its inversion) can match it. */
static bool header_matches(matcher *m) {
    char *v = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, m->name);
    bool ok = m->is_present_match ? (v != NULL) == m->present : v && pw_string_matcher_matches(&m->value, v, strlen(v));
    bool absent = v == NULL;
    free(v);
    if (absent && !m->is_present_match) return false;
    return m->invert ? !ok : ok;
}

/* This request's percentage: a header may lower the configured one, never raise it (Envoy's
 * HeaderPercentageProvider, used only by the header-controlled faults). */
static double percentage(const fault *f, const char *percent_header) {
    uint64_t wanted;
    if (f->from_header && header_uint(percent_header, &wanted) && (double)wanted < f->percent) return (double)wanted;
    return f->percent;
}

/* Delay in ms for this request; 0 for none. */
static uint32_t delay_ms(config *c) {
    if (!c->delay.on || !selected(c, percentage(&c->delay, DELAY_PERCENT_HEADER))) return 0;
    if (!c->delay.from_header) return c->delay.fixed;
    uint64_t ms;
    return header_uint(DELAY_HEADER, &ms) ? (uint32_t)ms : 0;
}

/* Abort status for this request; 0 for none. */
static uint32_t abort_status(config *c) {
    if (!c->abort.on || !selected(c, percentage(&c->abort, ABORT_PERCENT_HEADER))) return 0;
    if (!c->abort.from_header) return c->abort.fixed;
    uint64_t code;
    return header_uint(ABORT_HEADER, &code) && code >= 200 && code < 600 ? (uint32_t)code : 0;
}

/* Answer the current stream with the abort, if one is rolled. */
static bool maybe_abort(config *c) {
    uint32_t status = abort_status(c);
    if (!status) return false;
    pw_logf(PW_LOG_DEBUG, "fault: aborting request with %u", (unsigned)status);
    pw_increment_metric(c->aborts_injected, 1);
    pw_send_local_response(status, "fault_filter_abort", ABORT_BODY, sizeof ABORT_BODY - 1, NULL, 0,
                           PW_GRPC_STATUS_NONE);
    return true;
}

/* ------------------------------------------------------------------------ */
/* Paused streams and the tick                                               */

/* Arm the tick for the earliest due stream, or stop it when none is left. */
static void rearm(config *c, uint64_t now) {
    uint64_t next = 0;
    for (size_t i = 0; i < c->n_pending; i++)
        if (!next || c->pending[i].due_ns < next) next = c->pending[i].due_ns;
    uint64_t ms = 0;
    if (next) ms = next > now ? (next - now + 999999) / 1000000 : 1;
    pw_set_tick_period_ms((uint32_t)ms);
}

static bool add_pending(config *c, uint32_t stream, uint32_t ms, uint64_t due) {
    if (c->n_pending == c->cap_pending) {
        size_t cap = c->cap_pending ? c->cap_pending * 2 : 8;
        pending *p = realloc(c->pending, cap * sizeof *p);
        if (!p) return false;
        c->pending = p;
        c->cap_pending = cap;
    }
    c->pending[c->n_pending++] = (pending){stream, ms, due};
    return true;
}

static bool remove_pending(config *c, uint32_t stream) {
    for (size_t i = 0; i < c->n_pending; i++) {
        if (c->pending[i].stream == stream) {
            c->pending[i] = c->pending[--c->n_pending];
            return true;
        }
    }
    return false;
}

void pw_on_tick(pw_root *root) {
    config *c = root->data;
    if (!c) return;
    uint64_t now = pw_now_ns();
    /* Timers may fire a hair early against the wall clock: treat "due within 1 ms" as due. */
    for (size_t i = 0; i < c->n_pending;) {
        pending p = c->pending[i];
        if (p.due_ns > now + 1000000) {
            i++;
            continue;
        }
        c->pending[i] = c->pending[--c->n_pending];
        if (!pw_find_ctx(p.stream) || pw_set_effective_context(p.stream) != PW_OK) continue;
        pw_logf(PW_LOG_DEBUG, "fault: delay of %ums elapsed", (unsigned)p.ms);
        if (!maybe_abort(c)) pw_continue_request();
    }
    pw_set_effective_context(root->id);
    rearm(c, now);
}

/* ------------------------------------------------------------------------ */
/* The stream                                                                */

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    config *c = ctx->root->data;
    if (!c) return PW_CONTINUE;
    for (size_t i = 0; i < c->n_matchers; i++)
        if (!header_matches(&c->matchers[i])) return PW_CONTINUE;

    uint32_t ms = delay_ms(c);
    if (ms) {
        uint64_t now = pw_now_ns();
        if (add_pending(c, ctx->id, ms, now + (uint64_t)ms * 1000000)) {
            pw_logf(PW_LOG_DEBUG, "fault: delaying request %ums", (unsigned)ms);
            pw_increment_metric(c->delays_injected, 1);
            rearm(c, now);
            return PW_PAUSE; /* the tick continues (or aborts) the stream */
        }
    }
    return maybe_abort(c) ? PW_PAUSE : PW_CONTINUE;
}

/* A stream reset while delayed must not be resumed by a later tick. */
void pw_on_delete(pw_ctx *ctx) {
    config *c = ctx->root->data;
    if (c && remove_pending(c, ctx->id)) rearm(c, pw_now_ns());
}
