/*
 * csrf: Envoy's envoy.filters.http.csrf as a proxy-wasm filter.
 *
 * A state-changing request (POST, PUT, DELETE, PATCH) must come from the page's own origin: the
 * host and port of its Origin header (or, without one, of its Referer) must equal the request's
 * Host, or match one of `additional_origins`. Otherwise it is answered 403 "Invalid origin" --
 * unless the policy is only in shadow mode, where it is merely counted. The configuration is
 * Envoy's CsrfPolicy JSON (../schema.json); the counters are Envoy's (csrf.missing_source_origin,
 * csrf.request_invalid, csrf.request_valid), under Envoy's `wasmcustom.` namespace for Wasm.
 */
#include <stdio.h>
#include <string.h>

#include "proxy_wasm.h"

#define MAX_ORIGINS 64

typedef struct fraction {
    bool present;
    uint32_t numerator, denominator;
} fraction;

typedef struct policy {
    fraction enabled, shadow;
    pw_string_matcher origins[MAX_ORIGINS]; /* Envoy's StringMatcher, linear-time regex (pw_match.h) */
    size_t n_origins;
    uint32_t missing_source_origin, request_invalid, request_valid; /* metric ids */
    uint64_t rng;
} policy;

/* ---- configuration ------------------------------------------------------------------------- */

/* RuntimeFractionalPercent: only default_value counts (a Wasm filter cannot read Envoy's
 * runtime; runtime_key is accepted so the same JSON configures the native filter). */
static bool parse_fraction(pw_json cfg, const char *key, fraction *out) {
    pw_json f, v;
    if (!pw_json_get(cfg, key, &f)) return true;
    out->present = true;
    out->numerator = 0;
    out->denominator = 100;
    if (!pw_json_get(f, "default_value", &v)) return true;
    int64_t num = 0;
    pw_json_get_int(v, "numerator", &num);
    if (num < 0) return false;
    out->numerator = num > 0xffffffff ? 0xffffffffu : (uint32_t)num;
    pw_json d;
    if (pw_json_get(v, "denominator", &d)) {
        if (pw_json_streq(d, "HUNDRED")) out->denominator = 100;
        else if (pw_json_streq(d, "TEN_THOUSAND")) out->denominator = 10000;
        else if (pw_json_streq(d, "MILLION")) out->denominator = 1000000;
        else return false;
    }
    return true;
}

static void free_policy(policy *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_origins; i++) pw_string_matcher_free(&p->origins[i]);
    free(p);
}

bool pw_on_configure(pw_root *root, const char *text, size_t len) {
    pw_json cfg, list, item;
    policy *p = calloc(1, sizeof *p);
    if (!p) return false;
    if (len == 0) text = "{}", len = 2;
    if (!pw_json_parse(text, len, &cfg) || pw_json_typeof(cfg) != PW_JSON_OBJECT) {
        pw_log(PW_LOG_ERROR, "csrf: the configuration is not a JSON object");
        goto bad;
    }
    /* Without filter_enabled Envoy's proto is invalid; the schema requires it, and here a
     * missing one means "enforce everything" rather than silently nothing. */
    p->enabled = (fraction){true, 100, 100};
    if (!parse_fraction(cfg, "filter_enabled", &p->enabled) || !parse_fraction(cfg, "shadow_enabled", &p->shadow)) {
        pw_log(PW_LOG_ERROR, "csrf: bad filter_enabled/shadow_enabled");
        goto bad;
    }
    if (pw_json_get(cfg, "additional_origins", &list)) {
        if (pw_json_count(list) > MAX_ORIGINS) {
            pw_log(PW_LOG_ERROR, "csrf: at most 64 additional_origins");
            goto bad;
        }
        for (size_t i = 0; pw_json_index(list, i, &item); i++) {
            char field[48];
            snprintf(field, sizeof field, "csrf: additional_origins[%zu]", i);
            if (!pw_json_string_matcher(item, field, &p->origins[i])) goto bad;
            p->n_origins = i + 1;
        }
    }
    pw_define_metric(PW_METRIC_COUNTER, "csrf.missing_source_origin", &p->missing_source_origin);
    pw_define_metric(PW_METRIC_COUNTER, "csrf.request_invalid", &p->request_invalid);
    pw_define_metric(PW_METRIC_COUNTER, "csrf.request_valid", &p->request_valid);
    p->rng = pw_now_ns() ^ ((uint64_t)root->id << 32) ^ 0x9e3779b97f4a7c15ull;
    free_policy(root->data);
    root->data = p;
    return true;
bad:
    free_policy(p);
    return false; /* Envoy rejects the configuration: better than a CSRF filter that lets all through */
}

void pw_on_root_delete(pw_root *root) {
    free_policy(root->data);
    root->data = NULL;
}

/* Envoy's featureEnabled(): a random draw against numerator/denominator. */
static bool sampled(policy *p, const fraction *f) {
    if (!f->present || f->numerator == 0) return false;
    if (f->numerator >= f->denominator) return true;
    p->rng ^= p->rng << 13; /* xorshift64: no crypto needed to pick a percentage */
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return p->rng % f->denominator < f->numerator;
}

/* ---- origins --------------------------------------------------------------------------------- */

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_hex(char c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static bool is_host_char(char c) { return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~'; }

/* "host", "host:port", "[v6]" or "[v6]:port". */
static bool valid_authority(const char *s, size_t n) {
    size_t i = 0;
    if (n && s[0] == '[') {
        for (i = 1; i < n && (is_hex(s[i]) || s[i] == ':' || s[i] == '.'); i++) {}
        if (i == 1 || i >= n || s[i] != ']') return false;
        i++;
    } else {
        while (i < n && is_host_char(s[i])) i++;
        if (i == 0) return false;
    }
    if (i == n) return true;
    if (s[i] != ':' || i + 1 == n) return false;
    for (i++; i < n; i++)
        if (!is_digit(s[i])) return false;
    return true;
}

/* "host[:port]" of an absolute URL, as Envoy's Http::Utility::Url reports it (no userinfo, no
 * default-port folding, case kept). Anything else is the value itself, as in Envoy, so
 * `Origin: example.com` still equals `Host: example.com`. Points into `v`. */
static void host_and_port(const char *v, size_t n, const char **out, size_t *out_len) {
    *out = v;
    *out_len = n;
    size_t i = 0;
    while (i < n && is_alpha(v[i])) i++;
    if (i == 0 || n - i < 3 || memcmp(v + i, "://", 3) != 0) return;
    size_t start = i + 3, end = start;
    while (end < n && v[end] != '/' && v[end] != '?' && v[end] != '#') end++;
    size_t host = start;
    for (size_t k = start; k < end; k++)
        if (v[k] == '@') { host = k + 1; break; }
    if (valid_authority(v + host, end - host)) {
        *out = v + host;
        *out_len = end - host;
    }
}

/* The target: host[:port] of <scheme>://<Host>, parsed as the source is. A malloc'd URL, or NULL
 * when there is no Host; *target points into it. */
static char *target_origin(const char **target, size_t *target_len) {
    char *host = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, ":authority");
    char *scheme = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, ":scheme");
    char *url = NULL;
    if (host && host[0]) {
        const char *sch = scheme && scheme[0] ? scheme : "http";
        size_t sch_len = strlen(sch), host_len = strlen(host);
        url = malloc(sch_len + 3 + host_len + 1);
        if (url) {
            memcpy(url, sch, sch_len);
            memcpy(url + sch_len, "://", 3);
            memcpy(url + sch_len + 3, host, host_len + 1);
            host_and_port(url, sch_len + 3 + host_len, target, target_len);
        }
    }
    free(host);
    free(scheme);
    return url;
}

/* Same origin as the target (both empty counts, as in Envoy), or one of additional_origins. */
static bool origin_allowed(policy *p, const char *source, size_t source_len) {
    const char *target = "";
    size_t target_len = 0;
    char *url = target_origin(&target, &target_len);
    bool ok = target_len == source_len && memcmp(target, source, source_len) == 0;
    free(url);
    for (size_t i = 0; !ok && i < p->n_origins; i++) ok = pw_string_matcher_matches(&p->origins[i], source, source_len);
    return ok;
}

static bool is_modify_method(const char *m) {
    return m && (!strcmp(m, "POST") || !strcmp(m, "PUT") || !strcmp(m, "DELETE") || !strcmp(m, "PATCH"));
}

pw_action pw_on_request_headers(pw_ctx *ctx, uint32_t num_headers, bool end_of_stream) {
    (void)num_headers;
    (void)end_of_stream;
    policy *p = ctx->root->data;
    if (!p) return PW_CONTINUE;
    bool enforce = sampled(p, &p->enabled);
    bool shadow = sampled(p, &p->shadow);
    if (!enforce && !shadow) return PW_CONTINUE;

    char *method = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, ":method");
    bool modify = is_modify_method(method);
    free(method);
    if (!modify) return PW_CONTINUE;

    /* The source: Origin, else Referer. An opaque origin (`Origin: null`) counts as none and
     * does not fall back to the Referer, as in Envoy 1.40. */
    char *origin = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "origin");
    char *referer = NULL;
    const char *source = "";
    size_t source_len = 0;
    if (origin && strcmp(origin, "null") != 0 && origin[0]) {
        host_and_port(origin, strlen(origin), &source, &source_len);
    } else if (!origin || !origin[0]) {
        referer = pw_get_header(PW_MAP_HTTP_REQUEST_HEADERS, "referer");
        if (referer && referer[0]) host_and_port(referer, strlen(referer), &source, &source_len);
    }

    /* As Envoy: a missing source counts missing_source_origin and is then still compared (an
     * empty source never equals a non-empty Host), so it usually counts request_invalid too. */
    bool valid = source_len > 0;
    if (!valid) pw_increment_metric(p->missing_source_origin, 1);
    if (!origin_allowed(p, source, source_len)) {
        valid = false;
        pw_increment_metric(p->request_invalid, 1);
    }
    if (valid) pw_increment_metric(p->request_valid, 1);
    free(origin);
    free(referer);

    if (valid || !enforce) return PW_CONTINUE; /* shadow mode: counted, not blocked */
    static const char body[] = "Invalid origin";
    pw_header headers[] = {PW_HEADER("content-type", "text/plain")};
    pw_send_local_response(403, "csrf_origin_mismatch", body, sizeof body - 1, headers, 1, PW_GRPC_STATUS_NONE);
    return PW_PAUSE;
}
